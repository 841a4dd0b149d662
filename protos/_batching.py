"""Sending the messages queued on a Connect stream together (``WorkerMessages``, ``SchedulerMessages``).

Each message on a stream costs a write on one side and a read on the other (a system call and some tens
of microseconds of gRPC's Python layer each), however small it is: under load the scheduler sends a
submission and two acknowledgements per instance, and the worker a reply and two reports. Both sides
queue what they send; a writer that finds several messages queued sends them as one batch, so the cost
is paid per batch. A batch is bounded in count and size, and large messages (log batches) go alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf.message import Message

__all__ = ["BATCH_BYTES", "BATCH_MESSAGES", "take_batch"]

BATCH_MESSAGES = 256
"""Messages per batch at most."""
BATCH_BYTES = 1 << 20
"""Serialized bytes per batch at most (past the message that crosses it): well below gRPC's 4 MB limit."""


def take_batch(
    queue: asyncio.Queue[Any], first: Message, *, alone: frozenset[str]
) -> tuple[list[Any], list[Any]]:
    """``first`` and the messages queued behind it now that fit in one batch with it; and, as a list of
    at most one, the item taken from the queue that stopped the batch without joining it (a sentinel,
    or a message whose body is one of ``alone``). A ``first`` to send alone is a batch of its own."""
    batch = [first]
    if first.WhichOneof("body") in alone:
        return batch, []
    size = first.ByteSize()
    while len(batch) < BATCH_MESSAGES and size < BATCH_BYTES:
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        if not hasattr(item, "WhichOneof") or item.WhichOneof("body") in alone:
            return batch, [item]
        batch.append(item)
        size += item.ByteSize()
    return batch, []
