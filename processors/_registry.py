"""``@processor``: validate a processor class, build its job definition, and register it by name."""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Literal, TypeVar, overload

from pydantic import ValidationError

from sx.processors._codec import Codec, codec_for
from sx.processors._enums import ExecuteMode, JobType, MisfirePolicy
from sx.processors._errors import DefinitionError, RegistryError
from sx.processors._kinds import BroadcastProcessor, Processor, ProcessorKind, kind_of
from sx.processors._schedule import Schedule, api, to_definition_error
from sx.processors._spec import JobSpec
from sx.processors._spec_options import Contact, MapOptions, MonitorOptions

__all__ = [
    "ProcessorDefinition",
    "Registry",
    "Seconds",
    "default_registry",
    "definition_of",
    "processor",
    "use_registry",
]

P = TypeVar("P", bound=Processor)

_ATTRIBUTE = "__sx_definition__"

# Hooks each kind has, and the optional ones (a no-op default on the base class) that are only
# listed in a definition when the class overrides them.
_HOOKS: dict[ProcessorKind, tuple[str, ...]] = {
    ProcessorKind.PROCESSOR: ("process", "kill"),
    ProcessorKind.BROADCAST: ("pre_process", "process", "post_process", "kill"),
    ProcessorKind.MAP: ("process", "kill"),
    ProcessorKind.MAP_REDUCE: ("process", "reduce", "kill"),
}
_OPTIONAL_HOOKS = {
    "kill": Processor.kill,
    "pre_process": BroadcastProcessor.pre_process,
    "post_process": BroadcastProcessor.post_process,
}

_DEFAULT_MODE = {
    ProcessorKind.PROCESSOR: ExecuteMode.STANDALONE,
    ProcessorKind.BROADCAST: ExecuteMode.BROADCAST,
    ProcessorKind.MAP: ExecuteMode.GRID,
    ProcessorKind.MAP_REDUCE: ExecuteMode.GRID,
}


@dataclass(frozen=True, slots=True)
class ProcessorDefinition:
    """What ``@processor`` attaches to a class: its name, job definition, kind, hooks and codec.

    ``hooks`` maps each hook the worker should call to whether it is ``async def``; optional hooks
    (``kill``, ``pre_process``, ``post_process``) are listed only when the class overrides them.
    """

    name: str
    cls: type[Processor]
    spec: JobSpec
    kind: ProcessorKind
    hooks: Mapping[str, bool]
    codec: Codec
    reduce_on_failure: bool = False

    @property
    def mode(self) -> ExecuteMode:
        """The job's execute mode."""
        return self.spec.execute_mode

    def has_hook(self, hook: str) -> bool:
        """True when the worker should call ``hook``."""
        return hook in self.hooks

    def is_async(self, hook: str) -> bool:
        """True when ``hook`` is ``async def``; KeyError when the class has no such hook."""
        return self.hooks[hook]

    def create(self) -> Processor:
        """A new instance of the processor class."""
        return self.cls()


class Registry:
    """Processor definitions by name. ``@processor`` registers into the default registry."""

    def __init__(self) -> None:
        self._definitions: dict[str, ProcessorDefinition] = {}
        self._lock = threading.Lock()

    def register(self, definition: ProcessorDefinition) -> None:
        """Add ``definition``; a name taken by another class is a RegistryError naming both."""
        with self._lock:
            existing = self._definitions.get(definition.name)
            if existing is not None and existing.cls is not definition.cls:
                raise RegistryError(
                    f"processor name {definition.name!r} is already taken by {_class_path(existing.cls)}; "
                    f"{_class_path(definition.cls)} needs another name= (names must be unique)"
                )
            self._definitions[definition.name] = definition

    def unregister(self, name: str) -> None:
        """Remove ``name`` if present."""
        with self._lock:
            self._definitions.pop(name, None)

    def get(self, name: str) -> ProcessorDefinition:
        """The definition called ``name``; RegistryError when there is none."""
        with self._lock:
            definition = self._definitions.get(name)
        if definition is None:
            raise RegistryError(
                f"processor {name!r} is not registered; import the module that defines it "
                "(sx-worker run <module>) or check the name"
            )
        return definition

    def all(self) -> list[ProcessorDefinition]:
        """Every definition, in registration order."""
        with self._lock:
            return list(self._definitions.values())

    @property
    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        with self._lock:
            return list(self._definitions)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._definitions

    def __len__(self) -> int:
        with self._lock:
            return len(self._definitions)


