"""The official Alibaba Cloud SchedulerX SDKs against a real scheduler (the POP RPC front at ``/``).

Every supported operation is driven through the Tea SDK (ACS3 signing, and HMAC-SHA1 with
``signature_algorithm='v2'``) and the classic SDK, on a scheduler with no access key and on one with
a key, and each effect is read back through our own OpenAPI client. The SDKs block, so they run in a
thread while the scheduler and its worker run on the test's loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from alibabacloud_schedulerx220190430 import models as tea_models
from alibabacloud_schedulerx220190430.client import Client as TeaClient
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.utils_models import Config
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from darabonba.core import DaraCore
from darabonba.runtime import RuntimeOptions

from sx.processors import InstanceStatus, JobContext, JobSpec, Processor, Registry, processor
from sx.scheduler import ManualClock, SchedulerServer, SchedulerSettings
from sx.scheduler.api._pop_signature import rpc_string_to_sign
from sx.worker import OpenApiClient
from sx.worker.testing import LocalScheduler

pytestmark = pytest.mark.timeout(120)

registry = Registry()
NS, GROUP = "default", "default"
ADDR = {"Namespace": NS, "GroupId": GROUP}
DUMMY_KEY = ("dummyAccessKeyId", "dummySecret")  # what a local setup gives an SDK that must sign


@processor(name="pop.hello", registry=registry)
class Hello(Processor):
    def process(self, ctx: JobContext) -> str:
        ctx.logger.info("greeting %s", ctx.instance_parameters)
        return f"hello {ctx.instance_parameters}"


@processor(name="pop.slow", registry=registry)
class Slow(Processor):
    async def process(self, ctx: JobContext) -> str:
        await asyncio.sleep(600)
        return "never"


class SdkError(Exception):
    """Either SDK's error, reduced to what both report."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass
