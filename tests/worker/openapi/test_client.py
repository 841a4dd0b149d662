"""The OpenAPI client against a real scheduler over HTTP: every kind of call, error mapping, retries,
signing. Also home of the live-scheduler helpers the sync tests share."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import date
from pathlib import Path
from typing import Any, assert_type
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from sx.processors import (
    Contact,
    ExecuteMode,
    JobSpec,
    JobType,
    MapOptions,
    MonitorOptions,
    api,
    cron,
    fixed_rate,
)
from sx.worker.openapi import (
    AuthError,
    ConflictError,
    InvalidRequestError,
    JobInfo,
    NotFoundError,
    OpenApiClient,
    OpenApiError,
    ServerError,
    SyncOpenApiClient,
    UnavailableError,
)

NS, GROUP = "ns1", "g1"

# -- live servers ----------------------------------------------------------------------------------


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1:0; yields its base URL."""
    server, task, url = await _serve(app)
    try:
        yield url
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def live_scheduler(tmp_path: Path) -> AsyncIterator[str]:
    """A real scheduler's OpenAPI; yields its base URL.

    The whole SchedulerServer when it starts; while parts of it are still missing, the OpenAPI app
    (create_app) over a SqlStore, with a real clock so signatures are checked against real time.
    """
    from sx.scheduler import SchedulerServer, SchedulerSettings

    try:
        server = SchedulerServer(SchedulerSettings(data_dir=tmp_path / "scheduler", http_port=0, grpc_port=0))
        await server.start()
    except Exception:
        server = None
    if server is not None:
        try:
            yield server.http_url
        finally:
            await server.stop()
        return
    from sx.scheduler import RealClock, SqlStore, sqlite_url
    from sx.scheduler.api import Authenticator, Services, create_app
    from sx.scheduler.jobs import JobService, NoHooks

    store = SqlStore(sqlite_url(tmp_path / "store"))
    await store.start()
    service = JobService(store, clock=RealClock(), default_tz=ZoneInfo("UTC"), hooks=NoHooks())
    try:
        async with served(
            create_app(Services.jobs_only(store, service), auth=Authenticator(store, clock=RealClock()))
        ) as url:
            yield url
    finally:
        await store.close()


@contextlib.contextmanager
def threaded_scheduler(tmp_path: Path) -> Iterator[str]:
    """live_scheduler on its own loop in a thread, for blocking callers (CLI tests)."""
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[str] = loop.create_future()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            async with live_scheduler(tmp_path) as url:
                ready.set_result(url)
                await stop.wait()
        except BaseException as exc:
            failure.append(exc)
            if not ready.done():
                ready.set_exception(exc)

    def target() -> None:
        loop.run_until_complete(main())

    thread = threading.Thread(target=target, name="test-scheduler", daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(_wait(ready), loop).result(timeout=60)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)
        loop.close()
    if failure:
        raise failure[0]


async def _wait(future: asyncio.Future[str]) -> str:
    return await future


def client_for(url: str, **options: Any) -> OpenApiClient:
    options.setdefault("namespace", NS)
    options.setdefault("group_id", GROUP)
    options.setdefault("backoff", 0.01)
    return OpenApiClient(url, **options)


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    async with live_scheduler(tmp_path) as base_url:
        async with client_for(base_url) as client:
            await client.ensure_group()
        yield base_url


@pytest.fixture
async def client(url: str) -> AsyncIterator[OpenApiClient]:
    async with client_for(url) as opened:
        yield opened


def full_spec(name: str = "full") -> JobSpec:
    """A job with a non-default value in every kind of field."""
    return JobSpec(
        name=name,
        description="every field set",
        job_type=JobType.PYTHON,
        class_name="app.jobs:Full",
        execute_mode=ExecuteMode.GRID,
        parameters="a=1",
        max_concurrency=3,
        max_attempt=2,
        attempt_interval=15,
        schedule=cron("0 30 2 * * ?"),
        data_offset=-3600,
        time_zone="Asia/Shanghai",
        misfire="skip",
        map=MapOptions(page_size=7, consumer_size=2, queue_size=99, dispatcher_size=3, task_max_attempt=4),
        monitor=MonitorOptions(
            timeout_enable=True,
            timeout=60,
            timeout_kill_enable=True,
            fail_enable=True,
            send_channel="webhook",
            contacts=(Contact(user_phone="123", user_name="ops"),),
        ),
    )


# -- jobs --------------------------------------------------------------------------------------------


