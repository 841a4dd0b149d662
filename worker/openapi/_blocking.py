"""``SyncOpenApiClient``: the OpenAPI client for code that is not async.

Each method of ``OpenApiClient`` is a ``_Blocking`` attribute with the same parameters and answer type,
run to completion on a private event loop in a background thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from sx.worker.openapi._client import OpenApiClient

__all__ = ["SyncOpenApiClient"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _Blocking(Generic[_P, _R]):
    """One OpenApiClient method as a SyncOpenApiClient attribute: the same parameters and answer type
    (so mypy checks blocking callers too), run to completion on the facade's loop."""

    def __init__(self, method: Callable[Concatenate[OpenApiClient, _P], Coroutine[Any, Any, _R]]) -> None:
        self.method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> _Blocking[_P, _R]: ...
    @overload
    def __get__(self, instance: SyncOpenApiClient, owner: type[Any]) -> Callable[_P, _R]: ...
    def __get__(
        self, instance: SyncOpenApiClient | None, owner: type[Any]
    ) -> _Blocking[_P, _R] | Callable[_P, _R]:
        if instance is None:
            return self
        method, facade = self.method, instance

        def blocking(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            return facade.run(method(facade.client, *args, **kwargs))

        blocking.__name__, blocking.__doc__ = method.__name__, method.__doc__
        return blocking


class SyncOpenApiClient:
    """The same client for code that is not async: each method of :class:`OpenApiClient` (except the
    async iterator ``iter_jobs``: use ``all_jobs``) is available under the same name and blocks until
    its answer. The calls run on a private event loop in a background thread, so this works inside
    and outside of a running loop.

        with SyncOpenApiClient(url, namespace="ns", group_id="g") as client:
            client.execute_job(job_id)
    """

    def __init__(self, base_url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sx-openapi-client", daemon=True)
        self._thread.start()
        self.client: OpenApiClient = self.run(self._make(base_url, options))
        """The async client the calls go through (use it only on this facade's loop)."""
        self._closed = False

    @staticmethod
    async def _make(base_url: str, options: dict[str, Any]) -> OpenApiClient:
        return OpenApiClient(base_url, **options)

    def run(self, coroutine: Coroutine[Any, Any, _R]) -> _R:
        """Run a coroutine on this facade's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    call = _Blocking(OpenApiClient.call)
    # jobs and instances
    create_job = _Blocking(OpenApiClient.create_job)
    get_job = _Blocking(OpenApiClient.get_job)
    update_job = _Blocking(OpenApiClient.update_job)
    delete_job = _Blocking(OpenApiClient.delete_job)
    enable_job = _Blocking(OpenApiClient.enable_job)
    disable_job = _Blocking(OpenApiClient.disable_job)
    execute_job = _Blocking(OpenApiClient.execute_job)
    stop_instance = _Blocking(OpenApiClient.stop_instance)
    get_instance_list = _Blocking(OpenApiClient.get_instance_list)
    get_instance = _Blocking(OpenApiClient.get_instance)
    list_jobs = _Blocking(OpenApiClient.list_jobs)
    all_jobs = _Blocking(OpenApiClient.all_jobs)
    find_job = _Blocking(OpenApiClient.find_job)
    list_instances = _Blocking(OpenApiClient.list_instances)
    list_instance_tasks = _Blocking(OpenApiClient.list_instance_tasks)
    retry_instance_tasks = _Blocking(OpenApiClient.retry_instance_tasks)
    # re-runs and backfills
    rerun_instance = _Blocking(OpenApiClient.rerun_instance)
    backfill_job = _Blocking(OpenApiClient.backfill_job)
    plan_backfill = _Blocking(OpenApiClient.plan_backfill)
    get_backfill = _Blocking(OpenApiClient.get_backfill)
    list_backfills = _Blocking(OpenApiClient.list_backfills)
    list_backfill_fires = _Blocking(OpenApiClient.list_backfill_fires)
    stop_backfill = _Blocking(OpenApiClient.stop_backfill)
    rerun_workflow_instance = _Blocking(OpenApiClient.rerun_workflow_instance)
    backfill_workflow = _Blocking(OpenApiClient.backfill_workflow)
    plan_workflow_backfill = _Blocking(OpenApiClient.plan_workflow_backfill)
    # workflows
    execute_workflow = _Blocking(OpenApiClient.execute_workflow)
    enable_workflow = _Blocking(OpenApiClient.enable_workflow)
    disable_workflow = _Blocking(OpenApiClient.disable_workflow)
    delete_workflow = _Blocking(OpenApiClient.delete_workflow)
    create_workflow = _Blocking(OpenApiClient.create_workflow)
    get_workflow = _Blocking(OpenApiClient.get_workflow)
    update_workflow = _Blocking(OpenApiClient.update_workflow)
    list_workflows = _Blocking(OpenApiClient.list_workflows)
    all_workflows = _Blocking(OpenApiClient.all_workflows)
    find_workflow = _Blocking(OpenApiClient.find_workflow)
    get_workflow_instance = _Blocking(OpenApiClient.get_workflow_instance)
    list_workflow_instances = _Blocking(OpenApiClient.list_workflow_instances)
    rerun_workflow_node = _Blocking(OpenApiClient.rerun_workflow_node)
    stop_workflow_instance = _Blocking(OpenApiClient.stop_workflow_instance)
    # workers and alarms
    list_workers = _Blocking(OpenApiClient.list_workers)
    list_alarms = _Blocking(OpenApiClient.list_alarms)
    get_instance_log = _Blocking(OpenApiClient.get_instance_log)
    # namespaces, groups, calendars, access keys
    create_namespace = _Blocking(OpenApiClient.create_namespace)
    list_namespaces = _Blocking(OpenApiClient.list_namespaces)
    create_group = _Blocking(OpenApiClient.create_group)
    get_group = _Blocking(OpenApiClient.get_group)
    list_groups = _Blocking(OpenApiClient.list_groups)
    ensure_group = _Blocking(OpenApiClient.ensure_group)
    put_calendar = _Blocking(OpenApiClient.put_calendar)
    get_calendar = _Blocking(OpenApiClient.get_calendar)
    list_calendars = _Blocking(OpenApiClient.list_calendars)
    create_access_key = _Blocking(OpenApiClient.create_access_key)
    list_access_keys = _Blocking(OpenApiClient.list_access_keys)
    delete_access_key = _Blocking(OpenApiClient.delete_access_key)
    health = _Blocking(OpenApiClient.health)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.run(self.client.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> SyncOpenApiClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
