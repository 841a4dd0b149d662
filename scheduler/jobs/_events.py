"""What the scheduler's parts hear about an instance's end, as lists of listeners.

An instance ends in two steps, each with its listeners (subscribed by the parts that care, in their
constructors; the composition root only hands the one ``InstanceEvents`` to every part):

1. ``finished(instance, system_failure)``: the store holds the instance's final status. Fed by whoever
   finished it: the dispatcher (a worker's report, a lost worker, a kill), the job service (stopping an
   instance no worker had yet), the workflow engine (recovering a node end that was cut short). The
   lifecycle listens: it retries, re-arms, alarms and prunes.
2. ``ended(instance, retry)``: what follows the end was done; ``retry`` is the instance's retry, or
   None when this was its last attempt. Fed by the lifecycle; the workflow engine listens and advances
   the instance's workflow.

Before retrying, the lifecycle asks ``may_retry(instance)``: every retry check must agree (the workflow
engine refuses for a node of a stopped workflow instance).

Listeners run one after another in the order they subscribed; an exception reaches the publisher.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sx.scheduler.store import Instance

__all__ = ["EndedListener", "FinishedListener", "InstanceEvents", "RetryCheck"]

FinishedListener = Callable[[Instance, bool], Awaitable[object]]
"""``(instance, system_failure)``: the instance's final status is in the store."""
EndedListener = Callable[[Instance, Instance | None], Awaitable[object]]
"""``(instance, retry)``: the instance's end was handled; ``retry`` is its retry, if one was made."""
RetryCheck = Callable[[Instance], Awaitable[bool]]
"""False when the failed instance must not be retried."""


class InstanceEvents:
    """The listeners of instance ends (see the module docstring)."""

    def __init__(self) -> None:
        self._finished: list[FinishedListener] = []
        self._ended: list[EndedListener] = []
        self._retry_checks: list[RetryCheck] = []

    def on_finished(self, listener: FinishedListener) -> None:
        self._finished.append(listener)

    def on_ended(self, listener: EndedListener) -> None:
        self._ended.append(listener)

    def add_retry_check(self, check: RetryCheck) -> None:
        self._retry_checks.append(check)

    async def finished(self, instance: Instance, system_failure: bool = False) -> None:
        """The store holds ``instance``'s final status; ``system_failure`` when the system failed it
        (a lost worker, a store fault) rather than the job."""
        for listener in self._finished:
            await listener(instance, system_failure)

    async def ended(self, instance: Instance, retry: Instance | None) -> None:
        """``instance``'s end was handled (``retry`` made, or None)."""
        for listener in self._ended:
            await listener(instance, retry)

    async def may_retry(self, instance: Instance) -> bool:
        """True unless a retry check refuses."""
        for check in self._retry_checks:
            if not await check(instance):
                return False
        return True
