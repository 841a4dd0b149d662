"""Runs jobs through a scheduler and two workers with tracing on, in this process, and prints every
finished span as one JSON list (``python -m tests.e2e.tracing_probe DATA_DIR``).

A process of its own: the OpenTelemetry tracer provider is global and cannot be unset, so the test
process never gets one.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sx.processors import Registry, use_registry
from sx.worker import Worker
from sx.worker.testing import LocalScheduler

JOBS = Registry()
with use_registry(JOBS):
    from tests.e2e import metrics_jobs


def as_dict(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "error": span.status.status_code.name == "ERROR",
    }


async def main(data_dir: Path) -> dict[str, Any]:
    async with LocalScheduler(
        data_dir, registry=JOBS, start_worker=False, scheduler_options={"tracing": True}
    ) as sched:
        first = Worker(sched.worker_settings(tracing=True, worker_id="traced-1"), registry=JOBS)
        second = Worker(
            sched.worker_settings(tracing=True, worker_id="traced-2", data_dir=data_dir / "w2"),
            registry=JOBS,
        )
        async with first, second:
            await asyncio.wait_for(first.connected.wait(), 30)
            await asyncio.wait_for(second.connected.wait(), 30)
            ids = {}
            for target in (metrics_jobs.Plain, metrics_jobs.Fails, metrics_jobs.FansOut):
                ids[target.__name__] = (await sched.run_job(target)).instance_id
    return {"instance_ids": ids}


if __name__ == "__main__":
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    ran = asyncio.run(main(Path(sys.argv[1])))
    provider.shutdown()
    json.dump({**ran, "spans": [as_dict(span) for span in exporter.get_finished_spans()]}, sys.stdout)