async def test_round_trip_of_every_field(client: OpenApiClient) -> None:
    spec = full_spec()
    job_id = await client.create_job(spec, managed=True)
    info = await client.get_job(job_id)
    assert info.spec == spec
    assert (info.job_id, info.enabled, info.managed, info.status) == (job_id, True, True, 1)
    assert await client.find_job("full") == info
    assert await client.find_job("nope") is None


async def test_update_disable_enable_delete(client: OpenApiClient) -> None:
    job_id = await client.create_job(JobSpec(name="j", class_name="a:B"))
    await client.update_job(job_id, {"maxAttempt": 5, "timeType": 3, "timeExpression": "30"})
    info = await client.get_job(job_id)
    assert info.spec.max_attempt == 5 and info.spec.schedule == fixed_rate(30) and not info.managed
    await client.update_job(job_id, JobSpec(name="j", class_name="a:C"), managed=True)
    info = await client.get_job(job_id)
    assert info.spec == JobSpec(name="j", class_name="a:C") and info.managed
    await client.disable_job(job_id)
    assert not (await client.get_job(job_id)).enabled
    await client.enable_job(job_id)
    assert (await client.get_job(job_id)).enabled
    await client.delete_job(job_id)
    with pytest.raises(NotFoundError):
        await client.get_job(job_id)


async def test_list_jobs_pages_through_everything(client: OpenApiClient) -> None:
    ids = [await client.create_job(JobSpec(name=f"job-{i:02}", class_name="a:B")) for i in range(5)]
    page = await client.list_jobs(page_size=2)
    assert page.total == 5 and len(page.jobs) == 2
    assert [job.job_id for job in await client.all_jobs()] == ids
    assert [job.name async for job in client.iter_jobs(name_contains="-0")] == [
        f"job-{i:02}" for i in range(5)
    ]


async def test_execute_and_read_instances(client: OpenApiClient) -> None:
    job_id = await client.create_job(JobSpec(name="manual", class_name="a:B", max_concurrency=5))
    instance_id = await client.execute_job(job_id, "hello")
    detail = await client.get_instance(job_id, instance_id)
    assert (detail.instance_id, detail.job_id) == (instance_id, job_id)
    assert [d.instance_id for d in await client.get_instance_list(job_id)] == [instance_id]
    page = await client.list_instances(job_id)
    assert page.total == 1 and page.instances[0].instance_id == instance_id
    assert (await client.list_instances(job_id, statuses=[9])).total == 0


async def test_namespaces_groups_calendars(client: OpenApiClient) -> None:
    first = await client.ensure_group()
    assert await client.ensure_group() == first and first.app_key
    assert [g.group_id for g in await client.list_groups()] == [GROUP]
    assert NS in {n.namespace for n in await client.list_namespaces()}
    days = [date(2030, 1, 2), date(2030, 1, 1)]
    put = await client.put_calendar("work", days, description="d")
    assert put.days == (date(2030, 1, 1), date(2030, 1, 2))
    assert await client.get_calendar("work") == put
    assert [c.name for c in await client.list_calendars()] == ["work"]
    assert await client.health() == {"status": "ok"}


# -- errors --------------------------------------------------------------------------------------------


async def test_error_mapping(client: OpenApiClient, url: str) -> None:
    with pytest.raises(NotFoundError) as not_found:
        await client.get_job(999)
    assert not_found.value.code == 404 and not_found.value.http_status == 404
    assert not_found.value.request_id and not_found.value.field == "jobId"
    await client.create_job(JobSpec(name="dup", class_name="a:B"))
    with pytest.raises(ConflictError) as conflict:
        await client.create_job(JobSpec(name="dup", class_name="a:B"))
    assert conflict.value.code == 409 and "dup" in conflict.value.message
    job_id = (await client.find_job("dup") or pytest.fail("no job")).job_id
    with pytest.raises(InvalidRequestError) as invalid:
        await client.update_job(job_id, {"timeType": 1, "timeExpression": "not a cron"})
    assert invalid.value.field == "timeExpression" and invalid.value.code == 400
    with pytest.raises(NotFoundError) as workflow:
        await client.execute_workflow(1)
    assert "workflow" in workflow.value.message
    async with client_for(url, group_id="missing") as other:
        with pytest.raises(NotFoundError, match="missing"):
            await other.list_jobs()
    assert issubclass(NotFoundError, OpenApiError)


async def test_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        async with client_for(f"http://127.0.0.1:{port}", retries=2) as client:
            with pytest.raises(UnavailableError, match="cannot connect"):
                await client.get_group()


