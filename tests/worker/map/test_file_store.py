"""The batch task file: pages leave the queue, lost tasks come back first, a reopened file resumes."""

from __future__ import annotations

from pathlib import Path

from sx.processors import ROOT_TASK_NAME, TaskStatus
from sx.worker.map import ROOT_TASK_ID, FileTaskStore, TaskRecord, task_file_path


def _ids(records: list[TaskRecord]) -> list[int]:
    return [r.task_id for r in records]


def test_pages_taken_and_given_back_then_a_reopened_file_queues_every_unfinished_task(tmp_path: Path) -> None:
    path = task_file_path(tmp_path, 7)
    store = FileTaskStore(path, job_id=1, keep_results=True)
    store.add_root()
    assert _ids(store.take(10)) == [ROOT_TASK_ID]
    store.add("t", [b"p"] * 50, parent_id=ROOT_TASK_ID, seq=0)
    store.finish([(ROOT_TASK_ID, TaskStatus.SUCCESS, "root")])
    first, second = store.take(20), store.take(20)
    assert _ids(first) == list(range(1, 21)) and _ids(second) == list(range(21, 41))
    assert store.pending == 10

    store.requeue(first[:5])  # their worker was lost: they are sent again before the rest
    assert store.pending == 15
    again = store.take(8)
    assert _ids(again) == [1, 2, 3, 4, 5, 41, 42, 43]
    store.finish([(r.task_id, TaskStatus.SUCCESS, "ok") for r in again])
    assert _ids(store.take(100)) == list(range(44, 51))
    assert store.take(5) == [] and store.pending == 0
    store.close(remove=False)  # the master dies with tasks 6-40 and 44-50 taken, unfinished

    resumed = FileTaskStore(path, job_id=1, keep_results=True)
    assert resumed.resumed
    assert resumed.restored_counts() == {ROOT_TASK_NAME: (1, 1, 0), "t": (50, 8, 0)}
    unfinished = [i for i in range(1, 51) if i not in (1, 2, 3, 4, 5, 41, 42, 43)]
    assert resumed.pending == len(unfinished)
    assert _ids(resumed.take(1000)) == unfinished
    results, statuses = resumed.results()
    assert results[ROOT_TASK_ID] == "root" and statuses[41] is TaskStatus.SUCCESS and len(results) == 9
    resumed.close(remove=True)
    assert not path.exists()


def test_finished_statuses_of_a_map_only_job_are_recorded_in_chunks(tmp_path: Path) -> None:
    path = task_file_path(tmp_path, 8)
    store = FileTaskStore(path, job_id=1, keep_results=False)
    store.add_root()
    store.take(1)
    store.add("t", [b"p"] * 1200, parent_id=ROOT_TASK_ID, seq=0)
    taken = store.take(1200)
    done = [(ROOT_TASK_ID, TaskStatus.SUCCESS, "")]
    done += [
        (r.task_id, TaskStatus.FAILED if r.task_id % 3 == 0 else TaskStatus.SUCCESS, "") for r in taken[:1100]
    ]
    store.finish(done)
    store.close(remove=False)

    resumed = FileTaskStore(path, job_id=1, keep_results=False)
    failed = sum(1 for r in taken[:1100] if r.task_id % 3 == 0)
    assert resumed.restored_counts()["t"] == (1200, 1100 - failed, failed)
    assert _ids(resumed.take(1000)) == [r.task_id for r in taken[1100:]]
    resumed.close(remove=True)
