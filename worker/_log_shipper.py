"""Shipping the lines processors log to the scheduler, for the instances' online logs.

``LogShipper`` is the ``LogSink`` the worker gives every job context: ``ctx.logger`` lines, script
output and (with the job's ``captureLogs``) plain ``logging`` calls and ``print`` inside a hook land in
one bounded buffer, and a task on the loop sends them over the scheduler stream as ``LogBatch``
messages every ``interval`` seconds (at once while a whole batch waits), and all of an instance's lines
before its final report. Writing a line only appends to the buffer, so logging never waits for the
network. While the worker cannot ship (not registered, or its stream is backed up) the buffer keeps the
newest ``capacity`` lines: each line pushed out is counted for its instance, and the count travels as a
WARNING line "N lines dropped ..." ahead of that instance's next lines; on registering again the buffer
goes out before the re-sent reports.

Capturing is process-wide (one root logging handler, one ``sys.stdout`` wrapper, installed while any
shipper runs) and routed by the job context current where the call is made, so several workers in one
process each ship their own runs' lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from itertools import accumulate, repeat, starmap
from operator import itemgetter
from typing import Any, Protocol, TextIO

from sx.processors import ExecuteMode, JobContext, get_current_context
from sx.protos.v1 import scheduler_pb2

__all__ = ["DEFAULT_BUFFER_LINES", "LogShipper", "LogStream"]

log = logging.getLogger("sx.worker")

DEFAULT_BUFFER_LINES = 10_000
BATCH_LINES = 5_000
"""Lines per LogBatch message at most: few messages, so a busy worker's stream keeps up with what it logs
(the stream holds back lines once a few messages wait)."""
BATCH_TEXT = 1 << 19
"""Characters of messages per LogBatch at most (past the line that crosses it): at up to 4 bytes each in
UTF-8, a batch stays below gRPC's 4 MB message limit whatever the lines' length."""
SHIP_INTERVAL = 0.2
"""Seconds between shipping rounds: lines reach the scheduler this late at most while it is reachable."""
BUSY_INTERVAL = 0.01
"""Seconds between shipping rounds while a whole batch or more waits."""

# (time ms, instance id, job id, level, task id, task name, message): a tuple is the cheapest record.
_Line = tuple[int, int, int, int, int, str, str]
_MESSAGE = itemgetter(6)
# Module constants: looked up per line, a class attribute costs a dictionary lookup more.
_GRID, _BATCH, _PARALLEL = ExecuteMode.GRID, ExecuteMode.BATCH, ExecuteMode.PARALLEL
_time_ns = time.time_ns


class LogStream(Protocol):
    """Where batches go: the scheduler connection."""

    def can_send_logs(self, *, force: bool = False) -> bool:
        """Whether a batch sent now goes out (registered, and, unless ``force``, the stream keeps up)."""
        ...

    def send_logs(self, message: scheduler_pb2.WorkerMessage, *, force: bool = False) -> bool:
        """Send ``message`` (its ``log_batch``) when ``can_send_logs``; False (not sent) otherwise."""
        ...


class LogShipper:
    """A bounded buffer of log lines and the task that ships it (``run``; ``close`` ships what is left)."""

    def __init__(
        self,
        stream: Callable[[], LogStream | None],
        *,
        capacity: int = DEFAULT_BUFFER_LINES,
        interval: float = SHIP_INTERVAL,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"log_buffer_lines={capacity!r}: must be at least 1")
        self._stream = stream
        self._capacity = capacity
        self._interval = interval
        self._lines: deque[_Line] = deque()
        self._lock = threading.Lock()
        self._dropped: dict[int, tuple[int, int]] = {}
        """instance id -> (job id, lines of it pushed out of the full buffer and not yet reported)."""
        self.dropped_total = 0
        """Lines dropped since the start (they were reported as "N lines dropped" lines)."""
        self._task: asyncio.Task[None] | None = None

    # -- the LogSink side (any thread) ---------------------------------------------------------------

    def write(self, ctx: JobContext, level: int, message: str) -> None:
        mode = ctx.execute_mode  # identity tests: an Enum's hash is computed in Python, per line
        if mode is _GRID or mode is _BATCH or mode is _PARALLEL:
            line = (_time_ns() // 1_000_000, ctx.instance_id, ctx.job_id, level, ctx.task_id,
                    ctx.task_name, message)  # fmt: skip
        else:
            line = (_time_ns() // 1_000_000, ctx.instance_id, ctx.job_id, level, 0, "", message)
        lines = self._lines
        if len(lines) >= self._capacity:
            with self._lock:  # threads logging at once may overshoot by a line each: still bounded
                while len(lines) >= self._capacity:
                    oldest = lines.popleft()
                    _, count = self._dropped.get(oldest[1], (oldest[2], 0))
                    self._dropped[oldest[1]] = (oldest[2], count + 1)
                    self.dropped_total += 1
        lines.append(line)  # deque appends and pops are atomic: no lock on the common path

    def captures(self, ctx: JobContext) -> bool:
        return ctx.capture_logs

    @property
    def buffered(self) -> int:
        """Lines waiting to be shipped."""
        return len(self._lines)

    # -- shipping (the loop) -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            _capture.install()
            self._task = asyncio.create_task(self._run(), name="sx-log-shipper")

    async def _run(self) -> None:
        while True:
            # A full batch waiting goes out at once (the stream takes a few batches per turn).
            await asyncio.sleep(self._interval if len(self._lines) < BATCH_LINES else BUSY_INTERVAL)
            try:
                self.ship()
            except Exception:  # a bad line must not end shipping for good
                log.exception("shipping log lines failed")

    def ship(self, *, force: bool = False) -> int:
        """Send what is buffered, as far as the stream takes it now (with ``force``, whatever its
        backlog: before a final report, whose lines must not come after it); returns the batches sent."""
        sent = 0
        while self._lines or self._dropped:
            stream = self._stream()
            if stream is None or not stream.can_send_logs(force=force):
                break
            stream.send_logs(self._take(), force=force)  # it takes it: checked just above, same thread
            sent += 1
        return sent

    def drain(self) -> list[scheduler_pb2.LogBatch]:
        """Everything buffered, as batches (the connection sends them on registering)."""
        batches: list[scheduler_pb2.LogBatch] = []
        while self._lines or self._dropped:
            batches.append(self._take().log_batch)
        return batches

    def _take(self) -> scheduler_pb2.WorkerMessage:
        """The next batch, as the stream's message: the dropped counts, then up to BATCH_LINES lines
        (BATCH_TEXT of text), out of the buffer."""
        with self._lock:
            dropped, self._dropped = self._dropped, {}
            buffered = self._lines
            # Popped and measured by C loops (starmap, map): a Python loop per line cost as much as
            # logging the line.
            lines = list(starmap(buffered.popleft, repeat((), min(len(buffered), BATCH_LINES))))
            if sum(map(len, map(_MESSAGE, lines))) > BATCH_TEXT:  # long lines: up to the one crossing it
                keep = bisect_left(list(accumulate(map(len, map(_MESSAGE, lines)))), BATCH_TEXT) + 1
                buffered.extendleft(reversed(lines[keep:]))
                del lines[keep:]
        now = int(time.time() * 1000)
        notes = [(now, i, j, logging.WARNING, 0, "", _dropped_message(n)) for i, (j, n) in dropped.items()]
        message = scheduler_pb2.WorkerMessage()  # filled in place: wrapping a built batch would copy it
        _fill_batch(message.log_batch, notes + lines)
        return message

    async def close(self) -> None:
        """Stop the shipping task and send what the stream takes now."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        _capture.uninstall()
        self.ship()


