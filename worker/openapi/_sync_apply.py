"""Job sync, step two: carry a plan out (what ``sx-worker sync`` does), and both steps in one call.

:func:`apply_plan` applies a :class:`SyncPlan`; :func:`sync_definitions` plans and applies.

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
from typing import Any, Final

from sx.processors import JobSpec, ProcessorDefinition, WorkflowSpec
from sx.worker.openapi._client import OpenApiClient
from sx.worker.openapi._errors import ConflictError, InvalidRequestError, NotFoundError, OpenApiError
from sx.worker.openapi._sync_plan import (
    Action,
    Changes,
    Outcome,
    PlanEntry,
    SyncOptions,
    SyncPlan,
    plan_sync,
    with_takeover,
)

__all__ = ["SyncResult", "apply_plan", "sync_definitions"]

log = logging.getLogger("sx.worker.sync")


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


def _created_meanwhile(entry: PlanEntry, changes: Changes) -> bool:
    """Another sync created it since we planned: bring that one in line instead. True when it already
    is (nothing left to apply)."""
    entry.action = Action.UPDATE if changes else Action.UNCHANGED
    entry.changes = changes
    entry.note = "created meanwhile by someone else"
    return not changes


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
            if _created_meanwhile(entry, with_takeover(current.spec.diff(entry.spec), current.managed)):
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
            if _created_meanwhile(entry, with_takeover(found.spec.diff(entry.workflow), found.managed)):
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