class Sdk:
    """One official SDK client aimed at the scheduler: ``call(Action, **PascalCaseParams)`` answers
    the response body as the SDK's own model reads it (Tea: typed model, back to a map)."""

    style: str  # "tea", "tea-v2" or "classic"
    port: int
    key_id: str
    secret: str

    def call(self, action: str, *, extra: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
        try:
            if self.style == "classic":
                return self._classic(action, params, extra or {})
            return self._tea(action, params, extra or {})
        except ClientException as exc:  # its message wraps the body's: read the body's own
            message = (exc.data or {}).get("Message", exc.message)
            raise SdkError(exc.status_code or 0, str(exc.code), str(message)) from exc
        except ServerException as exc:
            raise SdkError(exc.get_http_status(), exc.get_error_code(), exc.get_error_msg()) from exc

    def _tea(self, action: str, params: dict[str, Any], extra: dict[str, str]) -> dict[str, Any]:
        config = Config(
            access_key_id=self.key_id,
            access_key_secret=self.secret,
            endpoint=f"127.0.0.1:{self.port}",
            protocol="http",
            read_timeout=30_000,
        )
        if self.style == "tea-v2":
            config.signature_algorithm = "v2"
        client = TeaClient(config)
        fields: dict[str, Any] = {}
        for name, value in params.items():
            if name == "ContactInfo":
                item = getattr(tea_models, f"{action}RequestContactInfo")
                value = [item(**{_snake(k): v for k, v in contact.items()}) for contact in value]
            fields[_snake(name)] = value
        request = getattr(tea_models, f"{action}Request")(**fields)
        if extra:  # an extension parameter the typed request cannot carry: Tea's generic call
            from alibabacloud_tea_openapi import utils_models

            body = {**request.to_map(), **extra}
            api = utils_models.Params(
                action=action,
                version="2019-04-30",
                protocol="HTTPS",
                pathname="/",
                method="POST",
                auth_type="AK",
                style="RPC",
                req_body_type="formData",
                body_type="json",
            )
            answer = client.call_api(api, utils_models.OpenApiRequest(body=body), RuntimeOptions())
            model = getattr(tea_models, f"{action}Response")().from_map(answer)
        else:
            model = getattr(client, _snake(action))(request)
        body_map: dict[str, Any] = model.body.to_map()
        return body_map

    def _classic(self, action: str, params: dict[str, Any], extra: dict[str, str]) -> dict[str, Any]:
        client = AcsClient(self.key_id, self.secret, "cn-hangzhou", auto_retry=False)
        client.add_endpoint("cn-hangzhou", "schedulerx2", f"http://127.0.0.1:{self.port}")
        module = importlib.import_module(f"aliyunsdkschedulerx2.request.v20190430.{action}Request")
        request = getattr(module, f"{action}Request")()
        for name, value in params.items():
            setter = f"set_{name}s" if isinstance(value, list) else f"set_{name}"
            getattr(request, setter)(value)
        for name, value in extra.items():
            request.add_body_params(name, value)
        try:
            answer: dict[str, Any] = json.loads(client.do_action_with_exception(request))
        finally:
            client.session.close()
        return answer


@pytest.fixture(autouse=True)
def _close_tea_connections() -> Iterator[None]:
    """After each test (its scheduler stopped), close the Tea SDK's pooled connections: it keeps one
    session per host for the whole process (in a class attribute), holding sockets to dead schedulers."""
    yield
    for session in DaraCore._sessions.values():
        session.close()
    DaraCore._sessions.clear()
    DaraCore.http_adapter.close()


STYLES = ("tea", "tea-v2", "classic")


@dataclass
class Setup:
    sched: LocalScheduler
    native: OpenApiClient
    port: int
    key: tuple[str, str]

    def sdk(self, style: str) -> Sdk:
        return Sdk(style, self.port, *self.key)

    async def run(self, style: str, action: str, **params: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.sdk(style).call, action, **params)


@pytest.fixture(params=[False, True], ids=["keyless", "keyed"])
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    async with LocalScheduler(tmp_path, registry=registry, namespace=NS, group_id=GROUP) as sched:
        assert sched.server is not None
        url = sched.server.http_url
        port = httpx.URL(url).port
        assert port is not None
        key = DUMMY_KEY
        if request.param:
            created = await sched.client.create_access_key()
            assert created.access_key_secret is not None
            key = (created.access_key_id, created.access_key_secret)
        async with OpenApiClient(
            url, namespace=NS, group_id=GROUP, access_key_id=key[0] if request.param else None,
            access_key_secret=key[1] if request.param else None,
        ) as native:  # fmt: skip
            yield Setup(sched, native, port, key)


def _ok(body: dict[str, Any]) -> dict[str, Any]:
    assert body["Success"] is True and body["Code"] == 200 and body["RequestId"], body
    data: dict[str, Any] = body.get("Data", {})
    return data


async def _until(native: OpenApiClient, job_id: int, instance_id: int, *statuses: InstanceStatus) -> None:
    for _ in range(3000):
        if (await native.get_instance(job_id, instance_id)).status in statuses:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"instance {instance_id} never reached {statuses}")


