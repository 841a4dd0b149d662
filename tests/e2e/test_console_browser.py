"""The web console in a real browser: headless Chromium from Debian's packages, driven by Playwright,
against a real ``sx-worker serve`` and a real worker.

No browser is downloaded: Playwright starts the system's ``chromium`` (``apt-get install chromium``,
what ``.ci/run`` does). Without it, or when it cannot start, every test here is SKIPPED with the reason
in the summary. Each page visited is saved as a screenshot under ``build/console-screenshots/``
(ignored by git) for a reviewer to look at.

The sign-in test creates access keys, which closes the scheduler to unsigned requests: it runs last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from sx.processors import ExecuteMode, InstanceStatus, JobSpec
from sx.worker.openapi import AccessKeyInfo, SyncOpenApiClient
from tests.e2e.conftest import GROUP, NAMESPACE, ROOT, Cluster, clean_env, sx_worker

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SX_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "build" / "console-screenshots"
BROWSER_ZONE = "Asia/Kathmandu"
"""UTC+05:45 all year: a shifted time cannot be a coincidence."""
WAIT_MS = 45_000
"""How long an expectation waits for the page to show it (a loaded 2-core machine is slow)."""


@pytest.fixture(scope="module")
def console_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler and one worker serving the e2e jobs and the log jobs."""
    cluster = Cluster(tmp_path_factory.mktemp("console"), targets=("tests.e2e.jobs", "tests.e2e.log_jobs"))
    cluster.events.mkdir()
    try:
        cluster.start_scheduler()
        cluster.ensure_group()
        cluster.ensure_workers(1)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"BROWSER TESTS SKIPPED: playwright is not installed ({exc}): pip install -e '.[dev]'")
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"BROWSER TESTS SKIPPED: no chromium at {CHROMIUM}: apt-get install chromium "
            "(or set SX_TEST_CHROMIUM to a Chromium executable)"
        )
    with sync_playwright() as playwright:
        try:
            # --no-sandbox: CI runs as root, where Chromium refuses its sandbox.
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as exc:
            pytest.skip(f"BROWSER TESTS SKIPPED: {CHROMIUM} could not start: {exc}")
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, console_cluster: Cluster) -> Iterator[Page]:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    # A zone other than the machine's: times must show in the browser's zone (UTC on hover).
    context = browser.new_context(
        base_url=console_cluster.http_url, viewport={"width": 1366, "height": 860}, timezone_id=BROWSER_ZONE
    )
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    # The pages run under a strict Content-Security-Policy: anything it blocks is a bug of ours.
    blocked: list[str] = []
    opened.on(
        "console",
        lambda message: blocked.append(message.text) if "Content Security" in message.text else None,
    )
    try:
        yield opened
    finally:
        context.close()
    assert not blocked, f"the page broke its Content-Security-Policy: {blocked}"


@pytest.fixture
def api(console_cluster: Cluster) -> Iterator[SyncOpenApiClient]:
    with SyncOpenApiClient(
        console_cluster.http_url, namespace=NAMESPACE, group_id=GROUP, timeout=30
    ) as client:
        yield client


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def job_url(job_id: int) -> str:
    return f"/console/jobs/{NAMESPACE}/{GROUP}/{job_id}"


def test_overview_and_jobs_list_filtered(page: Page, api: SyncOpenApiClient) -> None:
    from playwright.sync_api import expect

    for name in ("console.alpha", "console.beta", "console.alphabet"):
        api.create_job(JobSpec(name=name, class_name="e2e.echo"))
    page.goto("/console/")
    expect(page.get_by_role("heading", name=f"{NAMESPACE} / {GROUP}")).to_be_visible()
    # Keyboard first: the first Tab reaches "Skip to content", which moves the focus past the menu.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    shot(page, "overview")

    page.goto(f"/console/jobs?ns={NAMESPACE}&group={GROUP}")
    table = page.locator("#jobs-table")
    expect(table.get_by_role("link", name="console.beta")).to_be_visible()
    page.get_by_label("Name contains").fill("alpha")
    # The table is replaced as the user types (htmx), without a page load.
    expect(table.get_by_role("link", name="console.beta")).to_have_count(0)
    expect(table.get_by_role("link", name="console.alpha", exact=True)).to_be_visible()
    expect(table.get_by_role("link", name="console.alphabet")).to_be_visible()
    assert "q=alpha" in page.url
    shot(page, "jobs")


