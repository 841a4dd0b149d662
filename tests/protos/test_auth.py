"""App-key proofs (pure functions and the replay memory, on explicit clocks)."""

from __future__ import annotations

import pytest

from sx.protos import (
    PROOF_WINDOW,
    ProofChecker,
    make_proof,
    new_nonce,
    payload_digest,
    peer_subject,
    registration_proof,
)
from sx.protos.v1 import peer_pb2, scheduler_pb2

KEY = "the-app-key"
T0 = 2_000_000_000.0
METHOD = "/sx.v1.Peer/StartTasks"
SUBJECT = peer_subject("10.0.0.1:7000")
DIGEST = payload_digest(peer_pb2.StartTasksRequest(master_address="10.0.0.2:7000"))


def proof(*, now: float = T0, key: str = KEY) -> str:
    return make_proof(key, method=METHOD, subject=SUBJECT, digest=DIGEST, now=now)


def check(
    checker: ProofChecker,
    given: str,
    *,
    now: float = T0,
    method: str = METHOD,
    subject: str = SUBJECT,
    digest: str = DIGEST,
) -> str | None:
    return checker.check(KEY, given, now=now, method=method, subject=subject, digest=digest)


def test_a_proof_is_accepted_once() -> None:
    checker = ProofChecker()
    given = proof()
    assert check(checker, given) is None
    assert check(checker, given, now=T0 + 1) == "the app key proof was used before (a replayed call)"
    # Two proofs of the same call differ (their nonces do), so a call can be made twice on purpose.
    assert check(checker, proof()) is None


@pytest.mark.parametrize(
    ("method", "subject", "digest"),
    [
        ("/sx.v1.Peer/KillInstance", SUBJECT, DIGEST),
        (METHOD, peer_subject("10.0.0.3:7000"), DIGEST),
        (METHOD, SUBJECT, payload_digest(peer_pb2.StartTasksRequest(master_address="10.6.6.6:7000"))),
    ],
    ids=["another-method", "another-peer", "another-request"],
)
def test_a_proof_covers_the_method_the_receiver_and_the_request(
    method: str, subject: str, digest: str
) -> None:
    checker = ProofChecker()
    why = check(checker, proof(), method=method, subject=subject, digest=digest)
    assert why is not None and why.startswith("the app key proof does not match")
    assert len(checker) == 0  # a refused proof is not remembered (it cannot use up the genuine one)


def test_a_wrong_key_does_not_match() -> None:
    why = check(ProofChecker(), proof(key="not-the-key"))
    assert why is not None and "does not match" in why


@pytest.mark.parametrize("skew", [PROOF_WINDOW + 0.5, -(PROOF_WINDOW + 0.5)], ids=["expired", "ahead"])
def test_a_proof_outside_the_window_is_refused(skew: float) -> None:
    why = check(ProofChecker(), proof(), now=T0 + skew)
    assert why == "the app key proof is outside the 30s window (expired, or clocks differ)"


def test_modest_clock_skew_is_tolerated() -> None:
    checker = ProofChecker()
    assert check(checker, proof(now=T0 - 20)) is None  # the sender's clock is behind
    assert check(checker, proof(now=T0 + 20)) is None  # or ahead


@pytest.mark.parametrize("given", ["", "123", "1.2.3", "x.00.ff", f"{int(T0 * 1000)}.{'0' * 32}.zz"])
def test_malformed_proofs_are_refused_before_the_request_is_read(given: str) -> None:
    checker = ProofChecker()
    assert checker.screen(given, now=T0) is not None
    assert check(checker, given) is not None


def test_nonces_are_forgotten_once_their_proof_expired() -> None:
    checker = ProofChecker()
    for second in range(5):
        assert check(checker, proof(now=T0 + second), now=T0 + second) is None
    assert len(checker) == 5
    assert check(checker, proof(now=T0 + 40), now=T0 + 40) is None
    assert len(checker) == 1


def test_memory_is_bounded_and_a_forgotten_nonce_stays_refused() -> None:
    checker = ProofChecker(memory=3)
    proofs = [proof(now=T0 + i) for i in range(5)]
    for given in proofs:
        assert check(checker, given, now=T0 + 5) is None
        assert len(checker) <= 3
    # The two oldest were forgotten to make room: replaying them is still refused, not accepted.
    for given in proofs:
        why = check(checker, given, now=T0 + 6)
        assert why is not None and ("used before" in why or "too old" in why)
    # Proofs newer than what was forgotten go through.
    assert check(checker, proof(now=T0 + 6), now=T0 + 6) is None


def test_a_clock_stepping_back_does_not_revive_a_forgotten_nonce() -> None:
    checker = ProofChecker()
    given = proof(now=T0)
    assert check(checker, given, now=T0) is None
    assert check(checker, proof(now=T0 + 40), now=T0 + 40) is None  # the first nonce is forgotten
    why = check(checker, given, now=T0 + 1)  # the receiver's clock went back
    assert why is not None and "too old" in why


def test_the_digest_does_not_depend_on_map_order() -> None:
    one = scheduler_pb2.Register(labels={"a": "1", "b": "2"})
    two = scheduler_pb2.Register(labels={"b": "2", "a": "1"})
    assert payload_digest(one) == payload_digest(two)
    assert payload_digest(one) != payload_digest(scheduler_pb2.Register(labels={"a": "1"}))


def test_a_registration_proof_is_bound_to_both_nonces_and_the_register() -> None:
    register = scheduler_pb2.Register(
        namespace="ns", group_id="g", worker_id="w1", address="h:1", client_nonce=new_nonce()
    )
    server_nonce = new_nonce()
    answer = registration_proof(KEY, register, server_nonce)
    assert KEY.encode() not in answer and len(answer) == 32
    assert registration_proof(KEY, register, server_nonce) == answer
    assert registration_proof(KEY, register, new_nonce()) != answer
    assert registration_proof("not-the-key", register, server_nonce) != answer
    other = scheduler_pb2.Register()
    other.CopyFrom(register)
    other.client_nonce = new_nonce()
    assert registration_proof(KEY, other, server_nonce) != answer
    other.CopyFrom(register)
    other.address = "h:2"
    assert registration_proof(KEY, other, server_nonce) != answer