@pytest.mark.parametrize("style", STYLES)
async def test_jobs_and_instances(setup: Setup, style: str) -> None:
    native = setup.native
    created = _ok(
        await setup.run(
            style,
            "CreateJob",
            **ADDR,
            Name="every-field",
            Description="made by the SDK",
            JobType="python",
            ExecuteMode="standalone",
            ClassName="pop.hello",
            Parameters="p=1 & q=*~",
            MaxConcurrency=2,
            MaxAttempt=3,
            AttemptInterval=40,
            TimeType=1,
            TimeExpression="0 0/5 * * * ?",
            DataOffset=60,
            Timezone="Asia/Shanghai",
            PageSize=50,
            ConsumerSize=3,
            QueueSize=500,
            DispatcherSize=2,
            TaskMaxAttempt=1,
            TaskAttemptInterval=5,
            Timeout=600,
            TimeoutEnable=True,
            TimeoutKillEnable=True,
            FailEnable=False,
            SendChannel="sms",
            Status=0,
            ContactInfo=[
                {"UserName": "ops", "UserPhone": "13800000000", "UserMail": "ops@example.com"},
                {"UserName": "dev", "Ding": "https://oapi.dingtalk.com/robot/send?access_token=x"},
            ],
        )
    )
    job_id = created["JobId"]
    job = await native.get_job(job_id)
    expected = JobSpec.from_create_params(
        {
            "name": "every-field",
            "description": "made by the SDK",
            "jobType": "python",
            "executeMode": "standalone",
            "className": "pop.hello",
            "parameters": "p=1 & q=*~",
            "maxConcurrency": 2,
            "maxAttempt": 3,
            "attemptInterval": 40,
            "timeType": 1,
            "timeExpression": "0 0/5 * * * ?",
            "dataOffset": 60,
            "timeZone": "Asia/Shanghai",
            "pageSize": 50,
            "consumerSize": 3,
            "queueSize": 500,
            "dispatcherSize": 2,
            "taskMaxAttempt": 1,
            "taskAttemptInterval": 5,
            "timeout": 600,
            "timeoutEnable": True,
            "timeoutKillEnable": True,
            "failEnable": False,
            "sendChannel": "sms",
            "contactInfo": [
                {"userName": "ops", "userPhone": "13800000000", "userMail": "ops@example.com"},
                {"userName": "dev", "ding": "https://oapi.dingtalk.com/robot/send?access_token=x"},
            ],
        }
    )
    assert job.spec == expected and not job.enabled

    info = _ok(await setup.run(style, "GetJobInfo", **ADDR, JobId=job_id))["JobConfigInfo"]
    assert info["JobId"] == job_id and info["Name"] == "every-field" and info["Status"] == 0
    assert info["MaxConcurrency"] == "2" and info["MaxAttempt"] == 3 and info["Parameters"] == "p=1 & q=*~"
    assert info["TimeConfig"] == {
        "TimeType": 1,
        "TimeExpression": "0 0/5 * * * ?",
        "Calendar": "",
        "DataOffset": 60,
    }
    assert info["MapTaskXAttrs"]["QueueSize"] == 500 and info["MapTaskXAttrs"]["TaskAttemptInterval"] == 5
    monitor = info["JobMonitorInfo"]
    assert (
        monitor["MonitorConfig"]["Timeout"] == 600 and monitor["MonitorConfig"]["TimeoutKillEnable"] is True
    )
    assert (
        monitor["ContactInfo"][0]["UserMail"] == "ops@example.com" and monitor["ContactInfo"][0]["UserPhone"]
    )
    assert monitor["ContactInfo"][1]["Ding"] == "https://oapi.dingtalk.com/robot/send?access_token=x"
    by_name = _ok(await setup.run(style, "GetJobInfo", **ADDR, JobName="every-field"))["JobConfigInfo"]
    assert by_name["JobId"] == job_id

    _ok(
        await setup.run(
            style, "UpdateJob", **ADDR, JobId=job_id, Name="renamed", TimeType=100, TimeExpression=""
        )
    )
    job = await native.get_job(job_id)
    assert job.spec.name == "renamed" and int(job.spec.schedule.time_type) == 100
    assert job.spec.parameters == "p=1 & q=*~"  # absent fields keep their value
    _ok(await setup.run(style, "EnableJob", **ADDR, JobId=job_id))
    assert (await native.get_job(job_id)).enabled
    _ok(await setup.run(style, "DisableJob", **ADDR, JobId=job_id))
    assert not (await native.get_job(job_id)).enabled
    refused = await _error(setup, style, "ExecuteJob", **ADDR, JobId=job_id, CheckJobStatus=True)
    assert refused.status == 409 and "CheckJobStatus" in refused.message
    _ok(await setup.run(style, "EnableJob", **ADDR, JobId=job_id))

    run = _ok(await setup.run(style, "ExecuteJob", **ADDR, JobId=job_id, InstanceParameters="x=1"))
    instance_id = run["JobInstanceId"]
    await _until(native, job_id, instance_id, InstanceStatus.SUCCESS)
    detail = _ok(await setup.run(style, "GetJobInstance", **ADDR, JobId=job_id, JobInstanceId=instance_id))[
        "JobInstanceDetail"
    ]
    ours = await native.get_instance(job_id, instance_id)
    assert detail["InstanceId"] == instance_id and detail["JobId"] == job_id and detail["Status"] == 4
    assert (
        detail["Result"] == "hello x=1" and detail["JobName"] == "renamed" and detail["Parameters"] == "x=1"
    )
    assert (detail["ScheduleTime"], detail["DataTime"], detail["StartTime"], detail["EndTime"]) == (
        ours.schedule_date,
        ours.data_date,
        ours.start_date,
        ours.end_date,
    )
    assert detail["TriggerType"] == 3 and detail["TimeType"] == 100 and detail["WorkAddr"] == ours.work_addr
    listed = _ok(await setup.run(style, "GetJobInstanceList", **ADDR, JobId=job_id))["JobInstanceDetails"]
    assert [item["InstanceId"] for item in listed] == [instance_id] and listed[0]["EndTime"] == ours.end_date
    assert _ok(await setup.run(style, "GetJobInstanceList", **ADDR, JobId=job_id, Status=5)) == {
        "JobInstanceDetails": []
    }
    logs: list[str] = []
    for _ in range(1000):  # the worker ships its log lines on its own time
        logs = _ok(await setup.run(style, "GetLog", **ADDR, JobId=job_id, JobInstanceId=instance_id))["Logs"]
        if logs:
            break
        await asyncio.sleep(0.05)
    assert len(logs) == 1 and logs[0].endswith("INFO greeting x=1"), logs
    _ok(await setup.run(style, "RetryJobInstance", **ADDR, JobId=job_id, JobInstanceId=instance_id))
    (again,) = [i for i in await native.get_instance_list(job_id) if i.instance_id != instance_id]
    await _until(native, job_id, again.instance_id, InstanceStatus.SUCCESS)
    assert (await native.get_instance(job_id, again.instance_id)).result == "hello x=1"

    jobs = _ok(await setup.run(style, "ListJobs", **ADDR, JobName="renam"))
    assert [j["JobId"] for j in jobs["Jobs"]] == [job_id] and jobs["Total"] == 1

    slow = _ok(
        await setup.run(
            style, "CreateJob", **ADDR, Name="slow", JobType="python", ClassName="pop.slow", TimeType=100
        )
    )["JobId"]
    slow_run = _ok(await setup.run(style, "ExecuteJob", **ADDR, JobId=slow))["JobInstanceId"]
    await _until(native, slow, slow_run, InstanceStatus.RUNNING)
    _ok(await setup.run(style, "StopInstance", **ADDR, JobId=slow, InstanceId=slow_run))
    await _until(native, slow, slow_run, InstanceStatus.FAILED)

    daily = _ok(
        await setup.run(
            style, "CreateJob", **ADDR, Name="daily", JobType="python", ClassName="pop.hello", TimeType=1,
            TimeExpression="0 0 3 * * ?",
        )
    )["JobId"]  # fmt: skip
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    _ok(
        await setup.run(
            style, "RerunJob", **ADDR, JobId=daily, StartDate=now_ms - 3 * 86_400_000, EndDate=now_ms
        )
    )
    backfills = await native.call("/openapi/v1/backfill/list", {"jobId": daily}, idempotent=True)
    assert backfills["total"] == 1 and backfills["backfills"][0]["total"] == 3

    _ok(await setup.run(style, "BatchDisableJobs", **ADDR, JobIdList=[job_id, slow]))
    assert not (await native.get_job(job_id)).enabled and not (await native.get_job(slow)).enabled
    _ok(await setup.run(style, "BatchEnableJobs", **ADDR, JobIdList=[job_id, slow]))
    assert (await native.get_job(slow)).enabled
    _ok(await setup.run(style, "DeleteJob", **ADDR, JobId=job_id))
    assert await native.find_job("renamed") is None
    _ok(await setup.run(style, "BatchDeleteJobs", **ADDR, JobIdList=[slow, daily]))
    assert await native.all_jobs() == []


