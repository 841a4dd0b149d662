"""The workers connected to this scheduler, per (namespace, group), and what each one is running.

A `WorkerSession` is one live control stream: what the worker declared when it registered, its last
heartbeat, the instances submitted to it, and the queue of messages waiting to be written to it. The
`WorkerRegistry` indexes sessions by group and picks a worker for an instance (round robin among the
workers that serve the processor and have room).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import NamedTuple

from sx.protos.v1 import scheduler_pb2

__all__ = ["Assignment", "CloseStream", "WorkerInfo", "WorkerKey", "WorkerRegistry", "WorkerSession"]


class WorkerKey(NamedTuple):
    """A worker's identity: one worker id may register in several groups, each on its own stream."""

    namespace: str
    group_id: str
    worker_id: str


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A snapshot of one live worker, as `Dispatcher.live_workers` reports it."""

    worker_id: str
    namespace: str
    group_id: str
    address: str
    """host:port of the worker's peer service."""
    labels: Mapping[str, str]
    processors: frozenset[str]
    capacity: int
    """Instances and subtasks it runs at once; 0 when it declared no limit."""
    version: str
    assigned: int
    """Instances this scheduler submitted to it that have not finished."""
    running: int
    """What its last heartbeat said it was running (instances and subtasks)."""
    cpu_load1: float
    rss_bytes: int
    connected_at: datetime
    last_seen: datetime
    """When its last message (a heartbeat or any other) arrived."""
    draining: bool = False
    """It deregistered (it is shutting down): it finishes what it runs but gets no new instances."""

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (the snapshot a group's owner publishes for the other replicas)."""
        return {
            **{name: getattr(self, name) for name in self.__slots__},
            "labels": dict(self.labels),
            "processors": sorted(self.processors),
            "connected_at": self.connected_at.isoformat(),
            "last_seen": self.last_seen.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> WorkerInfo:
        """The inverse of `to_json`."""
        fields = dict(data)
        labels = fields.pop("labels", {})
        processors = fields.pop("processors", [])
        connected_at = datetime.fromisoformat(str(fields.pop("connected_at")))
        last_seen = datetime.fromisoformat(str(fields.pop("last_seen")))
        assert isinstance(labels, dict) and isinstance(processors, list)
        return cls(
            **fields,  # type: ignore[arg-type]
            labels=MappingProxyType({str(k): str(v) for k, v in labels.items()}),
            processors=frozenset(str(p) for p in processors),
            connected_at=connected_at,
            last_seen=last_seen,
        )


@dataclass(slots=True)
class Assignment:
    """An instance submitted to a worker and not finished yet."""

    instance_id: int
    job_id: int
    accepted: bool = False
    """The worker accepted the submit (or reported the instance running)."""
    kill_reason: str | None = None
    """A kill was asked for; sent again if the worker reconnects still running the instance."""
    running_stored: bool = False
    """The store already says RUNNING on this worker, so a RUNNING report without progress adds nothing."""


@dataclass(frozen=True, slots=True)
class CloseStream:
    """Put on a session's outbox to end its stream with a status code and message."""

    code_name: str
    message: str


@dataclass(eq=False, slots=True)
class WorkerSession:
    """One registered worker stream (mutable; owned by the dispatcher)."""

    key: WorkerKey
    address: str
    labels: Mapping[str, str]
    processors: frozenset[str]
    capacity: int
    version: str
    connected_at: datetime
    last_seen: datetime
    running: int = 0
    cpu_load1: float = 0.0
    rss_bytes: int = 0
    accepting: bool = True
    """False once the worker deregistered: it gets no new instances."""
    takes_batches: bool = False
    """The worker reads ``SchedulerMessage.batch``: queued messages go to it together."""
    closed: bool = False
    assigned: dict[int, Assignment] = field(default_factory=dict)
    outbox: asyncio.Queue[scheduler_pb2.SchedulerMessage | CloseStream] = field(default_factory=asyncio.Queue)

    @property
    def worker_id(self) -> str:
        return self.key.worker_id

    @property
    def executor(self) -> str:
        """How the instance table shows where an instance runs."""
        return f"{self.key.worker_id}@{self.address}"

    def serves(self, processor: str) -> bool:
        """Whether it can run an instance of this processor; any worker runs script jobs ("")."""
        return not processor or processor in self.processors

    def has_room(self) -> bool:
        return self.capacity <= 0 or len(self.assigned) < self.capacity

    def send(self, message: scheduler_pb2.SchedulerMessage) -> None:
        """Queue a message for the stream (unbounded: control messages are few and never dropped)."""
        self.outbox.put_nowait(message)

    def close(self, code_name: str, message: str) -> None:
        """Ask the stream to end with this status (e.g. "UNAVAILABLE")."""
        self.closed = True
        self.outbox.put_nowait(CloseStream(code_name, message))

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            worker_id=self.key.worker_id,
            namespace=self.key.namespace,
            group_id=self.key.group_id,
            address=self.address,
            labels=MappingProxyType(dict(self.labels)),
            processors=self.processors,
            capacity=self.capacity,
            version=self.version,
            assigned=len(self.assigned),
            running=self.running,
            cpu_load1=self.cpu_load1,
            rss_bytes=self.rss_bytes,
            connected_at=self.connected_at,
            last_seen=self.last_seen,
            draining=not self.accepting,
        )


class WorkerRegistry:
    """Live worker sessions by key and by group, with round-robin selection."""

    def __init__(self) -> None:
        self._sessions: dict[WorkerKey, WorkerSession] = {}
        # Insertion-ordered per group so round robin walks workers in a stable order.
        self._groups: dict[tuple[str, str], dict[WorkerKey, WorkerSession]] = {}
        self._cursor: dict[tuple[str, str], int] = {}

    def add(self, session: WorkerSession) -> WorkerSession | None:
        """Register a session; returns the session it replaces (same key, an older stream), if any."""
        old = self._sessions.pop(session.key, None)
        group = self._groups.setdefault((session.key.namespace, session.key.group_id), {})
        group.pop(session.key, None)
        self._sessions[session.key] = session
        group[session.key] = session
        return old

    def remove(self, session: WorkerSession) -> bool:
        """Forget a session if it is still the current one for its key."""
        if self._sessions.get(session.key) is not session:
            return False
        del self._sessions[session.key]
        group_key = (session.key.namespace, session.key.group_id)
        group = self._groups.get(group_key, {})
        group.pop(session.key, None)
        if not group:
            self._groups.pop(group_key, None)
            self._cursor.pop(group_key, None)
        return True

    def get(self, key: WorkerKey) -> WorkerSession | None:
        return self._sessions.get(key)

    def sessions(self) -> Iterable[WorkerSession]:
        return list(self._sessions.values())

    def live(self, namespace: str, group_id: str) -> list[WorkerSession]:
        """Sessions of a group that take new instances, in registration order."""
        group = self._groups.get((namespace, group_id), {})
        return [s for s in group.values() if s.accepting and not s.closed]

    def connected(self, namespace: str, group_id: str) -> list[WorkerSession]:
        """Sessions of a group whose stream is open, draining ones included, in registration order."""
        group = self._groups.get((namespace, group_id), {})
        return [s for s in group.values() if not s.closed]

    def has_room(self, namespace: str, group_id: str) -> bool:
        """Whether a live worker of the group is below its capacity (for whichever processor)."""
        return any(s.has_room() for s in self.live(namespace, group_id))

    def eligible(self, namespace: str, group_id: str, processor: str) -> list[WorkerSession]:
        """Live sessions of a group that serve the processor, with or without room."""
        return [s for s in self.live(namespace, group_id) if s.serves(processor)]

    def pick(
        self,
        namespace: str,
        group_id: str,
        processor: str,
        *,
        exclude: frozenset[str] = frozenset(),
        only: frozenset[str] | None = None,
    ) -> WorkerSession | None:
        """The next worker, round robin, that serves the processor and is below its capacity (and is
        one of the worker ids ``only``, when given)."""
        candidates = self.live(namespace, group_id)
        if not candidates:
            return None
        group_key = (namespace, group_id)
        start = self._cursor.get(group_key, 0) % len(candidates)
        for offset in range(len(candidates)):
            index = (start + offset) % len(candidates)
            session = candidates[index]
            if session.worker_id in exclude or not session.serves(processor) or not session.has_room():
                continue
            if only is not None and session.worker_id not in only:
                continue
            self._cursor[group_key] = index + 1
            return session
        return None
