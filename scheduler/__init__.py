"""The sx scheduler: the OpenAPI over HTTP, the worker protocol over gRPC, triggers and workflows.

``SchedulerServer`` is the whole scheduler in one object (``sx-worker serve`` runs one; ``sx-worker
run`` embeds one when no server is given)::

    async with SchedulerServer(SchedulerSettings(http_port=0, grpc_port=0)) as server:
        print(server.http_url, server.grpc_address)

The subpackages, lowest first: ``store`` (records and the store interfaces, ``store.sql`` on SQLite or
PostgreSQL), ``jobs`` (job service, triggers, lifecycle, alarms) and ``dispatch`` (worker streams and
instance hand-over), ``workflows``, ``api`` (HTTP); ``_server`` wires them together.
"""

from sx.scheduler._clock import Clock, ManualClock, RealClock
from sx.scheduler._server import SchedulerServer, SchedulerStartError
from sx.scheduler._settings import SchedulerSettings
from sx.scheduler.store import Store
from sx.scheduler.store.sql import SqlStore, sqlite_url

__all__ = [
    "Clock",
    "ManualClock",
    "RealClock",
    "SchedulerServer",
    "SchedulerSettings",
    "SchedulerStartError",
    "SqlStore",
    "Store",
    "sqlite_url",
]