@pytest.mark.parametrize("style", STYLES)
async def test_workflows(setup: Setup, style: str) -> None:
    native = setup.native
    a = _ok(
        await setup.run(
            style, "CreateJob", **ADDR, Name="a", JobType="python", ClassName="pop.hello", TimeType=100
        )
    )["JobId"]
    b = _ok(
        await setup.run(
            style, "CreateJob", **ADDR, Name="b", JobType="python", ClassName="pop.hello", TimeType=100
        )
    )["JobId"]
    missing = await _error(setup, style, "CreateWorkflow", **ADDR, Name="flow", TimeType=100)
    assert missing.status == 400 and missing.message.startswith("DagJson=")
    dag = json.dumps({"nodes": [{"id": a}, {"id": b}], "edges": [{"source": a, "target": b}]})
    wf_id = _ok(
        await asyncio.to_thread(
            setup.sdk(style).call, "CreateWorkflow", **ADDR, Name="flow", Description="d", TimeType=100,
            extra={"DagJson": dag},
        )
    )["WorkflowId"]  # fmt: skip
    workflow = await native.get_workflow(wf_id)
    assert workflow.nodes == (a, b) and workflow.edges == ((a, b),) and workflow.spec.description == "d"

    _ok(await setup.run(style, "DisableJob", **ADDR, JobId=a))
    got = _ok(await setup.run(style, "GetWorkFlow", **ADDR, WorkflowId=wf_id))
    assert got["WorkFlowInfo"]["Name"] == "flow" and got["WorkFlowInfo"]["Status"] == "1"
    assert got["WorkFlowNodeInfo"]["Edges"] == [{"Source": a, "Target": b}]
    assert [(n["Id"], n["Label"], n["Status"]) for n in got["WorkFlowNodeInfo"]["Nodes"]] == [
        (a, "a", 0),
        (b, "b", 1),
    ]
    _ok(await setup.run(style, "UpdateWorkflow", **ADDR, WorkflowId=wf_id, Name="flow2", Description="d2"))
    _ok(
        await setup.run(
            style, "UpdateWorkflowDag", **ADDR, WorkflowId=wf_id, DagJson=json.dumps({"nodes": [{"id": b}]})
        )
    )
    workflow = await native.get_workflow(wf_id)
    assert workflow.name == "flow2" and workflow.nodes == (b,) and workflow.edges == ()
    records = _ok(await setup.run(style, "ListWorkFlows", **ADDR, WorkflowName="flow2"))
    assert [r["WorkflowId"] for r in records["Records"]] == [wf_id] and records["Total"] == 1

    _ok(await setup.run(style, "DisableWorkflow", **ADDR, WorkflowId=wf_id))
    assert not (await native.get_workflow(wf_id)).enabled
    _ok(await setup.run(style, "EnableWorkflow", **ADDR, WorkflowId=wf_id))
    assert (await native.get_workflow(wf_id)).enabled
    started = _ok(
        await setup.run(style, "ExecuteWorkflow", **ADDR, WorkflowId=wf_id, InstanceParameters="wf=1")
    )
    wf_instance_id = started["WfInstanceId"]
    for _ in range(3000):
        if (await native.get_workflow_instance(wf_instance_id)).status == InstanceStatus.SUCCESS:
            break
        await asyncio.sleep(0.02)
    ours = await native.get_workflow_instance(wf_instance_id)
    assert ours.instance_parameters == "wf=1"
    shown = _ok(
        await setup.run(style, "GetWorkflowInstance", **ADDR, WorkflowId=wf_id, WfInstanceId=wf_instance_id)
    )
    assert shown["WfInstanceInfo"]["Status"] == 4 and shown["WfInstanceInfo"]["EndTime"] == ours.end_date
    (node,) = shown["WfInstanceDag"]["Nodes"]
    assert (
        node["JobId"] == b
        and node["Status"] == 4
        and node["JobName"] == "b"
        and node["Result"] == "hello wf=1"
    )
    infos = _ok(await setup.run(style, "ListWorkflowInstance", **ADDR, WorkflowId=wf_id))["WfInstanceInfos"]
    assert [i["WfInstanceId"] for i in infos] == [wf_instance_id]
    _ok(await setup.run(style, "DeleteWorkflow", **ADDR, WorkflowId=wf_id))
    assert await native.find_workflow("flow2") is None


