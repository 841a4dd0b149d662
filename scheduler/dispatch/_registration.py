"""Worker registration: checking a Connect stream's register message and app key, sending the worker
on to the replica that dispatches its group, and the session and Registered reply of an accepted one."""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Any

import grpc

from sx.protos import new_nonce, registration_proof
from sx.protos.v1 import scheduler_pb2
from sx.scheduler._clock import Clock
from sx.scheduler.dispatch._ownership import GroupOwnership
from sx.scheduler.dispatch._registry import WorkerKey, WorkerSession
from sx.scheduler.dispatch._state import redirect_message
from sx.scheduler.store import AccessStore, Group

__all__ = ["WorkerRegistration"]


class WorkerRegistration:
    """Who may register on a Connect stream, and what an accepted worker is told."""

    def __init__(
        self,
        store: AccessStore,
        *,
        clock: Clock,
        heartbeat_interval: float,
        heartbeat_timeout: timedelta,
        scheduler_id: str,
        ownership: GroupOwnership,
    ) -> None:
        self._store = store
        self._ownership = ownership
        self._clock = clock
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._scheduler_id = scheduler_id

    @property
    def register_timeout(self) -> float:
        """Seconds a new stream has to send its register message."""
        return self._heartbeat_timeout.total_seconds()

    # Challenge-response: the worker proves the group's app key without sending it (sx.protos._auth).
    async def challenge(self, register: scheduler_pb2.Register, context: Any) -> scheduler_pb2.Challenge:
        """Abort the stream unless the register message is complete and names a group; otherwise the
        challenge (a fresh nonce) the worker must answer with a proof of the group's app key."""
        for name in ("namespace", "group_id", "worker_id", "address"):
            if not getattr(register, name):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"register.{name} is empty: every worker must send it"
                )
        if not register.client_nonce:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "register.client_nonce is empty: the worker predates challenge-response registration"
                " (upgrade it to this scheduler's version)",
            )
        await self._group_of(register, context)
        return scheduler_pb2.Challenge(server_nonce=new_nonce())

    async def authenticate(
        self,
        register: scheduler_pb2.Register,
        challenge: scheduler_pb2.Challenge,
        answer: scheduler_pb2.ChallengeAnswer,
        context: Any,
    ) -> None:
        """Abort the stream unless ``answer`` proves the group's app key for this register message and
        this challenge."""
        group = await self._group_of(register, context)
        where = f"group {register.group_id!r} in namespace {register.namespace!r}"
        if not answer.proof:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"app key for {where} is missing")
        expected = registration_proof(group.app_key, register, challenge.server_nonce)
        if not hmac.compare_digest(answer.proof, expected):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"app key for {where} is wrong")

    async def _group_of(self, register: scheduler_pb2.Register, context: Any) -> Group:
        group = await self._store.get_group(register.namespace, register.group_id)
        if group is None:
            where = f"group {register.group_id!r} in namespace {register.namespace!r}"
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{where} does not exist")
            raise AssertionError("abort raises")
        return group

    async def redirect(self, register: scheduler_pb2.Register) -> scheduler_pb2.SchedulerMessage | None:
        """None when this scheduler dispatches the worker's group (taking it now if it should and no
        replica holds it); else the Redirect to the replica that does."""
        group = (register.namespace, register.group_id)
        if await self._ownership.claim(group):
            return None
        address = self._ownership.owner_address(group)
        reason = f"group {register.group_id!r} of namespace {register.namespace!r} is dispatched by " + (
            address or "no scheduler yet"
        )
        return redirect_message(address, reason)

    def new_session(self, register: scheduler_pb2.Register) -> WorkerSession:
        now = self._clock.now()
        return WorkerSession(
            key=WorkerKey(register.namespace, register.group_id, register.worker_id),
            address=register.address,
            labels=dict(register.labels),
            processors=frozenset(register.processors),
            capacity=max(register.capacity, 0),
            version=register.version,
            connected_at=now,
            last_seen=now,
            takes_batches=register.takes_batches,
        )

    def registered_message(self, session: WorkerSession) -> scheduler_pb2.SchedulerMessage:
        return scheduler_pb2.SchedulerMessage(
            registered=scheduler_pb2.Registered(
                worker_id=session.worker_id,
                heartbeat_interval_ms=int(self._heartbeat_interval * 1000),
                heartbeat_timeout_ms=int(self._heartbeat_timeout.total_seconds() * 1000),
                scheduler_id=self._scheduler_id,
                takes_batches=True,
            )
        )