_default_registry = Registry()
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The registry ``@processor`` uses when given no ``registry=``."""
    return _default_registry


@contextlib.contextmanager
def use_registry(registry: Registry | None = None) -> Iterator[Registry]:
    """Make ``registry`` (a fresh one if None) the default inside the block, e.g. in tests."""
    global _default_registry
    chosen = Registry() if registry is None else registry
    with _default_lock:
        previous, _default_registry = _default_registry, chosen
    try:
        yield chosen
    finally:
        with _default_lock:
            _default_registry = previous


def definition_of(cls: type) -> ProcessorDefinition:
    """The definition ``@processor`` attached to ``cls``; RegistryError if it was not decorated."""
    definition = cls.__dict__.get(_ATTRIBUTE) if isinstance(cls, type) else None
    if not isinstance(definition, ProcessorDefinition):
        raise RegistryError(f"{cls!r} is not a processor: decorate the class with @processor")
    return definition


Seconds = int | timedelta


@overload
def processor(cls: type[P], /) -> type[P]: ...


@overload
def processor(
    *,
    name: str | None = None,
    description: str | None = None,
    mode: ExecuteMode | str | None = None,
    schedule: Schedule | None = None,
    parameters: str | None = None,
    max_concurrency: int | None = None,
    max_attempt: int | None = None,
    attempt_interval: Seconds | None = None,
    calendar: str | None = None,
    data_offset: int | None = None,
    time_zone: str | None = None,
    misfire: MisfirePolicy | str | None = None,
    capture_logs: bool | None = None,
    page_size: int | None = None,
    consumer_size: int | None = None,
    queue_size: int | None = None,
    dispatcher_size: int | None = None,
    task_max_attempt: int | None = None,
    task_attempt_interval: Seconds | None = None,
    timeout: Seconds | None = None,
    timeout_enable: bool | None = None,
    timeout_kill_enable: bool | None = None,
    fail_enable: bool | None = None,
    send_channel: str | None = None,
    alarm_url: str | None = None,
    contacts: Sequence[Contact] | None = None,
    codec: Literal["json", "pickle"] = "json",
    reduce_on_failure: bool | None = None,
    registry: Registry | None = None,
) -> Callable[[type[P]], type[P]]: ...


def processor(cls: type[P] | None = None, /, **options: Any) -> type[P] | Callable[[type[P]], type[P]]:
    """Register a processor class: ``@processor`` or ``@processor(name=..., schedule=..., ...)``.

    The name defaults to ``module:QualName``. The mode defaults to standalone for ``Processor``,
    broadcast for ``BroadcastProcessor`` and grid for map kinds. The other keywords are the job
    definition (``JobSpec``) fields; durations take seconds or a ``timedelta``. Raises
    ``DefinitionError`` for an invalid class or option and ``RegistryError`` for a taken name.
    """
    if cls is not None:
        if options:
            raise TypeError("use @processor or @processor(**options), not both")
        return _define(cls, {})

    def decorate(target: type[P]) -> type[P]:
        return _define(target, options)

    return decorate


def _define(cls: type[P], options: dict[str, Any]) -> type[P]:
    kind = kind_of(cls)
    if kind is None:
        raise DefinitionError(
            "className",
            cls,
            "a processor class must subclass Processor, BroadcastProcessor, MapProcessor "
            "or MapReduceProcessor",
        )
    options = dict(options)
    registry = options.pop("registry", None)
    if registry is None:  # not `or`: an empty Registry is falsy
        registry = default_registry()
    name = _processor_name(cls, options.pop("name", None))
    _check_class(cls)
    mode = _execute_mode(cls, kind, options.pop("mode", None))
    codec_name = options.pop("codec", "json")
    try:
        codec = codec_for(codec_name)
    except ValueError:
        raise DefinitionError("codec", codec_name, "must be 'json' (the default) or 'pickle'") from None
    reduce_on_failure = options.pop("reduce_on_failure", None)
    if reduce_on_failure is None:
        reduce_on_failure = bool(getattr(cls, "reduce_on_failure", False))
    elif kind is not ProcessorKind.MAP_REDUCE:
        raise DefinitionError("reduceOnFailure", reduce_on_failure, "only MapReduceProcessor classes reduce")
    elif not isinstance(reduce_on_failure, bool):
        raise DefinitionError("reduceOnFailure", reduce_on_failure, "must be True or False")
    spec = _build_spec(name, kind, mode, options)
    definition = ProcessorDefinition(
        name=name,
        cls=cls,
        spec=spec,
        kind=kind,
        hooks=MappingProxyType(_hooks(cls, kind)),
        codec=codec,
        reduce_on_failure=reduce_on_failure,
    )
    registry.register(definition)
    setattr(cls, _ATTRIBUTE, definition)
    return cls


def _processor_name(cls: type, name: object) -> str:
    if name is not None:
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise DefinitionError("name", name, "must be a non-empty string without surrounding blanks")
        return name
    if cls.__module__ == "__main__":
        raise DefinitionError(
            "name",
            f"__main__:{cls.__qualname__}",
            "a class defined in __main__ has no stable name; set @processor(name=...) "
            "or define it in a module and import that module",
        )
    if "<locals>" in cls.__qualname__:
        raise DefinitionError(
            "name",
            f"{cls.__module__}:{cls.__qualname__}",
            "a class defined inside a function has no stable name; set @processor(name=...)",
        )
    return f"{cls.__module__}:{cls.__qualname__}"


def _check_class(cls: type) -> None:
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise DefinitionError("className", cls.__qualname__, f"implement the abstract hook(s): {missing}")
    try:
        inspect.signature(cls).bind()
    except TypeError:
        raise DefinitionError(
            "className",
            cls.__qualname__,
            "the worker creates processors with no arguments; __init__ must take none",
        ) from None
    except ValueError:  # no signature to inspect (some builtins): let instantiation decide
        pass


def _execute_mode(cls: type, kind: ProcessorKind, mode: object) -> ExecuteMode:
    if mode is None:
        return _DEFAULT_MODE[kind]
    try:
        parsed = mode if isinstance(mode, ExecuteMode) else ExecuteMode.parse(str(mode))
    except ValueError:
        choices = ", ".join(m.value for m in ExecuteMode)
        raise DefinitionError("executeMode", mode, f"must be one of {choices}") from None
    where = cls.__qualname__
    if kind.is_map and not parsed.is_map:
        raise DefinitionError(
            "executeMode",
            parsed.value,
            f"{where} is a map processor and needs mode parallel, grid or batch; "
            "subclass Processor (or BroadcastProcessor) for standalone or broadcast jobs",
        )
    if kind is ProcessorKind.BROADCAST and parsed is not ExecuteMode.BROADCAST:
        raise DefinitionError(
            "executeMode",
            parsed.value,
            f"{where} is a BroadcastProcessor and runs in mode broadcast; subclass Processor for "
            f"{parsed.value} jobs",
        )
    if kind is ProcessorKind.PROCESSOR and parsed.is_map:
        raise DefinitionError(
            "executeMode",
            parsed.value,
            f"mode {parsed.value} maps subtasks; subclass MapProcessor or MapReduceProcessor "
            "instead of Processor",
        )
    return parsed


def _hooks(cls: type, kind: ProcessorKind) -> dict[str, bool]:
    hooks: dict[str, bool] = {}
    for hook in _HOOKS[kind]:
        function = getattr(cls, hook, None)
        if not callable(function):
            raise DefinitionError("className", cls.__qualname__, f"{hook} must be a method")
        if hook in _OPTIONAL_HOOKS and function is _OPTIONAL_HOOKS[hook]:
            continue
        if inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function):
            raise DefinitionError(
                "className", cls.__qualname__, f"{hook} must be a plain def or async def, not a generator"
            )
        hooks[hook] = inspect.iscoroutinefunction(function)
    return hooks


_MAP_FIELDS = {
    "page_size": "pageSize",
    "consumer_size": "consumerSize",
    "queue_size": "queueSize",
    "dispatcher_size": "dispatcherSize",
    "task_max_attempt": "taskMaxAttempt",
    "task_attempt_interval": "taskAttemptInterval",
}
_MONITOR_FIELDS = (
    "timeout_enable",
    "timeout",
    "timeout_kill_enable",
    "fail_enable",
    "send_channel",
    "alarm_url",
    "contacts",
)
_SPEC_FIELDS = (
    "description",
    "parameters",
    "max_concurrency",
    "max_attempt",
    "attempt_interval",
    "calendar",
    "data_offset",
    "time_zone",
    "misfire",
    "capture_logs",
)
_DURATIONS = {
    "attempt_interval": "attemptInterval",
    "task_attempt_interval": "taskAttemptInterval",
    "timeout": "timeout",
}


def _build_spec(name: str, kind: ProcessorKind, mode: ExecuteMode, options: dict[str, Any]) -> JobSpec:
    unknown = set(options) - set(_MAP_FIELDS) - set(_MONITOR_FIELDS) - set(_SPEC_FIELDS) - {"schedule"}
    if unknown:
        field = sorted(unknown)[0]
        raise DefinitionError(field, options[field], "unknown @processor option")
    given = {key: value for key, value in options.items() if value is not None}
    for key, wire in _DURATIONS.items():
        if key in given:
            given[key] = _seconds(wire, given[key])
    if "contacts" in given:
        given["contacts"] = tuple(given["contacts"])
    map_options = {key: given.pop(key) for key in list(given) if key in _MAP_FIELDS}
    monitor_options = {key: given.pop(key) for key in list(given) if key in _MONITOR_FIELDS}
    if map_options and not kind.is_map:
        key = sorted(map_options)[0]
        raise DefinitionError(
            _MAP_FIELDS[key],
            map_options[key],
            "map options apply to MapProcessor and MapReduceProcessor only",
        )
    schedule = given.pop("schedule", None)
    if schedule is None:
        schedule = api()
    elif not isinstance(schedule, Schedule):
        raise DefinitionError(
            "timeExpression",
            schedule,
            "schedule must be cron(...), fixed_rate(...), second_delay(...) or api()",
        )
    try:
        return JobSpec(
            name=name,
            job_type=JobType.PYTHON,
            class_name=name,
            execute_mode=mode,
            schedule=schedule,
            map=MapOptions(**map_options),
            monitor=MonitorOptions(**monitor_options),
            **given,
        )
    except ValidationError as exc:
        raise to_definition_error(exc, {}) from None


def _seconds(wire: str, value: object) -> int:
    if isinstance(value, timedelta):
        total = value.total_seconds()
        if total != int(total):
            raise DefinitionError(wire, value, "must be a whole number of seconds")
        return int(total)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise DefinitionError(wire, value, "must be an int of seconds or a timedelta")


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
