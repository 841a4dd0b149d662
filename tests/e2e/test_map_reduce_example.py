"""``examples/map_reduce.py`` at N = 50,000 with its own options, on ``sx-worker run`` processes.

The root maps 5,000 Range tasks and each maps 10 Square tasks through the default queue of 10,000:
blocking hooks wait in ``ctx.map`` for room while the queue is full of ranges, and the squares that
make the room must still get threads to run on (issue 11, item 4: this stalled for ever). One worker,
then two.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# Imported plainly: the examples belong in the default registry (tests/processors/test_testing.py looks
# there), and a private registry here would leave the cached module registered nowhere else.
from examples import map_reduce
from sx.processors import InstanceStatus, definition_of
from sx.worker.openapi import OpenApiClient
from tests.e2e.conftest import Cluster, wait_final

pytestmark = pytest.mark.slow

N = 50_000
SUM_OF_SQUARES = N * (N + 1) * (2 * N + 1) // 6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler and workers serving ``examples.map_reduce`` (``client`` of conftest uses it)."""
    instance = Cluster(tmp_path_factory.mktemp("example"), targets=("examples.map_reduce",))
    instance.events.mkdir()
    try:
        instance.start_scheduler()
        instance.ensure_group()
        yield instance
    finally:
        instance.stop()


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_nested_map_reduce_example_finishes_at_50000(
    cluster: Cluster, client: OpenApiClient, workers: int
) -> None:
    cluster.ensure_workers(workers)
    spec = definition_of(map_reduce.SumOfSquares).spec
    assert spec.map.queue_size == 10_000  # the default options (the example only sets consumerSize)
    job_id = await cluster.job_id(
        client, spec.model_copy(update={"name": f"{spec.name}-{workers}", "parameters": str(N)})
    )
    instance_id = await client.execute_job(job_id)
    try:
        detail = await wait_final(client, job_id, instance_id)
    except AssertionError:
        progress = (await client.get_instance(job_id, instance_id)).progress
        raise AssertionError(f"instance {instance_id} did not finish; progress: {progress}") from None
    assert detail.status is InstanceStatus.SUCCESS, detail.result
    assert detail.result == str(SUM_OF_SQUARES)
