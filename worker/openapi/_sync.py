"""Job sync: make a group's jobs and workflows match the code (what ``sx-worker sync`` does).

Two steps. :func:`plan_sync` reads the group's jobs (and workflows, when given) and decides, per
definition, to create, update (with a field-by-field diff) or leave it; with ``prune`` it also disables
(or with ``delete`` deletes) the jobs and workflows sync manages that no longer exist in code. Ones not
marked managed are never pruned. It validates every definition first: a job's wire form must read back
as the same JobSpec and a calendar it names must exist; a workflow's jobs must exist once the jobs are
synced. :func:`apply_plan` carries the plan out; :func:`sync_definitions` does both.

Apply order: the jobs in code, then the workflows (which name them), then the pruned jobs (last, so a
refusal stops an atomic run before a job is deleted, which cannot be undone).

A second run against an unchanged group changes nothing. Two syncs of one group at once do not create
duplicate jobs: the scheduler keeps names unique per group, and a create that loses the race reads the
winner's job and updates it.

Atomic (``atomic=True``): nothing is applied if anything is refused. A definition that fails
validation stops the run before any change (every other entry, jobs and workflows, is SKIPPED). When the
scheduler still refuses one while applying, everything this run changed, workflows and jobs, is undone,
newest first: creations deleted, updates restored, disables re-enabled. A deletion cannot be undone, and
neither can what the scheduler refuses to restore: those are listed in ``rollback_errors``. Without
``atomic`` the valid definitions are applied and the refused ones are failed entries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

from sx.processors._enums import TimeType
from sx.processors._errors import DefinitionError
from sx.processors._registry import ProcessorDefinition
from sx.processors._spec import JobSpec
from sx.processors._workflow import WorkflowSpec
from sx.worker.openapi._client import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    OpenApiClient,
    OpenApiError,
)
from sx.worker.openapi._models import JobInfo, WorkflowInfo

__all__ = [
    "Action",
    "PlanEntry",
    "SyncOptions",
    "SyncPlan",
    "SyncResult",
    "apply_plan",
    "plan_sync",
    "sync_definitions",
]

log = logging.getLogger("sx.worker.sync")

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


@dataclass(kw_only=True, slots=True)
class SyncResult:
    """The outcome of a sync: per-job entries and counts; ``ok`` when nothing failed."""

    namespace: str
    group_id: str
    entries: list[PlanEntry]
    dry_run: bool = False
    atomic: bool = False
    rolled_back: bool = False
    rollback_errors: list[str] = field(default_factory=list)
    workflows: list[PlanEntry] = field(default_factory=list)
    """Workflow entries (applied after the jobs in code, before pruned jobs; ``job_id`` holds the id)."""

    @property
    def ok(self) -> bool:
        return (
            not any(entry.failed for entry in self.entries)
            and not self.rollback_errors
            and not any(entry.failed for entry in self.workflows)
        )

    @property
    def failed(self) -> list[PlanEntry]:
        return [entry for entry in self.entries if entry.failed]

    def count(self, action: Action) -> int:
        """Entries with this action that were applied (or, in a dry run, planned)."""
        wanted = Outcome.PLANNED if self.dry_run else Outcome.DONE
        return sum(1 for e in self.entries if e.action is action and e.outcome is wanted)

    @property
    def counts(self) -> dict[str, int]:
        counts = {action.value: self.count(action) for action in Action}
        counts["failed"] = len(self.failed)
        counts["skipped"] = sum(1 for e in self.entries if e.outcome is Outcome.SKIPPED)
        counts["rolledBack"] = sum(1 for e in self.entries if e.outcome is Outcome.ROLLED_BACK)
        return counts

    def summary(self) -> str:
        """One line of counts, then one line per failure."""
        c = self.counts
        prefix = "sync plan (dry run)" if self.dry_run else "sync"
        line = (
            f"{prefix} {self.namespace}/{self.group_id}: {c['create']} created, {c['update']} updated, "
            f"{c['unchanged']} unchanged, {c['disable']} disabled, {c['delete']} deleted, "
            f"{c['failed']} failed"
        )
        if self.dry_run:
            line = line.replace(" created", " to create").replace(" updated", " to update")
            line = line.replace(" disabled", " to disable").replace(" deleted", " to delete")
        if c["skipped"]:
            line += f", {c['skipped']} not applied"
        lines = [line]
        for entry in self.failed:
            lines.append(f"  job {entry.name!r}: {entry.error_field or 'definition'}: {entry.error}")
        if self.workflows:
            wanted = Outcome.PLANNED if self.dry_run else Outcome.DONE
            applied = [e for e in self.workflows if e.outcome is wanted]
            changed = sum(1 for e in applied if e.action is not Action.UNCHANGED)
            line = (
                f"workflows: {changed} {'to change' if self.dry_run else 'changed'}, "
                f"{len(applied) - changed} unchanged, "
                f"{sum(1 for e in self.workflows if e.failed)} failed"
            )
            not_applied = sum(1 for e in self.workflows if e.outcome in _NOT_APPLIED)
            lines.append(line + (f", {not_applied} not applied" if not_applied else ""))
            for entry in self.workflows:
                if entry.failed:
                    lines.append(
                        f"  workflow {entry.name!r}: {entry.error_field or 'definition'}: {entry.error}"
                    )
        if self.rolled_back:
            undone = sum(1 for e in (*self.entries, *self.workflows) if e.outcome is Outcome.ROLLED_BACK)
            lines.append(f"  atomic: rolled back {undone} change(s) made by this run")
        elif self.atomic and not self.ok and not self.dry_run:
            lines.append("  atomic: nothing applied, since a definition was refused")
        for problem in self.rollback_errors:
            lines.append(f"  rollback incomplete: {problem}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "namespace": self.namespace,
            "groupId": self.group_id,
            "dryRun": self.dry_run,
            "atomic": self.atomic,
            "counts": self.counts,
            "rolledBack": self.rolled_back,
            "rollbackErrors": list(self.rollback_errors),
            "jobs": [entry.to_json() for entry in self.entries],
            "workflows": [entry.to_json() for entry in self.workflows],
        }

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, default=str)


_NOT_APPLIED: Final = (Outcome.SKIPPED, Outcome.ROLLED_BACK)


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


def _with_takeover(changes: Changes, managed: bool) -> Changes:
    """A definition's diff, plus taking it over when it was made by hand: from then on sync owns it."""
    if not managed:
        changes["managed"] = (False, True)
    return changes


