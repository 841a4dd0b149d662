"""Scheduler addresses: the ``server`` setting's list form, its bad entries named, and what an entry
resolves to (an IP address as given; a name into one address per record, keeping the name)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from sx.processors import DefinitionError
from sx.worker import SchedulerAddress, WorkerSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SX_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    ("given", "server", "entries"),
    [
        ("127.0.0.1:9090", "127.0.0.1:9090", ["127.0.0.1:9090"]),
        ("a:9090,b:9091", "a:9090,b:9091", ["a:9090", "b:9091"]),
        (" a:9090 , b.example.com:9091 ", "a:9090,b.example.com:9091", ["a:9090", "b.example.com:9091"]),
        ("a:9090,[::1]:9090,a:9090", "a:9090,[::1]:9090", ["a:9090", "[::1]:9090"]),
        (["a:1", "b_2:65535"], "a:1,b_2:65535", ["a:1", "b_2:65535"]),
    ],
    ids=["one", "two", "spaces", "ipv6-and-duplicate", "list"],
)
def test_good_server_lists(given: str | list[str], server: str, entries: list[str]) -> None:
    settings = WorkerSettings(server=given)
    assert settings.server == server
    assert settings.server_addresses == entries


def test_no_server_has_no_addresses() -> None:
    assert WorkerSettings().server_addresses == []


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ("no-port", "entry 'no-port': expected host:port"),
        ("a:9090,b", "entry 'b': expected host:port"),
        ("a:9090,", "entry 2 is empty"),
        ("a:9090,,b:9090", "entry 2 is empty"),
        ("a:0", "entry 'a:0': port 0 is not between 1 and 65535"),
        ("a:70000", "port 70000 is not between 1 and 65535"),
        ("a:90x", "entry 'a:90x': expected host:port"),
        ("::1:9090", "an IPv6 address goes in brackets: [::1]:9090"),
        ("[nope]:9090", "[nope] is not an IPv6 address"),
        ("a b:9090", "'a b' is not a host name or IP address"),
        ("http://a:9090", "entry 'http://a:9090'"),
    ],
)
def test_a_bad_entry_is_named_with_the_field(given: str, named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WorkerSettings(server=given)
    (error,) = caught.value.errors()
    assert error["loc"] == ("server",)
    assert named in error["msg"]


def test_the_environment_and_a_config_file_give_lists_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "worker.toml"
    config.write_text('[worker]\nserver = ["a:9090", "b:9090"]\n')
    assert WorkerSettings.load(config).server_addresses == ["a:9090", "b:9090"]

    monkeypatch.setenv("SX_SERVER", "c:9090,d:9090")
    assert WorkerSettings.load(config).server_addresses == ["c:9090", "d:9090"]  # env over file

    config.write_text('[worker]\nserver = ["a:9090", "oops"]\n')
    monkeypatch.delenv("SX_SERVER")
    with pytest.raises(DefinitionError, match=r"server=.*entry 'oops': expected host:port"):
        WorkerSettings.load(config)


async def test_an_ip_address_is_dialled_as_given() -> None:
    assert await SchedulerAddress.resolve("127.0.0.1:9090") == [
        SchedulerAddress("127.0.0.1:9090", "127.0.0.1:9090")
    ]
    (v6,) = await SchedulerAddress.resolve("[::1]:9090")
    assert (v6.target, v6.server_name, str(v6)) == ("[::1]:9090", None, "[::1]:9090")


async def test_a_name_is_dialled_at_its_records_under_its_name() -> None:
    addresses = await SchedulerAddress.resolve("localhost:9090")
    assert addresses, "localhost resolves to at least one address"
    assert {a.target for a in addresses} <= {"127.0.0.1:9090", "[::1]:9090"}
    first = addresses[0]
    assert (first.entry, first.server_name) == ("localhost:9090", "localhost")
    assert str(first) == f"localhost:9090 ({first.target})"


async def test_a_name_that_does_not_resolve_names_the_entry() -> None:
    # .invalid never resolves (RFC 2606).
    with pytest.raises(OSError, match=r"sched\.invalid:9090: sched\.invalid does not resolve"):
        await SchedulerAddress.resolve("sched.invalid:9090")
