"""Proofs that a caller knows its group's app key, without sending the key itself.

A *request proof* is ``<issued ms>.<nonce>.<hex HMAC-SHA256>``, keyed with the app key, over the call's
method, its subject (who calls about what, or which peer is called), a SHA-256 of the request, the issue
time and a random nonce. The receiver recomputes it with its own copy of the key, accepts it within
``PROOF_WINDOW`` seconds of its own clock, and accepts each nonce once (`ProofChecker`). So a captured
proof carries no other request, method or receiver, cannot be sent again, and is useless after the window.

A *registration proof* answers the scheduler's challenge on the Connect stream: an HMAC over the
scheduler's nonce, the worker's nonce and the worker's Register message. The key never travels, and a
recorded answer is worth nothing on another stream (its nonce differs).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import secrets
import time

from google.protobuf.message import Message

from sx.protos.v1 import scheduler_pb2

__all__ = [
    "NONCE_BYTES",
    "PEER_AUTH_HEADER",
    "PROOF_WINDOW",
    "REPLAY_MEMORY",
    "ProofChecker",
    "TaskRequest",
    "check_task_request",
    "make_proof",
    "new_nonce",
    "payload_digest",
    "peer_subject",
    "registration_proof",
    "sign_task_request",
    "task_caller_subject",
]

PEER_AUTH_HEADER = "x-sx-peer-auth"
"""The gRPC metadata key carrying the proof on every Peer call."""
PROOF_WINDOW = 30.0
"""Seconds a proof stays valid either side of the receiver's clock (tolerates modest clock skew)."""
REPLAY_MEMORY = 100_000
"""Nonces a `ProofChecker` remembers at most (each for at most two windows)."""
NONCE_BYTES = 16

_PROOF_LABEL = "sx-proof-2"
_REGISTER_LABEL = "sx-register-1"
_SCHEDULER_SERVICE = "/sx.v1.Scheduler/"


def new_nonce() -> bytes:
    """Fresh random bytes for a proof or a registration."""
    return secrets.token_bytes(NONCE_BYTES)


def _canonical(*parts: object) -> bytes:
    # JSON of a list: unambiguous whatever the fields contain (no separator can be smuggled in).
    return json.dumps(parts, separators=(",", ":"), ensure_ascii=True).encode()


def payload_digest(message: Message) -> str:
    """Hex SHA-256 of ``message`` serialized deterministically: what a proof binds a request to.

    Sender and receiver both serialize the message they hold, so the digest does not depend on how the
    bytes on the wire were laid out (equal messages, equal digests).
    """
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


def peer_subject(address: str) -> str:
    """The subject of a Peer call: the called worker's advertised ``host:port`` (a proof made for one
    worker is refused by the others)."""
    return _canonical("peer", address).decode()


def task_caller_subject(namespace: str, group_id: str, worker_id: str, instance_id: int) -> str:
    """The subject of a task-store call: who calls, about which instance."""
    return _canonical("tasks", namespace, group_id, worker_id, instance_id).decode()


def _mac(app_key: str, method: str, subject: str, digest: str, issued_ms: int, nonce: str) -> str:
    message = _canonical(_PROOF_LABEL, method, subject, digest, issued_ms, nonce)
    return hmac.new(app_key.encode(), message, hashlib.sha256).hexdigest()


def make_proof(app_key: str, *, method: str, subject: str, digest: str, now: float | None = None) -> str:
    """A proof, keyed with ``app_key``, of one call: its full ``method`` name, ``subject`` and request
    ``digest`` (`payload_digest`), issued at ``now`` (default: the current time) with a fresh nonce."""
    issued_ms = int((time.time() if now is None else now) * 1000)
    nonce = new_nonce().hex()
    return f"{issued_ms}.{nonce}.{_mac(app_key, method, subject, digest, issued_ms, nonce)}"