def _created_meanwhile(entry: PlanEntry, changes: Changes) -> bool:
    """Another sync created it since we planned: bring that one in line instead. True when it already
    is (nothing left to apply)."""
    entry.action = Action.UPDATE if changes else Action.UNCHANGED
    entry.changes = changes
    entry.note = "created meanwhile by someone else"
    return not changes


def _plan_one(spec: JobSpec, current: JobInfo | None) -> PlanEntry:
    if current is None:
        return PlanEntry(name=spec.name, action=Action.CREATE, spec=spec)
    changes = _with_takeover(current.spec.diff(spec), current.managed)
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
            entry.changes = _with_takeover(current.spec.diff(spec), current.managed)
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


async def apply_plan(client: OpenApiClient, plan: SyncPlan, options: SyncOptions | None = None) -> SyncResult:
    """Carry out ``plan``. Scheduler refusals of a definition become failed entries; other errors
    (unreachable, unauthorized) are raised, after an atomic rollback."""
    options = options or SyncOptions()
    result = SyncResult(
        namespace=plan.namespace,
        group_id=plan.group_id,
        entries=plan.entries,
        workflows=plan.workflows,
        dry_run=options.dry_run,
        atomic=options.atomic,
    )
    if options.dry_run:
        return result
    if options.atomic and plan.invalid:
        for entry in (*plan.entries, *plan.workflows):
            if not entry.failed:
                entry.outcome = Outcome.SKIPPED
        return result
    pruned = (Action.DISABLE, Action.DELETE)
    valid_jobs = [entry for entry in plan.entries if not entry.failed]
    pending = [
        *(entry for entry in valid_jobs if entry.action not in pruned),
        *(entry for entry in plan.workflows if not entry.failed),
        *(entry for entry in valid_jobs if entry.action in pruned),
    ]
    done: list[PlanEntry] = []
    jobs_applied, jobs_total = 0, len(valid_jobs)
    try:
        for index, entry in enumerate(pending, start=1):
            try:
                if entry.kind == "job":
                    await _apply_job(client, entry)
                else:
                    await _apply_workflow(client, entry)
            except InvalidRequestError as exc:
                entry.outcome = Outcome.FAILED
                entry.error_field, entry.error = exc.field, exc.message
                log.warning("sync: the scheduler refused %s %r: %s", entry.kind, entry.name, exc.message)
                if options.atomic:
                    for rest in pending[index:]:
                        rest.outcome = Outcome.SKIPPED
                    await _roll_back(client, done, result)
                    return result
            else:
                entry.outcome = Outcome.DONE
                if entry.action is not Action.UNCHANGED:
                    done.append(entry)
            if entry.kind == "job":
                jobs_applied += 1
                _report_progress(options, jobs_applied, jobs_total)
    except OpenApiError:
        if options.atomic and done:
            await _roll_back(client, done, result)
        raise
    return result


def _report_progress(options: SyncOptions, applied: int, total: int) -> None:
    every = options.progress_every
    if options.progress is not None and every and (applied % every == 0 or applied == total):
        options.progress(f"sync: {applied}/{total} jobs applied")


