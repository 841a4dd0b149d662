"""Config files: one table, both tables, or flat; every unknown table and key reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from sx.processors import DefinitionError
from sx.processors.engine import load_settings


class Front(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SXTEST_", extra="forbid")
    group_id: str = "default"
    data_dir: str = "."


class Back(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SXTEST_", extra="forbid")
    http_port: int = 8080
    data_dir: str = "."


PARTS: dict[str, type[BaseSettings]] = {"worker": Front, "scheduler": Back}


def write(tmp_path: Path, text: str, name: str = "sx.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_file_with_only_the_other_parts_table_gives_defaults(tmp_path: Path) -> None:
    config = write(tmp_path, '[worker]\ngroup_id = "billing"\n')
    assert load_settings(Back, config, section="scheduler", sections=PARTS).http_port == 8080
    assert load_settings(Front, config, section="worker", sections=PARTS).group_id == "billing"
    # Alone too: a known table of another part is left to that part.
    assert load_settings(Back, config, section="scheduler").http_port == 8080


def test_a_flat_file_gives_each_part_its_keys_and_shared_keys_to_both(tmp_path: Path) -> None:
    config = write(tmp_path, 'group_id = "g"\nhttp_port = 1\ndata_dir = "d"\n')
    front = load_settings(Front, config, section="worker", sections=PARTS)
    back = load_settings(Back, config, section="scheduler", sections=PARTS)
    assert (front.group_id, front.data_dir, back.http_port, back.data_dir) == ("g", "d", 1, "d")


def test_top_level_keys_apply_beneath_the_tables(tmp_path: Path) -> None:
    config = write(tmp_path, 'data_dir = "shared"\n[scheduler]\ndata_dir = "own"\n')
    assert load_settings(Front, config, section="worker", sections=PARTS).data_dir == "shared"
    assert load_settings(Back, config, section="scheduler", sections=PARTS).data_dir == "own"


def test_every_problem_is_reported_at_once_with_the_closest_name(tmp_path: Path) -> None:
    config = write(
        tmp_path, '{"worker": {"group": "g"}, "sheduler": {"http_port": 1}, "htp_port": 2}', "sx.json"
    )
    with pytest.raises(DefinitionError) as refused:
        load_settings(Front, config, section="worker", sections=PARTS)
    message = str(refused.value)
    assert "[worker] group: unknown setting (did you mean group_id?)" in message
    assert "[sheduler]: unknown table (did you mean scheduler?)" in message
    assert "htp_port: unknown setting (did you mean http_port?)" in message


def test_a_name_close_to_nothing_gets_no_suggestion(tmp_path: Path) -> None:
    config = write(tmp_path, "zzz = 1\n")
    with pytest.raises(DefinitionError, match=r"zzz: unknown setting'?$"):
        load_settings(Front, config, section="worker", sections=PARTS)
