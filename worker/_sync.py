"""Job sync: make a group's jobs match the processors in code (what ``sx-worker sync`` does).

Two steps. :func:`plan_sync` reads the group's jobs and decides, per definition, to create, update
(with a field-by-field diff) or leave a job; with ``prune`` it also disables (or with ``delete``
deletes) the jobs sync manages that no longer exist in code. Jobs not marked managed are never pruned.
It validates every definition first: its wire form must read back as the same JobSpec, and a calendar
it names must exist. :func:`apply_plan` carries the plan out; :func:`sync_definitions` does both.

A second run against an unchanged group changes nothing. Two syncs of one group at once do not create
duplicates: the scheduler keeps names unique per group, and a create that loses the race reads the
winner's job and updates it. With ``atomic`` nothing is applied unless every definition is valid,
and when the scheduler still refuses one while applying, what this run created is deleted and what it
updated is restored, as far as the scheduler lets us (the result says what could not be undone).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sx.processors._errors import DefinitionError
from sx.processors._registry import ProcessorDefinition
from sx.processors._spec import JobSpec
from sx.processors._workflow import WorkflowSpec
from sx.worker._openapi_client import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    OpenApiClient,
    OpenApiError,
)
from sx.worker._openapi_models import JobInfo

__all__ = [
    "Action",
    "PlanEntry",
    "SyncOptions",
    "SyncPlan",
    "SyncResult",
    "apply_plan",
    "plan_sync",
    "sync_definitions",
    "sync_workflows",
]

log = logging.getLogger("sx.worker.sync")


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
    """One job in a plan: the action, the diff for updates, and after applying, the outcome."""

    name: str
    action: Action
    job_id: int | None = None
    spec: JobSpec | None = None
    """The definition in code (None for pruned jobs)."""
    current: JobInfo | None = None
    """The job as the scheduler had it when planned."""
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

    @property
    def invalid(self) -> list[PlanEntry]:
        return [entry for entry in self.entries if entry.failed]

    def table(self) -> str:
        """The plan as a text table, one line per job, then one line per changed field."""
        rows = [("ACTION", "JOB", "ID", "DETAIL")]
        for entry in self.entries:
            detail = (
                f"{entry.error_field or 'definition'}: {entry.error}"
                if entry.failed
                else ", ".join(entry.changes)
            )
            action = "invalid" if entry.failed and entry.outcome is Outcome.FAILED else entry.action.value
            rows.append((action, entry.name, "" if entry.job_id is None else str(entry.job_id), detail))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [
            f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip()
            for row in rows
        ]
        for entry in self.entries:
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
    """Workflow entries (synced after the jobs; ``job_id`` holds the workflow id)."""

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
        if self.rolled_back:
            undone = c["rolledBack"]
            lines.append(f"  atomic: rolled back {undone} change(s) made by this run")
        for problem in self.rollback_errors:
            lines.append(f"  rollback incomplete: {problem}")
        if self.workflows:
            done = [e for e in self.workflows if not e.failed and e.action is not Action.UNCHANGED]
            lines.append(
                f"workflows: {len(done)} {'to change' if self.dry_run else 'changed'}, "
                f"{sum(1 for e in self.workflows if e.action is Action.UNCHANGED)} unchanged, "
                f"{sum(1 for e in self.workflows if e.failed)} failed"
            )
            for entry in self.workflows:
                if entry.failed:
                    lines.append(
                        f"  workflow {entry.name!r}: {entry.error_field or 'definition'}: {entry.error}"
                    )
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


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _spec_of(item: ProcessorDefinition | JobSpec) -> JobSpec:
    return item if isinstance(item, JobSpec) else item.spec


def _validate(spec: JobSpec, calendars: set[str]) -> DefinitionError | None:
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
        return DefinitionError("calendar", spec.calendar, "no such calendar in the namespace")
    return None


async def plan_sync(
    client: OpenApiClient,
    definitions: Iterable[ProcessorDefinition | JobSpec],
    options: SyncOptions | None = None,
) -> SyncPlan:
    """Compare the definitions with the group's jobs; nothing is changed."""
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
        problem = _validate(spec, calendars)
        if problem is not None:
            entry.outcome = Outcome.FAILED
            entry.error_field, entry.error = problem.field, str(problem)
        entries.append(entry)
    if options.prune:
        # Pruning comes after every definition, so a refused definition stops an atomic run
        # before a job is deleted (a deletion cannot be rolled back).
        for name, job in sorted(existing.items()):
            if name in seen or not job.managed:
                continue
            if options.delete:
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
                entries.append(
                    PlanEntry(
                        name=name,
                        action=Action.UNCHANGED,
                        job_id=job.job_id,
                        current=job,
                        note="not in code; already disabled",
                    )
                )
    return SyncPlan(namespace=client.namespace, group_id=client.group_id, entries=entries)


