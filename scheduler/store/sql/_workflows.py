"""Workflows, their fires, instances and nodes (`WorkflowStore`) on SQL.

A workflow instance keeps a snapshot of its graph (JSON); a node row records the instance currently
running the node, and every change to it is a compare-and-set on that instance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from sx.processors import InstanceStatus
from sx.scheduler.store._errors import DuplicateError, NotFoundError
from sx.scheduler.store._records import (
    Instance,
    NewInstance,
    NewWorkflowInstance,
    Page,
    Workflow,
    WorkflowDef,
    WorkflowFire,
    WorkflowInstance,
    WorkflowNode,
)
from sx.scheduler.store._workflow_store import WorkflowStore
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._dialect import is_foreign_key_violation
from sx.scheduler.store.sql._engine import SqlStoreBase
from sx.scheduler.store.sql._rows import (
    check_aware,
    check_new_instance,
    check_page,
    created_instance,
    dump_workflow_def,
    new_instance_values,
    utc_now,
    wf_instance_from_row,
    wf_node_from_row,
    workflow_from_row,
)

__all__ = ["SqlWorkflows"]


class SqlWorkflows(SqlStoreBase, WorkflowStore):
    """`WorkflowStore` on SQL."""

    async def create_workflow(
        self,
        *,
        namespace: str,
        group_id: str,
        definition: WorkflowDef,
        enabled: bool,
        managed: bool,
        next_fire_time: datetime | None,
    ) -> Workflow:
        check_aware("next_fire_time", next_fire_time)
        now = utc_now()
        values = {
            "namespace": namespace,
            "group_id": group_id,
            "name": definition.name,
            "definition": dump_workflow_def(definition),
            "enabled": enabled,
            "managed": managed,
            "next_fire_time": next_fire_time,
            "created_at": now,
            "updated_at": now,
        }
        t = tables.workflows
        try:
            async with self._write() as conn:
                workflow_id = (await conn.execute(sa.insert(t).values(values).returning(t.c.id))).scalar_one()
        except IntegrityError:
            raise DuplicateError(
                f"group {group_id!r} in namespace {namespace!r} already has a workflow named "
                f"{definition.name!r}"
            ) from None
        return Workflow(
            id=workflow_id,
            namespace=namespace,
            group_id=group_id,
            definition=definition,
            enabled=enabled,
            managed=managed,
            next_fire_time=None if next_fire_time is None else next_fire_time.astimezone(UTC),
            created_at=now,
            updated_at=now,
        )

    async def get_workflow(self, workflow_id: int) -> Workflow | None:
        t = tables.workflows
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == workflow_id))).one_or_none()
        return None if row is None else workflow_from_row(row)

    async def find_workflow(self, namespace: str, group_id: str, name: str) -> Workflow | None:
        t = tables.workflows
        query = sa.select(t).where(t.c.namespace == namespace, t.c.group_id == group_id, t.c.name == name)
        async with self._read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else workflow_from_row(row)

    async def list_workflows(
        self, namespace: str, group_id: str, *, offset: int = 0, limit: int = 50
    ) -> Page[Workflow]:
        check_page(offset, limit)
        t = tables.workflows
        where = [t.c.namespace == namespace, t.c.group_id == group_id]
        return await self._read_page(
            t, where, order_by=t.c.id, offset=offset, limit=limit, record=workflow_from_row
        )

    async def update_workflow(
        self,
        workflow_id: int,
        *,
        definition: WorkflowDef | None = None,
        enabled: bool | None = None,
        managed: bool | None = None,
        next_fire_time: datetime | None = None,
        clear_next_fire_time: bool = False,
    ) -> Workflow:
        if next_fire_time is not None and clear_next_fire_time:
            raise ValueError("next_fire_time cannot be given together with clear_next_fire_time")
        check_aware("next_fire_time", next_fire_time)
        values: dict[str, Any] = {"updated_at": utc_now()}
        if definition is not None:
            values["definition"] = dump_workflow_def(definition)
            values["name"] = definition.name
        if enabled is not None:
            values["enabled"] = enabled
        if managed is not None:
            values["managed"] = managed
        if next_fire_time is not None:
            values["next_fire_time"] = next_fire_time
        elif clear_next_fire_time:
            values["next_fire_time"] = None
        t = tables.workflows
        try:
            async with self._write() as conn:
                row = (
                    await conn.execute(
                        sa.update(t).where(t.c.id == workflow_id).values(values).returning(*t.c)
                    )
                ).one_or_none()
        except IntegrityError:
            name = definition.name if definition is not None else "?"
            raise DuplicateError(
                f"workflow {workflow_id}: its group already has a workflow named {name!r}"
            ) from None
        if row is None:
            raise NotFoundError(f"workflow_id={workflow_id!r}: no such workflow")
        return workflow_from_row(row)

    async def delete_workflow(self, workflow_id: int) -> bool:
        wi, wn = tables.wf_instances, tables.wf_nodes
        async with self._write() as conn:
            ids = sa.select(wi.c.id).where(wi.c.workflow_id == workflow_id).scalar_subquery()
            await conn.execute(sa.delete(wn).where(wn.c.wf_instance_id.in_(ids)))
            await conn.execute(sa.delete(wi).where(wi.c.workflow_id == workflow_id))
            result = await conn.execute(
                sa.delete(tables.workflows).where(tables.workflows.c.id == workflow_id)
            )
        return result.rowcount > 0

    async def next_workflow_due_time(self) -> datetime | None:
        t = tables.workflows
        query = (
            sa.select(t.c.next_fire_time)
            .where(t.c.enabled == sa.true(), t.c.next_fire_time.isnot(None))
            .order_by(t.c.next_fire_time, t.c.id)
            .limit(1)
        )
        async with self._read() as conn:
            return (await conn.execute(query)).scalar_one_or_none()

    async def due_workflows(self, now: datetime, limit: int) -> list[Workflow]:
        check_aware("now", now)
        t = tables.workflows
        query = (
            sa.select(t)
            .where(t.c.enabled == sa.true(), t.c.next_fire_time.isnot(None), t.c.next_fire_time <= now)
            .order_by(t.c.next_fire_time, t.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [workflow_from_row(r) for r in rows]

    async def claim_workflow_fire(self, fire: WorkflowFire) -> WorkflowInstance | None:
        check_aware("due", fire.due)
        check_aware("next_fire_time", fire.next_fire_time)
        t = tables.workflows
        async with self._write() as conn:
            claimed = await conn.execute(
                sa.update(t)
                .where(t.c.id == fire.workflow_id, t.c.next_fire_time == fire.due)
                .values(next_fire_time=fire.next_fire_time)
            )
            if claimed.rowcount == 0 or fire.instance is None:
                return None
            return await self._insert_wf_instance(conn, fire.instance)

    async def _insert_wf_instance(self, conn: AsyncConnection, new: NewWorkflowInstance) -> WorkflowInstance:
        check_aware("schedule_time", new.schedule_time)
        created_at = utc_now()
        t = tables.wf_instances
        values = {
            "workflow_id": new.workflow_id,
            "namespace": new.namespace,
            "group_id": new.group_id,
            "status": int(new.status),
            "trigger_type": int(new.trigger_type),
            "schedule_time": new.schedule_time,
            "graph": json.dumps({"nodes": list(new.nodes), "edges": [list(e) for e in new.edges]}),
            "instance_parameters": new.instance_parameters,
            "created_at": created_at,
            "end_time": None,
            "result": "",
        }
        wf_instance_id = (await conn.execute(sa.insert(t).values(values).returning(t.c.id))).scalar_one()
        return WorkflowInstance(
            id=wf_instance_id,
            workflow_id=new.workflow_id,
            namespace=new.namespace,
            group_id=new.group_id,
            status=new.status,
            trigger_type=new.trigger_type,
            schedule_time=new.schedule_time.astimezone(UTC),
            nodes=new.nodes,
            edges=new.edges,
            created_at=created_at,
            instance_parameters=new.instance_parameters,
        )

    async def create_workflow_instance(self, new: NewWorkflowInstance) -> WorkflowInstance:
        try:
            async with self._write() as conn:
                return await self._insert_wf_instance(conn, new)
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFoundError(f"workflow_id={new.workflow_id!r}: no such workflow") from None
            raise

    async def get_workflow_instance(self, wf_instance_id: int) -> WorkflowInstance | None:
        t = tables.wf_instances
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == wf_instance_id))).one_or_none()
        return None if row is None else wf_instance_from_row(row)

    async def list_workflow_instances(
        self,
        workflow_id: int,
        *,
        statuses: Sequence[InstanceStatus] | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> Page[WorkflowInstance]:
        check_page(offset, limit)
        t = tables.wf_instances
        where = [t.c.workflow_id == workflow_id]
        if statuses:
            where.append(t.c.status.in_([int(s) for s in statuses]))
        return await self._read_page(
            t, where, order_by=t.c.id.desc(), offset=offset, limit=limit, record=wf_instance_from_row
        )

    async def active_workflow_instance_ids(self, *, limit: int = 10_000) -> list[int]:
        check_page(0, limit)
        t = tables.wf_instances
        active = [int(InstanceStatus.WAITING), int(InstanceStatus.RUNNING)]
        query = sa.select(t.c.id).where(t.c.status.in_(active)).order_by(t.c.id).limit(limit)
        async with self._read() as conn:
            return [int(r.id) for r in (await conn.execute(query)).all()]

    async def update_workflow_instance(
        self,
        wf_instance_id: int,
        *,
        status: InstanceStatus,
        end_time: datetime | None = None,
        result: str | None = None,
        only_if_status: Sequence[InstanceStatus] | None = None,
    ) -> WorkflowInstance | None:
        check_aware("end_time", end_time)
        t = tables.wf_instances
        values: dict[str, Any] = {"status": int(status), "end_time": end_time}
        if result is not None:
            values["result"] = result
        query = sa.update(t).where(t.c.id == wf_instance_id)
        if only_if_status is not None:
            query = query.where(t.c.status.in_([int(s) for s in only_if_status]))
        async with self._write() as conn:
            row = (await conn.execute(query.values(values).returning(*t.c))).one_or_none()
        return None if row is None else wf_instance_from_row(row)

    async def start_workflow_node(
        self, wf_instance_id: int, job_id: int, new: NewInstance, *, rerun: bool = False
    ) -> Instance | None:
        check_new_instance(new)
        created_at = utc_now()
        t, n = tables.instances, tables.wf_nodes
        try:
            async with self._write() as conn:
                if rerun:
                    # The compare-and-set on FAILED comes first: a lost race writes nothing.
                    moved = await conn.execute(
                        sa.update(n)
                        .where(
                            n.c.wf_instance_id == wf_instance_id,
                            n.c.job_id == job_id,
                            n.c.status == int(InstanceStatus.FAILED),
                        )
                        .values(status=int(InstanceStatus.WAITING), result="")
                    )
                    if moved.rowcount == 0:
                        return None
                instance_id = (
                    await conn.execute(
                        sa.insert(t).values(new_instance_values(new, created_at)).returning(t.c.id)
                    )
                ).scalar_one()
                if rerun:
                    await conn.execute(
                        sa.update(n)
                        .where(n.c.wf_instance_id == wf_instance_id, n.c.job_id == job_id)
                        .values(instance_id=instance_id)
                    )
                else:
                    await conn.execute(
                        sa.insert(n).values(
                            wf_instance_id=wf_instance_id,
                            job_id=job_id,
                            instance_id=instance_id,
                            status=int(InstanceStatus.WAITING),
                            result="",
                        )
                    )
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFoundError(
                    f"wf_instance_id={wf_instance_id!r} or job_id={job_id!r}: "
                    "no such workflow instance or job"
                ) from None
            return None  # the node row exists: another caller started it
        return created_instance(instance_id, new, created_at)

    async def list_workflow_nodes(self, wf_instance_id: int) -> list[WorkflowNode]:
        n = tables.wf_nodes
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    sa.select(n).where(n.c.wf_instance_id == wf_instance_id).order_by(n.c.job_id)
                )
            ).all()
        return [wf_node_from_row(r) for r in rows]

    async def update_workflow_node(
        self,
        wf_instance_id: int,
        job_id: int,
        *,
        only_if_instance: int,
        status: InstanceStatus | None = None,
        result: str | None = None,
        instance_id: int | None = None,
    ) -> WorkflowNode | None:
        n = tables.wf_nodes
        values: dict[str, Any] = {}
        if status is not None:
            values["status"] = int(status)
        if result is not None:
            values["result"] = result
        if instance_id is not None:
            values["instance_id"] = instance_id
        where = (
            n.c.wf_instance_id == wf_instance_id,
            n.c.job_id == job_id,
            n.c.instance_id == only_if_instance,
        )
        async with self._write() as conn:
            if not values:
                row = (await conn.execute(sa.select(n).where(*where))).one_or_none()
            else:
                row = (
                    await conn.execute(sa.update(n).where(*where).values(values).returning(*n.c))
                ).one_or_none()
        return None if row is None else wf_node_from_row(row)
