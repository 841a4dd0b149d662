"""The sx worker runtime: ``Worker`` connects to a scheduler and runs the instances it submits;
``OpenApiClient`` talks to the scheduler's OpenAPI, and ``sync_definitions`` registers the code's jobs.

settings = WorkerSettings.load(Path("worker.toml"), server="127.0.0.1:7070")
async with Worker(settings):
    ...
"""

import os

# Workers fork only to exec scripts, and uvloop forks with gRPC's fork handlers armed: those handlers
# (made for fork without exec) crashed such a child when another thread was inside gRPC. They stay off
# unless the environment asks for them; gRPC reads this when it is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from sx.worker._addresses import SchedulerAddress
from sx.worker._connection import WorkerRejected
from sx.worker._settings import WorkerSettings
from sx.worker._worker import Worker
from sx.worker.openapi import (
    OpenApiClient,
    OpenApiError,
    SyncOpenApiClient,
    SyncOptions,
    SyncResult,
    sync_definitions,
)

__all__ = [
    "OpenApiClient",
    "OpenApiError",
    "SchedulerAddress",
    "SyncOpenApiClient",
    "SyncOptions",
    "SyncResult",
    "Worker",
    "WorkerRejected",
    "WorkerSettings",
    "sync_definitions",
]
