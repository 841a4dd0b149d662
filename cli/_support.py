"""What every ``sx-worker`` subcommand shares: exit codes, errors, the event loop, imports, signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from enum import IntEnum
from typing import Any, NoReturn, TypeVar

import click

from sx.processors import SxError

__all__ = [
    "CliError",
    "ExitCode",
    "emit",
    "exit_process",
    "freeze_startup_objects",
    "import_targets",
    "install_signal_handlers",
    "run_async",
]

T = TypeVar("T")
log = logging.getLogger("sx.cli")


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    """Bad configuration or arguments, or a scheduler that cannot start as configured (e.g. another
    holds its SQLite file). ``check`` reports a bad configuration as FAILED: it exits 0/1."""
    REJECTED = 3
    """The scheduler refused this worker (wrong app key, unknown group), or an operator verb's access
    key."""
    UNREACHABLE = 4
    """The scheduler could not be reached."""
    NOT_FOUND = 5
    """An operator verb named a job, instance or workflow the scheduler does not have."""
    INTERRUPTED = 130


class CliError(click.ClickException):
    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        # click declares exit_code on the class; each error carries its own.
        setattr(self, "exit_code", int(code))  # noqa: B010


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run the CLI's coroutine on uvloop where the platform has it (no global policy is installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def exit_process(code: int) -> NoReturn:
    """Exit with ``code`` without waiting for threads still running a blocking hook.

    A blocking ``process`` deaf to its stop request keeps a pool thread busy past the shutdown grace;
    the interpreter would wait for it at exit, though the worker has already reported the instance
    (failed, "worker shut down") and deregistered. Leaving now is what the grace period promised."""
    deadline = time.monotonic() + 1.0  # idle pool threads are ending on their own meanwhile
    lingering = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    for thread in lingering:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    names = [t.name for t in lingering if t.is_alive()]
    if not names:
        raise SystemExit(code)
    log.warning("exiting with %d thread(s) still running a blocking hook: %s", len(names), names)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def import_targets(targets: Sequence[str]) -> None:
    """Import ``pkg.mod`` or ``pkg.mod:attr`` so their ``@processor`` classes register."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for target in targets:
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise CliError(f"cannot import {module_name!r} (from target {target!r}): {exc}") from exc
        except SxError as exc:
            raise CliError(f"{target}: {exc}") from exc
        if attr and not hasattr(module, attr):
            raise CliError(f"module {module_name!r} has no attribute {attr!r} (from target {target!r})")


async def _call(f: Callable[[], Awaitable[None]]) -> None:
    await f()


def freeze_startup_objects() -> None:
    """Move what start-up built, which lives as long as the process, out of the collector's full passes:
    they otherwise walk it all (100,000+ objects: 40-120 ms each) while the event loop waits, and a
    loaded process makes a full pass every second or two."""
    gc.collect()
    gc.freeze()


def install_signal_handlers(first: Callable[[], Awaitable[None]]) -> None:
    """First SIGTERM/SIGINT: graceful shutdown; a second one: exit at once."""
    loop = asyncio.get_running_loop()
    state = {"count": 0}
    tasks: set[asyncio.Task[None]] = set()  # held so the shutdown task is not garbage-collected

    def handle(signum: int) -> None:
        state["count"] += 1
        if state["count"] == 1:
            log.warning(
                "%s received: shutting down gracefully (again to exit at once)", signal.Signals(signum).name
            )
            task = loop.create_task(_call(first))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:
            log.warning("second signal: exiting now")
            os._exit(int(ExitCode.INTERRUPTED))

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, handle, sig)


def emit(output: str, payload: Any, text: Callable[[], None]) -> None:
    """Print ``payload`` as JSON for machines, or call ``text`` to print it for people."""
    if output == "json":
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        text()