async def _apply_job(client: OpenApiClient, entry: PlanEntry) -> None:
    if entry.action is Action.UNCHANGED:
        return
    if entry.action is Action.DISABLE:
        assert entry.job_id is not None
        await client.disable_job(entry.job_id)
        return
    if entry.action is Action.DELETE:
        assert entry.job_id is not None
        try:
            await client.delete_job(entry.job_id)
        except NotFoundError:
            entry.note = "already deleted"
        return
    assert entry.spec is not None
    if entry.action is Action.CREATE:
        try:
            entry.job_id = await client.create_job(entry.spec, managed=True)
            return
        except ConflictError:
            current = await client.find_job(entry.name)
            if current is None:
                raise
            entry.job_id, entry.current = current.job_id, current
            if _created_meanwhile(entry, _with_takeover(current.spec.diff(entry.spec), current.managed)):
                return
    assert entry.job_id is not None
    try:
        await client.update_job(entry.job_id, entry.spec, managed=True)
    except NotFoundError:
        # Deleted since we planned: create it again.
        entry.action, entry.current = Action.CREATE, None
        entry.job_id = await client.create_job(entry.spec, managed=True)
        entry.note = "deleted meanwhile; created again"


async def _apply_workflow(client: OpenApiClient, entry: PlanEntry) -> None:
    if entry.action is Action.CREATE:
        assert entry.workflow is not None
        try:
            entry.job_id = await client.create_workflow(entry.workflow, managed=True)
            return
        except ConflictError:
            found = await client.find_workflow(entry.name)
            if found is None:
                raise
            entry.job_id, entry.current_workflow = found.workflow_id, found
            if _created_meanwhile(entry, _with_takeover(found.spec.diff(entry.workflow), found.managed)):
                return
    if entry.action is Action.UNCHANGED:
        return
    assert entry.job_id is not None
    if entry.action is Action.UPDATE:
        assert entry.workflow is not None
        await client.update_workflow(entry.job_id, entry.workflow, managed=True)
    elif entry.action is Action.DISABLE:
        await client.disable_workflow(entry.job_id)
    elif entry.action is Action.DELETE:
        await client.delete_workflow(entry.job_id)


async def _roll_back(client: OpenApiClient, done: Sequence[PlanEntry], result: SyncResult) -> None:
    """Undo this run's changes, newest first (so workflows go before the jobs they name); what
    cannot be undone goes to rollback_errors."""
    result.rolled_back = True
    for entry in reversed(done):
        what = f"{entry.kind} {entry.name!r}"
        if entry.action is Action.DELETE:
            result.rollback_errors.append(f"{what} was deleted and cannot be restored")
            continue
        try:
            if entry.kind == "job":
                await _undo_job(client, entry)
            else:
                await _undo_workflow(client, entry)
            entry.outcome = Outcome.ROLLED_BACK
        except OpenApiError as exc:
            result.rollback_errors.append(f"{what}: {exc}")


async def _undo_job(client: OpenApiClient, entry: PlanEntry) -> None:
    if entry.action is Action.CREATE and entry.job_id is not None:
        await client.delete_job(entry.job_id)
    elif entry.action is Action.UPDATE and entry.current is not None:
        await client.update_job(entry.current.job_id, entry.current.spec, managed=entry.current.managed)
    elif entry.action is Action.DISABLE and entry.job_id is not None:
        await client.enable_job(entry.job_id)


async def _undo_workflow(client: OpenApiClient, entry: PlanEntry) -> None:
    current = entry.current_workflow
    if entry.action is Action.CREATE and entry.job_id is not None:
        await client.delete_workflow(entry.job_id)
    elif entry.action is Action.UPDATE and current is not None:
        await client.update_workflow(current.workflow_id, current.spec, managed=current.managed)
    elif entry.action is Action.DISABLE and entry.job_id is not None:
        await client.enable_workflow(entry.job_id)


async def sync_definitions(
    client: OpenApiClient,
    definitions: Iterable[ProcessorDefinition | JobSpec],
    options: SyncOptions | None = None,
    *,
    workflows: Iterable[WorkflowSpec] | None = None,
    on_plan: Callable[[SyncPlan], None] | None = None,
) -> SyncResult:
    """Plan and apply: make the client's group match ``definitions`` (processor definitions or plain
    JobSpecs, e.g. script jobs) and, when given, ``workflows`` (``None`` leaves the group's workflows
    alone; an empty list with ``prune`` prunes them). ``on_plan`` sees the plan before it is applied."""
    options = options or SyncOptions()
    plan = await plan_sync(client, definitions, options, workflows=workflows)
    if on_plan is not None:
        on_plan(plan)
    return await apply_plan(client, plan, options)