@pytest.mark.parametrize("style", STYLES)
async def test_namespaces_groups_workers(setup: Setup, style: str) -> None:
    keyed = setup.key != DUMMY_KEY
    if not keyed:
        uid = _ok(await setup.run(style, "CreateNamespace", Uid="ns-sdk", Name="From SDK", Description="x"))
        assert uid == {"NamespaceUid": "ns-sdk"}
        made = _ok(await setup.run(style, "CreateNamespace", Name="generated"))["NamespaceUid"]
        names = {n.namespace: n.name for n in await setup.native.list_namespaces()}
        assert names["ns-sdk"] == "From SDK" and names[made] == "generated"
    else:  # a namespace's key cannot make namespaces, as on the native API
        refused = await _error(setup, style, "CreateNamespace", Uid="ns-sdk", Name="From SDK")
        assert refused.status == 403
    spaces = _ok(await setup.run(style, "ListNamespaces"))["Namespaces"]
    assert NS in [n["UId"] for n in spaces] and (keyed or "ns-sdk" in [n["UId"] for n in spaces])

    key = _ok(await setup.run(style, "CreateAppGroup", Namespace=NS, GroupId="sdk.group", AppName="SDK app"))[
        "AppKey"
    ]
    group = _ok(await setup.run(style, "GetAppGroup", Namespace=NS, GroupId="sdk.group"))
    assert group["AppKey"] == key and group["Description"] == "SDK app" and group["GroupId"] == "sdk.group"
    groups = _ok(await setup.run(style, "ListGroups", Namespace=NS))["AppGroups"]
    assert {g["GroupId"] for g in groups} == {GROUP, "sdk.group"}
    (ours_group,) = [g for g in await setup.native.list_groups() if g.group_id == "sdk.group"]
    assert (ours_group.app_key, ours_group.description) == (key, "SDK app")

    workers = _ok(await setup.run(style, "GetWorkerList", **ADDR))["WorkerInfos"]
    assert setup.sched.worker is not None
    ours = (await setup.native.list_workers()).workers
    assert [w["WorkerAddress"] for w in workers] == [w.address for w in ours] and workers[0]["Port"] > 0


