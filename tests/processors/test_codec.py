"""Payload codecs: round trips, tags and refusals."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sx.processors import MAX_PAYLOAD_BYTES, JsonCodec, PayloadError, PickleCodec, codec_for


class Point(BaseModel):
    x: int
    y: int
    label: str = ""


class Outer:
    class Inner(BaseModel):
        value: float


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


# No deadline or speed check: a busy machine makes examples slow, which says nothing about the codec.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_json_round_trip(value: Any) -> None:
    codec = JsonCodec()
    assert codec.decode(codec.encode(value)) == value


def test_models_and_tags_round_trip() -> None:
    codec = codec_for("json")
    value = {"p": Point(x=1, y=2), "inner": [Outer.Inner(value=0.5)], "__sx__": "mine", "raw": b"\xff"}
    decoded = codec.decode(codec.encode(value))
    assert decoded == value
    assert isinstance(decoded["p"], Point)


def test_models_are_revalidated_on_decode() -> None:
    codec = JsonCodec()
    forged = b'{"__sx__":"model","type":"' + __name__.encode() + b':Point","data":{"x":"not a number","y":2}}'
    with pytest.raises(PayloadError, match="does not validate as"):
        codec.decode(forged)
    with pytest.raises(PayloadError, match="not a pydantic model"):
        codec.decode(b'{"__sx__":"model","type":"os:getcwd","data":{}}')
    with pytest.raises(PayloadError, match="cannot be imported"):
        codec.decode(b'{"__sx__":"model","type":"no_such_module_x:Thing","data":{}}')
    with pytest.raises(PayloadError, match="unknown tag"):
        codec.decode(b'{"__sx__":"weird"}')
    with pytest.raises(PayloadError, match="not valid JSON"):
        codec.decode(b"{nope")


def test_tuples_come_back_as_lists() -> None:
    codec = JsonCodec()
    assert codec.decode(codec.encode((1, (2, 3)))) == [1, [2, 3]]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1: "a"}, r"\$: dict key 1 is not a str"),
        ([float("nan")], r"\$\[0\]: nan cannot be carried"),
        ({"s": {1, 2}}, r"\$\.s: set is not JSON-compatible; .*codec='pickle'"),
    ],
)
def test_json_refuses_what_it_cannot_carry(value: Any, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        JsonCodec().encode(value)


def test_local_models_are_refused() -> None:
    class Local(BaseModel):
        a: int

    with pytest.raises(PayloadError, match="inside a function"):
        JsonCodec().encode(Local(a=1))


def test_pickle_round_trips_more() -> None:
    codec = codec_for("pickle")
    assert isinstance(codec, PickleCodec)
    value = {frozenset({1}): (1, 2), "set": {3}}
    assert codec.decode(codec.encode(value)) == value
    with pytest.raises(PayloadError, match="cannot pickle"):
        codec.encode(lambda: None)
    with pytest.raises(PayloadError, match="cannot be unpickled"):
        codec.decode(b"garbage")


def test_codec_for_unknown_name() -> None:
    with pytest.raises(ValueError, match="codec='yaml'"):
        codec_for("yaml")
    assert MAX_PAYLOAD_BYTES == 65536
