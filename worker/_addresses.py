"""The scheduler's addresses: the ``host:port`` list a worker is given, checked entry by entry, and each
entry resolved into the addresses it dials (a DNS name with several records is several addresses).

A name is resolved again at every (re)connect, so a changed DNS record is followed. The dialled address
is an IP, but the channel keeps presenting the configured name (``:authority`` and the TLS server name),
so a certificate issued for the name is checked against the name whichever record answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass

import grpc
from grpc import aio

from sx.protos import channel_options

__all__ = ["RESOLVE_TIMEOUT", "SchedulerAddress", "parse_server"]

RESOLVE_TIMEOUT = 10.0
"""Seconds a name lookup may take before the entry counts as unreachable for this attempt."""

_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_EXPECTED = "expected host:port (several comma-separated; an IPv6 address in brackets, [::1]:9090)"


def parse_server(value: str) -> list[str]:
    """The entries of ``host:port[,host:port...]``, duplicates dropped; ValueError naming a bad entry."""
    entries = [part.strip() for part in value.split(",")]
    for number, entry in enumerate(entries, 1):
        if not entry:
            raise ValueError(f"entry {number} is empty; {_EXPECTED}")
        problem = _entry_problem(entry)
        if problem is not None:
            raise ValueError(f"entry {entry!r}: {problem}")
    return list(dict.fromkeys(entries))


def _entry_problem(entry: str) -> str | None:
    host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        return _EXPECTED
    if not 1 <= int(port) <= 65535:
        return f"port {port} is not between 1 and 65535"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host} is not an IPv6 address"
        return None
    if ":" in host:
        return f"an IPv6 address goes in brackets: [{host}]:{port}"
    if not _HOST_NAME.fullmatch(host):
        return f"{host!r} is not a host name or IP address"
    return None


@dataclass(frozen=True)
class SchedulerAddress:
    """One address a worker dials for a configured ``entry``.

    ``target`` is what the channel connects to: the entry itself when its host is an IP address, else
    one resolved record's IP and port, with ``server_name`` the entry's host name.
    """

    entry: str
    target: str
    server_name: str | None = None

    def __str__(self) -> str:
        return self.entry if self.target == self.entry else f"{self.entry} ({self.target})"

    def channel(self, credentials: grpc.ChannelCredentials | None) -> aio.Channel:
        """A channel to ``target`` (TLS with ``credentials``), presenting the configured name."""
        options: list[tuple[str, int | str]] = [*channel_options()]
        if self.server_name is not None:
            # The authority is also the name TLS checks the scheduler's certificate against.
            options.append(("grpc.default_authority", self.entry))
        if credentials is None:
            return aio.insecure_channel(self.target, options=options)
        return aio.secure_channel(self.target, credentials, options=options)

    @classmethod
    async def resolve(cls, entry: str) -> list[SchedulerAddress]:
        """The addresses of ``entry`` now, in the resolver's order: itself for an IP address, one per
        record for a name. OSError (naming the entry) when the name does not resolve."""
        host, _, port = entry.rpartition(":")
        bare = host[1:-1] if host.startswith("[") else host
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            pass
        else:
            return [cls(entry, entry)]
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                records = await asyncio.get_running_loop().getaddrinfo(
                    host, int(port), type=socket.SOCK_STREAM
                )
        except TimeoutError:
            raise OSError(f"{entry}: {host} not resolved within {RESOLVE_TIMEOUT:g}s") from None
        except OSError as exc:
            raise OSError(f"{entry}: {host} does not resolve: {exc.strerror or exc}") from None
        targets: dict[str, None] = {}
        for family, _, _, _, sockaddr in records:
            ip = str(sockaddr[0])
            targets[f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"] = None
        return [cls(entry, target, host) for target in targets]
