"""Alarm channels against a real local HTTP receiver, and the router's records."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from sx.processors import Contact, JobSpec, MonitorOptions, cron
from sx.scheduler.jobs._alarms import (
    AlarmDeliveryError,
    AlarmMessage,
    AlarmRouter,
    LogChannel,
    SmsChannel,
    WebhookChannel,
)
from sx.scheduler.store import Group, Namespace, Store


@dataclass
class Receiver:
    """A tiny HTTP/1.1 server on 127.0.0.1 that records JSON POST bodies and can fail on purpose."""

    fail_first: int = 0
    status_when_failing: int = 500
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    requests: int = 0
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/hook"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests += 1
                if self.requests <= self.fail_first:
                    status = self.status_when_failing
                else:
                    status = 200
                    self.paths.append(path)
                    self.bodies.append(json.loads(body))
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


def message(**changes: Any) -> AlarmMessage:
    values: dict[str, Any] = {
        "kind": "failure",
        "namespace": "ns",
        "group_id": "g",
        "job_id": 7,
        "job_name": "nightly",
        "instance_id": 42,
        "message": "instance 42 failed: boom",
        "channel": "webhook",
        "contacts": (Contact(user_phone="13800000000", user_name="Ann"), Contact(user_name="NoPhone")),
    }
    values.update(changes)
    return AlarmMessage(**values)


async def test_webhook_posts_json(receiver: Receiver) -> None:
    await WebhookChannel(receiver.url).send(message())
    (body,) = receiver.bodies
    assert body["kind"] == "failure"
    assert body["jobId"] == 7 and body["instanceId"] == 42 and body["jobName"] == "nightly"
    assert body["contactInfo"][0] == {"userPhone": "13800000000", "userName": "Ann"}


async def test_webhook_retries_with_backoff(receiver: Receiver) -> None:
    receiver.fail_first = 2
    await WebhookChannel(receiver.url, attempts=3, backoff=0.01).send(message())
    assert receiver.requests == 3
    assert len(receiver.bodies) == 1


async def test_webhook_gives_up_after_attempts(receiver: Receiver) -> None:
    receiver.fail_first = 10
    with pytest.raises(AlarmDeliveryError, match="after 2 attempts"):
        await WebhookChannel(receiver.url, attempts=2, backoff=0.01).send(message())
    assert receiver.requests == 2


async def test_sms_posts_phones_and_message(receiver: Receiver) -> None:
    await SmsChannel(receiver.url).send(message(channel="sms"))
    (body,) = receiver.bodies
    assert body["phones"] == ["13800000000"]
    assert "nightly" in body["message"] and "instance 42" in body["message"] and "boom" in body["message"]


async def test_sms_without_phones_is_undeliverable(receiver: Receiver) -> None:
    with pytest.raises(AlarmDeliveryError, match="phone"):
        await SmsChannel(receiver.url).send(message(contacts=()))
    assert receiver.requests == 0


def test_bad_url_is_refused() -> None:
    with pytest.raises(ValueError, match="url='ftp://x'"):
        WebhookChannel("ftp://x")


async def test_log_channel_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sx.alarm"):
        await LogChannel().send(message())
    assert any("nightly" in r.getMessage() and r.name == "sx.alarm" for r in caplog.records)


async def test_router_records_delivered_and_undelivered(store: Store, receiver: Receiver) -> None:
    await store.create_namespace(Namespace(id="ns", name="ns"))
    await store.create_group(Group(namespace="ns", group_id="g", app_key="k"))
    monitor = MonitorOptions(send_channel="webhook", contacts=(Contact(user_phone="1", user_name="A"),))
    job = await store.create_job(
        namespace="ns",
        group_id="g",
        spec=JobSpec(class_name="demo:Noop", name="j", schedule=cron("0 0 * * * ?"), monitor=monitor),
        enabled=True,
        managed=False,
        next_fire_time=None,
    )
    router = AlarmRouter({"webhook": WebhookChannel(receiver.url), "log": LogChannel()}, store)
    sent = await router.alarm("timeout", job, None, "ran too long")
    assert sent.delivered and sent.kind == "timeout" and sent.channel == "webhook"
    assert receiver.bodies[0]["contactInfo"] == [{"userPhone": "1", "userName": "A"}]

    missing = await router.send(message(job_id=job.id, channel="sms"))
    assert not missing.delivered
    assert "sms" in missing.detail["error"]

    receiver.fail_first = 100
    router = AlarmRouter({"webhook": WebhookChannel(receiver.url, attempts=1)}, store)
    failed = await router.alarm("failure", job, None, "boom")
    assert not failed.delivered

    recorded = await store.list_alarms(job_id=job.id)
    assert sorted((a.kind, a.delivered) for a in recorded) == [
        ("failure", False),
        ("failure", False),
        ("timeout", True),
    ]
