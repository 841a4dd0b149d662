"""What sx's own worker, scheduler and CLI use of this package beyond the author's API.

Job authors import ``sx.processors``; these helpers are the shared rules the engine applies to what they
write: result texts of stopped instances, the statuses that count as active, the settings-file loader,
the workflow graph check, the definition limits and the sink a run's log lines go to. Listed here so
that the coupling between the packages is in one place rather than spread over imports of private
modules.
"""

from sx.processors._codec import JSON_CODEC
from sx.processors._config_file import load_settings
from sx.processors._context import LogSink
from sx.processors._enums import ACTIVE_INSTANCE_STATUSES
from sx.processors._result import describe_exception, is_killed, killed_result, shorten_head
from sx.processors._schedule import parse_time_type
from sx.processors._spec_limits import stored_definitions
from sx.processors._workflow import MAX_WORKFLOW_NODES, check_dag

__all__ = [
    "ACTIVE_INSTANCE_STATUSES",
    "JSON_CODEC",
    "MAX_WORKFLOW_NODES",
    "LogSink",
    "check_dag",
    "describe_exception",
    "is_killed",
    "killed_result",
    "load_settings",
    "parse_time_type",
    "shorten_head",
    "stored_definitions",
]
