"""Job sync, step one: what it takes to make a group's jobs and workflows match the code.

:func:`plan_sync` reads the group's jobs (and workflows, when given) and decides, per definition, to
create, update (with a field-by-field diff) or leave it; with ``prune`` it also disables (or with
``delete`` deletes) the jobs and workflows sync manages that no longer exist in code. Ones not marked
managed are never pruned. It validates every definition first: a job's wire form must read back as the
same JobSpec and a calendar it names must exist; a workflow's jobs must exist once the jobs are synced.
Nothing is changed: ``_sync_apply`` carries the plan out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from sx.processors import DefinitionError, JobSpec, ProcessorDefinition, TimeType, WorkflowSpec
from sx.worker.openapi._client import OpenApiClient
from sx.worker.openapi._models import JobInfo, WorkflowInfo

__all__ = [
    "Action",
    "Changes",
    "Kind",
    "Outcome",
    "PlanEntry",
    "SyncOptions",
    "SyncPlan",
    "plan_sync",
    "with_takeover",
]

Kind = Literal["job", "workflow"]


class Action(StrEnum):
    """What sync does (or did) with one job."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    DISABLE = "disable"
    DELETE = "delete"


class Outcome(StrEnum):
    """How applying one entry ended."""

    PLANNED = "planned"
    """Not applied (a dry run, or not reached)."""
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not applied because another entry failed (atomic)."""
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncOptions:
    """How to sync. ``delete`` needs ``prune``; ``progress_every`` > 0 reports every N jobs through
    ``progress`` (a callable given one line of text)."""

    dry_run: bool = False
    prune: bool = False
    delete: bool = False
    atomic: bool = False
    progress_every: int = 0
    progress: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if self.delete and not self.prune:
            raise ValueError("delete=True needs prune=True: only pruned jobs are ever deleted")
        if self.progress_every < 0:
            raise ValueError(f"progress_every={self.progress_every!r}: must be 0 (off) or more")


@dataclass(kw_only=True, slots=True)
class PlanEntry:
    """One job or workflow in a plan: the action, the diff for updates, and after applying, the
    outcome. For workflows ``job_id`` holds the workflow id."""

    name: str
    action: Action
    kind: Kind = "job"
    job_id: int | None = None
    spec: JobSpec | None = None
    """The job definition in code (None for pruned jobs and for workflows)."""
    current: JobInfo | None = None
    """The job as the scheduler had it when planned."""
    workflow: WorkflowSpec | None = None
    """The workflow definition in code (None for pruned workflows)."""
    current_workflow: WorkflowInfo | None = None
    """The workflow as the scheduler had it when planned (restored by an atomic rollback)."""
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    """Wire field -> (the scheduler's value, the value in code)."""
    outcome: Outcome = Outcome.PLANNED
    error_field: str | None = None
    error: str | None = None
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "action": self.action.value,
            "jobId": self.job_id,
            "outcome": self.outcome.value,
            "changes": {wire: {"from": old, "to": new} for wire, (old, new) in self.changes.items()},
        }
        if self.error is not None:
            data["error"] = {"field": self.error_field, "message": self.error}
        if self.note:
            data["note"] = self.note
        return data


@dataclass(kw_only=True, slots=True)
class SyncPlan:
    """What sync will do to one group; invalid definitions are entries that already failed."""

    namespace: str
    group_id: str
    entries: list[PlanEntry]
    workflows: list[PlanEntry] = field(default_factory=list)

    @property
    def invalid(self) -> list[PlanEntry]:
        """Jobs and workflows that failed validation: with ``atomic`` nothing is applied."""
        return [entry for entry in (*self.entries, *self.workflows) if entry.failed]

    def table(self) -> str:
        """The plan as a text table, one line per job and workflow, then one line per changed field."""
        rows = [("ACTION", "JOB", "ID", "DETAIL")]
        for entry in (*self.entries, *self.workflows):
            detail = (
                f"{entry.error_field or 'definition'}: {entry.error}"
                if entry.failed
                else ", ".join(entry.changes)
            )
            action = "invalid" if entry.failed else entry.action.value
            name = entry.name if entry.kind == "job" else f"workflow {entry.name}"
            rows.append((action, name, "" if entry.job_id is None else str(entry.job_id), detail))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [
            f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip()
            for row in rows
        ]
        for entry in (*self.entries, *self.workflows):
            for wire, (old, new) in entry.changes.items():
                lines.append(f"  {entry.name}.{wire}: {_short(old)} -> {_short(new)}")
        return "\n".join(lines)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _spec_of(item: ProcessorDefinition | JobSpec) -> JobSpec:
    return item if isinstance(item, JobSpec) else item.spec


def _validate(spec: JobSpec, calendars: set[str], namespace: str) -> DefinitionError | None:
    """What the scheduler would refuse that we can tell without asking it to change anything."""
    try:
        again = JobSpec.from_create_params(spec.to_create_params())
    except DefinitionError as exc:
        return exc
    if again != spec:
        wire = next(iter(spec.diff(again)), "definition")
        return DefinitionError(
            wire, spec.diff(again).get(wire, ("", ""))[0], "does not survive the wire form"
        )
    if spec.calendar and spec.calendar not in calendars:
        # The scheduler's own words for it.
        return DefinitionError("calendar", spec.calendar, f"no such calendar in namespace {namespace!r}")
    return None


