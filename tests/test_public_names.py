"""The names users import are pinned: removing or renaming one is a breaking change, made on purpose
(and so is adding one: a public name is a promise). Each package's ``__all__`` is its face."""

from __future__ import annotations

import importlib

import pytest

PUBLIC: dict[str, list[str]] = {
    "sx.processors": [
        "CronExpression",
        "MAX_PAYLOAD_BYTES",
        "REDUCE_TASK_NAME",
        "RESULT_LIMIT_BYTES",
        "ROOT_TASK_NAME",
        "BroadcastProcessor",
        "CancelledError",
        "Codec",
        "Contact",
        "CronError",
        "DefinitionError",
        "ExecuteMode",
        "InstanceStatus",
        "JobContext",
        "JobLogger",
        "JobSpec",
        "JobType",
        "JsonCodec",
        "MapOptions",
        "MapProcessor",
        "MapReduceProcessor",
        "MisfirePolicy",
        "MonitorOptions",
        "PayloadError",
        "PickleCodec",
        "ProcessResult",
        "Processor",
        "ProcessorDefinition",
        "ProcessorKind",
        "Registry",
        "RegistryError",
        "ResultTooLargeError",
        "Schedule",
        "ScriptProcessor",
        "SxError",
        "TaskMapper",
        "TaskStatus",
        "TimeType",
        "TriggerType",
        "UpstreamData",
        "WorkflowRegistry",
        "WorkflowSpec",
        "api",
        "codec_for",
        "cron",
        "current_context",
        "default_registry",
        "default_workflows",
        "definition_of",
        "fixed_rate",
        "get_current_context",
        "invoke",
        "next_fire_times",
        "processor",
        "script_processor_for",
        "second_delay",
        "use_registry",
        "use_workflows",
        "workflow",
    ],
    "sx.processors.testing": [
        "DEFAULT_MAX_TASKS",
        "run_processor",
        "run_processor_sync",
    ],
    "sx.worker": [
        "OpenApiClient",
        "OpenApiError",
        "SchedulerAddress",
        "SyncOpenApiClient",
        "SyncOptions",
        "SyncResult",
        "Worker",
        "WorkerRejected",
        "WorkerSettings",
        "sync_definitions",
    ],
    "sx.worker.testing": [
        "InstanceFailedError",
        "InstanceResult",
        "LocalScheduler",
    ],
    # The pytest plugin's fixtures and marker (loaded through the pytest11 entry point).
    "sx.worker.pytest_plugin": [
        "MARKER",
        "ProcessorRunner",
        "local_scheduler",
        "run_processor",
        "sx_registry",
    ],
    "sx.scheduler": [
        "Clock",
        "ManualClock",
        "RealClock",
        "SchedulerServer",
        "SchedulerSettings",
        "SchedulerStartError",
        "SqlStore",
        "Store",
        "sqlite_url",
    ],
    "sx.cli": [
        "ExitCode",
        "main",
        "settings_reference",
    ],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_the_public_names_are_pinned(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(PUBLIC[package])
    assert [name for name in PUBLIC[package] if not hasattr(module, name)] == []


def test_the_command_is_the_cli_package() -> None:
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "sx-worker"]
    assert script.value == "sx.cli:main"
    assert script.load() is importlib.import_module("sx.cli").main
