"""Proofs that a caller knows its group's app key, without sending the key itself.

A proof is ``<unix seconds>.<hex HMAC-SHA256>`` of a *subject* (what the call is about: a peer method
name, or a task-store caller and instance) and the time, keyed with the app key. The receiver recomputes
it with its own copy of the key and accepts it within ``PROOF_WINDOW`` seconds of its own clock, so a
captured proof is only good for that subject and for a short while.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = [
    "PEER_AUTH_HEADER",
    "PROOF_WINDOW",
    "check_proof",
    "make_proof",
    "peer_subject",
    "task_caller_subject",
]

PEER_AUTH_HEADER = "x-sx-peer-auth"
"""The gRPC metadata key carrying the proof on every Peer call."""
PROOF_WINDOW = 300.0
"""Seconds a proof stays valid either side of the receiver's clock (tolerates clock skew)."""


def peer_subject(method: str) -> str:
    """The subject of a Peer call: its full method name (``/sx.v1.Peer/StartTasks``)."""
    return f"peer\n{method}"


def task_caller_subject(namespace: str, group_id: str, worker_id: str, instance_id: int) -> str:
    """The subject of a task-store call: who calls, about which instance."""
    return f"tasks\n{namespace}\n{group_id}\n{worker_id}\n{instance_id}"


def _mac(app_key: str, subject: str, issued: int) -> str:
    message = f"{subject}\n{issued}".encode()
    return hmac.new(app_key.encode(), message, hashlib.sha256).hexdigest()


def make_proof(app_key: str, subject: str, *, now: float | None = None) -> str:
    """A proof for ``subject`` keyed with ``app_key``, issued at ``now`` (default: the current time)."""
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_mac(app_key, subject, issued)}"


def check_proof(
    app_key: str, subject: str, proof: str, *, now: float | None = None, window: float = PROOF_WINDOW
) -> str | None:
    """None when ``proof`` is valid for ``subject`` under ``app_key``; otherwise why it is not."""
    if not proof:
        return "no proof of the app key was sent"
    issued_text, sep, mac = proof.partition(".")
    if not sep or not issued_text.isdigit():
        return "the app key proof is malformed"
    issued = int(issued_text)
    current = time.time() if now is None else now
    if abs(current - issued) > window:
        return f"the app key proof is outside the {window:.0f}s window (check the clocks)"
    if not hmac.compare_digest(mac.encode(), _mac(app_key, subject, issued).encode()):
        return "the app key proof does not match"
    return None
