"""The apprise alarm channels (``apprise`` and ``ding``) against a real local HTTP receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import apprise
import pytest
from pydantic import ValidationError

from sx.processors import Contact, JobSpec, MonitorOptions, api
from sx.scheduler import SchedulerSettings
from sx.scheduler.jobs import AlarmDeliveryError, AlarmMessage, AlarmRouter, AppriseChannel, ding_to_apprise
from sx.scheduler.store import Group, Namespace, Store
from tests.scheduler.jobs.test_alarms import Receiver


@pytest.fixture
async def other() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


def json_url(receiver: Receiver) -> str:
    return receiver.url.replace("http://", "json://", 1)


def message(**changes: Any) -> AlarmMessage:
    values: dict[str, Any] = {
        "kind": "failure",
        "namespace": "ns",
        "group_id": "g",
        "job_id": 7,
        "job_name": "nightly",
        "instance_id": 42,
        "message": "instance 42 failed: boom",
        "channel": "apprise",
    }
    values.update(changes)
    return AlarmMessage(**values)


def fast(default_url: str | None = None, **options: Any) -> AppriseChannel:
    return AppriseChannel(default_url, backoff=0.01, **options)


# -- ding URLs -------------------------------------------------------------------------------------


def test_a_dingtalk_robot_url_becomes_apprise_s_dingtalk_service() -> None:
    url = ding_to_apprise("https://oapi.dingtalk.com/robot/send?access_token=abc123")
    assert url == "dingtalk://abc123/"
    service = apprise.Apprise.instantiate(url)
    assert service is not None and type(service).__name__ == "NotifyDingTalk"


def test_a_ding_url_on_another_host_posts_json_there_with_its_query() -> None:
    assert ding_to_apprise("http://127.0.0.1:8000/robot/send?access_token=t&x=1") == (
        "json://127.0.0.1:8000/robot/send?-access_token=t&-x=1"
    )
    assert ding_to_apprise("https://relay.example/ding").startswith("jsons://relay.example/ding")


@pytest.mark.parametrize(
    ("url", "why"),
    [("https://oapi.dingtalk.com/robot/send", "access_token"), ("ftp://x/y", "DingTalk robot URL")],
)
def test_a_bad_ding_url_is_refused(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        ding_to_apprise(url)


def test_contacts_and_jobs_refuse_bad_urls_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"contactInfo\.ding='mailto:x'"):
        Contact(ding="mailto:x")
    with pytest.raises(ValueError, match="alarmUrl='nope'"):
        MonitorOptions(alarm_url="nope")
    with pytest.raises(ValidationError, match="alarm_apprise_url"):
        SchedulerSettings(alarm_apprise_url="not-a-url")


# -- delivery --------------------------------------------------------------------------------------


async def test_the_scheduler_s_url_gets_the_alarm(receiver: Receiver) -> None:
    await fast(json_url(receiver)).send(message())
    (body,) = receiver.bodies
    assert body["title"] == "[sx failure] nightly"
    assert "instance 42 failed: boom" in body["message"] and "instance 42" in body["message"]


async def test_the_job_s_alarm_url_overrides_the_scheduler_s(receiver: Receiver, other: Receiver) -> None:
    await fast(json_url(receiver)).send(message(alarm_url=json_url(other)))
    assert receiver.bodies == [] and len(other.bodies) == 1


async def test_ding_contacts_are_alarmed_too(receiver: Receiver, other: Receiver) -> None:
    robot = other.url.replace("/hook", "/robot/send") + "?access_token=tok"
    contacts = (Contact(user_name="Ann", ding=robot), Contact(user_name="Bo", user_phone="1"))
    await fast(json_url(receiver)).send(message(contacts=contacts))
    assert len(receiver.bodies) == 1
    (path,) = other.paths
    parts = urlsplit(path)
    assert parts.path == "/robot/send" and parse_qs(parts.query)["access_token"] == ["tok"]
    # The ding channel reaches the robots only.
    await fast(json_url(receiver), ding_only=True).send(message(channel="ding", contacts=contacts))
    assert len(receiver.bodies) == 1 and len(other.paths) == 2


async def test_failed_posts_are_retried_then_reported_without_the_token(receiver: Receiver) -> None:
    receiver.fail_first = 2
    await fast(json_url(receiver), attempts=3).send(message())
    assert receiver.requests == 3 and len(receiver.bodies) == 1

    receiver.fail_first = 100
    secret = json_url(receiver) + "?-token=s3cret"
    with pytest.raises(AlarmDeliveryError, match=r"1 of 1 URL\(s\) after 2 attempt") as caught:
        await fast(secret, attempts=2).send(message())
    assert "s3cret" not in str(caught.value)


async def test_nowhere_to_send_is_an_undelivered_alarm() -> None:
    with pytest.raises(AlarmDeliveryError, match="no alarmUrl and no alarm_apprise_url"):
        await fast().send(message())
    with pytest.raises(AlarmDeliveryError, match="no contact with a ding URL"):
        await fast(ding_only=True).send(message(channel="ding"))


async def test_an_unknown_scheme_is_reported() -> None:
    with pytest.raises(AlarmDeliveryError, match="not a URL apprise knows"):
        await fast("nosuchservice://x").send(message())


async def test_the_router_records_what_the_ding_channel_delivered(store: Store, receiver: Receiver) -> None:
    await store.create_namespace(Namespace(id="ns", name="ns"))
    await store.create_group(Group(namespace="ns", group_id="g", app_key="k"))
    robot = receiver.url + "?access_token=tok"
    monitor = MonitorOptions(send_channel="ding", fail_enable=True, contacts=(Contact(ding=robot),))
    job = await store.create_job(
        namespace="ns",
        group_id="g",
        spec=JobSpec(class_name="demo:Noop", name="j", schedule=api(), monitor=monitor),
        enabled=True,
        managed=False,
        next_fire_time=None,
    )
    router = AlarmRouter({"ding": fast(ding_only=True)}, store)
    sent = await router.alarm("failure", job, None, "boom")
    assert sent.delivered and sent.channel == "ding"
    assert receiver.bodies[0]["message"].startswith("boom")
