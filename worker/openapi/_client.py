"""A typed client of the scheduler's job OpenAPI: one method per endpoint, envelope unwrapped.

    async with OpenApiClient("http://127.0.0.1:8080", namespace="ns", group_id="g") as client:
        job_id = await client.create_job(spec, managed=True)
        info = await client.get_job(job_id)

``OpenApiClient`` composes the route families (``_jobs``, ``_instances``, ``_workflows``,
``_backfills``, ``_monitoring``, ``_namespaces``) over one transport (``_transport``: signing, retries,
envelope decoding; its docstring tells which calls are retried). ``SyncOpenApiClient`` (``_blocking``)
is the same client for code that is not async.
"""

from __future__ import annotations

from sx.worker.openapi._backfills import BackfillRoutes
from sx.worker.openapi._instances import InstanceRoutes
from sx.worker.openapi._jobs import JobRoutes
from sx.worker.openapi._monitoring import MonitoringRoutes
from sx.worker.openapi._namespaces import NamespaceRoutes
from sx.worker.openapi._transport import MAX_PAGE_SIZE
from sx.worker.openapi._workflows import WorkflowRoutes

__all__ = ["MAX_PAGE_SIZE", "OpenApiClient"]


class OpenApiClient(
    JobRoutes, InstanceRoutes, WorkflowRoutes, BackfillRoutes, MonitoringRoutes, NamespaceRoutes
):
    """Async client of one scheduler's OpenAPI, addressing one namespace and group.

    ``retries`` is how many times an idempotent call is repeated; ``backoff`` the first delay in
    seconds, doubled each time. ``transport`` replaces httpx's default (e.g. for a Unix socket).
    """
