"""The sx worker runtime: ``Worker`` connects to a scheduler and runs the instances it submits.

settings = WorkerSettings.load(Path("worker.toml"), server="127.0.0.1:7070")
async with Worker(settings):
    ...
"""

from ._connection import WorkerRejected
from ._settings import WorkerSettings
from ._worker import Worker

__all__ = ["Worker", "WorkerRejected", "WorkerSettings"]