def _plan_one(spec: JobSpec, current: JobInfo | None) -> PlanEntry:
    if current is None:
        return PlanEntry(name=spec.name, action=Action.CREATE, spec=spec)
    changes = current.spec.diff(spec)
    if not current.managed:
        # A job of that name made by hand is adopted: from now on sync owns it.
        changes["managed"] = (False, True)
    action = Action.UPDATE if changes else Action.UNCHANGED
    return PlanEntry(
        name=spec.name, action=action, job_id=current.job_id, spec=spec, current=current, changes=changes
    )


async def apply_plan(client: OpenApiClient, plan: SyncPlan, options: SyncOptions | None = None) -> SyncResult:
    """Carry out ``plan``. Scheduler refusals of a definition become failed entries; other errors
    (unreachable, unauthorized) are raised, after an atomic rollback."""
    options = options or SyncOptions()
    result = SyncResult(
        namespace=plan.namespace,
        group_id=plan.group_id,
        entries=plan.entries,
        dry_run=options.dry_run,
        atomic=options.atomic,
    )
    if options.dry_run:
        return result
    if options.atomic and plan.invalid:
        for entry in plan.entries:
            if not entry.failed:
                entry.outcome = Outcome.SKIPPED
        return result
    done: list[PlanEntry] = []
    pending = [entry for entry in plan.entries if not entry.failed]
    total = len(pending)
    try:
        for index, entry in enumerate(pending, start=1):
            try:
                await _apply_one(client, entry)
            except InvalidRequestError as exc:
                entry.outcome = Outcome.FAILED
                entry.error_field, entry.error = exc.field, exc.message
                log.warning("sync: the scheduler refused job %r: %s", entry.name, exc.message)
                if options.atomic:
                    for rest in pending[index:]:
                        rest.outcome = Outcome.SKIPPED
                    await _roll_back(client, done, result)
                    return result
            else:
                entry.outcome = Outcome.DONE
                if entry.action is not Action.UNCHANGED:
                    done.append(entry)
            if (
                options.progress is not None
                and options.progress_every
                and (index % options.progress_every == 0 or index == total)
            ):
                options.progress(f"sync: {index}/{total} jobs applied")
    except OpenApiError:
        if options.atomic and done:
            await _roll_back(client, done, result)
        raise
    return result


async def _apply_one(client: OpenApiClient, entry: PlanEntry) -> None:
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
            # Another sync created it since we planned: bring that job in line instead.
            current = await client.find_job(entry.name)
            if current is None:
                raise
            entry.action, entry.job_id, entry.current = Action.UPDATE, current.job_id, current
            entry.changes = current.spec.diff(entry.spec)
            if not current.managed:
                entry.changes["managed"] = (False, True)
            entry.note = "created meanwhile by someone else"
            if not entry.changes:
                entry.action = Action.UNCHANGED
                return
    assert entry.job_id is not None
    try:
        await client.update_job(entry.job_id, entry.spec, managed=True)
    except NotFoundError:
        # Deleted since we planned: create it again.
        entry.action, entry.current = Action.CREATE, None
        entry.job_id = await client.create_job(entry.spec, managed=True)
        entry.note = "deleted meanwhile; created again"


