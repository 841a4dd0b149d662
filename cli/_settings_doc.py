"""The settings reference (docs/settings.md), written from the settings models and the commands' flags.

``scripts/gen_settings_doc.py`` writes it; a test fails when the committed page differs from what this
module renders, so the reference cannot fall behind a new or changed setting.
"""

from __future__ import annotations

import click
from pydantic_settings import BaseSettings

from sx.cli._settings_flags import describe_default, env_twin, field_docs

__all__ = ["settings_reference"]

_INTRO = """\
# Settings reference

<!-- Written by scripts/gen_settings_doc.py from the settings models; do not edit by hand. -->

Every setting can be given four ways; the first that is given wins:

1. a flag of the command (`sx-worker run` for the worker, `sx-worker serve` for the scheduler),
2. its environment variable (`SX_` and the setting's name in capitals; a mapping such as `labels` as
   JSON, `SX_LABELS='{"zone": "a"}'`),
3. the config file given with `--config` (or `SX_CONFIG`): TOML, or JSON by its `.json` suffix,
4. the default.

A config file holds a `[worker]` and/or a `[scheduler]` table, or is flat: top-level keys go to every
part whose settings have them (`data_dir` to both), and beneath the tables in a file that has them.
Unknown tables and keys are errors, all reported at once with the closest known name. `data_dir`,
`tls_cert` and `tls_key` are settings of both parts, so their environment variables reach both.

```toml
[worker]
server = ["scheduler-a:9090", "scheduler-b:9090"]
group_id = "billing"
labels = { zone = "a" }

[scheduler]
database_url = "postgresql://sx@db/sx"
history_keep = 500
```
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _flags(command: click.Command) -> dict[str, str]:
    """Each parameter name of ``command`` and its flag as people type it."""
    ctx = click.Context(command)
    found: dict[str, str] = {}
    for param in command.get_params(ctx):
        if isinstance(param, click.Option) and param.name and not param.hidden:
            flag = max(param.opts, key=len)
            found[param.name] = f"{flag} {param.metavar}" if param.metavar else flag
    return found


def _table(model: type[BaseSettings], command: click.Command, verb: str) -> list[str]:
    docs = field_docs(model)
    flags = _flags(command)
    lines = [
        f"| Setting | `{verb}` flag | Environment | Default | Meaning |",
        "|---|---|---|---|---|",
    ]
    for field, info in model.model_fields.items():
        default = describe_default(info)
        flag = flags.get(field)
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{field}`",
                    f"`{flag}`" if flag else "",
                    f"`{env_twin(field)}`",
                    f"`{_cell(default)}`" if default is not None else "",
                    _cell(docs[field]),
                ]
            )
            + " |"
        )
    return lines


def settings_reference() -> str:
    """The settings reference page as Markdown."""
    from sx.cli._main import main
    from sx.scheduler import SchedulerSettings
    from sx.worker import WorkerSettings

    run, serve = main.commands["run"], main.commands["serve"]
    parts = [
        _INTRO,
        "## `[worker]`: the worker (`sx-worker run`, `sx-worker check`)\n",
        *_table(WorkerSettings, run, "run"),
        "",
        "## `[scheduler]`: the scheduler (`sx-worker serve`; `run` without `--server` embeds one)\n",
        "`run` takes `--data-dir`, `--http-port` and `--grpc-port` for the scheduler it embeds; the other "
        "settings reach it through the environment or the config file.\n",
        *_table(SchedulerSettings, serve, "serve"),
        "",
    ]
    return "\n".join(parts)
