"""The map engine (modes parallel, grid and batch): the master of an instance and what runs its tasks.

``MapMaster`` runs a map instance on the worker it was submitted to: it queues ``ctx.map`` batches in a
``TaskStore`` (``MemoryTaskStore``, ``FileTaskStore`` or ``ServerTaskStore``), sends them to the
instance's workers in pages and reduces at the end. ``TaskRunner`` runs, on every worker, the tasks
masters start there (broadcast tasks too) and reports their statuses back.
"""

from sx.worker.map._admission import GRID_SOFT_CAP, PARALLEL_TASK_CAP
from sx.worker.map._consumer import MapRefusedError
from sx.worker.map._file_store import FileTaskStore, held_task_files, remove_task_file, task_file_path
from sx.worker.map._master import MapMaster
from sx.worker.map._memory_store import MemoryTaskStore
from sx.worker.map._progress import MapProgress
from sx.worker.map._server_store import ServerTaskStore, TaskStoreStub
from sx.worker.map._store import ROOT_TASK_ID, TaskRecord, TaskStore
from sx.worker.map._task_runner import TaskRunner

__all__ = [
    "GRID_SOFT_CAP",
    "PARALLEL_TASK_CAP",
    "ROOT_TASK_ID",
    "FileTaskStore",
    "MapMaster",
    "MapProgress",
    "MapRefusedError",
    "MemoryTaskStore",
    "ServerTaskStore",
    "TaskRecord",
    "TaskRunner",
    "TaskStore",
    "TaskStoreStub",
    "held_task_files",
    "remove_task_file",
    "task_file_path",
]
