"""JobSpec: validation rules, the CreateJob and JobConfigInfo wire forms, partial updates and diffs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sx.processors._enums import ExecuteMode, JobType, MisfirePolicy, TimeType
from sx.processors._errors import DefinitionError
from sx.processors._schedule import Schedule, api, cron, fixed_rate, second_delay
from sx.processors._spec import JobSpec
from sx.processors._spec_limits import MAX_DATA_OFFSET, MAX_PARAMETERS_BYTES
from sx.processors._spec_options import Contact, MapOptions, MonitorOptions

BASE: dict[str, Any] = {"name": "nightly", "class_name": "jobs:Nightly"}

CREATE_FIELDS = [
    "jobType",
    "className",
    "jarUrl",
    "content",
    "name",
    "description",
    "executeMode",
    "parameters",
    "maxConcurrency",
    "maxAttempt",
    "attemptInterval",
    "timeType",
    "timeExpression",
    "calendar",
    "dataOffset",
    "pageSize",
    "consumerSize",
    "queueSize",
    "dispatcherSize",
    "taskMaxAttempt",
    "taskAttemptInterval",
    "timeoutEnable",
    "timeout",
    "timeoutKillEnable",
    "failEnable",
    "sendChannel",
    "alarmUrl",
    "contactInfo",
    "timeZone",
    "misfirePolicy",
    "captureLogs",
]


def spec(**changes: Any) -> JobSpec:
    return JobSpec(**{**BASE, **changes})


def to_form(params: dict[str, Any]) -> dict[str, str]:
    """CreateJob parameters as a query string or form sends them: strings, contactInfo flattened."""
    form: dict[str, str] = {}
    for key, value in params.items():
        if key == "contactInfo":
            for index, contact in enumerate(value, start=1):
                for field, text in contact.items():
                    form[f"contactInfo.{index}.{field}"] = text
        elif isinstance(value, bool):
            form[key] = "true" if value else "false"
        else:
            form[key] = str(value)
    return form


# -- validation rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"name": "n" * 100},
        {"name": "名字 with spaces inside"},
        {"job_type": JobType.JAVA, "class_name": "com.example.Job", "jar_url": "oss://bucket/job.jar"},
        {"job_type": "python", "class_name": "", "content": "print('hi')"},
        {"job_type": JobType.SHELL, "class_name": "", "content": "echo hi"},
        {"job_type": "go", "class_name": "", "content": "package main"},
        {"execute_mode": "broadcatst"},
        {"execute_mode": "broadcast"},
        {"execute_mode": ExecuteMode.BATCH},
        {"parameters": "a" * MAX_PARAMETERS_BYTES},
        {"parameters": "é" * (MAX_PARAMETERS_BYTES // 2)},
        {"max_concurrency": 10, "max_attempt": 3, "attempt_interval": 0},
        {"schedule": cron("0 0 2 * * ?"), "calendar": "workdays", "data_offset": -86400},
        {"schedule": cron("0 0 2 * * ?"), "data_offset": MAX_DATA_OFFSET},
        {"schedule": fixed_rate(30)},
        {"schedule": second_delay(5)},
        {"time_zone": "Asia/Shanghai"},
        {"time_zone": "UTC"},
        {"misfire": "skip"},
        {"map": MapOptions(page_size=1, consumer_size=1, queue_size=1, dispatcher_size=200)},
        {"map": {"task_max_attempt": 5, "task_attempt_interval": 10}},
        {"monitor": MonitorOptions(timeout_enable=True, timeout=1, contacts=(Contact(user_name="ops"),))},
    ],
)
def test_valid_definitions(changes: dict[str, Any]) -> None:
    job = spec(**changes)
    assert JobSpec.from_create_params(job.to_create_params()) == job


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "n" * 101}, "name"),
        ({"name": " padded"}, "name"),
        ({"name": "two\nlines"}, "name"),
        ({"name": 7}, "name"),
        ({"description": "d" * 1001}, "description"),
        ({"job_type": "cobol"}, "jobType"),
        ({"job_type": JobType.JAVA, "class_name": ""}, "className"),
        ({"job_type": JobType.PYTHON, "class_name": ""}, "className"),
        ({"job_type": JobType.PYTHON, "content": "print(1)"}, "content"),
        ({"job_type": JobType.SHELL, "class_name": ""}, "content"),
        ({"job_type": JobType.SHELL, "content": "echo hi"}, "className"),
        ({"job_type": JobType.GO, "class_name": ""}, "content"),
        ({"jar_url": "oss://bucket/job.jar"}, "jarUrl"),
        ({"execute_mode": "cluster"}, "executeMode"),
        ({"parameters": "a" * (MAX_PARAMETERS_BYTES + 1)}, "parameters"),
        ({"parameters": "é" * (MAX_PARAMETERS_BYTES // 2 + 1)}, "parameters"),
        ({"max_concurrency": 0}, "maxConcurrency"),
        ({"max_attempt": -1}, "maxAttempt"),
        ({"attempt_interval": -1}, "attemptInterval"),
        ({"max_attempt": "3"}, "maxAttempt"),
        ({"calendar": "workdays"}, "calendar"),
        ({"schedule": fixed_rate(30), "calendar": "workdays"}, "calendar"),
        ({"schedule": second_delay(5), "data_offset": 60}, "dataOffset"),
        ({"schedule": cron("0 0 2 * * ?"), "data_offset": MAX_DATA_OFFSET + 1}, "dataOffset"),
        ({"time_zone": "Nowhere/City"}, "timeZone"),
        ({"time_zone": "../etc/passwd"}, "timeZone"),
        ({"time_zone": "Asia/Shanghai "}, "timeZone"),
        ({"misfire": "later"}, "misfirePolicy"),
        ({"map": {"page_size": 0}}, "pageSize"),
        ({"map": {"consumer_size": 0}}, "consumerSize"),
        ({"map": {"queue_size": 0}}, "queueSize"),
        ({"map": {"dispatcher_size": 0}}, "dispatcherSize"),
        ({"map": {"dispatcher_size": 201}}, "dispatcherSize"),
        ({"map": {"task_max_attempt": -1}}, "taskMaxAttempt"),
        ({"map": {"task_attempt_interval": -1}}, "taskAttemptInterval"),
        ({"monitor": {"timeout": 0}}, "timeout"),
        ({"monitor": {"send_channel": ""}}, "sendChannel"),
        ({"monitor": {"timeout_enable": "yes"}}, "timeoutEnable"),
        ({"monitor": {"contacts": [{"user_phone": 1}]}}, "contactInfo.userPhone"),
        ({"schedule": {"time_type": 3, "expression": "0"}}, "timeExpression"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_definitions_raise_definition_errors(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        spec(**changes)
    assert caught.value.field == field
    assert not isinstance(caught.value, ValidationError)
    assert field in str(caught.value)


def test_errors_carry_the_offending_value() -> None:
    with pytest.raises(DefinitionError) as caught:
        spec(map={"page_size": -3})
    assert (caught.value.field, caught.value.value) == ("pageSize", -3)
    with pytest.raises(DefinitionError) as caught:
        MapOptions(dispatcher_size=500)
    assert (caught.value.field, caught.value.value) == ("dispatcherSize", 500)


def test_long_values_are_shortened_in_errors() -> None:
    with pytest.raises(DefinitionError) as caught:
        spec(parameters="x" * 20_000)
    assert len(str(caught.value)) < 200


def test_defaults_follow_the_openapi() -> None:
    job = JobSpec(name="j", class_name="p")
    assert job.job_type is JobType.PYTHON
    assert job.execute_mode is ExecuteMode.STANDALONE
    assert (job.max_concurrency, job.max_attempt, job.attempt_interval) == (1, 0, 30)
    assert job.schedule == api()
    assert job.map == MapOptions(
        page_size=100, consumer_size=5, queue_size=10000, dispatcher_size=5, task_max_attempt=0
    )
    assert job.monitor.timeout == 7200 and job.monitor.send_channel == "sms"
    assert job.misfire is MisfirePolicy.RUN_ONCE


# -- CreateJob parameters --------------------------------------------------------------------------


def test_create_params_use_the_openapi_names() -> None:
    job = spec(
        schedule=cron("0 0 2 * * ?"),
        execute_mode="broadcatst",
        monitor={"contacts": [{"user_phone": "138", "user_name": "Li"}]},
    )
    params = job.to_create_params()
    assert sorted(params) == sorted(CREATE_FIELDS)
    assert params["timeType"] == 1 and params["timeExpression"] == "0 0 2 * * ?"
    assert params["executeMode"] == "broadcast"
    assert params["contactInfo"] == [{"userPhone": "138", "userName": "Li"}]
    assert json.loads(json.dumps(params)) == params


def test_from_create_params_applies_defaults() -> None:
    job = JobSpec.from_create_params({"name": "j", "jobType": "python", "className": "p", "timeType": 100})
    assert job == JobSpec(name="j", class_name="p")


@pytest.mark.parametrize("missing", ["name", "jobType", "timeType"])
def test_from_create_params_requires_name_job_type_and_time_type(missing: str) -> None:
    params = {"name": "j", "jobType": "python", "className": "p", "timeType": "100"}
    del params[missing]
    with pytest.raises(DefinitionError) as caught:
        JobSpec.from_create_params(params)
    assert caught.value.field == missing


def test_missing_fields_are_all_named() -> None:
    with pytest.raises(DefinitionError) as caught:
        JobSpec.from_create_params({"className": "p"})
    assert caught.value.field == "name"
    assert "name, jobType, timeType" in caught.value.message


def test_from_create_params_coerces_strings() -> None:
    job = JobSpec.from_create_params(
        {
            "name": "j",
            "jobType": "Python",
            "className": "p",
            "timeType": "3",
            "timeExpression": "30",
            "executeMode": "parallel",
            "maxConcurrency": "4",
            "maxAttempt": " 2 ",
            "attemptInterval": "0",
            "pageSize": "50",
            "timeoutEnable": "true",
            "timeoutKillEnable": "FALSE",
            "failEnable": "1",
            "timeout": "600",
            "misfirePolicy": "SKIP",
        }
    )
    assert job.schedule == fixed_rate(30)
    assert (job.max_concurrency, job.max_attempt, job.attempt_interval) == (4, 2, 0)
    assert job.map.page_size == 50
    assert job.monitor == MonitorOptions(timeout_enable=True, timeout=600, fail_enable=True)
    assert job.execute_mode is ExecuteMode.PARALLEL
    assert job.misfire is MisfirePolicy.SKIP


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("maxAttempt", "3.5"),
        ("maxAttempt", "three"),
        ("maxAttempt", True),
        ("maxAttempt", 2.5),
        ("maxAttempt", "9" * 40),
        ("timeoutEnable", "yes"),
        ("timeoutEnable", 2),
        ("timeType", "2"),
        ("name", 12),
        ("executeMode", "broadcst"),
        ("jobType", "golan"),
    ],
)
def test_from_create_params_rejects_bad_values(field: str, value: Any) -> None:
    params: dict[str, Any] = {"name": "j", "jobType": "python", "className": "p", "timeType": 100}
    params[field] = value
    with pytest.raises(DefinitionError) as caught:
        JobSpec.from_create_params(params)
    assert (caught.value.field, caught.value.value) == (field, value)


def test_from_create_params_reads_json_numbers_and_aliases() -> None:
    job = JobSpec.from_create_params(
        {
            "name": "j",
            "jobType": "golang",
            "content": "package main",
            "timeType": "cron",
            "timeExpression": "0 0 2 * * ?",
            "dataOffset": -3600.0,
            "executeMode": "BROADCATST",
            "timeoutEnable": 1,
        }
    )
    assert job.job_type is JobType.GO
    assert job.schedule.time_type is TimeType.CRON
    assert job.data_offset == -3600
    assert job.execute_mode is ExecuteMode.BROADCAST
    assert job.monitor.timeout_enable is True


def test_blank_and_null_values_count_as_absent() -> None:
    job = JobSpec.from_create_params(
        {
            "name": "j",
            "jobType": "python",
            "className": "p",
            "timeType": "100",
            "maxAttempt": "",
            "timeout": None,
            "description": None,
            "contactInfo": None,
        }
    )
    assert job == JobSpec(name="j", class_name="p")


def test_non_job_parameters_are_ignored() -> None:
    job = JobSpec.from_create_params(
        {
            "namespace": "ns",
            "namespaceSource": "x",
            "groupId": "g",
            "jobId": "42",
            "status": 1,
            "name": "j",
            "jobType": "python",
            "className": "p",
            "timeType": 100,
        }
    )
    assert job == JobSpec(name="j", class_name="p")


CONTACTS = (Contact(user_phone="138", user_name="Li"), Contact(user_phone="139", user_name="Wang"))


@pytest.mark.parametrize(
    "contact_params",
    [
        {"contactInfo": [{"userPhone": "138", "userName": "Li"}, {"userPhone": "139", "userName": "Wang"}]},
        {"contactInfo": '[{"userPhone": "138", "userName": "Li"}, {"userPhone": "139", "userName": "Wang"}]'},
        {"contactInfo": [{"userPhone": 138, "userName": "Li"}, {"userPhone": 139, "userName": "Wang"}]},
        {
            "contactInfo.1.userPhone": "138",
            "contactInfo.1.userName": "Li",
            "contactInfo.2.userPhone": "139",
            "contactInfo.2.userName": "Wang",
        },
        {
            "contactInfo[10].userName": "Wang",
            "contactInfo[10].userPhone": "139",
            "contactInfo[2].userPhone": "138",
            "contactInfo[2].userName": "Li",
        },
    ],
)
def test_contact_info_forms(contact_params: dict[str, Any]) -> None:
    params = {"name": "j", "jobType": "python", "className": "p", "timeType": "100", **contact_params}
    assert JobSpec.from_create_params(params).monitor.contacts == CONTACTS


def test_single_contact_object_and_empty_contact_info() -> None:
    base = {"name": "j", "jobType": "python", "className": "p", "timeType": "100"}
    one = JobSpec.from_create_params({**base, "contactInfo": {"userName": "Li"}})
    assert one.monitor.contacts == (Contact(user_name="Li"),)
    assert JobSpec.from_create_params({**base, "contactInfo": ""}).monitor.contacts == ()
    assert JobSpec.from_create_params({**base, "contactInfo": "[]"}).monitor.contacts == ()


@pytest.mark.parametrize(
    ("contact_params", "field"),
    [
        ({"contactInfo": "[{"}, "contactInfo"),
        ({"contactInfo": "42"}, "contactInfo"),
        ({"contactInfo": ["138"]}, "contactInfo"),
        ({"contactInfo": [{"phone": "138"}]}, "contactInfo"),
        ({"contactInfo": [{"userPhone": ["138"]}]}, "contactInfo.userPhone"),
        ({"contactInfo": [{"userName": "n" * 101}]}, "contactInfo.userName"),
        ({"contactInfo": [], "contactInfo.1.userPhone": "138"}, "contactInfo"),
        ({"contactInfo.1.email": "a@b"}, "contactInfo"),
    ],
)
def test_bad_contact_info(contact_params: dict[str, Any], field: str) -> None:
    params = {"name": "j", "jobType": "python", "className": "p", "timeType": "100", **contact_params}
    with pytest.raises(DefinitionError) as caught:
        JobSpec.from_create_params(params)
    assert caught.value.field == field


# -- JobConfigInfo ---------------------------------------------------------------------------------


def test_job_config_info_shape() -> None:
    job = spec(schedule=cron("0 0 2 * * ?"), calendar="workdays", data_offset=60, time_zone="UTC")
    info = job.to_job_config_info()
    assert info["timeConfig"] == {
        "timeType": 1,
        "timeExpression": "0 0 2 * * ?",
        "calendar": "workdays",
        "dataOffset": 60,
    }
    assert info["mapTaskXAttrs"] == {
        "pageSize": 100,
        "consumerSize": 5,
        "queueSize": 10000,
        "dispatcherSize": 5,
        "taskMaxAttempt": 0,
        "taskAttemptInterval": 0,
    }
    assert info["jobMonitorInfo"] == {
        "monitorConfig": {
            "timeoutEnable": False,
            "timeout": 7200,
            "timeoutKillEnable": False,
            "failEnable": False,
            "sendChannel": "sms",
            "alarmUrl": "",
        },
        "contactInfo": [],
    }
    assert (info["jobType"], info["timeZone"], info["misfirePolicy"]) == ("python", "UTC", "run_once")
    assert "status" not in info and "jobId" not in info


def test_from_job_config_info_ignores_status_and_job_id() -> None:
    job = spec(schedule=second_delay(10))
    info = {**job.to_job_config_info(), "status": 1, "jobId": 7}
    assert JobSpec.from_job_config_info(info) == job


def test_from_job_config_info_missing_sections_take_defaults() -> None:
    info = {"name": "j", "jobType": "python", "className": "p", "timeConfig": {"timeType": 100}}
    assert JobSpec.from_job_config_info(info) == JobSpec(name="j", class_name="p")


@pytest.mark.parametrize(
    ("info_changes", "field"),
    [
        ({"timeConfig": "cron"}, "timeConfig"),
        ({"mapTaskXAttrs": [1]}, "mapTaskXAttrs"),
        ({"jobMonitorInfo": {"monitorConfig": 5}}, "jobMonitorInfo.monitorConfig"),
        ({"timeConfig": {}}, "timeType"),
    ],
)
def test_from_job_config_info_rejects_bad_sections(info_changes: dict[str, Any], field: str) -> None:
    info = {**spec().to_job_config_info(), **info_changes}
    with pytest.raises(DefinitionError) as caught:
        JobSpec.from_job_config_info(info)
    assert caught.value.field == field


# -- partial update and diff -----------------------------------------------------------------------


def test_updated_keeps_absent_fields() -> None:
    job = spec(
        schedule=cron("0 0 2 * * ?"),
        calendar="workdays",
        parameters="p=1",
        monitor={"fail_enable": True, "contacts": [{"user_name": "Li"}]},
    )
    changed = job.updated({"jobId": "7", "maxAttempt": "3", "description": "new"})
    assert changed == job.model_copy(update={"max_attempt": 3, "description": "new"})
    assert job.updated({}) == job


def test_updated_replaces_contacts_as_a_whole() -> None:
    job = spec(monitor={"contacts": [{"user_name": "Li"}, {"user_name": "Wang"}]})
    changed = job.updated({"contactInfo.1.userName": "Zhao"})
    assert changed.monitor.contacts == (Contact(user_name="Zhao"),)
    assert job.updated({"contactInfo": []}).monitor.contacts == ()


def test_updated_time_type_resets_fields_of_the_old_type() -> None:
    job = spec(schedule=cron("0 0 2 * * ?"), calendar="workdays", data_offset=60)
    assert job.updated({"timeType": "100"}).schedule == api()
    moved = job.updated({"timeType": 3, "timeExpression": "45"})
    assert (moved.schedule, moved.calendar, moved.data_offset) == (fixed_rate(45), "", 0)
    same = job.updated({"timeType": 1})
    assert same == job
    with pytest.raises(DefinitionError) as caught:
        job.updated({"timeType": 3})
    assert caught.value.field == "timeExpression"


def test_updated_validates_the_result() -> None:
    with pytest.raises(DefinitionError) as caught:
        spec().updated({"jobType": "shell"})
    assert caught.value.field == "content"
    with pytest.raises(DefinitionError) as caught:
        spec().updated({"dataOffset": "60"})
    assert caught.value.field == "dataOffset"


def test_diff_names_wire_fields_with_old_and_new_values() -> None:
    old = spec(schedule=fixed_rate(30))
    new = spec(schedule=fixed_rate(60), monitor={"contacts": [{"user_name": "Li"}]}, map={"page_size": 7})
    assert old.diff(old) == {}
    assert old.diff(new) == {
        "timeExpression": ("30", "60"),
        "contactInfo": ([], [{"userPhone": "", "userName": "Li"}]),
        "pageSize": (100, 7),
    }
    assert new.diff(old)["pageSize"] == (7, 100)


# -- round trips -----------------------------------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_NAME = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=100).filter(
    lambda name: name == name.strip() and bool(name)
)
_SECONDS = st.integers(min_value=0, max_value=10**6)
_CRONS = st.sampled_from(["0 0 2 * * ?", "0/15 * * * * ?", "0 30 9 ? * MON-FRI", "0 0 12 L * ? 2030"])


@st.composite
def job_specs(draw: st.DrawFn) -> JobSpec:
    """Valid JobSpecs across every job type, schedule and option."""
    job_type = draw(st.sampled_from(list(JobType)))
    class_name, content, jar_url = "", "", ""
    if job_type is JobType.JAVA:
        class_name = draw(st.from_regex(r"[a-z]+(\.[a-z]+)*\.[A-Z][A-Za-z]*", fullmatch=True))
        jar_url = draw(st.sampled_from(["", "oss://bucket/app.jar"]))
        content = draw(_TEXT)
    elif job_type is JobType.PYTHON and draw(st.booleans()):
        class_name = draw(st.from_regex(r"[a-z_]+(\.[a-z_]+)*:[A-Z][a-z]*", fullmatch=True))
    else:
        content = draw(_TEXT.filter(bool))
    schedule: Schedule = draw(
        st.one_of(
            st.just(api()),
            _CRONS.map(cron),
            st.integers(1, 10**7).map(fixed_rate),
            st.integers(1, 60).map(second_delay),
        )
    )
    is_cron = schedule.time_type is TimeType.CRON
    contacts = draw(
        st.lists(
            st.builds(Contact, user_phone=st.from_regex(r"\d{0,11}", fullmatch=True), user_name=_TEXT),
            max_size=3,
        )
    )
    return JobSpec(
        name=draw(_NAME),
        description=draw(_TEXT),
        job_type=job_type,
        class_name=class_name,
        content=content,
        jar_url=jar_url,
        execute_mode=draw(st.sampled_from(list(ExecuteMode))),
        parameters=draw(_TEXT),
        max_concurrency=draw(st.integers(1, 1000)),
        max_attempt=draw(st.integers(0, 100)),
        attempt_interval=draw(_SECONDS),
        schedule=schedule,
        calendar=draw(st.sampled_from(["", "workdays"])) if is_cron else "",
        data_offset=draw(st.integers(-MAX_DATA_OFFSET, MAX_DATA_OFFSET)) if is_cron else 0,
        time_zone=draw(st.sampled_from(["", "UTC", "Asia/Shanghai", "America/New_York"])),
        misfire=draw(st.sampled_from(list(MisfirePolicy))),
        map=MapOptions(
            page_size=draw(st.integers(1, 10_000)),
            consumer_size=draw(st.integers(1, 64)),
            queue_size=draw(st.integers(1, 100_000)),
            dispatcher_size=draw(st.integers(1, 200)),
            task_max_attempt=draw(st.integers(0, 10)),
            task_attempt_interval=draw(_SECONDS),
        ),
        monitor=MonitorOptions(
            timeout_enable=draw(st.booleans()),
            timeout=draw(st.integers(1, 10**7)),
            timeout_kill_enable=draw(st.booleans()),
            fail_enable=draw(st.booleans()),
            send_channel=draw(st.sampled_from(["sms", "email", "webhook"])),
            contacts=tuple(contacts),
        ),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_specs())
def test_create_params_round_trip(job: JobSpec) -> None:
    params = job.to_create_params()
    assert JobSpec.from_create_params(params) == job
    assert JobSpec.from_create_params(json.loads(json.dumps(params))) == job


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_specs())
def test_form_params_round_trip(job: JobSpec) -> None:
    assert JobSpec.from_create_params(to_form(job.to_create_params())) == job


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_specs())
def test_job_config_info_round_trip(job: JobSpec) -> None:
    info = job.to_job_config_info()
    assert JobSpec.from_job_config_info(info) == job
    assert JobSpec.from_job_config_info(json.loads(json.dumps(info))) == job


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_specs(), job_specs())
def test_update_with_the_other_jobs_params_gives_the_other_job(job: JobSpec, other: JobSpec) -> None:
    assert job.updated(other.to_create_params()) == other
    changed = job.diff(other)
    assert job.updated({wire: new for wire, (_, new) in changed.items()}) == other


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_specs())
def test_model_json_round_trip(job: JobSpec) -> None:
    assert JobSpec.model_validate_json(job.model_dump_json()) == job
    assert hash(JobSpec.model_validate(job.model_dump())) == hash(job)
    assert JobSpec.model_validate(json.loads(json.dumps(job.model_dump(mode="json")))) == job