def test_execute_with_parameters_and_watch_the_log(page: Page, api: SyncOpenApiClient) -> None:
    from playwright.sync_api import expect

    job_id = api.create_job(JobSpec(name="console.logs", class_name="logs.standalone"))
    page.goto(job_url(job_id))
    expect(page.get_by_text("none: only run through the API or this console")).to_be_visible()
    page.get_by_label("Instance parameters").fill("from-the-console")
    page.get_by_role("button", name="Execute now").click()
    # The instance page: its status and log are polled until it ends.
    expect(page).to_have_url(re.compile(rf"{job_url(job_id)}/instances/\d+"))
    expect(page.locator("#instance-status")).to_have_text("success")
    expect(page.locator("#log-lines")).to_contain_text("hello world")
    expect(page.locator("#log-lines")).to_contain_text("careful")
    expect(page.get_by_text("from-the-console")).to_be_visible()
    expect(page.locator("#instance-result")).to_have_text("logged")
    instance_id = int(page.url.split("/instances/")[1].split("?")[0])
    started = page.locator("time").first
    utc = datetime.strptime(started.get_attribute("title") or "", "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    shown = utc.astimezone(ZoneInfo(BROWSER_ZONE)).strftime("%Y-%m-%d %H:%M:%S")
    expect(started).to_have_text(shown)
    assert api.get_instance(job_id, instance_id).status == InstanceStatus.SUCCESS
    shot(page, "instance")


def test_map_progress_per_task_name_and_worker(page: Page, api: SyncOpenApiClient) -> None:
    from playwright.sync_api import expect

    job_id = api.create_job(JobSpec(name="console.map", class_name="logs.map", execute_mode=ExecuteMode.GRID))
    instance_id = api.execute_job(job_id)
    page.goto(f"{job_url(job_id)}/instances/{instance_id}")
    expect(page.locator("#instance-status")).to_have_text("success")
    by_name = page.locator("table.progress", has=page.get_by_text("Per task name"))
    expect(by_name.locator("tbody tr", has_text="parts")).to_contain_text("3")
    by_worker = page.locator("table.progress", has=page.get_by_text("Per worker"))
    expect(by_worker.locator("tbody tr")).not_to_have_count(0)
    expect(page.locator("#log-lines")).to_contain_text("part b")
    shot(page, "map-instance")


def test_stop_a_running_instance(page: Page, api: SyncOpenApiClient, console_cluster: Cluster) -> None:
    from playwright.sync_api import expect

    job_id = api.create_job(console_cluster.definition("e2e.wait_async").spec)
    page.goto(job_url(job_id))
    page.get_by_role("button", name="Execute now").click()
    expect(page.locator("#instance-status")).to_have_text("running")
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("stop requested")).to_be_visible()
    expect(page.locator("#instance-status")).to_have_text("failed")
    expect(page.get_by_role("button", name="Re-run")).to_be_visible()
    page.goto(f"/console/instances?ns={NAMESPACE}&group={GROUP}&status=5")
    expect(page.locator("table.instances tbody tr", has_text=f"job {job_id}")).to_have_count(1)
    shot(page, "instances")


