"""Workflows: DAGs of one group's jobs.

- ``WorkflowService``: workflow CRUD and validation, listing, executing, watching, re-running (a failed
  node, or a finished instance whole) and stopping instances (what the OpenAPI calls).
- ``WorkflowEngine``: advancing running instances as their nodes end, stopping, re-running a node,
  recovering instances left behind.
- ``WorkflowFireLoop``: the cron and fix_rate time trigger of workflows.
"""

from sx.scheduler.workflows._definition import workflow_timing_spec
from sx.scheduler.workflows._engine import STOPPED_PREFIX, WorkflowEngine
from sx.scheduler.workflows._fire_loop import WorkflowFireLoop
from sx.scheduler.workflows._service import WORKFLOW_PARAMETERS_MAX_BYTES, NodeView, WorkflowService

__all__ = [
    "STOPPED_PREFIX",
    "WORKFLOW_PARAMETERS_MAX_BYTES",
    "NodeView",
    "WorkflowEngine",
    "WorkflowFireLoop",
    "WorkflowService",
    "workflow_timing_spec",
]
