"""Alarms: telling people that an instance failed or ran past its timeout.

A job names its channel (``sendChannel``: sms by default) and its contacts. The ``AlarmRouter`` picks
the channel by that name, sends, and records every alarm in the store whether it was delivered or not,
so an undeliverable alarm still shows up in the alarm history. The HTTP channels here retry with
backoff (tenacity); the apprise channels (chat tools, mail) are in ``_apprise``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx
import tenacity

from sx.processors import Contact, SxError
from sx.scheduler.store import Alarm, AlarmStore, Instance, Job

__all__ = [
    "AlarmChannel",
    "AlarmDeliveryError",
    "AlarmMessage",
    "AlarmRouter",
    "LogChannel",
    "SmsChannel",
    "WebhookChannel",
]


logger = logging.getLogger("sx.alarm")


class AlarmDeliveryError(SxError):
    """A channel could not deliver an alarm after its retries."""


@dataclass(frozen=True, slots=True)
class AlarmMessage:
    """One alarm, as channels see it."""

    kind: str
    """``failure`` or ``timeout``."""
    namespace: str
    group_id: str
    job_id: int
    job_name: str
    instance_id: int | None
    message: str
    channel: str
    contacts: tuple[Contact, ...] = ()
    alarm_url: str = ""
    """The job's own apprise URLs (``alarmUrl``), used by the apprise channel instead of its default."""
    created_at: datetime | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON body webhook receivers get (camelCase, like the OpenAPI)."""
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "groupId": self.group_id,
            "jobId": self.job_id,
            "jobName": self.job_name,
            "instanceId": self.instance_id,
            "message": self.message,
            "channel": self.channel,
            "contactInfo": [_contact_json(c) for c in self.contacts],
            "createdAt": self.created_at.isoformat() if self.created_at else None,
            "detail": dict(self.detail),
        }


def _contact_json(contact: Contact) -> dict[str, str]:
    body = {"userPhone": contact.user_phone, "userName": contact.user_name}
    # The later fields only when set, so receivers of the first body shape see what they always did.
    if contact.user_mail:
        body["userMail"] = contact.user_mail
    if contact.ding:
        body["ding"] = contact.ding
    return body


class AlarmChannel(Protocol):
    """Somewhere alarms go. ``send`` raises when the alarm could not be delivered."""

    async def send(self, alarm: AlarmMessage) -> None: ...


class LogChannel:
    """Writes alarms to the ``sx.alarm`` logger (always delivers)."""

    async def send(self, alarm: AlarmMessage) -> None:
        logger.warning(
            "alarm %s job=%s(%d) instance=%s: %s",
            alarm.kind,
            alarm.job_name,
            alarm.job_id,
            alarm.instance_id,
            alarm.message,
        )


class _HttpPoster:
    """A JSON POST with a timeout and retries with exponential backoff."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        attempts: int,
        backoff: float,
        headers: Mapping[str, str] | None,
        client: httpx.AsyncClient | None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url={url!r}: expected an http:// or https:// URL")
        if attempts < 1:
            raise ValueError(f"attempts={attempts!r}: must be at least 1")
        if timeout <= 0:
            raise ValueError(f"timeout={timeout!r}: must be positive")
        self.url = url
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._headers = dict(headers or {})
        self._client = client

    async def post(self, body: Mapping[str, Any]) -> None:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=tenacity.wait_exponential(multiplier=self._backoff, min=0),
            retry=tenacity.retry_if_exception_type(httpx.HTTPError),
            after=self._log_failure,
            reraise=True,
        )
        try:
            await retrying(self._post_once, body)
        except httpx.HTTPError as exc:
            raise AlarmDeliveryError(
                f"POST {self.url} failed after {self._attempts} attempts: {exc}"
            ) from exc

    def _log_failure(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.info("alarm POST to %s failed (attempt %d): %s", self.url, state.attempt_number, error)

    async def _post_once(self, body: Mapping[str, Any]) -> None:
        if self._client is not None:
            response = await self._client.post(
                self.url, json=body, headers=self._headers, timeout=self._timeout
            )
            response.raise_for_status()
            return
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            response = await client.post(self.url, json=body, headers=self._headers)
            response.raise_for_status()


class WebhookChannel:
    """POSTs the alarm as JSON (``AlarmMessage.to_json``) to a URL; retries with backoff on errors."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 0.5,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._poster = _HttpPoster(
            url, timeout=timeout, attempts=attempts, backoff=backoff, headers=headers, client=client
        )

    async def send(self, alarm: AlarmMessage) -> None:
        await self._poster.post(alarm.to_json())


class SmsChannel:
    """POSTs ``{"phones": [...], "message": ...}`` to an SMS gateway; alarms without phones fail."""

    def __init__(
        self,
        gateway_url: str,
        *,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 0.5,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._poster = _HttpPoster(
            gateway_url, timeout=timeout, attempts=attempts, backoff=backoff, headers=headers, client=client
        )

    async def send(self, alarm: AlarmMessage) -> None:
        phones = [c.user_phone for c in alarm.contacts if c.user_phone]
        if not phones:
            raise AlarmDeliveryError(f"job {alarm.job_name!r} has no contact with a phone number")
        text = f"[sx {alarm.kind}] {alarm.job_name} (job {alarm.job_id}"
        if alarm.instance_id is not None:
            text += f", instance {alarm.instance_id}"
        text += f"): {alarm.message}"
        await self._poster.post({"phones": phones, "message": text})


class AlarmRouter:
    """Sends alarms to the channel a job names and records each one in the store."""

    def __init__(self, channels: Mapping[str, AlarmChannel], store: AlarmStore) -> None:
        self._channels = dict(channels)
        self._store = store

    @property
    def channel_names(self) -> list[str]:
        return sorted(self._channels)

    async def send(self, alarm: AlarmMessage) -> Alarm:
        """Deliver one alarm (errors are logged, never raised) and record it with its outcome."""
        channel = self._channels.get(alarm.channel)
        delivered = False
        error = ""
        if channel is None:
            error = f"no alarm channel named {alarm.channel!r} (configured: {self.channel_names})"
            logger.warning("alarm for job %d not sent: %s", alarm.job_id, error)
        else:
            try:
                await channel.send(alarm)
                delivered = True
            except Exception as exc:  # a broken channel must not break the scheduler
                error = str(exc) or type(exc).__name__
                logger.warning(
                    "alarm for job %d via %s not delivered: %s", alarm.job_id, alarm.channel, error
                )
        detail = dict(alarm.detail)
        if error:
            detail["error"] = error
        return await self._store.record_alarm(
            namespace=alarm.namespace,
            group_id=alarm.group_id,
            job_id=alarm.job_id,
            instance_id=alarm.instance_id,
            kind=alarm.kind,
            channel=alarm.channel,
            message=alarm.message,
            delivered=delivered,
            detail=detail,
        )

    async def alarm(
        self,
        kind: str,
        job: Job,
        instance: Instance | None,
        message: str,
        *,
        now: datetime | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Alarm:
        """Build the alarm for a job (its channel and contacts) and send it."""
        monitor = job.spec.monitor
        return await self.send(
            AlarmMessage(
                kind=kind,
                namespace=job.namespace,
                group_id=job.group_id,
                job_id=job.id,
                job_name=job.name,
                instance_id=instance.id if instance is not None else None,
                message=message,
                channel=monitor.send_channel,
                contacts=tuple(monitor.contacts),
                alarm_url=monitor.alarm_url,
                created_at=now,
                detail=dict(detail or {}),
            )
        )
