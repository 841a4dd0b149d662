"""The @processor decorator and the registry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from sx.processors import (
    BroadcastProcessor,
    Contact,
    DefinitionError,
    ExecuteMode,
    JobContext,
    JobType,
    MapProcessor,
    MapReduceProcessor,
    Processor,
    ProcessorKind,
    Registry,
    RegistryError,
    cron,
    default_registry,
    definition_of,
    processor,
    use_registry,
)

MODULE_REGISTRY = Registry()


@processor(registry=MODULE_REGISTRY)
class Named(Processor):
    def process(self, ctx: JobContext) -> None:
        return None


@pytest.fixture
def registry() -> Iterator[Registry]:
    with use_registry() as fresh:
        yield fresh


def test_bare_form_defaults_the_name_to_module_and_qualname() -> None:
    definition = definition_of(Named)
    assert definition.name == f"{__name__}:Named"
    assert MODULE_REGISTRY.get(definition.name) is definition
    assert definition.spec.class_name == definition.name
    assert definition.spec.job_type is JobType.PYTHON
    assert definition.kind is ProcessorKind.PROCESSOR
    assert definition.mode is ExecuteMode.STANDALONE
    assert dict(definition.hooks) == {"process": False}


def test_keyword_form_builds_the_job_spec(registry: Registry) -> None:
    @processor(
        name="billing.nightly",
        description="bills",
        schedule=cron("0 0 2 * * ?"),
        parameters="p=1",
        max_attempt=3,
        attempt_interval=timedelta(minutes=1),
        time_zone="Asia/Shanghai",
        misfire="skip",
        timeout=timedelta(hours=1),
        timeout_enable=True,
        contacts=[Contact(user_name="ops")],
    )
    class Nightly(Processor):
        async def process(self, ctx: JobContext) -> str:
            return "ok"

    definition = registry.get("billing.nightly")
    assert definition is definition_of(Nightly)
    spec = definition.spec
    assert spec.name == "billing.nightly"
    assert spec.description == "bills"
    assert spec.schedule == cron("0 0 2 * * ?")
    assert (spec.max_attempt, spec.attempt_interval, spec.time_zone) == (3, 60, "Asia/Shanghai")
    assert spec.misfire.value == "skip"
    assert (spec.monitor.timeout, spec.monitor.timeout_enable) == (3600, True)
    assert spec.monitor.contacts == (Contact(user_name="ops"),)
    assert definition.hooks["process"] is True
    assert registry.names == ["billing.nightly"]
    assert "billing.nightly" in registry and len(registry) == 1


def test_use_registry_swaps_the_default(registry: Registry) -> None:
    assert default_registry() is registry

    @processor(name="swapped")
    class Swapped(Processor):
        def process(self, ctx: JobContext) -> None:
            return None

    assert registry.all() == [definition_of(Swapped)]
    with use_registry() as inner:
        assert default_registry() is inner
        assert "swapped" not in inner
    assert default_registry() is registry


def test_main_module_is_refused(registry: Registry) -> None:
    with pytest.raises(
        DefinitionError, match=r"set @processor\(name=\.\.\.\) or define it in a module"
    ) as info:

        @processor
        class Script(Processor):
            __module__ = "__main__"

            def process(self, ctx: JobContext) -> None:
                return None

    assert info.value.field == "name"
    assert info.value.value == "__main__:test_main_module_is_refused.<locals>.Script"


def test_class_inside_a_function_needs_a_name(registry: Registry) -> None:
    with pytest.raises(DefinitionError, match="inside a function"):

        @processor
        class Local(Processor):
            def process(self, ctx: JobContext) -> None:
                return None


def test_duplicate_name_names_both_classes(registry: Registry) -> None:
    @processor(name="dup")
    class First(Processor):
        def process(self, ctx: JobContext) -> None:
            return None

    with pytest.raises(RegistryError) as info:

        @processor(name="dup")
        class Second(Processor):
            def process(self, ctx: JobContext) -> None:
                return None

    message = str(info.value)
    assert "First" in message and "Second" in message and "'dup'" in message


def test_unknown_name_is_a_registry_error(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="processor 'nope' is not registered"):
        registry.get("nope")
    with pytest.raises(RegistryError, match="decorate the class with @processor"):
        definition_of(Processor)


def test_default_modes_per_kind(registry: Registry) -> None:
    @processor(name="b")
    class B(BroadcastProcessor):
        def process(self, ctx: JobContext) -> None:
            return None

    @processor(name="m")
    class M(MapProcessor):
        def process(self, ctx: JobContext) -> None:
            return None

    @processor(name="mr", mode="batch")
    class MR(MapReduceProcessor):
        def process(self, ctx: JobContext) -> None:
            return None

        async def reduce(self, ctx: JobContext) -> None:
            return None

    @processor(name="p", mode=ExecuteMode.BROADCAST)
    class P(Processor):
        def process(self, ctx: JobContext) -> None:
            return None

    assert definition_of(B).mode is ExecuteMode.BROADCAST
    assert definition_of(M).mode is ExecuteMode.GRID
    assert definition_of(MR).mode is ExecuteMode.BATCH
    assert definition_of(MR).hooks == {"process": False, "reduce": True}
    assert definition_of(MR).reduce_on_failure is True
    assert definition_of(P).mode is ExecuteMode.BROADCAST
    assert definition_of(B).kind is ProcessorKind.BROADCAST
    assert definition_of(B).hooks == {"process": False}


@pytest.mark.parametrize(
    ("base", "mode", "advice"),
    [
        (MapProcessor, "standalone", "needs mode parallel, grid or batch"),
        (MapProcessor, "broadcast", "needs mode parallel, grid or batch"),
        (Processor, "grid", "subclass MapProcessor or MapReduceProcessor"),
        (BroadcastProcessor, "standalone", "runs in mode broadcast"),
    ],
)
def test_mode_that_does_not_fit_the_class(
    registry: Registry, base: type[Processor], mode: str, advice: str
) -> None:
    body = {"process": lambda self, ctx: None}
    cls = type("Job", (base,), body)
    with pytest.raises(DefinitionError, match=advice) as info:
        processor(name="job", mode=mode)(cls)
    assert info.value.field == "executeMode"
    assert "job" not in registry


def test_bad_options_name_the_field(registry: Registry) -> None:
    def make() -> type[Processor]:
        return type("Job", (Processor,), {"process": lambda self, ctx: None})

    cases: list[tuple[dict[str, object], str]] = [
        ({"mode": "sideways"}, "executeMode"),
        ({"codec": "yaml"}, "codec"),
        ({"attempt_interval": 1.5}, "attemptInterval"),
        ({"page_size": 5}, "pageSize"),
        ({"reduce_on_failure": False}, "reduceOnFailure"),
        ({"time_zone": "Mars/Base"}, "timeZone"),
        ({"max_concurrency": 0}, "maxConcurrency"),
        ({"name": " padded"}, "name"),
        ({"schedule": "0 * * * * ?"}, "timeExpression"),
    ]
    for options, field in cases:
        with pytest.raises(DefinitionError) as info:
            processor(**{"name": "job", **options})(make())  # type: ignore[call-overload]
        assert info.value.field == field, (options, info.value)
    assert len(registry) == 0


def test_abstract_and_non_processor_classes_are_refused(registry: Registry) -> None:
    with pytest.raises(DefinitionError, match="implement the abstract hook"):
        processor(name="abstract")(type("Half", (MapReduceProcessor,), {"process": lambda self, ctx: None}))
    with pytest.raises(DefinitionError, match="must subclass Processor"):
        processor(name="plain")(type("Plain", (), {}))


def test_constructor_arguments_are_refused(registry: Registry) -> None:
    class NeedsArgs(Processor):
        def __init__(self, dsn: str) -> None:
            self.dsn = dsn

        def process(self, ctx: JobContext) -> None:
            return None

    with pytest.raises(DefinitionError, match="__init__ must take none"):
        processor(name="args")(NeedsArgs)


def test_reduce_on_failure_keyword_overrides_the_class(registry: Registry) -> None:
    @processor(name="strict", reduce_on_failure=False)
    class Strict(MapReduceProcessor):
        def process(self, ctx: JobContext) -> None:
            return None

        def reduce(self, ctx: JobContext) -> None:
            return None

    assert definition_of(Strict).reduce_on_failure is False


def test_optional_hooks_are_listed_when_overridden(registry: Registry) -> None:
    @processor(name="full")
    class Full(BroadcastProcessor):
        async def pre_process(self, ctx: JobContext) -> None:
            return None

        def process(self, ctx: JobContext) -> None:
            return None

        def post_process(self, ctx: JobContext) -> None:
            return None

        async def kill(self, ctx: JobContext) -> None:
            return None

    definition = definition_of(Full)
    assert dict(definition.hooks) == {
        "pre_process": True,
        "process": False,
        "post_process": False,
        "kill": True,
    }
    assert definition.has_hook("kill") and definition.is_async("kill")
    assert isinstance(definition.create(), Full)
