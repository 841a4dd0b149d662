"""The sx-worker programming model: what a processor author imports.

from sx.processors import JobContext, Processor, processor, cron

@processor(name="billing.nightly", schedule=cron("0 0 2 * * ?"))
class Nightly(Processor):
    def process(self, ctx: JobContext) -> str:
        return f"billed {ctx.job_parameters}"
"""

from sx.processors._codec import MAX_PAYLOAD_BYTES, Codec, JsonCodec, PickleCodec, codec_for
from sx.processors._context import (
    JobContext,
    JobLogger,
    TaskMapper,
    UpstreamData,
    current_context,
    get_current_context,
)
from sx.processors._cron import CronExpression
from sx.processors._enums import (
    REDUCE_TASK_NAME,
    ROOT_TASK_NAME,
    ExecuteMode,
    InstanceStatus,
    JobType,
    MisfirePolicy,
    TaskStatus,
    TimeType,
    TriggerType,
)
from sx.processors._errors import (
    CancelledError,
    CronError,
    DefinitionError,
    PayloadError,
    RegistryError,
    ResultTooLargeError,
    SxError,
)
from sx.processors._invoke import invoke
from sx.processors._kinds import (
    BroadcastProcessor,
    MapProcessor,
    MapReduceProcessor,
    Processor,
    ProcessorKind,
)
from sx.processors._registry import (
    ProcessorDefinition,
    Registry,
    default_registry,
    definition_of,
    processor,
    use_registry,
)
from sx.processors._result import RESULT_LIMIT_BYTES, ProcessResult
from sx.processors._schedule import Schedule, api, cron, fixed_rate, next_fire_times, second_delay
from sx.processors._scripts import ScriptProcessor, script_processor_for
from sx.processors._spec import JobSpec
from sx.processors._spec_options import Contact, MapOptions, MonitorOptions
from sx.processors._workflow import (
    WorkflowRegistry,
    WorkflowSpec,
    default_workflows,
    use_workflows,
    workflow,
)

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "REDUCE_TASK_NAME",
    "RESULT_LIMIT_BYTES",
    "ROOT_TASK_NAME",
    "BroadcastProcessor",
    "CancelledError",
    "Codec",
    "Contact",
    "CronError",
    "CronExpression",
    "DefinitionError",
    "ExecuteMode",
    "InstanceStatus",
    "JobContext",
    "JobLogger",
    "JobSpec",
    "JobType",
    "JsonCodec",
    "MapOptions",
    "MapProcessor",
    "MapReduceProcessor",
    "MisfirePolicy",
    "MonitorOptions",
    "PayloadError",
    "PickleCodec",
    "ProcessResult",
    "Processor",
    "ProcessorDefinition",
    "ProcessorKind",
    "Registry",
    "RegistryError",
    "ResultTooLargeError",
    "Schedule",
    "ScriptProcessor",
    "SxError",
    "TaskMapper",
    "TaskStatus",
    "TimeType",
    "TriggerType",
    "UpstreamData",
    "WorkflowRegistry",
    "WorkflowSpec",
    "api",
    "codec_for",
    "cron",
    "current_context",
    "default_registry",
    "default_workflows",
    "definition_of",
    "fixed_rate",
    "get_current_context",
    "invoke",
    "next_fire_times",
    "processor",
    "script_processor_for",
    "second_delay",
    "use_registry",
    "use_workflows",
    "workflow",
]