def _flaky_app(failures: int, *, body: str | None = None) -> tuple[Starlette, list[str]]:
    calls: list[str] = []

    async def endpoint(request: Request) -> Any:
        calls.append(request.url.path)
        if len(calls) <= failures:
            if body is not None:
                return PlainTextResponse(body, status_code=503)
            return JSONResponse(
                {"code": 500, "success": False, "message": "busy", "requestId": "r1", "data": None}, 503
            )
        data = {"namespace": NS, "groupId": GROUP, "appKey": "k" * 8, "description": ""}
        return JSONResponse({"code": 200, "success": True, "message": "", "requestId": "r2", "data": data})

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["POST"])])
    return app, calls


async def test_idempotent_calls_retry_on_5xx() -> None:
    app, calls = _flaky_app(2)
    async with served(app) as base_url, client_for(base_url, retries=3) as client:
        group = await client.get_group()
    assert group.app_key == "k" * 8 and len(calls) == 3


async def test_retries_give_up_with_the_last_error() -> None:
    app, calls = _flaky_app(10, body="<html>bad gateway</html>")
    async with served(app) as base_url, client_for(base_url, retries=2) as client:
        with pytest.raises(ServerError, match="not an OpenAPI answer") as caught:
            await client.get_group()
    assert caught.value.http_status == 503 and len(calls) == 3


async def test_creates_are_not_retried_on_5xx() -> None:
    app, calls = _flaky_app(1)
    async with served(app) as base_url, client_for(base_url, retries=3) as client:
        with pytest.raises(ServerError) as caught:
            await client.create_job(JobSpec(name="x", class_name="a:B"))
    assert caught.value.request_id == "r1" and caught.value.message == "busy" and len(calls) == 1


# -- signing -----------------------------------------------------------------------------------------


async def test_signed_client_works_and_unsigned_is_refused(client: OpenApiClient, url: str) -> None:
    key = await client.create_access_key()
    assert key.access_key_secret and key.namespace == NS
    with pytest.raises(AuthError) as refused:
        await client.list_jobs()
    assert refused.value.code == 401
    async with client_for(
        url, access_key_id=key.access_key_id, access_key_secret=key.access_key_secret
    ) as signed:
        job_id = await signed.create_job(JobSpec(name="signed", class_name="a:B"))
        assert (await signed.get_job(job_id)).name == "signed"
        assert [k.access_key_id for k in await signed.list_access_keys()] == [key.access_key_id]
        async with client_for(
            url,
            namespace="other",
            access_key_id=key.access_key_id,
            access_key_secret=key.access_key_secret,
        ) as elsewhere:
            with pytest.raises(AuthError) as forbidden:
                await elsewhere.list_jobs()
            assert forbidden.value.code == 403
    async with client_for(url, access_key_id=key.access_key_id, access_key_secret="wrong") as wrong:
        with pytest.raises(AuthError, match="Signature"):
            await wrong.list_jobs()


async def test_sync_facade(url: str) -> None:
    def use() -> tuple[int, str]:
        with SyncOpenApiClient(url, namespace=NS, group_id=GROUP) as blocking:
            job_id = blocking.create_job(JobSpec(name="blocking", class_name="a:B", schedule=api()))
            info = blocking.get_job(job_id)
            # Checked by mypy (scripts/typecheck.py): the facade keeps each method's answer type.
            assert_type(job_id, int)
            assert_type(info, JobInfo)
            assert_type(blocking.find_job("blocking"), JobInfo | None)
            with pytest.raises(NotFoundError):
                blocking.get_job(job_id + 1)
            return job_id, info.name

    job_id, name = await asyncio.to_thread(use)
    assert job_id > 0 and name == "blocking"


def test_sync_facade_has_every_method_with_its_signature() -> None:
    for name, method in inspect.getmembers(OpenApiClient):  # the route families are mixins
        if name.startswith("_") or name == "aclose" or not inspect.iscoroutinefunction(method):
            continue  # iter_jobs is an async generator: blocking callers use all_jobs
        blocking = getattr(SyncOpenApiClient, name, None)
        assert blocking is not None, f"SyncOpenApiClient lacks {name}"
        assert blocking.method is method and blocking.__doc__ == method.__doc__
    assert not hasattr(SyncOpenApiClient, "iter_jobs")


def test_bad_client_options() -> None:
    with pytest.raises(ValueError, match="base_url"):
        OpenApiClient("127.0.0.1:80", namespace=NS, group_id=GROUP)
    with pytest.raises(ValueError, match="together"):
        OpenApiClient("http://127.0.0.1:80", namespace=NS, group_id=GROUP, access_key_id="k")