class ProofChecker:
    """Checks request proofs and accepts each one once.

    A nonce is remembered until its proof leaves the window. Memory is bounded by ``memory`` nonces:
    when that many are remembered, the soonest to expire is forgotten and proofs no newer than it are
    refused from then on, so a forgotten nonce can never be accepted again (under such load the window
    narrows instead of letting replays through). One event loop uses a checker (it holds no lock).
    """

    def __init__(self, *, window: float = PROOF_WINDOW, memory: int = REPLAY_MEMORY) -> None:
        if memory < 1:
            raise ValueError(f"memory={memory}: at least one nonce must be remembered")
        self._window = window
        self._memory = memory
        self._seen: set[str] = set()
        self._expiries: list[tuple[float, str]] = []
        # Proofs expiring at or before this may have had their nonce forgotten: refused.
        self._floor = float("-inf")

    def __len__(self) -> int:
        """Nonces remembered now."""
        return len(self._seen)

    def screen(self, proof: str, *, now: float | None = None) -> str | None:
        """What can be said before the request is read: None when ``proof`` is well formed and within
        the window, otherwise why not. `check` still decides."""
        parsed = self._parse(proof, time.time() if now is None else now)
        return parsed if isinstance(parsed, str) else None

    def check(
        self,
        app_key: str,
        proof: str,
        *,
        method: str,
        subject: str,
        digest: str,
        now: float | None = None,
    ) -> str | None:
        """None when ``proof`` is valid for this call under ``app_key`` and was never accepted before
        (it is then remembered); otherwise why it is refused."""
        current = time.time() if now is None else now
        parsed = self._parse(proof, current)
        if isinstance(parsed, str):
            return parsed
        issued_ms, nonce, mac = parsed
        expected = _mac(app_key, method, subject, digest, issued_ms, nonce)
        if not hmac.compare_digest(mac, expected):
            return "the app key proof does not match (a wrong app key, or a proof made for another call)"
        self._forget_expired(current)
        expiry = issued_ms / 1000 + self._window
        if expiry <= self._floor:
            return "the app key proof is too old to be told apart from a replay (too many calls at once)"
        if nonce in self._seen:
            return "the app key proof was used before (a replayed call)"
        self._seen.add(nonce)
        heapq.heappush(self._expiries, (expiry, nonce))
        while len(self._seen) > self._memory:
            self._drop_soonest()
        return None

    def _parse(self, proof: str, now: float) -> tuple[int, str, str] | str:
        if not proof:
            return "no proof of the app key was sent"
        parts = proof.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or not _is_hex(parts[1], NONCE_BYTES * 2):
            return "the app key proof is malformed"
        issued_text, nonce, mac = parts
        if not _is_hex(mac, 64):
            return "the app key proof is malformed"
        issued_ms = int(issued_text)
        if abs(now - issued_ms / 1000) > self._window:
            return f"the app key proof is outside the {self._window:.0f}s window (expired, or clocks differ)"
        return issued_ms, nonce, mac

    def _forget_expired(self, now: float) -> None:
        # A proof that expired is refused by the window check, so its nonce need not be kept.
        while self._expiries and self._expiries[0][0] < now:
            self._drop_soonest()

    def _drop_soonest(self) -> None:
        expiry, nonce = heapq.heappop(self._expiries)
        self._seen.discard(nonce)
        # Also covers the clock stepping back: what was forgotten stays refused.
        self._floor = max(self._floor, expiry)


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


TaskRequest = (
    scheduler_pb2.LoadTasksRequest
    | scheduler_pb2.CreateTasksRequest
    | scheduler_pb2.UpdateTasksRequest
    | scheduler_pb2.QueryTasksRequest
)
"""The task-store requests: each names its caller and instance."""


def _task_digest(request: TaskRequest) -> str:
    # The proof sits inside the request it signs: the digest is taken without it.
    caller = request.caller
    proof = caller.proof
    caller.proof = ""
    try:
        return payload_digest(request)
    finally:
        caller.proof = proof


def sign_task_request(app_key: str, rpc: str, request: TaskRequest, *, now: float | None = None) -> None:
    """Set ``request.caller.proof`` to a proof, for the task-store call ``rpc`` (``"LoadTasks"``, ...), of
    this exact request, issued at ``now`` (default: the current time); ``request.caller`` and
    ``instance_id`` must already be set, and nothing may change after."""
    caller = request.caller
    subject = task_caller_subject(caller.namespace, caller.group_id, caller.worker_id, request.instance_id)
    digest = _task_digest(request)
    method = _SCHEDULER_SERVICE + rpc
    caller.proof = make_proof(app_key, method=method, subject=subject, digest=digest, now=now)


def check_task_request(checker: ProofChecker, app_key: str, rpc: str, request: TaskRequest) -> str | None:
    """None when ``request.caller.proof`` proves ``app_key`` for this call of ``rpc`` (and was not used
    before); otherwise why not."""
    caller = request.caller
    subject = task_caller_subject(caller.namespace, caller.group_id, caller.worker_id, request.instance_id)
    return checker.check(
        app_key,
        caller.proof,
        method=_SCHEDULER_SERVICE + rpc,
        subject=subject,
        digest=_task_digest(request),
    )


def registration_proof(app_key: str, register: scheduler_pb2.Register, server_nonce: bytes) -> bytes:
    """The answer to the scheduler's challenge: an HMAC, keyed with ``app_key``, of both nonces, the
    worker's identity and its whole Register message (which carries its nonce)."""
    message = _canonical(
        _REGISTER_LABEL,
        server_nonce.hex(),
        register.client_nonce.hex(),
        register.namespace,
        register.group_id,
        register.worker_id,
        payload_digest(register),
    )
    return hmac.new(app_key.encode(), message, hashlib.sha256).digest()
