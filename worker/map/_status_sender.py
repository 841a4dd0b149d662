"""Sending the statuses of the tasks on this worker to their instances' masters, in batches.

One report per instance is in flight at a time, so while it travels the next batch gathers by itself.
Map statuses go out as soon as the loop is idle; broadcast ones after ``FLUSH_DELAY``. A master that
cannot be reached is tried again with backoff for ``DELIVERY_PATIENCE`` seconds, then its statuses are
dropped. A map instance stays known between pages until its master destroys it; one whose master sent
no ``DestroyInstance`` is forgotten after ``MAP_IDLE_FORGET`` idle seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sx.protos.v1 import peer_pb2
from sx.worker._peer import PeerClients
from sx.worker.map._task_group import TaskGroup

__all__ = ["MAP_IDLE_FORGET", "STATUS_BATCH", "StatusSender"]

log = logging.getLogger("sx.worker")

STATUS_BATCH = 5000
"""Statuses per ``ReportTaskStatuses`` call."""
MAP_IDLE_FORGET = 60.0
"""Seconds an idle map instance stays known on a worker whose master sent no ``DestroyInstance``."""


class StatusSender:
    """Sends each task group's statuses to its master (``ReportTaskStatuses``); one loop per group.

    ``forget(group)`` is called when a group is done with: everything ran and the master has every
    status (or it was destroyed, or forgotten while idle).
    """

    FLUSH_DELAY = 0.05
    """Seconds to gather more statuses before sending a batch."""
    DELIVERY_PATIENCE = 60.0
    """Seconds to keep re-sending statuses to an unreachable master before dropping them."""

    def __init__(
        self,
        *,
        peers: PeerClients,
        worker_id: str,
        address: Callable[[], str],
        forget: Callable[[TaskGroup], None],
    ) -> None:
        self._peers = peers
        self._worker_id = worker_id
        self._address = address
        self._forget = forget

    async def run(self, group: TaskGroup) -> None:
        """Deliver the group's statuses until it is idle and done with (then ``forget`` it)."""
        instance_id = group.spec.instance_id
        delay = 0.1
        failing_since: float | None = None
        while True:
            if group.is_map and not group.destroyed:
                # A map instance stays known between pages until its master destroys it; a master
                # that died without doing so is forgotten after a while.
                try:
                    await asyncio.wait_for(group.wake.wait(), timeout=MAP_IDLE_FORGET)
                except TimeoutError:
                    if group.idle:
                        self._forget(group)
                        return
                    continue
            else:
                await group.wake.wait()
            if group.is_map:
                # Map tasks are short and the master's window per worker is small: statuses go out as
                # soon as the loop is idle. One report is in flight at a time, so while it travels the
                # next batch gathers by itself.
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(self.FLUSH_DELAY)
            group.wake.clear()
            pending = group.pending
            if pending:
                if len(pending) <= STATUS_BATCH:
                    batch, group.pending = list(pending.values()), {}
                else:
                    keys = list(pending)[:STATUS_BATCH]
                    batch = [pending.pop(k) for k in keys]
                    group.wake.set()
                try:
                    client = self._peers.client(group.master_address)
                    await client.ReportTaskStatuses(
                        peer_pb2.TaskStatusBatch(
                            instance_id=instance_id,
                            worker_id=self._worker_id,
                            worker_address=self._address(),
                            updates=[
                                peer_pb2.TaskStatusUpdate(
                                    task_id=i, status=st, result=r, task_name=n, task_attempt=a
                                )
                                for i, st, r, n, a in batch
                            ],
                        )
                    )
                    delay, failing_since = 0.1, None
                except Exception as exc:
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > self.DELIVERY_PATIENCE or group.destroyed:
                        log.warning(
                            "dropping %d task statuses of instance %s: master %s unreachable: %s",
                            len(batch),
                            instance_id,
                            group.master_address,
                            exc,
                        )
                    else:
                        # Put them back in front; a newer status of the same task stays the newer one.
                        newer = group.pending
                        group.pending = {u[0]: u for u in batch}
                        group.pending.update(newer)
                        group.wake.set()
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                        continue
            if group.idle and (not group.is_map or group.destroyed):
                # Everything ran and the master has every status: nothing of the instance stays here.
                self._forget(group)
                return