async def _error(setup: Setup, style: str, action: str, **params: Any) -> SdkError:
    try:
        body = await setup.run(style, action, **params)
    except SdkError as exc:
        return exc
    raise AssertionError(f"{action} succeeded: {body}")


@pytest.mark.parametrize("style", STYLES)
async def test_bad_input_is_refused_naming_the_field(setup: Setup, style: str) -> None:
    bad = await _error(
        setup, style, "CreateJob", **ADDR, Name="x", JobType="python", ClassName="pop.hello", TimeType=7
    )
    assert (bad.status, bad.code) == (400, "InvalidParameter") and bad.message.startswith("TimeType="), bad
    bad = await _error(
        setup, style, "CreateJob", **ADDR, Name="x", JobType="python", TimeType=100, Timezone="Mars/Base"
    )
    assert bad.status == 400 and bad.message.startswith("Timezone="), bad
    bad = await _error(setup, style, "GetJobInstance", **ADDR, JobId=1)
    assert bad.status in (400, 404) and ("JobInstanceId" in bad.message or "JobId" in bad.message), bad
    bad = await _error(setup, style, "ExecuteJob", **ADDR, JobId=12345)
    assert (bad.status, bad.code) == (404, "NotFound") and "12345" in bad.message, bad
    unsupported = await _error(setup, style, "SetJobInstanceSuccess", **ADDR, JobId=1, JobInstanceId=1)
    assert (unsupported.status, unsupported.code) == (400, "InvalidAction.NotSupported")
    assert "'SetJobInstanceSuccess'" in unsupported.message
    assert await setup.native.all_jobs() == []


async def test_wrong_signatures_unsigned_and_replayed_requests_are_refused(tmp_path: Path) -> None:
    async with LocalScheduler(tmp_path, registry=registry, start_worker=False) as sched:
        assert sched.server is not None
        url = sched.server.http_url
        port = httpx.URL(url).port or 0
        async with httpx.AsyncClient(base_url=url) as http:
            # No key yet: open (loopback), unsigned requests are served.
            answer = await http.get("/", params={"Action": "ListGroups", "Namespace": NS})
            assert answer.status_code == 200 and answer.json()["Data"]["AppGroups"][0]["GroupId"] == GROUP
            created = await sched.client.create_access_key()
            key_id, secret = created.access_key_id, created.access_key_secret
            assert secret is not None
            answer = await http.get("/", params={"Action": "ListGroups", "Namespace": NS})
            assert answer.status_code == 401 and answer.json()["Code"] == "Unauthorized"

            wrong = {"Name": "x", "JobType": "python", "ClassName": "pop.hello", "TimeType": 100, **ADDR}
            classic = await asyncio.to_thread(
                _raises, Sdk("classic", port, key_id, secret + "x").call, "CreateJob", **wrong
            )
            assert (classic.status, classic.code) == (
                400,
                "InvalidAccessKeySecret",
            )  # the SDK's own diagnosis
            tea_v2 = await asyncio.to_thread(
                _raises, Sdk("tea-v2", port, key_id, secret + "x").call, "CreateJob", **wrong
            )
            assert (tea_v2.status, tea_v2.code) == (400, "SignatureDoesNotMatch")
            tea = await asyncio.to_thread(
                _raises, Sdk("tea", port, key_id, secret + "x").call, "CreateJob", **wrong
            )
            assert (tea.status, tea.code) == (401, "Unauthorized") and "Signature" in tea.message
            unknown = await asyncio.to_thread(
                _raises, Sdk("classic", port, "SXNOPE", secret).call, "CreateJob", **wrong
            )
            assert unknown.status == 401 and "SXNOPE" in unknown.message
            async with OpenApiClient(
                url, namespace=NS, group_id=GROUP, access_key_id=key_id, access_key_secret=secret
            ) as native:
                assert await native.all_jobs() == []

            # A signed classic request sent twice: the second is a replay.
            from aliyunsdkschedulerx2.request.v20190430.ListGroupsRequest import ListGroupsRequest

            request = ListGroupsRequest()
            request.set_Namespace(NS)
            request.set_method("GET")
            signed = request.get_url("cn-hangzhou", key_id, secret)
            first = await http.get(signed)
            assert first.status_code == 200, first.text
            replay = await http.get(signed)
            assert replay.status_code == 401 and "replayed" in replay.json()["Message"]
            tampered = await http.get(signed.replace(f"Namespace={NS}", "Namespace=other"))
            assert tampered.status_code == 400 and tampered.json()["Code"] == "SignatureDoesNotMatch"


