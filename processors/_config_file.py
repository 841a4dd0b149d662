"""Settings loading shared by the worker and the scheduler: flags > ``SX_*`` environment > file > defaults.

A config file (TOML, or JSON by its ``.json`` suffix) holds a ``[worker]`` and/or a ``[scheduler]``
table, or is flat: its top-level keys then go to every part whose settings have them (``data_dir`` to
both), and inside a file with tables they apply beneath each table. A file is checked whole before any
part is built: every unknown table and every unknown key is reported at once, each with the closest
known name when there is one, so a typo such as ``[sheduler]`` or ``group = ...`` never passes silently.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from sx.processors._errors import DefinitionError

__all__ = ["CONFIG_SECTIONS", "did_you_mean", "load_settings", "read_config_file", "split_config_file"]

S = TypeVar("S", bound=BaseSettings)

CONFIG_SECTIONS = ("worker", "scheduler")
"""The tables a config file may hold, one per part that reads it."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``known``, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def read_config_file(path: Path) -> dict[str, Any]:
    """The top-level table of a TOML or JSON settings file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError("config", str(path), f"cannot read the config file: {exc}") from exc
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise DefinitionError("config", str(path), f"not valid {path.suffix or 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise DefinitionError("config", str(path), "must hold a table of settings")
    return data


def split_config_file(path: Path, models: Mapping[str, type[BaseSettings]]) -> dict[str, dict[str, Any]]:
    """The file's settings for each part named in ``models`` (a section name to its settings class).

    Tables of sections not in ``models`` are left alone (another part reads them); every other
    problem is collected and raised as one DefinitionError listing them all.
    """
    data = read_config_file(path)
    problems: list[str] = []
    flat: dict[str, dict[str, Any]] = {name: {} for name in models}
    tables: dict[str, dict[str, Any]] = {name: {} for name in models}
    every_field = {field for model in models.values() for field in model.model_fields}
    for key, value in data.items():
        if key in CONFIG_SECTIONS and isinstance(value, dict):
            model = models.get(key)
            if model is None:
                continue
            for name, item in value.items():
                if name in model.model_fields:
                    tables[key][name] = item
                else:
                    hint = did_you_mean(name, model.model_fields)
                    problems.append(f"[{key}] {name}: unknown setting{hint}")
            continue
        owners = [section for section, model in models.items() if key in model.model_fields]
        for section in owners:
            flat[section][key] = value
        if owners:
            continue
        if isinstance(value, dict):
            known = [*CONFIG_SECTIONS, *every_field]
            problems.append(f"[{key}]: unknown table{did_you_mean(key, known)}")
        else:
            problems.append(f"{key}: unknown setting{did_you_mean(key, every_field)}")
    if problems:
        raise DefinitionError("config", str(path), "; ".join(problems))
    return {section: {**flat[section], **tables[section]} for section in models}


def load_settings(
    cls: type[S],
    config_file: Path | None,
    *,
    section: str,
    sections: Mapping[str, type[BaseSettings]] | None = None,
    **flags: Any,
) -> S:
    """Build settings with flags (None = not given) over the environment over the file over defaults.

    ``sections`` names every part's settings class the file may hold (default: only this one), so a
    flat file may carry the other part's keys too; unknown keys and tables are errors naming them.
    """
    models = dict(sections) if sections is not None else {section: cls}
    models[section] = cls
    from_file = split_config_file(config_file, models)[section] if config_file else {}
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        from_env = cls()  # pydantic-settings reads SX_* here; what it set is in model_fields_set
        env_values = {k: getattr(from_env, k) for k in from_env.model_fields_set}
        return cls(**{**from_file, **env_values, **given})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise DefinitionError(where, first.get("input"), first["msg"]) from exc
