"""Flags made from the settings models, so every setting can be given on the command line and ``--help``
shows each one's default and ``SX_`` environment twin.

A generated flag is ``--field-name`` (a few keep an older, shorter name such as ``--group``) whose value
is None when it is not given: the command hands the values to ``load_settings``, which applies them over
the environment, the config file and the defaults. Commands that take them are ``SettingsCommand``s: the
flags are made on first use, so a command line that never needs the scheduler's settings never imports
the scheduler.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

__all__ = [
    "SettingOption",
    "SettingsCommand",
    "describe_default",
    "env_twin",
    "field_docs",
    "flag_name",
    "setting_options",
    "show_env_twins",
]

ENV_PREFIX = "SX_"


def env_twin(field: str) -> str:
    """The environment variable pydantic-settings reads for ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def field_docs(model: type[BaseSettings]) -> dict[str, str]:
    """Each field's description: its ``Field(description=...)``, else the docstring under it."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseSettings)) or cls is BaseSettings:
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
        assert isinstance(body, ast.ClassDef)
        for node, following in zip(body.body, [*body.body[1:], None], strict=True):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            if (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    for name, info in model.model_fields.items():
        if info.description:
            docs[name] = info.description
        docs.setdefault(name, "")
    return docs


def flag_name(field: str, names: Mapping[str, str] | None = None) -> str:
    """The flag of setting ``field``: ``--field-name`` unless ``names`` gives it another."""
    return (names or {}).get(field, "--" + field.replace("_", "-"))


def describe_default(info: FieldInfo) -> str | None:
    """The default as a person reads it, or None when there is none to show."""
    default = info.get_default(call_default_factory=True)
    if default is None:
        return None
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, dict | list | tuple) and not default:
        return "none"
    if isinstance(default, str) and not default:
        return '""'
    return str(default)


class SettingOption(click.Option):
    """A flag for one setting: its help names the default and the environment twin itself (the value
    is read from the environment by the settings model, not by click)."""


def _value_type(annotation: Any) -> Any:
    """The annotation without ``| None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else str
    return annotation


def _pairs(_ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> dict[str, str] | None:
    if not value:
        return None
    found: dict[str, str] = {}
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param=param)
        found[key] = val
    return found


def setting_options(
    model: type[BaseSettings],
    *,
    skip: Collection[str] = (),
    names: Mapping[str, str] | None = None,
    only: Collection[str] | None = None,
) -> list[click.Parameter]:
    """One SettingOption per field of ``model`` (those in ``only``, minus ``skip``); ``names`` gives
    some fields another flag name than ``--field-name``."""
    docs = field_docs(model)
    renamed = names or {}
    options: list[click.Parameter] = []
    for field, info in model.model_fields.items():
        if field in skip or (only is not None and field not in only):
            continue
        flag = flag_name(field, renamed)
        kind = _value_type(info.annotation)
        extra = [f"env var: {env_twin(field)}"]
        default = describe_default(info)
        if default is not None:
            extra.append(f"default: {default}")
        doc = docs[field]
        kwargs: dict[str, Any] = {}
        if kind is bool:
            decls = [f"{flag}/--no-{flag[2:]}", field]
        elif typing.get_origin(kind) is dict:
            decls = [flag.removesuffix("s") if flag.endswith("s") else flag, field]
            kwargs.update(multiple=True, metavar="KEY=VALUE", callback=_pairs)
            doc = f"{doc} Repeat the flag for several; the twin takes a JSON object.".strip()
        else:
            decls = [flag, field]
            kwargs["type"] = {int: click.INT, float: click.FLOAT, Path: click.Path(path_type=Path)}.get(
                kind, click.STRING
            )
        help_text = f"{doc}  [{'; '.join(extra)}]" if doc else f"[{'; '.join(extra)}]"
        options.append(SettingOption(decls, default=None, help=help_text, **kwargs))
    return options


class SettingsCommand(click.Command):
    """A command whose setting flags are made by ``make_options`` the first time they are needed."""

    def __init__(self, *args: Any, make_options: Callable[[], list[click.Parameter]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._make_options: Callable[[], list[click.Parameter]] | None = make_options

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if self._make_options is not None:
            made, self._make_options = self._make_options(), None
            given = {p.name for p in self.params}
            self.params.extend(p for p in made if p.name not in given)
        return super().get_params(ctx)


def show_env_twins(command: click.Command) -> None:
    """Give every option of ``command`` and its subcommands an ``SX_`` twin (``SX_<NAME>`` unless it
    has one) and show the twin and the default in ``--help``. Setting flags document themselves."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            show_env_twins(sub)
    for param in command.params:
        if not isinstance(param, click.Option) or isinstance(param, SettingOption):
            continue
        if param.hidden or param.is_eager or param.name is None:  # --help, --version
            continue
        if param.envvar is None:
            param.envvar = env_twin(param.name)
        param.show_envvar = True
        param.show_default = True
