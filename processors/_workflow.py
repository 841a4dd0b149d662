"""Workflows defined in code: a directed acyclic graph of one group's jobs with its own schedule.

    from sx.processors import cron, workflow

    nightly = workflow(
        "nightly",
        schedule=cron("0 0 2 * * ?"),
        edges=[(Extract, Transform), (Transform, Load)],
    )

Nodes are named by job name: a decorated processor class stands for its job. ``workflow(...)``
validates at definition time (unknown references, self-loops and cycles are a ``DefinitionError``
naming the field) and registers the frozen :class:`WorkflowSpec` in a workflow registry, which
``sx-worker sync`` reads after syncing the jobs. :func:`check_dag` is the one acyclicity check, shared
with the scheduler (which validates graphs of job ids the same way).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sx.processors._errors import DefinitionError, RegistryError
from sx.processors._registry import ProcessorDefinition, definition_of
from sx.processors._schedule import Schedule, api, parse_time_type, to_definition_error
from sx.processors._spec import JobSpec

__all__ = [
    "MAX_WORKFLOW_NODES",
    "WorkflowRegistry",
    "WorkflowSpec",
    "check_dag",
    "default_workflows",
    "workflow",
]

MAX_WORKFLOW_NODES: Final = 500
"""Jobs one workflow may hold (ours: the original names no limit)."""

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WIRE_NAMES = {
    "name": "name",
    "description": "description",
    "schedule": "timeExpression",
    "time_zone": "timeZone",
    "nodes": "nodes",
    "edges": "edges",
}

N = TypeVar("N", bound=Hashable)


def check_dag(nodes: Sequence[N], edges: Iterable[tuple[N, N]], *, field: str = "edges") -> list[N]:
    """The nodes in a topological order (stable: ties keep the given order).

    Raises DefinitionError for an edge naming an unknown node, a self-loop, or a cycle (the message
    names the nodes on it)."""
    known = set(nodes)
    downstream: dict[N, list[N]] = {node: [] for node in nodes}
    indegree: dict[N, int] = dict.fromkeys(nodes, 0)
    seen: set[tuple[N, N]] = set()
    for source, target in edges:
        for end in (source, target):
            if end not in known:
                raise DefinitionError(field, [source, target], f"edge names {end!r}, which is not a node")
        if source == target:
            raise DefinitionError(field, [source, target], f"{source!r} cannot depend on itself")
        if (source, target) in seen:
            continue
        seen.add((source, target))
        downstream[source].append(target)
        indegree[target] += 1
    order: list[N] = []
    ready = [node for node in nodes if indegree[node] == 0]
    while ready:
        node = ready.pop(0)
        order.append(node)
        for child in downstream[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) != len(nodes):
        left = [node for node in nodes if indegree[node] > 0]
        shown = ", ".join(repr(node) for node in left)
        raise DefinitionError(field, [list(e) for e in sorted(seen, key=repr)], f"has a cycle among {shown}")
    return order


class WorkflowSpec(BaseModel):
    """A workflow definition: its name, schedule and graph of job names (wire ``nodes``/``edges``).

    Constructing one validates it and raises ``DefinitionError`` naming the wire field. ``nodes``
    lists every job of the workflow (an edge's ends are added when missing); ``edges`` are
    ``(upstream, downstream)`` pairs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    description: Annotated[StrictStr, Field(max_length=1000)] = ""
    schedule: Schedule = api()
    time_zone: StrictStr = ""
    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...] = ()

    if not TYPE_CHECKING:

        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise to_definition_error(exc, _WIRE_NAMES) from None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if _CONTROL_CHARS.search(value) or value != value.strip():
            raise DefinitionError("name", value, "must have no control characters and no surrounding blanks")
        return value

    @field_validator("time_zone")
    @classmethod
    def _check_time_zone(cls, value: str) -> str:
        if value:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise DefinitionError("timeZone", value, "is not a known IANA time zone") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _complete_nodes(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        nodes = list(data.get("nodes") or ())
        edges = data.get("edges") or ()
        for edge in edges:
            if not isinstance(edge, Sequence) or isinstance(edge, str) or len(edge) != 2:
                raise DefinitionError("edges", edge, "each edge must be a pair [upstream, downstream]")
            for end in edge:
                if end not in nodes:
                    nodes.append(end)
        return {**data, "nodes": tuple(nodes), "edges": tuple(tuple(edge) for edge in edges)}

    @model_validator(mode="after")
    def _check_graph(self) -> WorkflowSpec:
        if not self.nodes:
            raise DefinitionError("nodes", [], "a workflow needs at least one job")
        if len(self.nodes) > MAX_WORKFLOW_NODES:
            raise DefinitionError("nodes", len(self.nodes), f"at most {MAX_WORKFLOW_NODES} jobs")
        duplicates = sorted({n for n in self.nodes if self.nodes.count(n) > 1})
        if duplicates:
            raise DefinitionError("nodes", duplicates, "lists a job twice")
        for node in self.nodes:
            if not node or _CONTROL_CHARS.search(node):
                raise DefinitionError("nodes", node, "is not a job name")
        check_dag(self.nodes, self.edges)
        return self

    def upstream_of(self, node: str) -> list[str]:
        """The nodes ``node`` waits for."""
        return [source for source, target in self.edges if target == node]

    # -- wire forms ------------------------------------------------------------------------------

    def to_create_params(self) -> dict[str, Any]:
        """CreateWorkflow/UpdateWorkflow parameters; nodes and edges by job name."""
        return {
            "name": self.name,
            "description": self.description,
            "timeType": int(self.schedule.time_type),
            "timeExpression": self.schedule.expression,
            "timeZone": self.time_zone,
            "nodes": list(self.nodes),
            "edges": [list(edge) for edge in self.edges],
        }

    @classmethod
    def from_wire(
        cls, data: Mapping[str, Any], *, job_names: Mapping[int, str] | None = None
    ) -> WorkflowSpec:
        """Read create parameters or GetWorkflow's data; ``job_names`` maps job ids to names when the
        nodes and edges are given as job ids."""
        names = job_names or {}

        def name_of(value: Any) -> str:
            if isinstance(value, bool):
                raise DefinitionError("nodes", value, "must be a job id or name")
            if isinstance(value, int):
                if value not in names:
                    raise DefinitionError("nodes", value, "no such job id")
                return names[value]
            if isinstance(value, str):
                return value
            raise DefinitionError("nodes", value, "must be a job id or name")

        raw_edges = data.get("edges") or []
        if not isinstance(raw_edges, list | tuple):
            raise DefinitionError("edges", raw_edges, "must be a list of [upstream, downstream] pairs")
        edges = []
        for edge in raw_edges:
            if not isinstance(edge, list | tuple) or len(edge) != 2:
                raise DefinitionError("edges", edge, "each edge must be a pair [upstream, downstream]")
            edges.append((name_of(edge[0]), name_of(edge[1])))
        schedule = Schedule(
            time_type=parse_time_type(data.get("timeType", 100)),
            expression=str(data.get("timeExpression") or ""),
        )
        return cls(
            name=data.get("name", ""),
            description=data.get("description") or "",
            schedule=schedule,
            time_zone=data.get("timeZone") or "",
            nodes=tuple(name_of(node) for node in data.get("nodes") or ()),
            edges=tuple(edges),
        )

    def diff(self, other: WorkflowSpec) -> dict[str, tuple[Any, Any]]:
        """Wire field -> (this value, the other's value) for every field that differs."""
        mine, theirs = self.to_create_params(), other.to_create_params()
        # Order of nodes and edges carries no meaning.
        for params in (mine, theirs):
            params["nodes"] = sorted(params["nodes"])
            params["edges"] = sorted(params["edges"])
        return {key: (mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]}


NodeRef = type | str | ProcessorDefinition | JobSpec


def _node_name(ref: object) -> str:
    if isinstance(ref, str):
        return ref
    if isinstance(ref, ProcessorDefinition | JobSpec):
        return ref.name
    if isinstance(ref, type):
        try:
            return definition_of(ref).name
        except RegistryError:
            raise DefinitionError(
                "nodes", ref.__qualname__, "is not a processor: decorate the class with @processor"
            ) from None
    raise DefinitionError("nodes", ref, "must be a @processor class, a job name or a JobSpec")


class WorkflowRegistry:
    """Workflow definitions by name; ``workflow(...)`` registers into the default one."""

    def __init__(self) -> None:
        self._specs: dict[str, WorkflowSpec] = {}
        self._lock = threading.Lock()

    def register(self, spec: WorkflowSpec) -> None:
        """Add ``spec``; another definition under the same name is a RegistryError."""
        with self._lock:
            existing = self._specs.get(spec.name)
            if existing is not None and existing != spec:
                raise RegistryError(f"workflow name {spec.name!r} is defined twice, differently")
            self._specs[spec.name] = spec

    def unregister(self, name: str) -> None:
        with self._lock:
            self._specs.pop(name, None)

    def all(self) -> list[WorkflowSpec]:
        """Every definition, in registration order."""
        with self._lock:
            return list(self._specs.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._specs)


_default_workflows = WorkflowRegistry()
_default_lock = threading.Lock()


def default_workflows() -> WorkflowRegistry:
    """The registry ``workflow(...)`` uses when given no ``registry=``."""
    return _default_workflows


@contextlib.contextmanager
def use_workflows(registry: WorkflowRegistry | None = None) -> Iterator[WorkflowRegistry]:
    """Make ``registry`` (a fresh one if None) the default inside the block, as ``use_registry`` does
    for processors (tests that import code defining workflows use both)."""
    global _default_workflows
    chosen = WorkflowRegistry() if registry is None else registry
    with _default_lock:
        previous, _default_workflows = _default_workflows, chosen
    try:
        yield chosen
    finally:
        with _default_lock:
            _default_workflows = previous


def workflow(
    name: str,
    *,
    edges: Iterable[tuple[NodeRef, NodeRef]] = (),
    nodes: Iterable[NodeRef] = (),
    schedule: Schedule | None = None,
    description: str = "",
    time_zone: str = "",
    registry: WorkflowRegistry | None = None,
) -> WorkflowSpec:
    """Define and register a workflow. ``edges`` are (upstream, downstream) pairs of processor classes
    or job names; ``nodes`` adds jobs without edges (a one-job workflow, or extra roots)."""
    pairs: list[tuple[str, str]] = []
    for edge in edges:
        if isinstance(edge, str) or not isinstance(edge, Sequence) or len(edge) != 2:
            raise DefinitionError("edges", edge, "each edge must be a pair (upstream, downstream)")
        pairs.append((_node_name(edge[0]), _node_name(edge[1])))
    spec = WorkflowSpec(
        name=name,
        description=description,
        schedule=schedule if schedule is not None else api(),
        time_zone=time_zone,
        nodes=tuple(_node_name(node) for node in nodes),
        edges=tuple(pairs),
    )
    (registry if registry is not None else _default_workflows).register(spec)
    return spec
