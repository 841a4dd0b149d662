"""WorkerSettings: env prefix, unknown keys refused, precedence flags > env > file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sx.processors import DefinitionError
from sx.worker import WorkerSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SX_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    settings = WorkerSettings()
    assert settings.server is None
    assert settings.namespace == "default"
    assert settings.group_id == "default"
    assert settings.concurrency == 16
    assert settings.effective_thread_pool_size == 16
    assert settings.labels == {}
    assert settings.shutdown_grace == 30.0


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SX_GROUP_ID", "billing")
    monkeypatch.setenv("SX_CONCURRENCY", "4")
    monkeypatch.setenv("SX_LABELS", '{"zone": "a"}')
    settings = WorkerSettings()
    assert settings.group_id == "billing"
    assert settings.concurrency == 4
    assert settings.labels == {"zone": "a"}
    assert settings.effective_thread_pool_size == 4


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(ValidationError, match="concurency"):
        WorkerSettings(concurency=3)  # type: ignore[call-arg]


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "worker.toml"
    config.write_text('group_id = "g"\ngroup = "typo"\n')
    with pytest.raises(DefinitionError, match="group"):
        WorkerSettings.load(config)


def test_bad_values_name_the_field() -> None:
    with pytest.raises(ValidationError, match="server"):
        WorkerSettings(server="no-port")
    with pytest.raises(ValidationError, match="concurrency"):
        WorkerSettings(concurrency=0)


def test_precedence_flags_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(
        '[worker]\ngroup_id = "from-file"\nnamespace = "ns-file"\napp_key = "file-key"\nconcurrency = 3\n'
    )
    monkeypatch.setenv("SX_NAMESPACE", "ns-env")
    monkeypatch.setenv("SX_APP_KEY", "env-key")
    settings = WorkerSettings.load(config, app_key="flag-key", server="127.0.0.1:7070", worker_id=None)
    assert settings.group_id == "from-file"  # file over default
    assert settings.namespace == "ns-env"  # env over file
    assert settings.app_key == "flag-key"  # flag over env
    assert settings.concurrency == 3
    assert settings.server == "127.0.0.1:7070"
    assert settings.worker_id is None  # a None flag counts as not given


def test_json_config_file(tmp_path: Path) -> None:
    config = tmp_path / "worker.json"
    config.write_text('{"group_id": "j", "labels": {"a": "b"}}')
    settings = WorkerSettings.load(config)
    assert settings.group_id == "j"
    assert settings.labels == {"a": "b"}
