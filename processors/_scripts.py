"""Built-in processors for script jobs (jobType python, shell or go with a ``content`` script).

The script runs as a child process in its own process group, so stopping the job stops everything
the script started. It gets the job's parameters both as arguments (``$1`` job parameters, ``$2``
instance parameters) and as environment variables:

    SX_JOB_PARAMETERS  SX_INSTANCE_PARAMETERS  SX_JOB_ID  SX_INSTANCE_ID
    SX_SHARDING_ID     SX_SHARDING_NUM         SX_ATTEMPT

Exit status 0 is success. The result is the tail of stdout and stderr (merged), shortened to the
result limit with a note when it did not fit. With a log sink in the context (on a worker), each line
of that output also goes to the instance's online log (INFO) while the script runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import IO

from sx.processors._context import JobContext
from sx.processors._enums import JobType
from sx.processors._kinds import Processor
from sx.processors._result import RESULT_LIMIT_BYTES, ProcessResult, shorten_tail

__all__ = ["DEFAULT_KILL_GRACE", "ScriptProcessor", "script_processor_for"]

DEFAULT_KILL_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when a script is stopped."""

_KEEP_BYTES = 4 * RESULT_LIMIT_BYTES  # read from the end of the output; only the tail is reported


class ScriptProcessor(Processor):
    """Runs ``ctx.content`` with the interpreter of ``job_type`` (``python3``, ``bash`` or ``go run``).

    ``timeout`` (seconds) stops a script that runs longer; ``kill_grace`` is the wait between SIGTERM
    and SIGKILL. Stopping the instance (``ctx.cancel()`` or cancelling the task) stops the script's
    whole process group.
    """

    def __init__(
        self,
        job_type: JobType | str,
        *,
        timeout: float | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
    ) -> None:
        kind = JobType(job_type)
        if kind not in _SCRIPT_FILES:
            raise ValueError(f"job_type={job_type!r}: scripts run for python, shell or go jobs")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout={timeout!r}: must be positive seconds")
        if kill_grace < 0:
            raise ValueError(f"kill_grace={kill_grace!r}: must be zero or more seconds")
        self.job_type = kind
        self.timeout = timeout
        self.kill_grace = kill_grace

    async def process(self, ctx: JobContext) -> ProcessResult:
        if not ctx.content.strip():
            return ProcessResult.failure(f"{self.job_type.value} job {ctx.job_name!r} has no script content")
        with tempfile.TemporaryDirectory(prefix="sx-script-") as folder:
            script = Path(folder) / _SCRIPT_FILES[self.job_type]
            script.write_text(ctx.content, encoding="utf-8")
            command = [*_interpreter(self.job_type), str(script), ctx.job_parameters, ctx.instance_parameters]
            # Output goes to a file, not a pipe: a background child that keeps the output open then
            # cannot hold the job, and however much the script prints, only the tail is read.
            log = Path(folder) / "output.log"
            with log.open("wb") as sink:
                return await self._run(command, folder, sink, log, ctx)

    async def _run(
        self, command: list[str], cwd: str, sink: IO[bytes], log: Path, ctx: JobContext
    ) -> ProcessResult:
        env = {
            **os.environ,
            "SX_JOB_PARAMETERS": ctx.job_parameters,
            "SX_INSTANCE_PARAMETERS": ctx.instance_parameters,
            "SX_JOB_ID": str(ctx.job_id),
            "SX_INSTANCE_ID": str(ctx.instance_id),
            "SX_SHARDING_ID": str(ctx.sharding_id),
            "SX_SHARDING_NUM": str(ctx.sharding_num),
            "SX_ATTEMPT": str(ctx.attempt),
        }
        child = await asyncio.create_subprocess_exec(
            *command,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        exited = asyncio.create_task(child.wait())
        cancelled = asyncio.create_task(ctx.wait_cancelled())
        follower = _OutputFollower(log, ctx) if ctx.log_sink is not None else None
        following = asyncio.create_task(follower.follow()) if follower is not None else None
        try:
            done, _ = await asyncio.wait(
                {exited, cancelled}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if exited not in done:
                await _stop_group(child, self.kill_grace)
                reason = "killed" if cancelled in done else f"timed out after {self.timeout:g} s"
                return ProcessResult.failure(_report(f"{reason}; output: ", _tail(log)))
        except asyncio.CancelledError:
            await asyncio.shield(_stop_group(child, self.kill_grace))
            raise
        finally:
            cancelled.cancel()
            if not exited.done():
                exited.cancel()
            if following is not None and follower is not None:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
                follower.read(final=True)
        # The script ended; whatever it left running in its group ends with it.
        await _stop_group(child, self.kill_grace)
        code = exited.result()
        if code == 0:
            return ProcessResult.success(_report("", _tail(log)))
        return ProcessResult.failure(_report(f"exit code {code}; output: ", _tail(log)))


class _OutputFollower:
    """Sends the script's output file to ``ctx.log_sink`` line by line as it grows."""

    POLL = 0.2
    """Seconds between looks at the file."""

    def __init__(self, log: Path, ctx: JobContext) -> None:
        self._log = log
        self._ctx = ctx
        self._offset = 0
        self._partial = b""

    async def follow(self) -> None:
        while True:
            await asyncio.sleep(self.POLL)
            self.read()

    def read(self, *, final: bool = False) -> None:
        """Ship the whole lines written since the last read (at the end, the unfinished one too)."""
        sink = self._ctx.log_sink
        if sink is None:
            return
        with self._log.open("rb") as source:
            source.seek(self._offset)
            data = source.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            sink.write(self._ctx, logging.INFO, line.decode("utf-8", errors="replace").rstrip("\r"))


def _tail(log: Path) -> str:
    """The last bytes of the output file, enough to fill a result and to tell it was shortened."""
    with log.open("rb") as source:
        size = source.seek(0, os.SEEK_END)
        source.seek(max(0, size - _KEEP_BYTES))
        data = source.read()
    # More than a result's worth is kept, so a cut inside a character at the start never shows.
    return data.decode("utf-8", errors="replace")


def _report(prefix: str, output: str) -> str:
    room = RESULT_LIMIT_BYTES - len(prefix.encode("utf-8"))
    return prefix + shorten_tail(output, room)


async def _stop_group(child: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after ``grace`` seconds."""
    if not _signal_group(child.pid, signal.SIGTERM):
        await child.wait()
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while loop.time() < deadline and _group_alive(child.pid):
        if child.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), timeout=min(0.05, grace))
        else:
            await asyncio.sleep(0.05)
    _signal_group(child.pid, signal.SIGKILL)
    await child.wait()


def _signal_group(pgid: int, signum: signal.Signals) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


_SCRIPT_FILES = {JobType.PYTHON: "script.py", JobType.SHELL: "script.sh", JobType.GO: "main.go"}


def _interpreter(job_type: JobType) -> list[str]:
    if job_type is JobType.PYTHON:
        return [shutil.which("python3") or sys.executable]
    if job_type is JobType.SHELL:
        return [shutil.which("bash") or "/bin/sh"]
    go = shutil.which("go")
    if go is None:
        raise FileNotFoundError("go job: the `go` tool is not on PATH of this worker")
    return [go, "run"]


def script_processor_for(
    job_type: JobType | str, *, timeout: float | None = None, kill_grace: float = DEFAULT_KILL_GRACE
) -> ScriptProcessor:
    """The built-in processor for script jobs of ``job_type`` (python, shell or go)."""
    return ScriptProcessor(job_type, timeout=timeout, kill_grace=kill_grace)