async def _roll_back(client: OpenApiClient, done: Sequence[PlanEntry], result: SyncResult) -> None:
    """Undo this run's changes, newest first; what cannot be undone goes to rollback_errors."""
    result.rolled_back = True
    for entry in reversed(done):
        try:
            if entry.action is Action.CREATE and entry.job_id is not None:
                await client.delete_job(entry.job_id)
            elif entry.action is Action.UPDATE and entry.current is not None:
                await client.update_job(
                    entry.current.job_id, entry.current.spec, managed=entry.current.managed
                )
            elif entry.action is Action.DISABLE and entry.job_id is not None:
                await client.enable_job(entry.job_id)
            elif entry.action is Action.DELETE:
                result.rollback_errors.append(f"job {entry.name!r} was deleted and cannot be restored")
                continue
            entry.outcome = Outcome.ROLLED_BACK
        except OpenApiError as exc:
            result.rollback_errors.append(f"job {entry.name!r}: {exc}")


async def sync_definitions(
    client: OpenApiClient,
    definitions: Iterable[ProcessorDefinition | JobSpec],
    options: SyncOptions | None = None,
    *,
    workflows: Iterable[WorkflowSpec] | None = None,
) -> SyncResult:
    """Plan and apply: make the client's group match ``definitions`` (processor definitions or
    plain JobSpecs, e.g. script jobs), then, when given, ``workflows``."""
    options = options or SyncOptions()
    plan = await plan_sync(client, definitions, options)
    result = await apply_plan(client, plan, options)
    if workflows is not None and not result.rolled_back:
        result.workflows = await sync_workflows(client, workflows, options)
    return result


async def sync_workflows(
    client: OpenApiClient, specs: Iterable[WorkflowSpec], options: SyncOptions | None = None
) -> list[PlanEntry]:
    """Make the group's workflows match ``specs`` (run after the jobs, which they refer to by name).

    Creates or updates each one (a diff decides; sync never changes whether a workflow is enabled),
    and with ``prune`` disables (or with ``delete`` deletes) managed workflows no longer in code.
    A workflow the scheduler refuses (a cycle, an unknown job) is a failed entry."""
    options = options or SyncOptions()
    wanted = list(specs)
    names = [spec.name for spec in wanted]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise DefinitionError("name", duplicate, "two workflow definitions have this name")
    existing = {info.name: info for info in await client.all_workflows()}
    entries: list[PlanEntry] = []
    for spec in wanted:
        current = existing.get(spec.name)
        if current is None:
            entries.append(PlanEntry(name=spec.name, action=Action.CREATE))
            continue
        changes = current.spec.diff(spec)
        if not current.managed:
            changes["managed"] = (False, True)
        entries.append(
            PlanEntry(
                name=spec.name,
                action=Action.UPDATE if changes else Action.UNCHANGED,
                job_id=current.workflow_id,
                changes=changes,
            )
        )
    if options.prune:
        for name, info in sorted(existing.items()):
            if name in names or not info.managed:
                continue
            if options.delete:
                entries.append(PlanEntry(name=name, action=Action.DELETE, job_id=info.workflow_id))
            elif info.enabled:
                entries.append(
                    PlanEntry(
                        name=name, action=Action.DISABLE, job_id=info.workflow_id, changes={"status": (1, 0)}
                    )
                )
    if options.dry_run:
        return entries
    by_name = {spec.name: spec for spec in wanted}
    for entry in entries:
        try:
            if entry.action is Action.CREATE:
                entry.job_id = await client.create_workflow(by_name[entry.name], managed=True)
            elif entry.action is Action.UPDATE:
                assert entry.job_id is not None
                await client.update_workflow(entry.job_id, by_name[entry.name], managed=True)
            elif entry.action is Action.DISABLE:
                assert entry.job_id is not None
                await client.disable_workflow(entry.job_id)
            elif entry.action is Action.DELETE:
                assert entry.job_id is not None
                await client.delete_workflow(entry.job_id)
        except InvalidRequestError as exc:
            entry.outcome = Outcome.FAILED
            entry.error_field, entry.error = exc.field, exc.message
            log.warning("sync: the scheduler refused workflow %r: %s", entry.name, exc.message)
        else:
            entry.outcome = Outcome.DONE
    return entries
