"""Reading a workflow definition from wire fields, and when a workflow fires.

A definition names a group's jobs (by id or by name) as its nodes, and edges between them; it must be
a DAG of at most ``MAX_WORKFLOW_NODES`` jobs. Its schedule is cron, fix_rate or api, read like a
job's (the shared timing functions take a JobSpec carrying only the schedule and zone).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any

from sx.processors import DefinitionError, JobSpec, Schedule, TimeType
from sx.processors.engine import MAX_WORKFLOW_NODES, check_dag, parse_time_type
from sx.scheduler._errors import BadRequest
from sx.scheduler.jobs import next_fire_time, zone_or_default
from sx.scheduler.store import JobStore, WorkflowDef

__all__ = ["DefinitionReader", "next_workflow_fire", "workflow_timing_spec"]

_DEF_FIELDS = ("name", "description", "timeType", "timeExpression", "timeZone", "nodes", "edges")


def workflow_timing_spec(definition: WorkflowDef) -> JobSpec:
    """A JobSpec carrying only the workflow's schedule and zone, for the shared timing functions."""
    return JobSpec(
        name=definition.name,
        class_name="workflow",
        schedule=definition.schedule,
        time_zone=definition.time_zone,
    )


def next_workflow_fire(definition: WorkflowDef, after: datetime, *, default_tz: tzinfo) -> datetime | None:
    """The workflow's first fire strictly after ``after``; None for an api workflow. BadRequest when
    its schedule cannot be evaluated."""
    spec = workflow_timing_spec(definition)
    try:
        return next_fire_time(spec, after, default_tz=zone_or_default(spec, default_tz), calendar=None)
    except DefinitionError as exc:
        raise BadRequest.of(exc) from exc


def _json_value(field: str, value: Any) -> Any:
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise BadRequest(field, value, f"is not valid JSON ({exc})") from exc
    return value


class DefinitionReader:
    """Reads a definition from wire fields, resolving its nodes against the store's jobs."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    async def read(
        self, namespace: str, group_id: str, params: Mapping[str, Any], base: WorkflowDef | None
    ) -> WorkflowDef:
        """The definition ``params`` describe; with ``base``, absent fields keep its values. Every
        failure is a BadRequest naming the field."""
        values = {key: params[key] for key in _DEF_FIELDS if key in params and params[key] is not None}
        name = values.get("name", base.name if base else None)
        if not isinstance(name, str) or not name.strip() or len(name) > 100 or name != name.strip():
            raise BadRequest("name", name, "is required: 1 to 100 characters, no surrounding blanks")
        description = values.get("description", base.description if base else "")
        if not isinstance(description, str) or len(description) > 1000:
            raise BadRequest("description", description, "must be a string of at most 1000 characters")
        try:
            if "timeType" in values or base is None:
                time_type = parse_time_type(values.get("timeType", int(TimeType.API)))
                expression = values.get("timeExpression", "")
            else:
                time_type = base.schedule.time_type
                expression = values.get("timeExpression", base.schedule.expression)
            if time_type is TimeType.SECOND_DELAY:
                raise DefinitionError("timeType", int(time_type), "a workflow takes cron, fix_rate or api")
            schedule = Schedule(time_type=time_type, expression=str(expression or ""))
        except DefinitionError as exc:
            raise BadRequest.of(exc) from exc
        time_zone = values.get("timeZone", base.time_zone if base else "")
        if not isinstance(time_zone, str):
            raise BadRequest("timeZone", time_zone, "must be a string")
        if time_zone:
            try:
                workflow_timing_spec(WorkflowDef(name=name, schedule=schedule, nodes=(), time_zone=time_zone))
            except DefinitionError as exc:
                raise BadRequest.of(exc) from exc
        if "nodes" in values or "edges" in values or base is None:
            nodes, edges = await self._graph(namespace, group_id, values)
        else:
            nodes, edges = base.nodes, base.edges
        return WorkflowDef(
            name=name,
            schedule=schedule,
            nodes=nodes,
            edges=edges,
            description=description,
            time_zone=time_zone,
        )

    async def _resolve_node(self, namespace: str, group_id: str, field: str, value: Any) -> int:
        job = None
        if isinstance(value, int) and not isinstance(value, bool):
            job = await self._store.get_job(value)
            label = f"job {value}"
        elif isinstance(value, str) and value.strip():
            text = value.strip()
            if text.isascii() and text.isdigit():
                job = await self._store.get_job(int(text))
                label = f"job {text}"
            else:
                job = await self._store.find_job(namespace, group_id, text)
                label = f"job named {text!r}"
        else:
            raise BadRequest(field, value, "must be a job id or a job name")
        if job is None:
            raise BadRequest(field, value, f"{label} does not exist in group {group_id!r}")
        if job.namespace != namespace or job.group_id != group_id:
            raise BadRequest(
                field,
                value,
                f"{label} belongs to group {job.group_id!r} of namespace {job.namespace!r}; a workflow "
                f"only holds jobs of its own group {group_id!r}",
            )
        return job.id

    async def _graph(
        self, namespace: str, group_id: str, values: Mapping[str, Any]
    ) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        raw_nodes = _json_value("nodes", values.get("nodes", []))
        if isinstance(raw_nodes, str | int) and not isinstance(raw_nodes, bool):
            raw_nodes = [part for part in str(raw_nodes).split(",") if part.strip()]
        if not isinstance(raw_nodes, list):
            raise BadRequest("nodes", raw_nodes, "must be a list of job ids or names")
        raw_edges = _json_value("edges", values.get("edges", []))
        if raw_edges == "":
            raw_edges = []
        if not isinstance(raw_edges, list):
            raise BadRequest("edges", raw_edges, "must be a list of [fromJobId, toJobId] pairs")
        cache: dict[str, int] = {}

        async def resolve(field: str, value: Any) -> int:
            key = repr(value)
            if key not in cache:
                cache[key] = await self._resolve_node(namespace, group_id, field, value)
            return cache[key]

        nodes: list[int] = []
        for value in raw_nodes:
            job_id = await resolve("nodes", value)
            if job_id in nodes:
                raise BadRequest("nodes", value, "lists a job twice")
            nodes.append(job_id)
        edges: list[tuple[int, int]] = []
        for edge in raw_edges:
            if not isinstance(edge, list) or len(edge) != 2:
                raise BadRequest("edges", edge, "each edge must be a pair [fromJobId, toJobId]")
            pair = (await resolve("edges", edge[0]), await resolve("edges", edge[1]))
            for end in pair:
                if end not in nodes:
                    nodes.append(end)
            edges.append(pair)
        if not nodes:
            raise BadRequest("nodes", raw_nodes, "a workflow needs at least one job")
        if len(nodes) > MAX_WORKFLOW_NODES:
            raise BadRequest("nodes", len(nodes), f"a workflow holds at most {MAX_WORKFLOW_NODES} jobs")
        try:
            check_dag(nodes, edges)
        except DefinitionError as exc:
            raise BadRequest.of(exc) from exc
        return tuple(nodes), tuple(dict.fromkeys(edges))