def test_disable_enable_edit_and_delete_a_job(page: Page, api: SyncOpenApiClient) -> None:
    from playwright.sync_api import expect

    cron = {"name": "console.cron", "className": "e2e.echo", "jobType": "python", "timeType": 1,
            "timeExpression": "0 0 3 * * ?"}  # fmt: skip
    job_id = api.create_job(JobSpec.from_create_params(cron))
    page.goto(job_url(job_id))
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text("enabled")
    expect(page.locator(".definition ol li")).to_have_count(5)  # the next fire times
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_text("job disabled")).to_be_visible()
    expect(heading).to_contain_text("disabled")
    shot(page, "job")
    assert api.get_job(job_id).status == 0
    page.get_by_role("button", name="Enable").click()
    expect(heading).to_contain_text("enabled")

    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Description").fill("edited in the console")
    page.get_by_label("Max concurrency").fill("0")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("maxConcurrency")  # refused, naming the field
    page.get_by_label("Max concurrency").fill("3")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("job saved")).to_be_visible()
    info = api.get_job(job_id)
    assert (info.spec.description, info.spec.max_concurrency) == ("edited in the console", 3)

    page.get_by_role("link", name="Delete…").click()
    page.get_by_label(re.compile("to confirm")).fill("not its name")
    page.get_by_role("button", name="Delete the job").click()
    expect(page.get_by_role("alert")).to_contain_text("type the job's name exactly")
    page.get_by_label(re.compile("to confirm")).fill("console.cron")
    page.get_by_role("button", name="Delete the job").click()
    expect(page.get_by_text(f"job {job_id} 'console.cron' deleted")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/console/jobs\?"))
    page.goto(job_url(job_id))
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()


def test_workflow_graph_coloured_by_status(
    page: Page, api: SyncOpenApiClient, console_cluster: Cluster
) -> None:
    from playwright.sync_api import expect

    names = ["e2e.wf.extract", "e2e.wf.left", "e2e.wf.right", "e2e.wf.join"]
    for name in names:
        api.create_job(console_cluster.definition(name).spec)
    edges = [["e2e.wf.extract", "e2e.wf.left"], ["e2e.wf.extract", "e2e.wf.right"],
             ["e2e.wf.left", "e2e.wf.join"], ["e2e.wf.right", "e2e.wf.join"]]  # fmt: skip
    workflow_id = api.create_workflow({"name": "console-diamond", "edges": edges})
    page.goto(f"/console/workflows?ns={NAMESPACE}&group={GROUP}")
    page.get_by_role("link", name="console-diamond").click()
    nodes = page.locator("svg.dag g.node")
    expect(nodes).to_have_count(4)
    expect(page.locator('svg.dag g.node[data-status="not started"]')).to_have_count(4)
    page.get_by_role("button", name="Execute now").click()
    expect(page).to_have_url(re.compile(rf"/workflows/{NAMESPACE}/{GROUP}/{workflow_id}\?instance=\d+"))
    # The graph is polled until the instance ends: every node turns green.
    expect(page.locator('svg.dag g.node.st-success[data-status="success"]')).to_have_count(4)
    expect(page.locator("#wf-status")).to_have_text("success")
    expect(page.locator("#wf-runs")).to_contain_text("success")  # the instance list follows too
    shot(page, "workflow")


def test_workers_and_alarms(page: Page, api: SyncOpenApiClient, console_cluster: Cluster) -> None:
    from playwright.sync_api import expect

    page.goto(f"/console/workers?ns={NAMESPACE}&group={GROUP}")
    rows = page.locator("#workers tbody tr")
    expect(rows).to_have_count(len(console_cluster.live_workers()))
    expect(rows.first).to_contain_text("online")
    expect(rows.first).to_contain_text("e2e-worker-")
    shot(page, "workers")

    failing = JobSpec.from_create_params(
        {"name": "console.fails", "className": "e2e.sleep", "jobType": "python", "timeType": 100,
         "maxAttempt": 0, "failEnable": True, "sendChannel": "log"}
    )  # fmt: skip
    job_id = api.create_job(failing)
    api.execute_job(job_id, "not-a-number")
    page.goto(f"/console/alarms?ns={NAMESPACE}&group={GROUP}")
    row = page.locator("tbody tr", has_text="failure")
    for _ in range(60):  # the alarm is recorded once the instance failed: reload until it is listed
        if row.count():
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(row.first).to_contain_text(str(job_id))
    shot(page, "alarms")


def test_sign_in_required_and_namespace_enforced(page: Page, console_cluster: Cluster) -> None:
    """Runs last: once a key exists the scheduler answers signed requests only."""
    from playwright.sync_api import expect

    with SyncOpenApiClient(console_cluster.http_url, namespace=NAMESPACE, group_id=GROUP) as own:
        job_id = own.create_job(JobSpec(name="console.guarded", class_name="e2e.echo"))
        own_key = own.create_access_key()  # from here on, only signed requests are answered
    # A second team's key, made as an operator bootstraps one: on the store, with the CLI.
    made = subprocess.run(
        [sx_worker(), "keys", "create", "--namespace", "other", "--output", "json",
         "--data-dir", str(console_cluster.folder / "scheduler")],
        capture_output=True, text=True, check=True, env=clean_env(),
    )  # fmt: skip
    created = json.loads(made.stdout[: made.stdout.rindex("}") + 1])
    other_key = AccessKeyInfo(
        access_key_id=created["accessKeyId"], namespace="other", access_key_secret=created["accessKeySecret"]
    )
    assert other_key.access_key_secret and own_key.access_key_secret
    with SyncOpenApiClient(
        console_cluster.http_url,
        namespace="other",
        group_id="elsewhere",
        access_key_id=other_key.access_key_id,
        access_key_secret=other_key.access_key_secret,
    ) as other:
        other.ensure_group()

    page.goto(f"/console/jobs?ns={NAMESPACE}&group={GROUP}")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Access key id").fill(own_key.access_key_id)
    page.get_by_label("Access key secret").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("wrong secret")
    shot(page, "sign-in")

    # Signed in with the other namespace's key: e2e is refused, to read and to act.
    page.get_by_label("Access key id").fill(other_key.access_key_id)
    page.get_by_label("Access key secret").fill(other_key.access_key_secret)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("belongs to namespace 'other'")
    page.goto("/console/")
    expect(page.get_by_role("heading", name="other / elsewhere")).to_be_visible()
    expect(page.get_by_role("heading", name=f"{NAMESPACE} / {GROUP}")).to_have_count(0)
    csrf = json.loads(page.locator("body").get_attribute("hx-headers") or "{}")["X-CSRF-Token"]
    refused = page.request.post(f"{job_url(job_id)}/disable", form={"csrf": csrf})
    assert refused.status == 403 and "belongs to namespace" in refused.text()
    # And without the token, even the right namespace's action is refused.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Access key id").fill(own_key.access_key_id)
    page.get_by_label("Access key secret").fill(own_key.access_key_secret)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    assert page.request.post(f"{job_url(job_id)}/disable", form={}).status == 403
    page.goto(f"/console/jobs?ns={NAMESPACE}&group={GROUP}")
    expect(page.locator("#jobs-table").get_by_role("link", name="console.beta")).to_be_visible()
