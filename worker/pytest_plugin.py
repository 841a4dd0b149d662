"""The pytest plugin: fixtures for testing processors, loaded by pytest wherever sx-worker is installed.

    from myservice.jobs import Nightly

    async def test_nightly_runs(local_scheduler):
        outcome = await local_scheduler.run_job(Nightly)
        assert outcome.ok

    @pytest.mark.sx_scheduler(manual_clock=True)
    async def test_nightly_fires_at_two(local_scheduler):
        await local_scheduler.job_id(Nightly)
        await local_scheduler.advance(24 * 3600)
        (run,) = await local_scheduler.wait_instances(Nightly, 1)

    def test_nightly_unit(run_processor):
        assert run_processor.sync(Nightly, job_parameters="x").ok

Fixtures:

- ``local_scheduler``: a started ``sx.worker.testing.LocalScheduler`` (a real scheduler and worker on
  loopback ports, SQLite under the test's ``tmp_path``), stopped after the test. The
  ``sx_scheduler(**options)`` marker passes keyword options to it (``manual_clock=True``,
  ``concurrency=...``, ...). It is async: it needs pytest-asyncio (or a plugin that runs async fixtures).
- ``run_processor``: ``sx.processors.testing.run_processor`` bound to the fixtures' registry:
  ``await run_processor(Cls, ...)`` in async tests, ``run_processor.sync(Cls, ...)`` in others.
- ``sx_registry``: the registry both serve, the default one; override it in a ``conftest.py`` to
  serve another.

The module imports nothing heavy at load time, so it costs nothing in test runs that do not use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from sx.processors import Processor, ProcessResult, Registry
    from sx.worker.testing import LocalScheduler

__all__ = ["MARKER", "ProcessorRunner", "local_scheduler", "run_processor", "sx_registry"]

MARKER = "sx_scheduler"
"""The marker whose keyword arguments configure the ``local_scheduler`` fixture."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(**options): keyword options of the local_scheduler fixture's LocalScheduler"
    )


class ProcessorRunner:
    """``run_processor`` with the fixtures' registry: awaitable, or ``.sync(...)`` outside a loop."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def __call__(self, cls_or_name: type[Processor] | str, **options: Any) -> ProcessResult:
        from sx.processors.testing import run_processor

        options.setdefault("registry", self.registry)
        return await run_processor(cls_or_name, **options)

    def sync(self, cls_or_name: type[Processor] | str, **options: Any) -> ProcessResult:
        from sx.processors.testing import run_processor_sync

        options.setdefault("registry", self.registry)
        return run_processor_sync(cls_or_name, **options)


@pytest.fixture
def sx_registry() -> Registry:
    """The registry ``local_scheduler``'s worker and ``run_processor`` serve; override to change it."""
    from sx.processors import default_registry

    return default_registry()


@pytest.fixture
def run_processor(sx_registry: Registry) -> ProcessorRunner:
    """Run one processor in this process, with no scheduler or network (see ``ProcessorRunner``)."""
    return ProcessorRunner(sx_registry)


_F = TypeVar("_F", bound=Callable[..., Any])


def _async_fixture(function: _F) -> _F:
    """A fixture of an async function: pytest_asyncio.fixture works in its strict mode and its auto mode
    alike; without pytest-asyncio, pytest itself says that an async fixture needs a plugin."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - depends on the user's environment
        return cast(_F, pytest.fixture(function))
    return cast(_F, pytest_asyncio.fixture(function))


@_async_fixture
async def local_scheduler(
    request: pytest.FixtureRequest, tmp_path: Path, sx_registry: Registry
) -> AsyncIterator[LocalScheduler]:
    """A started LocalScheduler for the test; the ``sx_scheduler`` marker gives its options."""
    from sx.worker.testing import LocalScheduler

    options: dict[str, Any] = {}
    # Closest marker last, so a test's own marker wins over its class's or module's.
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        if marker.args:
            raise pytest.UsageError(f"@pytest.mark.{MARKER} takes keyword options only, got {marker.args!r}")
        options.update(marker.kwargs)
    options.setdefault("registry", sx_registry)
    async with LocalScheduler(tmp_path / "sx-local-scheduler", **options) as sched:
        yield sched
