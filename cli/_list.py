"""``sx-worker list``: the processors found in the targets and their job definitions."""

from __future__ import annotations

import click

from sx.cli._options import (
    describe_schedule,
    output_option,
)
from sx.cli._support import (
    emit,
    import_targets,
)
from sx.processors import default_registry

__all__ = ["list_processors"]


@click.command(name="list")
@click.argument("targets", nargs=-1, required=True)
@output_option
def list_processors(targets: tuple[str, ...], output: str) -> None:
    """List the @processor classes found in TARGETS and their job definitions."""
    import_targets(targets)
    definitions = default_registry().all()
    payload = [
        {
            "name": d.name,
            "class": f"{d.cls.__module__}.{d.cls.__qualname__}",
            "job": d.spec.to_create_params(),
        }
        for d in definitions
    ]

    def text() -> None:
        if not definitions:
            click.echo("no processors registered")
        for d in definitions:
            click.echo(f"{d.name}  [{d.spec.execute_mode.value}]  {describe_schedule(d)}")
            for key, value in d.spec.to_create_params().items():
                click.echo(f"    {key}: {value}")

    emit(output, payload, text)
