"""The processor base classes. Every hook may be written as ``def`` or ``async def``.

A hook returns a ``ProcessResult``, ``None`` (success), a ``str`` (the result text) or another
JSON-able value (its JSON is the result); raising fails the task with ``"ExceptionType: message"``.
Sync hooks run in worker threads, async hooks on the worker's event loop.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import ClassVar

from sx.processors._context import JobContext

__all__ = [
    "BroadcastProcessor",
    "MapProcessor",
    "MapReduceProcessor",
    "Processor",
    "ProcessorKind",
    "kind_of",
]


class ProcessorKind(enum.Enum):
    """Which base class a processor derives from; it decides the hooks the worker calls."""

    PROCESSOR = "processor"
    BROADCAST = "broadcast"
    MAP = "map"
    MAP_REDUCE = "map_reduce"

    @property
    def is_map(self) -> bool:
        return self in (ProcessorKind.MAP, ProcessorKind.MAP_REDUCE)


class Processor(ABC):
    """A job's code: ``process`` runs once per instance (or once per worker in broadcast mode).

    Override ``kill`` to react when a running instance is stopped; stopping is cooperative, so long
    hooks should also poll ``ctx.is_cancelled`` or call ``ctx.check_cancelled()``.
    """

    @abstractmethod
    def process(self, ctx: JobContext) -> object:
        """Do the work of one task."""

    def kill(self, ctx: JobContext) -> object:
        """Called when the running instance is stopped; the default does nothing."""
        return None


class BroadcastProcessor(Processor):
    """Runs ``process`` on every worker of the group, with ``pre_process`` and ``post_process`` once each.

    ``pre_process`` runs on the master worker before any worker starts; if it fails, nothing is
    dispatched and the instance fails. ``post_process`` runs on the master after every worker finished
    and sees ``ctx.task_results`` and ``ctx.task_statuses`` keyed by the workers' sharding ids; a FAILED
    return fails the instance and a non-empty result becomes the instance result.
    """

    def pre_process(self, ctx: JobContext) -> object:
        """Prepare the run, once, on the master worker; the default does nothing."""
        return None

    def post_process(self, ctx: JobContext) -> object:
        """Sum up the run, once, on the master worker; the default does nothing."""
        return None


class MapProcessor(Processor):
    """A map job: ``process`` runs for the root task and for every subtask mapped with ``ctx.map``.

    Branch on ``ctx.is_root_task`` / ``ctx.task_name``; ``ctx.task`` is the decoded subtask value.
    """


class MapReduceProcessor(MapProcessor):
    """A map job with a final ``reduce`` that sees every task's result.

    ``reduce`` runs once, on the master, after all tasks finished, with ``ctx.task_results`` and
    ``ctx.task_statuses`` for every task (the root included). Its FAILED return fails the instance and a
    non-empty result becomes the instance result.

    ``reduce_on_failure`` defaults to True: ``reduce`` still runs when some tasks failed. It receives
    every status, so it can report which tasks failed and release what the run set up, and the
    instance stays FAILED whatever reduce returns. Set it to False (class attribute or the
    ``@processor(reduce_on_failure=False)`` keyword) when reduce only makes sense on complete data.
    """

    reduce_on_failure: ClassVar[bool] = True

    @abstractmethod
    def reduce(self, ctx: JobContext) -> object:
        """Combine the results of all tasks."""


def kind_of(cls: type) -> ProcessorKind | None:
    """The kind of a processor class, or None when it derives from none of the base classes."""
    if not isinstance(cls, type):
        return None
    if issubclass(cls, MapReduceProcessor):
        return ProcessorKind.MAP_REDUCE
    if issubclass(cls, MapProcessor):
        return ProcessorKind.MAP
    if issubclass(cls, BroadcastProcessor):
        return ProcessorKind.BROADCAST
    if issubclass(cls, Processor):
        return ProcessorKind.PROCESSOR
    return None
