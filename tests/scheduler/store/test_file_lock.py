"""One scheduler per SQLite file: the OS lock an exclusive store holds, seen from other processes.

The holders here are real processes (a short Python program) so that SIGKILL is the real thing: the
kernel, not our code, must release the lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sx.scheduler.store import InUseError
from sx.scheduler.store.sql import SqlStore, sqlite_url
from sx.scheduler.store.sql._file_lock import FileLock

# Holds the lock on argv[1] (forking a child that lingers when argv[2] is "fork"), says so, then waits
# for its stdin to close.
_HOLDER = """
import os, sys
from pathlib import Path
from sx.scheduler.store.sql._file_lock import FileLock
FileLock(Path(sys.argv[1])).acquire()
child = os.fork() if sys.argv[2] == "fork" else -1
if child == 0:
    sys.stdin.read()
    os._exit(0)
print("locked", child, flush=True)
sys.stdin.read()
"""


class Holder:
    """A process holding the lock on ``database``; ``child`` is the pid of the child it forked, if any."""

    def __init__(self, database: Path, *, fork: bool = False) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(database), "fork" if fork else "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()  # the lock is held once this line is out
        assert line.startswith("locked "), f"the holder failed: {line!r}"
        child = int(line.split()[1])
        self.child = child if child > 0 else None

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def end(self) -> None:
        if self.popen.poll() is None:
            self.kill()
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.close()  # the forked child reads the same pipe: EOF ends it
        self.popen.stdout.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.end()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_another_process_is_refused_with_the_holders_pid_until_the_holder_is_killed(
    tmp_path: Path, holders: list[Holder]
) -> None:
    database = tmp_path / "scheduler.db"
    holder = Holder(database)
    holders.append(holder)
    lock = FileLock(database)
    with pytest.raises(InUseError) as refused:
        lock.acquire()
    assert refused.value.pid == holder.popen.pid
    assert refused.value.database == database
    assert f"the SQLite database {database} is in use by another scheduler (pid {holder.popen.pid}" in str(
        refused.value
    )
    assert "PostgreSQL" in str(refused.value)  # says how to run several

    holder.kill()
    lock.acquire()  # the kernel released the dead holder's lock; its stale name does not matter
    lock.release()


def test_a_child_the_holder_forked_does_not_keep_the_lock(tmp_path: Path, holders: list[Holder]) -> None:
    database = tmp_path / "scheduler.db"
    holder = Holder(database, fork=True)
    holders.append(holder)
    assert holder.child is not None
    holder.kill()
    assert _alive(holder.child)  # still reading the pipe the test holds open
    lock = FileLock(database)
    lock.acquire()
    lock.release()


def test_a_released_lock_is_free_and_names_no_one(tmp_path: Path) -> None:
    database = tmp_path / "scheduler.db"
    first, second = FileLock(database), FileLock(database)
    first.acquire()
    with pytest.raises(InUseError, match=rf"\(pid {os.getpid()} on "):  # in one process too
        second.acquire()
    first.release()
    assert first.path.read_text() == ""
    second.acquire()
    second.release()


async def test_a_second_exclusive_store_is_refused_on_sqlite_and_shared_on_postgresql(store_url: str) -> None:
    async with SqlStore(store_url, exclusive=True) as first:
        second = SqlStore(store_url, exclusive=True)
        if first.dialect == "postgresql":
            await second.start()  # replicas share PostgreSQL by design
            await second.close()
            return
        with pytest.raises(InUseError, match=rf"in use by another scheduler \(pid {os.getpid()} "):
            await second.start()
        # Not exclusive (``sx-worker keys``, say): it opens the file beside the scheduler.
        async with SqlStore(store_url) as other:
            assert not await other.has_access_keys()
    async with SqlStore(store_url, exclusive=True):  # closed: free again
        pass


async def test_every_spelling_of_one_file_is_one_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    database = data.resolve() / "scheduler.db"
    async with SqlStore(sqlite_url(data), exclusive=True):
        for url in (
            "sqlite:///data/scheduler.db",  # relative to the working directory
            "sqlite+aiosqlite:///link/scheduler.db",
            f"sqlite:///{tmp_path}/data/../data/scheduler.db",
            sqlite_url(Path("link")),
        ):
            with pytest.raises(InUseError) as refused:
                await SqlStore(url, exclusive=True).start()
            assert refused.value.database == database, url


async def test_an_in_memory_store_takes_no_lock() -> None:
    async with SqlStore("sqlite://", exclusive=True), SqlStore("sqlite://", exclusive=True):
        pass
