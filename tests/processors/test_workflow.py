"""``workflow(...)`` and WorkflowSpec: validation at definition time, wire forms, the registry."""

from __future__ import annotations

import pytest

from sx.processors import (
    DefinitionError,
    JobContext,
    Processor,
    Registry,
    RegistryError,
    WorkflowRegistry,
    WorkflowSpec,
    cron,
    processor,
    workflow,
)
from sx.processors._workflow import check_dag

registry = Registry()


@processor(name="t.extract", registry=registry)
class Extract(Processor):
    def process(self, ctx: JobContext) -> str:
        return ""


@processor(name="t.load", registry=registry)
class Load(Processor):
    def process(self, ctx: JobContext) -> str:
        return ""


class NotAProcessor:
    pass


def test_workflow_resolves_classes_to_job_names_and_registers() -> None:
    workflows = WorkflowRegistry()
    spec = workflow(
        "nightly",
        schedule=cron("0 0 2 * * ?"),
        edges=[(Extract, "t.transform"), ("t.transform", Load)],
        registry=workflows,
    )
    assert spec.nodes == ("t.extract", "t.transform", "t.load")
    assert spec.edges == (("t.extract", "t.transform"), ("t.transform", "t.load"))
    assert spec.upstream_of("t.load") == ["t.transform"]
    assert workflows.all() == [spec]


def test_cycles_self_loops_and_bad_nodes_are_refused() -> None:
    with pytest.raises(DefinitionError, match="cycle") as info:
        workflow("c", edges=[("a", "b"), ("b", "c"), ("c", "a")], registry=WorkflowRegistry())
    assert info.value.field == "edges"
    with pytest.raises(DefinitionError, match="itself"):
        workflow("s", edges=[("a", "a")], registry=WorkflowRegistry())
    with pytest.raises(DefinitionError, match="not a processor"):
        workflow("n", nodes=[NotAProcessor], registry=WorkflowRegistry())
    with pytest.raises(DefinitionError, match="at least one job"):
        workflow("e", registry=WorkflowRegistry())
    with pytest.raises(DefinitionError) as bad_name:
        WorkflowSpec(name=" padded", nodes=("a",))
    assert bad_name.value.field == "name"


def test_registry_refuses_a_different_definition_under_the_same_name() -> None:
    workflows = WorkflowRegistry()
    workflow("w", nodes=["a"], registry=workflows)
    workflow("w", nodes=["a"], registry=workflows)  # the same again (a module imported twice) is fine
    with pytest.raises(RegistryError, match="defined twice"):
        workflow("w", nodes=["b"], registry=workflows)


def test_wire_round_trip_and_diff() -> None:
    spec = WorkflowSpec(name="w", nodes=("a",), edges=(("a", "b"), ("a", "c")), time_zone="Asia/Shanghai")
    assert WorkflowSpec.from_wire(spec.to_create_params()) == spec
    by_id = {
        "name": "w",
        "nodes": [1],
        "edges": [[1, 2], [1, 3]],
        "timeZone": "Asia/Shanghai",
        "timeType": 100,
    }
    assert WorkflowSpec.from_wire(by_id, job_names={1: "a", 2: "b", 3: "c"}) == spec
    reordered = WorkflowSpec(
        name="w", nodes=("c", "b", "a"), edges=(("a", "c"), ("a", "b")), time_zone="Asia/Shanghai"
    )
    assert spec.diff(reordered) == {}
    changed = spec.diff(WorkflowSpec(name="w", nodes=("a",), time_zone="Asia/Shanghai"))
    assert set(changed) == {"nodes", "edges"}


def test_check_dag_orders_topologically() -> None:
    assert check_dag([4, 3, 2, 1], [(1, 2), (2, 3), (1, 3), (3, 4)]) == [1, 2, 3, 4]
    with pytest.raises(DefinitionError, match="not a node"):
        check_dag([1], [(1, 2)])
