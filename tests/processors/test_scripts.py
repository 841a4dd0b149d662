"""Script jobs: real shell and python children, parameters, output, exit codes and kills."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sx.processors import (
    RESULT_LIMIT_BYTES,
    InstanceStatus,
    JobContext,
    JobType,
    ProcessResult,
    ScriptProcessor,
    invoke,
    script_processor_for,
)


@pytest.fixture
async def executor() -> AsyncIterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


def _context(job_type: JobType, content: str, **fields: object) -> JobContext:
    return JobContext(job_type=job_type, content=content, job_id=11, instance_id=22, **fields)  # type: ignore[arg-type]


async def _eventually(check: Callable[[], bool], what: str, within: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_shell_gets_parameters_as_env_and_arguments() -> None:
    script = 'echo "args=$1|$2"\n'
    script += 'echo "env=$SX_JOB_PARAMETERS|$SX_INSTANCE_PARAMETERS|$SX_JOB_ID|$SX_INSTANCE_ID"\n'
    script += 'echo "shard=$SX_SHARDING_ID/$SX_SHARDING_NUM attempt=$SX_ATTEMPT" >&2\n'
    ctx = _context(
        JobType.SHELL,
        script,
        job_parameters="a b",
        instance_parameters="x",
        sharding_id=1,
        sharding_num=3,
        attempt=2,
    )
    result = await script_processor_for("shell").process(ctx)
    assert result == ProcessResult.success("args=a b|x\nenv=a b|x|11|22\nshard=1/3 attempt=2\n")


async def test_python_script() -> None:
    script = "import os, sys\nprint(sys.argv[1], os.environ['SX_JOB_PARAMETERS'])\n"
    result = await ScriptProcessor(JobType.PYTHON).process(
        _context(JobType.PYTHON, script, job_parameters="7")
    )
    assert result == ProcessResult.success("7 7\n")


async def test_non_zero_exit_fails_with_the_output() -> None:
    result = await ScriptProcessor("shell").process(_context(JobType.SHELL, "echo broken >&2\nexit 3\n"))
    assert result == ProcessResult.failure("exit code 3; output: broken\n")


async def test_long_output_keeps_the_tail() -> None:
    script = "for i in $(seq 1 5000); do echo line $i; done\n"
    result = await ScriptProcessor("shell").process(_context(JobType.SHELL, script))
    assert result.ok
    assert len(result.result.encode()) <= RESULT_LIMIT_BYTES
    assert result.result.startswith("(shortened)") and result.result.endswith("line 5000\n")


async def test_empty_content_fails() -> None:
    result = await ScriptProcessor("shell").process(_context(JobType.SHELL, "  "))
    assert result.status is InstanceStatus.FAILED and "no script content" in result.result


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="job_type"):
        ScriptProcessor(JobType.JAVA)
    with pytest.raises(ValueError, match="timeout=0"):
        ScriptProcessor("shell", timeout=0)


async def _start_sleepers(
    tmp_path: Path, processor: ScriptProcessor, ctx: JobContext, executor: concurrent.futures.Executor
) -> tuple[asyncio.Task[ProcessResult], list[int]]:
    pids = tmp_path / "pids"
    ctx.content = (
        f"sleep 100 &\necho $! > {pids}.tmp\necho $$ >> {pids}.tmp\nmv {pids}.tmp {pids}\nsleep 100\n"
    )
    running = asyncio.create_task(invoke(processor.process, ctx, executor=executor))
    await _eventually(pids.exists, "the script to start")
    numbers = [int(line) for line in pids.read_text().split()]
    assert all(_alive(pid) for pid in numbers)
    return running, numbers


async def test_cancelling_the_task_kills_the_process_group(
    tmp_path: Path, executor: concurrent.futures.Executor
) -> None:
    processor = ScriptProcessor("shell", kill_grace=5)
    running, pids = await _start_sleepers(tmp_path, processor, _context(JobType.SHELL, ""), executor)
    running.cancel()
    assert await running == ProcessResult.failure("killed")
    await _eventually(lambda: not any(_alive(pid) for pid in pids), "the children to die")


async def test_ctx_cancel_kills_the_process_group(
    tmp_path: Path, executor: concurrent.futures.Executor
) -> None:
    ctx = _context(JobType.SHELL, "")
    running, pids = await _start_sleepers(tmp_path, ScriptProcessor("shell"), ctx, executor)
    ctx.cancel()
    result = await running
    assert result.status is InstanceStatus.FAILED and result.result.startswith("killed")
    await _eventually(lambda: not any(_alive(pid) for pid in pids), "the children to die")


async def test_timeout_kills_even_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    script = f"trap '' TERM\ntouch {marker}\nwhile true; do sleep 0.05; done\n"
    # The timeout must end the script after it set its trap (the marker says it did): 3 s leaves a busy
    # machine time to start bash and get there.
    processor = ScriptProcessor("shell", timeout=3, kill_grace=0.2)
    result = await processor.process(_context(JobType.SHELL, script))
    assert marker.exists()
    assert result.status is InstanceStatus.FAILED and result.result.startswith("timed out after 3 s")


async def test_background_child_does_not_keep_the_job_open() -> None:
    result = await ScriptProcessor("shell", kill_grace=1).process(
        _context(JobType.SHELL, "sleep 100 &\necho done\n")
    )
    assert result == ProcessResult.success("done\n")


@pytest.mark.skipif(
    shutil.which("go") is None, reason="SKIPPED LOUDLY: `go` is not on PATH, go script jobs untested"
)
async def test_go_script() -> None:
    script = 'package main\nimport ("fmt"; "os")\nfunc main() { fmt.Println("go", os.Args[1]) }\n'
    result = await ScriptProcessor("go").process(_context(JobType.GO, script, job_parameters="p"))
    assert result == ProcessResult.success("go p\n")