def _raises(call: Any, *args: Any, **kwargs: Any) -> SdkError:
    try:
        call(*args, **kwargs)
    except SdkError as exc:
        return exc
    raise AssertionError("the call succeeded")


async def test_requests_signed_outside_the_clock_window_are_refused(tmp_path: Path) -> None:
    # The scheduler's clock is 20 minutes behind the SDKs' (the window is 15 minutes either way).
    clock = ManualClock(datetime.now(UTC) - timedelta(minutes=20))
    server = SchedulerServer(
        SchedulerSettings(data_dir=tmp_path / "scheduler", http_port=0, grpc_port=0), clock=clock
    )
    await server.start()
    try:
        async with OpenApiClient(server.http_url, namespace=NS, group_id=GROUP) as native:
            await native.ensure_group()
            created = await native.create_access_key()
        assert created.access_key_secret is not None
        port = httpx.URL(server.http_url).port or 0
        for style, field in (("classic", "Timestamp="), ("tea-v2", "Timestamp="), ("tea", "x-acs-date=")):
            sdk = Sdk(style, port, created.access_key_id, created.access_key_secret)
            late = await asyncio.to_thread(_raises, sdk.call, "ListGroups", Namespace=NS)
            assert late.status == 401 and field in late.message, (style, late)
    finally:
        await server.stop()


def test_hmac_sha1_string_to_sign_and_signature_match_the_sdks() -> None:
    # A GetJobInfo request the classic SDK signed with the secret "dummySecret".
    query = (
        "Namespace=ns-probe&GroupId=probe.group&JobId=1001&Version=2019-04-30&Action=GetJobInfo&Format=JSON"
        "&RegionId=cn-hangzhou&Timestamp=2026-11-25T15%3A03%3A33Z&SignatureMethod=HMAC-SHA1&SignatureType="
        "&SignatureVersion=1.0&SignatureNonce=aaa6f640e65d63a30cafe0e248cc2c94&AccessKeyId=dummyAccessKeyId"
        "&Signature=xMYjQBlkVnPy1rqb%2BQsBEsyN3bQ%3D"
    )
    pairs = parse_qsl(query, keep_blank_values=True)
    string_to_sign = rpc_string_to_sign("GET", pairs)
    assert string_to_sign == (
        "GET&%2F&AccessKeyId%3DdummyAccessKeyId%26Action%3DGetJobInfo%26Format%3DJSON%26GroupId%3Dprobe.group"
        "%26JobId%3D1001%26Namespace%3Dns-probe%26RegionId%3Dcn-hangzhou%26SignatureMethod%3DHMAC-SHA1"
        "%26SignatureNonce%3Daaa6f640e65d63a30cafe0e248cc2c94%26SignatureType%3D%26SignatureVersion%3D1.0"
        "%26Timestamp%3D2026-11-25T15%253A03%253A33Z%26Version%3D2019-04-30"
    )
    digest = hmac.new(b"dummySecret&", string_to_sign.encode(), hashlib.sha1).digest()
    assert base64.b64encode(digest).decode() == dict(pairs)["Signature"]