def _validate_workflow(spec: WorkflowSpec, jobs: set[str], group_id: str) -> DefinitionError | None:
    """What the scheduler would refuse in a workflow: ``jobs`` are the job names the group will have."""
    if spec.schedule.time_type is TimeType.SECOND_DELAY:
        return DefinitionError(
            "timeType", int(spec.schedule.time_type), "a workflow takes cron, fix_rate or api"
        )
    missing = next((node for node in spec.nodes if node not in jobs), None)
    if missing is not None:
        return DefinitionError(
            "nodes", missing, f"job named {missing!r} does not exist in group {group_id!r}"
        )
    return None


async def plan_sync(
    client: OpenApiClient,
    definitions: Iterable[ProcessorDefinition | JobSpec],
    options: SyncOptions | None = None,
    *,
    workflows: Iterable[WorkflowSpec] | None = None,
) -> SyncPlan:
    """Compare the definitions (and ``workflows``, when given) with the group's; nothing is changed."""
    options = options or SyncOptions()
    specs = [_spec_of(item) for item in definitions]
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.name in seen:
            raise DefinitionError("name", spec.name, "two definitions have this job name")
        seen[spec.name] = index
    existing = {job.name: job for job in await client.all_jobs()}
    calendars: set[str] = set()
    if any(spec.calendar for spec in specs):
        calendars = {calendar.name for calendar in await client.list_calendars()}
    entries: list[PlanEntry] = []
    for spec in specs:
        current = existing.get(spec.name)
        entry = _plan_one(spec, current)
        problem = _validate(spec, calendars, client.namespace)
        if problem is not None:
            entry.outcome = Outcome.FAILED
            entry.error_field, entry.error = problem.field, str(problem)
        entries.append(entry)
    if options.prune:
        entries.extend(_prune_jobs(existing, set(seen), delete=options.delete))
    plan = SyncPlan(namespace=client.namespace, group_id=client.group_id, entries=entries)
    if workflows is not None:
        # The jobs the group holds once the jobs are applied: a refused update leaves the old job.
        jobs = set(existing) | {e.name for e in entries if not e.failed}
        jobs -= {e.name for e in entries if e.action is Action.DELETE}
        plan.workflows = await _plan_workflows(client, list(workflows), jobs, options)
    return plan


def _prune_jobs(existing: dict[str, JobInfo], in_code: set[str], *, delete: bool) -> list[PlanEntry]:
    entries: list[PlanEntry] = []
    for name, job in sorted(existing.items()):
        if name in in_code or not job.managed:
            continue
        if delete:
            entries.append(PlanEntry(name=name, action=Action.DELETE, job_id=job.job_id, current=job))
        elif job.enabled:
            entries.append(
                PlanEntry(
                    name=name,
                    action=Action.DISABLE,
                    job_id=job.job_id,
                    current=job,
                    changes={"status": (1, 0)},
                )
            )
        else:
            note = "not in code; already disabled"
            entries.append(
                PlanEntry(name=name, action=Action.UNCHANGED, job_id=job.job_id, current=job, note=note)
            )
    return entries


Changes = dict[str, tuple[Any, Any]]


def with_takeover(changes: Changes, managed: bool) -> Changes:
    """A definition's diff, plus taking it over when it was made by hand: from then on sync owns it."""
    if not managed:
        changes["managed"] = (False, True)
    return changes


def _plan_one(spec: JobSpec, current: JobInfo | None) -> PlanEntry:
    if current is None:
        return PlanEntry(name=spec.name, action=Action.CREATE, spec=spec)
    changes = with_takeover(current.spec.diff(spec), current.managed)
    action = Action.UPDATE if changes else Action.UNCHANGED
    return PlanEntry(
        name=spec.name, action=action, job_id=current.job_id, spec=spec, current=current, changes=changes
    )


async def _plan_workflows(
    client: OpenApiClient, wanted: list[WorkflowSpec], jobs: set[str], options: SyncOptions
) -> list[PlanEntry]:
    """Create or update each workflow (a diff decides; sync never changes whether one is enabled),
    and with ``prune`` disable (or with ``delete`` delete) managed workflows no longer in code."""
    names = [spec.name for spec in wanted]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise DefinitionError("name", duplicate, "two workflow definitions have this name")
    existing = {info.name: info for info in await client.all_workflows()}
    entries: list[PlanEntry] = []
    for spec in wanted:
        current = existing.get(spec.name)
        entry = PlanEntry(name=spec.name, action=Action.CREATE, kind="workflow", workflow=spec)
        if current is not None:
            entry.changes = with_takeover(current.spec.diff(spec), current.managed)
            entry.action = Action.UPDATE if entry.changes else Action.UNCHANGED
            entry.job_id, entry.current_workflow = current.workflow_id, current
        problem = _validate_workflow(spec, jobs, client.group_id)
        if problem is not None:
            entry.outcome = Outcome.FAILED
            entry.error_field, entry.error = problem.field, str(problem)
        entries.append(entry)
    if options.prune:
        for name, info in sorted(existing.items()):
            if name in names or not info.managed or not (options.delete or info.enabled):
                continue
            entry = PlanEntry(
                name=name,
                action=Action.DELETE,
                kind="workflow",
                job_id=info.workflow_id,
                current_workflow=info,
            )
            if not options.delete:
                entry.action, entry.changes = Action.DISABLE, {"status": (1, 0)}
            entries.append(entry)
    return entries
