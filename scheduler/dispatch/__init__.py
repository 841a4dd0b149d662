"""Dispatch: handing instances to connected workers and following them to their end.

Each worker keeps one `Scheduler.Connect` stream open. The `Dispatcher` authenticates it (group and
app key), keeps it in the `WorkerRegistry`, submits WAITING instances round robin to workers that serve
the processor, and applies the worker's reports to the store with a compare-and-set on the status, so a
late or repeated report never changes a finished instance.

Instance path through the store::

    WAITING --submit--> READY --accepted / RUNNING report--> RUNNING --final report--> SUCCESS | FAILED
       |                  |                                     |
       +-- no worker within the grace, or killed ------------->  FAILED
                          +-- worker lost (stream gone past the heartbeat timeout) --> FAILED, retried

A worker whose stream breaks keeps its instances for one heartbeat timeout: if it reconnects and lists
them in ``running_instance_ids`` (those it runs, and those whose final report it still owes) they stay
its own; otherwise they are failed as lost (accepted ones)
or submitted again (ones it never accepted). A restarted scheduler treats the READY and RUNNING
instances it finds in the store the same way.

A lost batch-mode instance is the exception: its master kept its subtasks in a file on its host, so the
same instance (same id) is submitted again, up to ``MAX_MASTER_RESUMES`` times; a master on the same
host resumes from the file, any other starts over.

RUNNING reports may carry progress (map masters send one every few seconds); it is stored as it comes.

Where each transition lives:

- WAITING -> READY, and FAILED for no worker within the grace, a job gone or every worker refusing:
  ``_submission`` (`Submission`: choose workers round robin, record the pass READY in one write, and
  only then send, so a crash never leaves an instance a worker has marked WAITING).
- READY -> RUNNING (submit accepted, RUNNING report, progress), RUNNING -> SUCCESS | FAILED (final
  report), a refused submit back to the queue: ``_reports`` (`InstanceReports`, which also holds the
  FAILED and back-to-WAITING writes the other parts use, and calls ``on_finished``).
- Killed -> FAILED: ``_dispatcher`` (`Dispatcher.stop_instance`: at once, or by the worker's final report).
- Worker lost -> FAILED, never accepted -> WAITING, batch master resumed -> WAITING, a reconnecting
  worker taking its instances back (-> RUNNING), the READY and RUNNING instances found at start:
  ``_sessions`` (`WorkerSessions`: attach, detach, the liveness loop) and ``_orphans``
  (`OrphanedInstances`: holding, losing and resuming the instances of gone workers).

The other modules: ``_state`` (`DispatchState`, what the parts share: owners, waiting queue, orphans),
``_task_rpcs`` (the parallel-mode task calls), ``_servicer`` (the gRPC adapter), ``_registration``
(checking a worker's register message and app key), ``_stream_reader`` (applying what a worker sends),
``_registry`` (worker sessions and round robin), ``_instance_spec`` (the InstanceSpec a worker runs),
``_tracing`` (an instance's spans on this side, when tracing is on).
"""

from sx.scheduler.dispatch._dispatcher import Dispatcher
from sx.scheduler.dispatch._registry import WorkerInfo
from sx.scheduler.dispatch._servicer import server_credentials
from sx.scheduler.dispatch._tracing import InstanceTracing

__all__ = ["Dispatcher", "InstanceTracing", "WorkerInfo", "server_credentials"]
