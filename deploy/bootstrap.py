"""Create a namespace and a group with a chosen app key on a running scheduler, once; safe to repeat.

    SX_OPENAPI_URL=http://scheduler:8080 SX_NAMESPACE=default SX_GROUP_ID=examples \\
    SX_APP_KEY=... python deploy/bootstrap.py

A deployment gives its workers the app key from a secret (``SX_APP_KEY``); this makes the scheduler's
group carry that key, so nothing has to be copied out of the scheduler after it starts. With an access
key (``SX_ACCESS_KEY_ID`` and ``SX_ACCESS_KEY_SECRET``) the requests are signed. Exit codes: 0 the group
exists with that key, 1 it exists with another key, 3 the scheduler could not be reached.
"""

from __future__ import annotations

import contextlib
import os
import sys

from sx.worker import OpenApiError, SyncOpenApiClient
from sx.worker.openapi import ConflictError, NotFoundError


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        raise SystemExit(f"{name} is not set")
    return value


def main() -> int:
    url = _env("SX_OPENAPI_URL")
    app_key = _env("SX_APP_KEY")
    key_id, secret = os.environ.get("SX_ACCESS_KEY_ID"), os.environ.get("SX_ACCESS_KEY_SECRET")
    options = {
        "namespace": _env("SX_NAMESPACE", "default"),
        "group_id": _env("SX_GROUP_ID", "default"),
        "access_key_id": key_id or None,
        "access_key_secret": secret or None,
        "retries": 6,
        "backoff": 0.5,
    }
    try:
        with SyncOpenApiClient(url, **options) as client:
            group = _get_or_create(client, app_key)
    except OpenApiError as exc:
        print(f"bootstrap against {url} failed: {exc}", file=sys.stderr)
        return 3
    if group != app_key:
        print(f"group {options['group_id']} exists with another app key; not changed", file=sys.stderr)
        return 1
    print(f"group {options['group_id']} of namespace {options['namespace']} is ready", file=sys.stderr)
    return 0


def _get_or_create(client: SyncOpenApiClient, app_key: str) -> str:
    """The group's app key, creating the namespace and the group (with ``app_key``) when missing."""
    try:
        return client.get_group().app_key
    except NotFoundError:
        pass
    if client.client.namespace not in {n.namespace for n in client.list_namespaces()}:
        with contextlib.suppress(ConflictError):
            client.create_namespace()
    try:
        return client.create_group(app_key=app_key).app_key
    except ConflictError:  # created meanwhile by another bootstrap
        return client.get_group().app_key


if __name__ == "__main__":
    sys.exit(main())
