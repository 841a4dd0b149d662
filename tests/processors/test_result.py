"""ProcessResult, hook return conversion and the result limit."""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from sx.processors import (
    RESULT_LIMIT_BYTES,
    InstanceStatus,
    JobContext,
    ProcessResult,
    ResultTooLargeError,
    invoke,
)
from sx.processors._result import shorten_head, shorten_tail, to_result


class Summary(BaseModel):
    rows: int


@pytest.fixture
async def executor() -> AsyncIterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


def test_constructors() -> None:
    assert ProcessResult.success() == ProcessResult(InstanceStatus.SUCCESS, "")
    assert ProcessResult.failure("why").status is InstanceStatus.FAILED
    assert ProcessResult.success("x").ok and not ProcessResult.failure("x").ok
    with pytest.raises(ValueError, match="SUCCESS or FAILED"):
        ProcessResult(InstanceStatus.RUNNING)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ProcessResult.success()),
        ("text", ProcessResult.success("text")),
        (ProcessResult.failure("no"), ProcessResult.failure("no")),
        (42, ProcessResult.success("42")),
        ({"a": [1, "é"]}, ProcessResult.success('{"a":[1,"é"]}')),
        (True, ProcessResult.success("true")),
        (Summary(rows=3), ProcessResult.success('{"rows":3}')),
    ],
)
def test_return_values_become_results(value: object, expected: ProcessResult) -> None:
    assert to_result(value) == expected


def test_limit_is_in_bytes_and_never_cut() -> None:
    ProcessResult.success("x" * RESULT_LIMIT_BYTES)
    with pytest.raises(ResultTooLargeError, match="1002 bytes, over the 1000-byte limit"):
        ProcessResult.success("é" * 501)
    with pytest.raises(ResultTooLargeError):
        to_result(list(range(1000)))
    with pytest.raises(TypeError, match="not JSON-able"):
        to_result(object())


async def test_invoker_turns_problems_into_failed_results(executor: concurrent.futures.Executor) -> None:
    ctx = JobContext()

    def too_big(c: JobContext) -> str:
        return "y" * 2000

    result = await invoke(too_big, ctx, executor=executor)
    assert result.status is InstanceStatus.FAILED
    assert "2000 bytes, over the 1000-byte limit" in result.result

    async def raises(c: JobContext) -> None:
        raise KeyError("missing")

    assert await invoke(raises, ctx, executor=executor) == ProcessResult.failure("KeyError: 'missing'")

    def long_error(c: JobContext) -> None:
        raise RuntimeError("z" * 5000)

    result = await invoke(long_error, ctx, executor=executor)
    assert result.status is InstanceStatus.FAILED
    assert result.result.startswith("RuntimeError: zzz") and result.result.endswith("(shortened)")
    assert len(result.result.encode()) <= RESULT_LIMIT_BYTES

    def odd(c: JobContext) -> object:
        return {1, 2}

    result = await invoke(odd, ctx, executor=executor)
    assert result.status is InstanceStatus.FAILED and result.result.startswith(
        "TypeError: a hook returned set"
    )


def test_shortening_helpers() -> None:
    assert shorten_head("short") == "short"
    head = shorten_head("é" * 600, 100)
    assert len(head.encode()) <= 100 and head.startswith("é") and head.endswith("(shortened)")
    tail = shorten_tail("a" * 50 + "END", 20)
    assert len(tail.encode()) <= 20 and tail.startswith("(shortened)") and tail.endswith("END")
