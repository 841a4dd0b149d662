"""Time to the first job: from starting ``sx-worker run`` (embedded scheduler, fresh data folder) until
the processor's ``process`` runs for the first time. Median of ``--runs`` runs per variant.

    .venv/bin/python bench/bench_first_job.py [--runs 5] [--variant cron] [--variant api]

Variants:

- ``cron``: the processor's job is ``cron("* * * * * ?")``; the first fire after start-up runs it (so
  up to one second of the figure is waiting for the next whole second).
- ``api``: an api job; the bench reads the OpenAPI address from the banner and calls ExecuteJob as
  soon as the worker says it registered.

Each run starts ``sx-worker run bench_first_job`` (this file, imported as a module for its
processor) and prints the time until the processor wrote its first timestamp; then the median.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sx.processors import JobContext, Processor, api, cron, processor

HERE = Path(__file__).resolve().parent
MARK_ENV = "BENCH_FIRST_MARK"
VARIANT_ENV = "BENCH_FIRST_VARIANT"


class _First(Processor):
    """Writes the time it first ran to ``$BENCH_FIRST_MARK``."""

    def process(self, ctx: JobContext) -> None:
        mark = Path(os.environ[MARK_ENV])
        if not mark.exists():
            mark.write_text(repr(time.time()))


# Imported by the worker process: which job this run serves comes from its environment, so the
# variants do not fire each other's jobs.
if __name__ != "__main__":
    if os.environ.get(VARIANT_ENV) == "api":
        processor(name="bench.first.api", schedule=api())(type("FirstApi", (_First,), {}))
    else:
        processor(name="bench.first.cron", schedule=cron("* * * * * ?"))(type("FirstCron", (_First,), {}))


def _run_once(variant: str, folder: Path) -> float:
    mark = folder / "mark"
    log = folder / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SX_")}
    env.update(PYTHONUNBUFFERED="1", **{MARK_ENV: str(mark), VARIANT_ENV: variant})
    args = [str(Path(sys.executable).parent / "sx-worker"), "run", "bench_first_job"]
    args += ["--data-dir", str(folder / "data"), "--http-port", "0", "--grpc-port", "0"]
    with log.open("wb") as sink:
        began = time.time()
        proc = subprocess.Popen(args, cwd=HERE, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        executed = False
        deadline = time.monotonic() + 60
        while not mark.exists() or not mark.read_text():
            if proc.poll() is not None:
                raise SystemExit(f"sx-worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the first job did not run within 60 s:\n{log.read_text()[-3000:]}")
            if variant == "api" and not executed:
                executed = _execute_when_registered(log.read_text(errors="replace"))
            time.sleep(0.002)
        return float(mark.read_text()) - began
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _execute_when_registered(output: str) -> bool:
    """ExecuteJob once the banner named the OpenAPI and the worker registered; True when sent."""
    found = re.search(r"OpenAPI\s+(http://[0-9.:]+)", output)
    if found is None or "registered with scheduler" not in output:
        return False
    from sx.worker import SyncOpenApiClient

    with SyncOpenApiClient(found.group(1), namespace="default", group_id="default") as client:
        job = client.find_job("bench.first.api")
        if job is None:
            return False  # not synced yet: the next look sends it
        client.execute_job(job.job_id)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--variant", action="append", choices=["cron", "api"])
    args = parser.parse_args()
    for variant in args.variant or ["cron", "api"]:
        times = []
        for n in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="sx-first-") as tmp:
                seconds = _run_once(variant, Path(tmp))
            times.append(seconds)
            print(f"{variant:5} run {n + 1}: {seconds:.3f} s", flush=True)
        print(
            f"{variant:5} median {statistics.median(times):.3f} s "
            f"(min {min(times):.3f}, max {max(times):.3f}, {args.runs} runs)",
            flush=True,
        )


if __name__ == "__main__":
    main()
