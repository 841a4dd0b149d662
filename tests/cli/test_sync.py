"""``sx-worker sync`` through click's CliRunner against a live scheduler."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sx.cli._sync import sync
from sx.processors import use_registry, use_workflows
from sx.worker.openapi import JobInfo, WorkflowInfo
from tests.worker.openapi.test_client import GROUP, NS, client_for, threaded_scheduler

JOBS = """
from sx.processors import Processor, processor
from sx.processors._schedule import cron


@processor(name="cli.nightly", schedule=cron("0 0 2 * * ?"), max_attempt={attempts})
class Nightly(Processor):
    def process(self, ctx):
        return None


@processor(name="cli.adhoc")
class Adhoc(Processor):
    def process(self, ctx):
        return None
"""


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with threaded_scheduler(tmp_path) as base_url:
        asyncio.run(_ensure_group(base_url))
        yield base_url


async def _ensure_group(url: str) -> None:
    async with client_for(url) as client:
        await client.ensure_group()


async def _jobs(url: str, **options: str) -> list[JobInfo]:
    async with client_for(url, **options) as client:
        return await client.all_jobs()


def jobs(url: str, **options: str) -> list[JobInfo]:
    return asyncio.run(_jobs(url, **options))


async def _workflows(url: str) -> list[WorkflowInfo]:
    async with client_for(url) as client:
        return await client.all_workflows()


def workflows(url: str) -> list[WorkflowInfo]:
    return asyncio.run(_workflows(url))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return folder


def write_module(folder: Path, attempts: int = 1) -> str:
    name = f"sync_jobs_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(JOBS.format(attempts=attempts)))
    return name


# Refused before anything is applied: sync checks calendars first, in the scheduler's own words.
BAD_CALENDAR = """
@processor(name="cli.bad", schedule=cron("0 0 1 * * ?"), calendar="no-such-calendar")
class Bad(Processor):
    def process(self, ctx):
        return None
"""

# Valid in code, refused by the scheduler while applying: the request is over its 1 MiB body limit.
BAD_BODY = """
from sx.processors import Contact


@processor(name="cli.huge", contacts=[Contact(user_name="\u00e9" * 100)] * 2000)
class Huge(Processor):
    def process(self, ctx):
        return None
"""

FLOW = """
from sx.processors import workflow

