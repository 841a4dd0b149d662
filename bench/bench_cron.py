"""Median time of one ``CronExpression.next_after`` call, in microseconds, for a few typical expressions.

    python bench/bench_cron.py [--runs 7] [--calls 20000]

Each run times ``calls`` successive searches (every call starts where the previous fire was, as the trigger
engine does); the report is the median over runs, with the spread.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

from sx.processors import CronExpression

_CASES: tuple[tuple[str, str], ...] = (
    ("0 0/5 * * * ?", "UTC"),
    ("0 0 2 * * ?", "Asia/Shanghai"),
    ("0 15 10 ? * MON-FRI", "America/New_York"),
    ("*/10 * 8-18 ? * 2-6", "Europe/Berlin"),
    ("0 0 12 LW * ?", "UTC"),
    ("0 0 0 ? * 6#3", "Europe/Berlin"),
    ("0 30 2 * * ?", "Europe/Berlin"),
    ("0 0 0 29 2 ?", "UTC"),
)


def _time_run(cron: CronExpression, tz: tzinfo, start: datetime, calls: int) -> float:
    cursor: datetime | None = start
    began = time.perf_counter()
    for _ in range(calls):
        assert cursor is not None
        cursor = cron.next_after(cursor, tz) or start
    return (time.perf_counter() - began) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    print(f"{'expression':<28} {'zone':<18} {'median µs':>10} {'min':>8} {'max':>8}")
    for expression, zone in _CASES:
        cron = CronExpression(expression)
        tz = ZoneInfo(zone)
        samples = [_time_run(cron, tz, start, args.calls) for _ in range(args.runs)]
        print(
            f"{expression:<28} {zone:<18} {statistics.median(samples):>10.2f} "
            f"{min(samples):>8.2f} {max(samples):>8.2f}"
        )


if __name__ == "__main__":
    main()
