"""The web console's routes over real HTTP, without a browser: a real scheduler (in-process, SQLite,
port 0) and httpx. Every page renders, actions need the CSRF token, sign-in is required once an access
key exists, and a key reaches its own namespace only. The browser tests are tests/e2e/test_console_browser.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sx.processors import InstanceStatus, JobSpec
from sx.scheduler import SchedulerServer, SchedulerSettings
from sx.scheduler.store import Job

NS, GROUP = "team", "apps"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SchedulerServer]:
    settings = SchedulerSettings(data_dir=tmp_path, http_port=0, grpc_port=0)
    async with SchedulerServer(settings) as started:
        await started.services.admin.create_namespace(NS)
        await started.services.admin.create_group(NS, GROUP)
        yield started


@pytest.fixture
async def http(server: SchedulerServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url + "/console", timeout=30) as client:
        yield client


async def make_job(server: SchedulerServer, name: str = "nightly", **fields: object) -> Job:
    spec = JobSpec.from_create_params({"name": name, "jobType": "python", "className": "x.y", "timeType": 100,
                                       **fields})  # fmt: skip
    return await server.services.jobs.create_job(NS, GROUP, spec)


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def test_every_page_renders(server: SchedulerServer, http: httpx.AsyncClient) -> None:
    job = await make_job(
        server, timeType=1, timeExpression="0 0 3 * * ?", alarmUrl="json://hook/secret-token"
    )
    instance = await server.services.jobs.execute_job(NS, GROUP, job.id, "p")
    jp = f"/jobs/{NS}/{GROUP}/{job.id}"
    pages = [
        "/",
        "/jobs",
        f"/jobs?ns={NS}&group={GROUP}&q=night",
        jp,
        f"{jp}/edit",
        f"{jp}/delete",
        f"{jp}/instances",
        f"{jp}/instances?status=1&status=5&since=2026-01-01T00:00&tz=-60",
        f"{jp}/instances?trigger=3&until=2099-01-01T00:00",
        "/instances",
        f"/instances?ns={NS}&group={GROUP}&status=1&trigger=3",
        f"{jp}/instances/{instance.id}",
        f"{jp}/instances/{instance.id}/live",
        f"{jp}/instances/{instance.id}/log?offset=0",
        "/workflows",
        "/workers",
        "/workers/live",
        "/alarms",
    ]
    for path in pages:
        response = await http.get(path)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
    overview = await http.get("/")
    assert "open: no access key (loopback only)" in overview.text
    assert "script-src 'self'" in overview.headers["content-security-policy"]
    assert re.search(r"waiting 1</a>", overview.text) and "No failed instance." in overview.text
    detail = await http.get(jp)
    assert detail.text.count("<time datetime=") >= 5  # the next five fire times
    assert "secret-token" not in detail.text and "(set; not shown)" in detail.text
    across = await http.get(f"/instances?ns={NS}&group={GROUP}&status=1&trigger=3")
    assert f"/instances/{instance.id}" in across.text and f"job {job.id}" in across.text
    other_trigger = await http.get(f"/instances?ns={NS}&group={GROUP}&trigger=1")
    assert "No instance matches these filters" in other_trigger.text
    later = await http.get(f"{jp}/instances?since=2099-01-01T00:00&tz=0")
    assert "No instance matches these filters" in later.text
    assert (await http.get("/static/htmx.min.js")).status_code == 200
    assert (await http.get("/static/htmx.LICENSE.txt")).status_code == 200


async def test_unknown_things_are_clear_errors(server: SchedulerServer, http: httpx.AsyncClient) -> None:
    missing = await http.get(f"/jobs/{NS}/{GROUP}/999")
    assert missing.status_code == 404 and "jobId=999: no such job" in missing.text
    wrong_status = await http.get(f"/jobs/{NS}/{GROUP}/{(await make_job(server)).id}/instances?status=7")
    assert wrong_status.status_code == 400 and "status" in wrong_status.text


async def test_the_jobs_list_pages_in_the_store(server: SchedulerServer, http: httpx.AsyncClient) -> None:
    for n in range(30):
        await make_job(server, f"job-{n:02d}")
    first = await http.get(f"/jobs?ns={NS}&group={GROUP}")
    assert "job-00" in first.text and "job-25" not in first.text and "page 1 of 2 (30 in all)" in first.text
    second = await http.get(f"/jobs?ns={NS}&group={GROUP}&page=2")
    assert "job-25" in second.text and "job-00" not in second.text
    # As htmx asks while the user types: only the table.
    as_htmx = {"HX-Request": "true", "HX-Target": "jobs-table"}
    fragment = await http.get(f"/jobs?ns={NS}&group={GROUP}&q=job-1", headers=as_htmx)
    assert fragment.text.lstrip().startswith('<div id="jobs-table">') and "job-10" in fragment.text
    assert "job-20" not in fragment.text
    await make_job(server, "nightly-cron", timeType=1, timeExpression="0 0 3 * * ?", executeMode="grid")
    await server.services.jobs.set_enabled(NS, GROUP, (await make_job(server, "off")).id, False)
    filtered = await http.get(f"/jobs?ns={NS}&group={GROUP}&timeType=1&mode=grid&state=enabled")
    assert "nightly-cron" in filtered.text and "1 in all" in filtered.text
    disabled = await http.get(f"/jobs?ns={NS}&group={GROUP}&state=disabled")
    assert ">off</a>" in disabled.text and "1 in all" in disabled.text
    none = await http.get(f"/jobs?ns={NS}&group={GROUP}&mode=batch")
    assert "matches these filters" in none.text
    bad = await http.get(f"/jobs?ns={NS}&group={GROUP}&mode=sideways")
    assert bad.status_code == 400 and "mode" in bad.text


async def test_actions_need_the_csrf_token(server: SchedulerServer, http: httpx.AsyncClient) -> None:
    job = await make_job(server)
    jp = f"/jobs/{NS}/{GROUP}/{job.id}"
    refused = await http.post(f"{jp}/disable", data={})
    assert refused.status_code == 403 and "security token" in refused.text
    forged = await http.post(f"{jp}/disable", data={"csrf": "guessed"})
    assert forged.status_code == 403
    assert (await server.services.jobs.get_job(NS, GROUP, job.id)).enabled

    token = csrf_of(await http.get(jp))
    done = await http.post(f"{jp}/disable", data={"csrf": token})
    assert done.status_code == 303 and done.headers["location"].startswith(f"/console{jp}?msg=")
    assert not (await server.services.jobs.get_job(NS, GROUP, job.id)).enabled
    # htmx sends the token as a header.
    again = await http.post(f"{jp}/enable", headers={"X-CSRF-Token": token})
    assert again.status_code == 303
    assert (await server.services.jobs.get_job(NS, GROUP, job.id)).enabled


async def test_execute_stop_rerun_edit_delete(server: SchedulerServer, http: httpx.AsyncClient) -> None:
    job = await make_job(server)
    jp = f"/jobs/{NS}/{GROUP}/{job.id}"
    token = csrf_of(await http.get(jp))
    executed = await http.post(f"{jp}/execute", data={"csrf": token, "instanceParameters": "a=1"})
    instance_id = int(executed.headers["location"].split("/instances/")[1].split("?")[0])
    instance = await server.services.jobs.get_instance(NS, GROUP, job.id, instance_id)
    assert instance.instance_parameters == "a=1"
    # No worker runs it: stopping fails it at once; then it can be re-run.
    stopped = await http.post(f"{jp}/instances/{instance_id}/stop", data={"csrf": token})
    assert stopped.status_code == 303
    instance = await server.services.jobs.get_instance(NS, GROUP, job.id, instance_id)
    assert instance.status == InstanceStatus.FAILED
    again = await http.post(f"{jp}/instances/{instance_id}/stop", data={"csrf": token})
    assert again.status_code == 409 and "already finished" in again.text
    rerun = await http.post(f"{jp}/instances/{instance_id}/rerun", data={"csrf": token})
    assert rerun.status_code == 303 and "re-run+as+instance" in rerun.headers["location"]

    bad = await http.post(f"{jp}/edit", data={"csrf": token, "maxConcurrency": "0"})
    assert bad.status_code == 400 and "maxConcurrency" in bad.text
    saved = await http.post(f"{jp}/edit", data={"csrf": token, "description": "new", "maxConcurrency": "4"})
    assert saved.status_code == 303
    edited = await server.services.jobs.get_job(NS, GROUP, job.id)
    assert (edited.spec.description, edited.spec.max_concurrency) == ("new", 4)

    unconfirmed = await http.post(f"{jp}/delete", data={"csrf": token, "confirm": "nope"})
    assert unconfirmed.status_code == 303 and "/delete?err=" in unconfirmed.headers["location"]
    deleted = await http.post(f"{jp}/delete", data={"csrf": token, "confirm": "nightly"})
    assert deleted.status_code == 303
    assert (await http.get(jp)).status_code == 404


async def test_sign_in_with_an_access_key(server: SchedulerServer, http: httpx.AsyncClient) -> None:
    job = await make_job(server)
    await server.services.admin.create_namespace("other")
    await server.services.admin.create_group("other", "elsewhere")
    own = await server.services.access_keys.create(NS)
    other = await server.services.access_keys.create("other")

    page = await http.get(f"/jobs?ns={NS}&group={GROUP}")
    assert page.status_code == 303 and page.headers["location"].startswith("/console/login?next=")
    # htmx polls are told to send the whole page to sign-in.
    polled = await http.get(f"/jobs/{NS}/{GROUP}/{job.id}", headers={"HX-Request": "true"})
    assert polled.status_code == 401 and polled.headers["HX-Redirect"] == "/console/login"
    login = await http.get("/login")
    token = csrf_of(login)
    wrong = await http.post("/login", data={"csrf": token, "accessKeyId": own.key_id, "accessKeySecret": "x"})
    assert wrong.status_code == 401 and "wrong secret" in wrong.text
    no_token = await http.post("/login", data={"accessKeyId": own.key_id, "accessKeySecret": own.secret})
    assert no_token.status_code == 403
    # A next= off the console is ignored.
    form = {
        "csrf": token,
        "accessKeyId": other.key_id,
        "accessKeySecret": other.secret,
        "next": "//evil.example/",
    }
    signed = await http.post("/login", data=form)
    assert signed.status_code == 303 and signed.headers["location"] == "/console/"
    overview = await http.get("/")
    assert "other" in overview.text and f"{NS}</code> / <code>{GROUP}" not in overview.text
    assert own.secret not in overview.text and other.secret not in overview.text

    foreign = await http.get(f"/jobs/{NS}/{GROUP}/{job.id}")
    assert foreign.status_code == 403 and "belongs to namespace" in foreign.text
    token = json.loads(re.search(r"hx-headers='([^']+)'", overview.text).group(1))["X-CSRF-Token"]  # type: ignore[union-attr]
    act = await http.post(f"/jobs/{NS}/{GROUP}/{job.id}/disable", data={"csrf": token})
    assert act.status_code == 403 and "belongs to namespace" in act.text
    assert (await server.services.jobs.get_job(NS, GROUP, job.id)).enabled

    # Deleting the key ends its sessions at once.
    await server.services.access_keys.delete(other.key_id)
    assert (await http.get("/")).status_code == 303


async def test_workflow_pages_and_actions(server: SchedulerServer, http: httpx.AsyncClient) -> None:
    first, second = await make_job(server, "extract"), await make_job(server, "load")
    assert server.services.workflows is not None
    workflow = await server.services.workflows.create_workflow(
        NS, GROUP, {"name": "etl", "edges": [[first.id, second.id]]}
    )
    wp = f"/workflows/{NS}/{GROUP}/{workflow.id}"
    listed = await http.get(f"/workflows?ns={NS}&group={GROUP}")
    assert f'href="/console{wp}">etl</a>' in listed.text
    page = await http.get(wp)
    assert page.text.count('data-status="not started"') == 2 and "No instance yet" in page.text
    token = csrf_of(page)
    assert (await http.post(f"{wp}/disable", data={"csrf": token})).status_code == 303
    assert not (await server.services.workflows.get_workflow(NS, GROUP, workflow.id)).enabled
    assert (await http.post(f"{wp}/enable", data={"csrf": token})).status_code == 303

    started = await http.post(f"{wp}/execute", data={"csrf": token, "instanceParameters": "day=1"})
    assert started.status_code == 303
    wf_instance_id = int(started.headers["location"].split("instance=")[1].split("&")[0])
    # No worker: the root node waits; the graph shows it, and htmx polls it with the instance list.
    live = await http.get(f"{wp}?instance={wf_instance_id}", headers={"HX-Request": "true"})
    assert 'data-status="waiting"' in live.text and 'id="wf-runs" hx-swap-oob="true"' in live.text
    stopped = await http.post(f"{wp}/instances/{wf_instance_id}/stop", data={"csrf": token})
    assert stopped.status_code == 303
    after = await http.get(f"{wp}?instance={wf_instance_id}")
    assert 'id="wf-status" class="status st-failed"' in after.text
    # The stopped root failed: it can be re-run (the workflow instance runs again from it).
    assert f'name="jobId" value="{first.id}"' in after.text
    rerun = await http.post(
        f"{wp}/instances/{wf_instance_id}/rerun-node", data={"csrf": token, "jobId": str(first.id)}
    )
    assert rerun.status_code == 303 and "re-runs+as+instance" in rerun.headers["location"]
    not_failed = await http.post(
        f"{wp}/instances/{wf_instance_id}/rerun-node", data={"csrf": token, "jobId": str(second.id)}
    )
    assert not_failed.status_code == 409 and "only a failed node can be re-run" in not_failed.text


def test_the_wheel_ships_every_console_file() -> None:
    """pyproject's package-data covers every template and static file (the wheel needs no network)."""
    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "sx.scheduler.console"
    ]
    folder = root / "scheduler" / "console"
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix != ".py"]
    files = [f for f in files if "__pycache__" not in f]
    assert {"static/htmx.min.js", "static/htmx.LICENSE.txt", "templates/base.html"} <= set(files)
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert not missing, f"not in pyproject's package-data, so not in the wheel: {missing}"