def _dropped_message(count: int) -> str:
    return f"{count} lines dropped: the worker's log buffer was full while it could not ship them"


def _fill_batch(batch: scheduler_pb2.LogBatch, lines: list[_Line]) -> None:
    """The lines as the batch's columns; a column whose lines all hold the same value is sent once."""
    if not lines:
        return
    times, instances, jobs, levels, task_ids, task_names, messages = zip(*lines, strict=True)
    batch.times_ms.extend(times)
    batch.levels.extend(levels)
    batch.task_ids.extend(task_ids)
    batch.messages.extend(messages)
    # The common batch: one instance's lines, of one task name (sets: no Python code per line).
    if len(set(instances)) == 1:
        batch.instance_id = instances[0]
    else:
        batch.instance_ids.extend(instances)
    if len(set(jobs)) == 1:
        batch.job_id = jobs[0]
    else:
        batch.job_ids.extend(jobs)
    if len(set(task_names)) == 1:
        batch.task_name = task_names[0]
    else:
        batch.task_names.extend(task_names)


# -- capturing plain logging and print inside hooks ----------------------------------------------------


def _capturing_context() -> JobContext | None:
    ctx = get_current_context()
    if ctx is None or ctx.log_sink is None or not ctx.log_sink.captures(ctx):
        return None
    return ctx


class _CaptureHandler(logging.Handler):
    """Ships records logged inside a capturing job's hook (``ctx.logger`` lines are shipped already)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "sx.job":
            return
        ctx = _capturing_context()
        if ctx is None or ctx.log_sink is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            ctx.log_sink.write(ctx, record.levelno, message)
        except Exception:
            self.handleError(record)


class _CapturedStdout:
    """``sys.stdout`` while capturing: writes go through, and each whole line printed inside a
    capturing job's hook is shipped too (INFO)."""

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._partial: weakref.WeakKeyDictionary[JobContext, str] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        written = self._target.write(text)
        ctx = _capturing_context()
        if ctx is not None and ctx.log_sink is not None and text:
            with self._lock:
                pending = self._partial.pop(ctx, "") + text
                *whole, rest = pending.split("\n")
                if rest:
                    self._partial[ctx] = rest
            for line in whole:
                ctx.log_sink.write(ctx, logging.INFO, line)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class _Capture:
    """The process-wide capture hooks, installed while at least one shipper runs."""

    def __init__(self) -> None:
        self._users = 0
        self._handler = _CaptureHandler()
        self._stdout: _CapturedStdout | None = None

    def install(self) -> None:
        self._users += 1
        if self._users > 1:
            return
        logging.getLogger().addHandler(self._handler)
        self._stdout = _CapturedStdout(sys.stdout)
        sys.stdout = self._stdout

    def uninstall(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        logging.getLogger().removeHandler(self._handler)
        if self._stdout is not None and sys.stdout is self._stdout:
            sys.stdout = self._stdout._target
        self._stdout = None


_capture = _Capture()
