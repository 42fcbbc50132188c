"""JobSpec: construction, validation with field-named errors, to_dict/from_dict round trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcplat.errors import UsageError
from hpcplat.spec import (
    DatasetRef,
    Environment,
    JobSpec,
    Resources,
    SpecError,
    format_memory_mb,
    format_time_minutes,
    parse_memory_mb,
    parse_time_minutes,
)
from hpcplat.spec.units import MAX_TIME_MINUTES


def full_spec() -> JobSpec:
    return JobSpec(
        command=("python", "train.py", "--lr", "0.1"),
        name="resnet",
        resources=Resources(
            nodes=2,
            tasks_per_node=4,
            gpus_per_node=4,
            cpus_per_task=8,
            memory_mb=64 * 1024,
            time_limit_min=12 * 60,
        ),
        tier="preemptible",
        account="vision",
        partition="gpu",
        environment=Environment(
            modules=("cuda/12.1", "gcc/12"), venv="/opt/venvs/torch", vars={"OMP_NUM_THREADS": "8"}
        ),
        datasets=(DatasetRef("digits", "2"), DatasetRef("imagenet", "latest")),
        params={"lr": 0.1, "epochs": 10, "amp": True, "opt": "adam", "note": None},
        workdir="/home/u/proj",
        checkpoint_dir="/scratch/u/ckpt",
        max_requeues=5,
        signal_warn_s=120,
        depends_on=("123", "124_3"),
        tags=("baseline", "v2"),
    )


def test_round_trip_keeps_every_field() -> None:
    spec = full_spec()
    again = JobSpec.from_dict(spec.to_dict())
    assert again == spec
    assert again.to_dict() == spec.to_dict()


def test_defaults_and_derived_name() -> None:
    spec = JobSpec(command=("python", "-u", "scripts/train.py", "--x"))
    assert spec.name == "train"
    assert spec.resources == Resources()
    assert spec.tier is None and spec.max_requeues is None
    assert JobSpec(command="python -m pkg.main --a 'b c'").command == (
        "python",
        "-m",
        "pkg.main",
        "--a",
        "b c",
    )
    assert JobSpec(command=("python", "-m", "pkg.main")).name == "pkg.main"


def test_from_dict_accepts_command_string_and_units() -> None:
    spec = JobSpec.from_dict(
        {
            "command": "python train.py --name 'my run'",
            "resources": {"time": "2h", "memory": "16G", "nodes": 2},
        }
    )
    assert spec.command == ("python", "train.py", "--name", "my run")
    assert spec.resources.time_limit_min == 120
    assert spec.resources.memory_mb == 16384
    assert spec.resources.nodes == 2


def fields_of(exc: SpecError) -> set[str]:
    return {p.field for p in exc.problems}


def test_every_problem_is_reported_with_its_field() -> None:
    with pytest.raises(SpecError) as caught:
        JobSpec.from_dict(
            {
                "command": ["python", "t.py"],
                "resources": {"nodes": 0, "gpus_per_node": -1, "time": "soon", "gpus": 2},
                "environment": {"vars": {"SLURM_JOB_ID": "1", "9bad": "x"}, "venv": "/v", "conda": "base"},
                "depends_on": ["abc"],
                "max_requeues": -1,
                "colour": "blue",
            }
        )
    exc = caught.value
    assert isinstance(exc, UsageError) and exc.exit_code == 2
    assert {
        "resources.nodes",
        "resources.gpus_per_node",
        "resources.time",
        "resources.gpus",
        "environment.vars.SLURM_JOB_ID",
        "environment.vars.9bad",
        "environment.conda",
        "depends_on[0]",
        "max_requeues",
        "colour",
    } <= fields_of(exc)
    text = str(exc)
    assert "resources.nodes: must be at least 1, got 0" in text
    assert "allowed: nodes, tasks_per_node, gpus_per_node" in text


def test_unknown_field_suggests_the_close_one() -> None:
    with pytest.raises(SpecError, match="did you mean 'checkpoint_dir'"):
        JobSpec.from_dict({"command": ["x"], "checkpoint_dirs": "/c"})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"command": ()}, "command"),
        ({"name": "two\nlines"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"account": "vision nlp"}, "account"),
        ({"tier": "a b"}, "tier"),
        ({"signal_warn_s": 0}, "signal_warn_s"),
        ({"signal_warn_s": 70000}, "signal_warn_s"),
        ({"params": {"1x": 1}}, "params.1x"),
        ({"params": {"x": [1, 2]}}, "params.x"),
        ({"workdir": "a\x00b"}, "workdir"),
    ],
)
def test_bad_values_name_their_field(changes: dict[str, object], field: str) -> None:
    base = {"command": ("python", "t.py")}
    with pytest.raises(SpecError) as caught:
        JobSpec(**{**base, **changes})  # type: ignore[arg-type]
    assert field in fields_of(caught.value)


def test_resources_are_checked_on_their_own() -> None:
    with pytest.raises(SpecError) as caught:
        Resources(nodes=0, cpus_per_task=0, time_limit_min=0)
    assert fields_of(caught.value) == {"resources.nodes", "resources.cpus_per_task", "resources.time"}


def test_dataset_references() -> None:
    assert DatasetRef.parse("digits@3") == DatasetRef("digits", "3")
    assert DatasetRef.parse("digits") == DatasetRef("digits", "latest")
    with pytest.raises(ValueError, match="NAME@VERSION"):
        DatasetRef.parse("digits@")
    with pytest.raises(SpecError) as caught:
        JobSpec.from_dict({"command": ["x"], "datasets": ["@3"]})
    assert "datasets[0]" in fields_of(caught.value)


def test_with_overrides_merges_sections() -> None:
    spec = full_spec().with_overrides({"resources": {"gpus_per_node": 1}, "tier": "urgent"})
    assert spec.resources.gpus_per_node == 1
    assert spec.resources.nodes == 2  # kept
    assert spec.tier == "urgent"


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("90", 90),
        (90, 90),
        ("1:30", 2),  # minutes:seconds rounds up
        ("1:30:00", 90),
        ("2-12", 2 * 1440 + 12 * 60),
        ("1-00:00:00", 1440),
        ("1-02:03", 1440 + 2 * 60 + 3),
        ("90m", 90),
        ("2h", 120),
        ("1.5h", 90),
        ("1d", 1440),
        ("30s", 1),
    ],
)
def test_time_forms(text: str | int, minutes: int) -> None:
    assert parse_time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "soon", "1:60:00", "0", "-5", "1-25:00:00", "1:2:3:4", True])
def test_bad_times(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_minutes(text)


@pytest.mark.parametrize(
    ("text", "mb"),
    [
        ("4000", 4000),
        (512, 512),
        ("16G", 16384),
        ("16GB", 16384),
        ("1.5G", 1536),
        ("1T", 1048576),
        ("2048K", 2),
        ("100m", 100),
    ],
)
def test_memory_forms(text: str | int, mb: int) -> None:
    assert parse_memory_mb(text) == mb


@pytest.mark.parametrize("text", ["", "lots", "16X", "0", "-1G"])
def test_bad_memory(text: str) -> None:
    with pytest.raises(ValueError):
        parse_memory_mb(text)


@given(st.integers(min_value=1, max_value=MAX_TIME_MINUTES))
def test_time_format_round_trips(minutes: int) -> None:
    assert parse_time_minutes(format_time_minutes(minutes)) == minutes


@given(st.integers(min_value=1, max_value=10**8))
def test_memory_format_round_trips(mb: int) -> None:
    assert parse_memory_mb(format_memory_mb(mb)) == mb


_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=20
)


@settings(max_examples=60)
@given(
    argv=st.lists(_text, min_size=1, max_size=4),
    params=st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True),
        st.one_of(st.integers(), st.booleans(), _text, st.none()),
        max_size=4,
    ),
    gpus=st.integers(min_value=0, max_value=8),
)
def test_round_trip_property(argv: list[str], params: dict[str, object], gpus: int) -> None:
    spec = JobSpec(
        command=tuple(argv),
        name="job",
        params=params,  # type: ignore[arg-type]
        resources=Resources(gpus_per_node=gpus),
    )
    assert JobSpec.from_dict(spec.to_dict()) == spec
