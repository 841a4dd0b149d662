"""Alarms to chat tools and mail through apprise (DingTalk, WeCom, Feishu, Slack, e-mail, ... one URL each).

Two channels a job's ``sendChannel`` can name:

- ``apprise``: the job's ``alarmUrl`` (apprise URLs, comma-separated), else the scheduler's
  ``alarm_apprise_url``; plus the DingTalk robots of the job's contacts;
- ``ding``: the DingTalk robots of the job's contacts only (SchedulerX's ``ding`` contact field).

A contact's ``ding`` is a robot webhook URL. One on DingTalk's host
(``https://oapi.dingtalk.com/robot/send?access_token=T``) becomes apprise's ``dingtalk://T``, which posts
DingTalk's own message format; one on any other host (a relay of your own) becomes a ``json://`` URL to
that address, which posts apprise's JSON body (``title``, ``message``, ``type``) with the query kept.

apprise is an optional dependency (``pip install 'sx-worker[apprise]'``): it is imported on the first
send, and a channel used without it fails that alarm with a message that says what to install. Each URL
is sent to on its own and retried with backoff, so a retry never repeats an alarm a service took.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import warnings
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import tenacity

from sx.scheduler.jobs._alarms import AlarmDeliveryError, AlarmMessage

__all__ = ["APPRISE_INSTALL_HINT", "AppriseChannel", "apprise_installed", "ding_to_apprise", "split_urls"]

logger = logging.getLogger("sx.alarm")

APPRISE_INSTALL_HINT = "apprise is not installed: pip install 'sx-worker[apprise]'"

_DINGTALK_HOSTS = ("oapi.dingtalk.com",)
_SEPARATORS = re.compile(r"[,\s]+")


def apprise_installed() -> bool:
    """True when the apprise package can be imported (without importing it)."""
    return importlib.util.find_spec("apprise") is not None


def split_urls(text: str | None) -> list[str]:
    """The URLs of a comma- or blank-separated list, in order, without empties."""
    return [url for url in _SEPARATORS.split(text or "") if url]


def ding_to_apprise(url: str) -> str:
    """The apprise URL that reaches a contact's ``ding`` robot URL (see the module docstring)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"ding={url!r}: expected a DingTalk robot URL (https://oapi.dingtalk.com/...)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.hostname in _DINGTALK_HOSTS:
        token = dict(query).get("access_token", "")
        if not token:
            raise ValueError(f"ding={url!r}: a DingTalk robot URL needs its access_token")
        return f"dingtalk://{quote(token, safe='')}/"
    scheme = "jsons" if parts.scheme == "https" else "json"
    # apprise's json:// passes query parameters written as ``-name=value`` on to the receiver.
    kept = "&".join(f"-{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    return f"{scheme}://{parts.netloc}{parts.path or '/'}" + (f"?{kept}" if kept else "")


def _redacted(url: str) -> str:
    """A URL for logs and alarm history: scheme and host only, since the rest often holds a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/..."


class AppriseChannel:
    """An alarm channel on apprise. ``default_url``: where alarms go when the job names no ``alarmUrl``
    (None: nowhere); ``ding_only``: send to the contacts' DingTalk robots alone (the ``ding`` channel).

    ``attempts`` tries per URL, waiting ``backoff`` seconds doubled each time; ``timeout`` bounds each
    request (apprise's connect and read timeouts)."""

    def __init__(
        self,
        default_url: str | None = None,
        *,
        ding_only: bool = False,
        attempts: int = 3,
        backoff: float = 0.5,
        timeout: float = 5.0,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts={attempts!r}: must be at least 1")
        if timeout <= 0:
            raise ValueError(f"timeout={timeout!r}: must be positive")
        self.default_urls = split_urls(default_url)
        self.ding_only = ding_only
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout

    def urls_for(self, alarm: AlarmMessage) -> list[str]:
        """The apprise URLs one alarm goes to, in order, without repeats."""
        urls: list[str] = []
        if not self.ding_only:
            urls.extend(split_urls(alarm.alarm_url) or self.default_urls)
        urls.extend(ding_to_apprise(c.ding) for c in alarm.contacts if c.ding)
        return list(dict.fromkeys(urls))

    async def send(self, alarm: AlarmMessage) -> None:
        urls = self.urls_for(alarm)
        if not urls:
            where = "no contact with a ding URL" if self.ding_only else "no alarmUrl and no alarm_apprise_url"
            raise AlarmDeliveryError(f"job {alarm.job_name!r}: nowhere to send: {where}")
        if not apprise_installed():
            raise AlarmDeliveryError(APPRISE_INSTALL_HINT)
        failed = [url for url in urls if not await self._send_one(url, alarm)]
        if failed:
            names = ", ".join(_redacted(url) for url in failed)
            raise AlarmDeliveryError(
                f"apprise could not deliver to {len(failed)} of {len(urls)} URL(s) after "
                f"{self._attempts} attempt(s) each: {names}"
            )

    async def _send_one(self, url: str, alarm: AlarmMessage) -> bool:
        notifier = _import_apprise().Apprise()
        if not notifier.add(self._with_timeouts(url)):
            raise AlarmDeliveryError(f"{_redacted(url)}: not a URL apprise knows (see apprise's URL list)")
        title, body = _text(alarm)

        def log_failure(state: tenacity.RetryCallState) -> None:
            logger.info("alarm to %s not taken (attempt %d)", _redacted(url), state.attempt_number)

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=tenacity.wait_exponential(multiplier=self._backoff, min=0),
            retry=tenacity.retry_if_result(lambda delivered: not delivered),
            after=log_failure,
            retry_error_callback=lambda state: False,
        )
        delivered: bool = await retrying(self._notify, notifier, title, body)
        return delivered

    @staticmethod
    async def _notify(notifier: Any, title: str, body: str) -> bool:
        return bool(await notifier.async_notify(title=title, body=body))

    def _with_timeouts(self, url: str) -> str:
        # apprise's per-URL connect (cto) and read (rto) timeouts, unless the URL sets its own.
        query = urlsplit(url).query
        extra = [f"{name}={self._timeout:g}" for name in ("cto", "rto") if f"{name}=" not in query]
        if not extra:
            return url
        return url + ("&" if "?" in url else "?") + "&".join(extra)


def _import_apprise() -> Any:
    # Some apprise releases import modules that Python deprecates (imghdr): their warning is apprise's
    # business, and must not turn into an error where warnings are errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise
    return apprise


def _text(alarm: AlarmMessage) -> tuple[str, str]:
    title = f"[sx {alarm.kind}] {alarm.job_name}"
    where = f"job {alarm.job_id} in {alarm.namespace}/{alarm.group_id}"
    if alarm.instance_id is not None:
        where += f", instance {alarm.instance_id}"
    return title, f"{alarm.message}\n({where})"
