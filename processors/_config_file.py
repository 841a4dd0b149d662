"""Settings loading shared by the worker and the scheduler: flags > ``SX_*`` environment > file > defaults."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from sx.processors._errors import DefinitionError

__all__ = ["load_settings", "read_config_file"]

S = TypeVar("S", bound=BaseSettings)


def read_config_file(path: Path, *, section: str) -> dict[str, Any]:
    """A TOML or JSON settings file; its ``[section]`` table is used when it has one."""
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
    inner = data.get(section)
    return dict(inner) if isinstance(inner, dict) else data


def load_settings(cls: type[S], config_file: Path | None, *, section: str, **flags: Any) -> S:
    """Build settings with flags (None = not given) over the environment over the file over defaults.

    Unknown keys in the file are errors naming the key, so a typo never passes silently.
    """
    from_file = read_config_file(config_file, section=section) if config_file else {}
    for key, value in from_file.items():
        if key not in cls.model_fields:
            raise DefinitionError(f"{config_file}: {key}", value, "unknown setting")
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        from_env = cls()  # pydantic-settings reads SX_* here; what it set is in model_fields_set
        env_values = {k: getattr(from_env, k) for k in from_env.model_fields_set}
        return cls(**{**from_file, **env_values, **given})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise DefinitionError(where, first.get("input"), first["msg"]) from exc