workflow("cli.flow", edges=[(Nightly, {downstream})])
"""


def write_code(folder: Path, *parts: str, attempts: int = 1) -> str:
    """A module of JOBS (cli.nightly, cli.adhoc) plus ``parts``; its name."""
    name = f"sync_jobs_{uuid.uuid4().hex[:8]}"
    text = "\n".join([JOBS.format(attempts=attempts), *(textwrap.dedent(part) for part in parts)])
    (folder / f"{name}.py").write_text(text)
    return name


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    # Each run is a fresh process in real life: forget earlier imports so the classes register again.
    for name in [name for name in sys.modules if name.startswith("sync_")]:
        del sys.modules[name]
    with use_registry(), use_workflows():
        result = CliRunner().invoke(sync, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_sync_creates_then_reports_nothing_to_do(url: str, workdir: Path) -> None:
    module = write_module(workdir)
    address = ["--server", url, "--namespace", NS, "--group", GROUP]
    code, out, _ = invoke(module, *address)
    assert code == 0, out
    assert "create" in out and "cli.nightly" in out and "2 created" in out
    assert sorted(job.name for job in jobs(url)) == ["cli.adhoc", "cli.nightly"]
    code, out, _ = invoke(module, *address)
    assert code == 0 and "0 created, 0 updated, 2 unchanged" in out


def test_env_twins_dry_run_and_json(url: str, workdir: Path) -> None:
    env = {"SX_OPENAPI_URL": url, "SX_NAMESPACE": NS, "SX_GROUP_ID": GROUP}
    code, _, _ = invoke(write_module(workdir), env=env)
    assert code == 0
    changed = write_module(workdir, attempts=5)
    code, out, _ = invoke(changed, "--dry-run", "--output", "json", env=env)
    assert code == 0
    data = json.loads(out)
    assert data["dryRun"] is True and data["counts"]["update"] == 1
    [nightly] = [job for job in data["jobs"] if job["name"] == "cli.nightly"]
    assert nightly["changes"] == {"maxAttempt": {"from": 1, "to": 5}}
    [stored] = [job for job in jobs(url) if job.name == "cli.nightly"]
    assert stored.spec.max_attempt == 1


def test_prune_and_progress(url: str, workdir: Path, tmp_path: Path) -> None:
    address = ["--server", url, "--namespace", NS, "--group", GROUP]
    assert invoke(write_module(workdir), *address)[0] == 0
    only_one = workdir / f"sync_one_{uuid.uuid4().hex[:8]}.py"
    only_one.write_text(JOBS.split('@processor(name="cli.adhoc")')[0].format(attempts=1))
    code, out, err = invoke(only_one.stem, *address, "--prune", "--delete", "--progress-every", "1")
    assert code == 0, out
    assert "1 deleted" in out and "sync: 2/2 jobs applied" in err
    assert [job.name for job in jobs(url)] == ["cli.nightly"]


def test_usage_errors_and_refused_credentials(url: str, workdir: Path) -> None:
    module = write_module(workdir)
    code, _, err = invoke(module, "--server", url, "--delete")
    assert code == 2 and "--delete only applies with --prune" in err
    code, _, err = invoke(module, "--server", "127.0.0.1:1")
    assert code == 2 and "http://" in err
    code, _, err = invoke(
        module,
        "--server",
        url,
        "--namespace",
        NS,
        "--group",
        GROUP,
        "--access-key-id",
        "SXNOPE",
        "--access-key-secret",
        "x",
    )
    assert code == 3 and "SXNOPE" in err
    asyncio.run(_make_key(url))
    code, _, err = invoke(module, "--server", url, "--namespace", NS, "--group", GROUP)
    assert code == 3 and "credentials" in err


async def _make_key(url: str) -> None:
    async with client_for(url) as client:
        await client.create_access_key()


def test_signed_sync(url: str, workdir: Path) -> None:
    key = asyncio.run(_create_key(url))
    code, out, err = invoke(
        write_module(workdir),
        "--server",
        url,
        "--namespace",
        NS,
        "--group",
        GROUP,
        env={"SX_ACCESS_KEY_ID": key[0], "SX_ACCESS_KEY_SECRET": key[1]},
    )
    assert code == 0, (out, err)
    assert len(jobs(url, access_key_id=key[0], access_key_secret=key[1])) == 2


async def _create_key(url: str) -> tuple[str, str]:
    async with client_for(url) as client:
        created = await client.create_access_key()
    assert created.access_key_secret is not None
    return created.access_key_id, created.access_key_secret


def test_atomic_refused_definition_applies_no_job_and_no_workflow(url: str, workdir: Path) -> None:
    address = ["--server", url, "--namespace", NS, "--group", GROUP]
    assert invoke(write_module(workdir), *address)[0] == 0
    # The workflow names jobs that exist already, so only the atomic contract keeps it out.
    module = write_code(workdir, BAD_CALENDAR, FLOW.format(downstream="Adhoc"), attempts=5)
    code, out, _ = invoke(module, *address, "--atomic")
    assert code == 1, out
    assert workflows(url) == []
    stored = {job.name: job for job in jobs(url)}
    assert sorted(stored) == ["cli.adhoc", "cli.nightly"] and stored["cli.nightly"].spec.max_attempt == 1
    assert "job 'cli.bad': calendar:" in out
    assert "no such calendar in namespace 'ns1'" in out and "nothing applied" in out
    code, out, _ = invoke(module, *address, "--atomic", "--output", "json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["atomic"] is True
    assert [(w["name"], w["outcome"]) for w in data["workflows"]] == [("cli.flow", "skipped")]
    [bad] = [job for job in data["jobs"] if job["outcome"] == "failed"]
    assert bad["name"] == "cli.bad" and bad["error"]["field"] == "calendar"
    assert workflows(url) == []


def test_atomic_scheduler_refusal_undoes_the_jobs_and_applies_no_workflow(url: str, workdir: Path) -> None:
    module = write_code(workdir, BAD_BODY, FLOW.format(downstream="Huge"))
    code, out, _ = invoke(module, "--server", url, "--namespace", NS, "--group", GROUP, "--atomic")
    assert code == 1, out
    # The job, the field and the scheduler's own message.
    assert "job 'cli.huge': body: body=" in out and "must be at most 1048576 bytes" in out
    assert "rolled back 2 change(s)" in out
    assert jobs(url) == [] and workflows(url) == []


def test_without_atomic_the_valid_ones_are_applied_and_the_exit_code_says_failed(
    url: str, workdir: Path
) -> None:
    module = write_code(workdir, BAD_CALENDAR, FLOW.format(downstream="Adhoc"))
    code, out, _ = invoke(module, "--server", url, "--namespace", NS, "--group", GROUP)
    assert code == 1, out
    assert "job 'cli.bad': calendar:" in out and "no such calendar in namespace 'ns1'" in out
    assert "2 created" in out and "1 failed" in out
    assert sorted(job.name for job in jobs(url)) == ["cli.adhoc", "cli.nightly"]
    [flow] = workflows(url)
    assert flow.name == "cli.flow" and flow.managed
