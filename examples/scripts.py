"""A shell script job: no Python class, the script itself is the job's content.

Script jobs are plain job definitions; the worker runs them with its built-in script processor.
"""

from __future__ import annotations

from sx.processors import JobSpec, JobType, fixed_rate

DISK_REPORT = JobSpec(
    name="examples.disk_report",
    description="Prints the free space of the worker's temp folder",
    job_type=JobType.SHELL,
    content='echo "report for ${1:-all}"\ndf -P "${TMPDIR:-/tmp}" | tail -n 1\n',
    parameters="nightly",
    schedule=fixed_rate(3600),
)

JOBS = (DISK_REPORT,)
"""The job definitions this module declares."""
