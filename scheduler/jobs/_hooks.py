"""What the services ask of the trigger engine and the dispatcher, as a narrow protocol and callables.

The services (jobs, calendars, parallel tasks, workflows) never import the trigger engine or the
dispatcher: they are given ``SchedulerHooks`` in their constructors. The composition root builds one
``Hooks`` from the engine's and the dispatcher's methods; tools and tests without those parts pass
``NoHooks``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sx.scheduler.store import Instance

__all__ = ["Hooks", "NoHooks", "OnCreated", "SchedulerHooks", "StopInstance", "hand_over_each"]

OnCreated = Callable[[list[Instance]], Awaitable[None]]
"""Receives WAITING instances just created, for dispatch."""
StopInstance = Callable[[Instance, str], Awaitable[object]]
"""Kills an instance, giving the reason."""


class SchedulerHooks(Protocol):
    """How a service tells the rest of the scheduler about changes (trigger engine, dispatcher)."""

    def wake_triggers(self) -> None:
        """A job's next fire time changed: the trigger engine recomputes when to wake."""

    def instance_created(self, instance: Instance) -> Awaitable[None]:
        """A WAITING instance was created outside the trigger engine: hand it to dispatch."""

    def stop_instance(self, instance: Instance, reason: str) -> Awaitable[bool]:
        """Ask the workers running ``instance`` to kill it; False when none could be asked."""


@dataclass(frozen=True, slots=True)
class Hooks:
    """SchedulerHooks made of callables (the trigger engine's ``wake``, the dispatcher's methods)."""

    wake_triggers: Callable[[], None]
    instance_created: Callable[[Instance], Awaitable[None]]
    stop_instance: Callable[[Instance, str], Awaitable[bool]]


class NoHooks:
    """Hooks that do nothing: a scheduler with no trigger engine or dispatcher (tools, benchmarks)."""

    def wake_triggers(self) -> None:
        return None

    async def instance_created(self, instance: Instance) -> None:
        return None

    async def stop_instance(self, instance: Instance, reason: str) -> bool:
        return False


def hand_over_each(instance_created: Callable[[Instance], Awaitable[None]]) -> OnCreated:
    """An ``OnCreated`` that hands the instances over one by one (to the dispatcher)."""

    async def hand_over(instances: list[Instance]) -> None:
        for instance in instances:
            await instance_created(instance)

    return hand_over
