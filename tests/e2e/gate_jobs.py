"""A processor the failover test runs in a worker process: it runs until the test opens its gate, so the
instance is known to be running across whatever the test does to the schedulers meanwhile."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sx.processors import JobContext, Processor, processor


@processor(name="e2e.gate", max_attempt=0, max_concurrency=10)
class Gate(Processor):
    """Waits (in a worker thread) until the file named by the instance parameters exists, then names
    its attempt and process."""

    def process(self, ctx: JobContext) -> str:
        gate = Path(str(ctx.instance_parameters))
        while not gate.exists():
            time.sleep(0.02)
        return f"gate opened attempt={ctx.attempt} pid={os.getpid()}"
