"""Tracing: with ``tracing = true`` an instance is one trace from the OpenAPI request through the
scheduler, over gRPC to its worker and to the workers running its subtasks, and back with its report;
without it, sx imports no OpenTelemetry of its own.

The traced run happens in a process of its own (``tests.e2e.tracing_probe``, an in-memory exporter):
the tracer provider is global to a process and cannot be unset.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, clean_env

pytestmark = pytest.mark.slow

Span = dict[str, Any]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
    pytest.importorskip("opentelemetry.instrumentation.asgi", reason="the otel extra is not installed")
    folder = tmp_path_factory.mktemp("traced")
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.tracing_probe", str(folder)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def one(spans: list[Span], name: str, instance_id: int) -> Span:
    (span,) = [s for s in spans if s["name"] == name and s["attributes"].get("sx.instance_id") == instance_id]
    return span


def children(spans: list[Span], parent: Span, name: str) -> list[Span]:
    return [s for s in spans if s["parent_id"] == parent["span_id"] and s["name"].startswith(name)]


def test_an_instance_is_one_trace_from_request_to_report(traced: dict[str, Any]) -> None:
    spans: list[Span] = traced["spans"]
    instance_id = traced["instance_ids"]["Plain"]
    create = one(spans, "sx.instance.create", instance_id)
    dispatch = one(spans, "sx.instance.dispatch", instance_id)
    run = one(spans, "sx.instance", instance_id)
    report = one(spans, "sx.instance.report", instance_id)
    # ExecuteJob's HTTP request span is the root.
    (request,) = [s for s in spans if s["span_id"] == create["parent_id"]]
    assert request["name"] == "POST /openapi/v1/job/execute" and request["parent_id"] is None
    assert dispatch["parent_id"] == create["span_id"]
    assert run["parent_id"] == dispatch["span_id"]  # across the gRPC stream, in the InstanceSpec
    assert report["parent_id"] == run["span_id"]  # back in the InstanceReport
    (hook,) = children(spans, run, "sx.hook process")
    assert hook["attributes"]["sx.processor"] == "metrics.plain"
    trace = {create["trace_id"]}
    assert {s["trace_id"] for s in (request, dispatch, run, report, hook)} == trace
    assert not any(s["error"] for s in (create, dispatch, run, report, hook))


def test_a_failure_marks_the_spans(traced: dict[str, Any]) -> None:
    spans: list[Span] = traced["spans"]
    instance_id = traced["instance_ids"]["Fails"]
    run = one(spans, "sx.instance", instance_id)
    (hook,) = children(spans, run, "sx.hook process")
    assert run["error"] and hook["error"]
    assert one(spans, "sx.instance.report", instance_id)["error"]


def test_subtasks_continue_their_masters_span_on_every_worker(traced: dict[str, Any]) -> None:
    from tests.e2e.metrics_jobs import SUBTASKS

    spans: list[Span] = traced["spans"]
    instance_id = traced["instance_ids"]["FansOut"]
    run = one(spans, "sx.instance", instance_id)
    tasks = children(spans, run, "sx.task ")
    assert sorted(s["name"] for s in tasks) == ["sx.task MAP_TASK_ROOT"] + ["sx.task parts"] * SUBTASKS
    for task in tasks:
        assert task["trace_id"] == run["trace_id"]
        assert len(children(spans, task, "sx.hook process")) == 1
    # StartTasks carried the master's span to the other worker too.
    master = run["attributes"]["sx.worker_id"]
    assert {s["attributes"]["sx.worker_id"] for s in tasks} == {
        master,
        *({"traced-1", "traced-2"} - {master}),
    }


def test_without_tracing_sx_imports_no_opentelemetry(tmp_path: Path) -> None:
    """FastAPI may import opentelemetry's API itself (its native telemetry); no sx module may, and the
    SDK is never loaded."""
    script = textwrap.dedent(
        """
        import importlib.abc, os, sys

        root = os.getcwd() + os.sep
        ours = []

        class Watch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    frame = sys._getframe(1)
                    while frame is not None and (
                        "importlib" in frame.f_code.co_filename or frame.f_code.co_filename.startswith("<")
                    ):
                        frame = frame.f_back
                    importer = frame.f_code.co_filename if frame is not None else ""
                    if importer.startswith(root) and os.sep + ".venv" + os.sep not in importer:
                        ours.append((name, importer))
                return None

        sys.meta_path.insert(0, Watch())
        import sx.worker, sx.scheduler, sx.cli
        from sx.scheduler import SchedulerServer, SchedulerSettings
        from sx.worker import Worker, WorkerSettings

        SchedulerServer(SchedulerSettings(data_dir=sys.argv[1]))
        Worker(WorkerSettings(server="127.0.0.1:1"))
        assert not ours, ours
        assert "opentelemetry.sdk" not in sys.modules
        assert "sx.protos._otel" not in sys.modules
        print("clean")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "clean", done.stderr[-3000:]


def test_only_the_otel_module_imports_opentelemetry() -> None:
    """The runtime check above sees first imports only (FastAPI may have loaded the API already)."""
    importers = set()
    for folder in ("processors", "protos", "scheduler", "worker", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(name.split(".")[0] == "opentelemetry" for name in names):
                    importers.add(str(path.relative_to(ROOT)))
    assert importers == {"protos/_otel.py"}
