"""Sweeps: points of a grid or random search, placeholders, array splitting, sweep files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hpcplat.errors import UsageError
from hpcplat.spec import JobSpec, SpecError
from hpcplat.submission.sweep import (
    Distribution,
    DistributionKind,
    SearchMethod,
    Sweep,
    chunks,
    load_sweep_file,
    parse_cli_parameter,
    parse_distribution,
    substitute,
)

JOB = JobSpec(command=("python", "train.py", "--lr", "{lr}", "--bs={bs}"), name="sw")


def test_grid_is_the_full_product_in_order() -> None:
    sweep = Sweep(
        job=JOB,
        parameters={
            "lr": parse_distribution("lr", [0.1, 0.01]),
            "bs": parse_distribution("bs", [16, 32, 64]),
        },
    )
    points = sweep.points()
    assert len(points) == 6
    assert points[0] == {"lr": 0.1, "bs": 16} and points[-1] == {"lr": 0.01, "bs": 64}
    int_range = Sweep(job=JOB, parameters={"layers": Distribution(DistributionKind.INT, low=1, high=3)})
    assert [p["layers"] for p in int_range.points()] == [1, 2, 3]


def test_random_search_is_seeded_and_in_range() -> None:
    params = {
        "lr": parse_distribution("lr", {"distribution": "loguniform", "min": 1e-5, "max": 1e-1}),
        "drop": parse_distribution("drop", {"distribution": "uniform", "min": 0, "max": 0.5}),
        "layers": parse_distribution("layers", {"distribution": "int", "min": 2, "max": 4}),
        "opt": parse_distribution("opt", ["sgd", "adam"]),
    }
    a = Sweep(job=JOB, parameters=params, method=SearchMethod.RANDOM, samples=200, seed=7).points()
    b = Sweep(job=JOB, parameters=params, method=SearchMethod.RANDOM, samples=200, seed=7).points()
    assert a == b and len(a) == 200
    assert all(1e-5 <= p["lr"] <= 1e-1 and 0 <= p["drop"] <= 0.5 for p in a)  # type: ignore[operator]
    assert {p["layers"] for p in a} == {2, 3, 4} and {p["opt"] for p in a} == {"sgd", "adam"}
    logs = [math.log10(p["lr"]) for p in a]  # type: ignore[arg-type]
    assert min(logs) < -4 and max(logs) > -2, "loguniform covers the decades"


def test_bad_sweeps_are_refused() -> None:
    with pytest.raises(SpecError, match="random search needs samples"):
        Sweep(job=JOB, parameters={"lr": parse_distribution("lr", [1])}, method=SearchMethod.RANDOM)
    with pytest.raises(SpecError, match="at least one parameter"):
        Sweep(job=JOB, parameters={})
    with pytest.raises(SpecError, match="loguniform needs min > 0"):
        parse_distribution("lr", {"distribution": "loguniform", "min": 0, "max": 1})
    with pytest.raises(SpecError, match="unknown distribution 'normal'"):
        parse_distribution("lr", {"distribution": "normal", "min": 0, "max": 1})
    with pytest.raises(UsageError, match="cannot be gridded"):
        Sweep(
            job=JOB,
            parameters={"lr": parse_distribution("lr", {"distribution": "uniform", "min": 0, "max": 1})},
        ).points()


def test_cli_parameters() -> None:
    assert parse_cli_parameter("lr=0.1,0.01") == ("lr", Distribution(DistributionKind.CHOICE, (0.1, 0.01)))
    assert parse_cli_parameter("opt=sgd,adam")[1].values == ("sgd", "adam")
    assert parse_cli_parameter("amp=true,false")[1].values == (True, False)
    name, dist = parse_cli_parameter("lr=loguniform:1e-5:1e-2")
    assert name == "lr" and dist.kind is DistributionKind.LOGUNIFORM and dist.low == 1e-5
    with pytest.raises(UsageError, match="NAME=V1,V2"):
        parse_cli_parameter("lr")


def test_placeholders_are_substituted_per_point() -> None:
    argv, changed = substitute(JOB.command, {"lr": 0.1, "bs": 32})
    assert changed and argv == ["python", "train.py", "--lr", "0.1", "--bs=32"]
    argv, changed = substitute(["echo", "{not_a_param}", "{}"], {"lr": 1})
    assert not changed and argv == ["echo", "{not_a_param}", "{}"]


def test_arrays_split_at_max_array_size() -> None:
    assert chunks(1000, 1001) == [(0, 1000)]
    assert chunks(2500, 1001) == [(0, 1001), (1001, 1001), (2002, 498)]
    assert chunks(5, 2) == [(0, 2), (2, 2), (4, 1)]
    assert sum(size for _, size in chunks(12345, 1001)) == 12345


def test_sweep_file(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "method: random\nsamples: 5\nseed: 3\nmax_concurrent: 2\n"
        "parameters:\n  lr: {distribution: loguniform, min: 0.0001, max: 0.1}\n  bs: [16, 32]\n"
        "job:\n  command: python train.py --lr {lr}\n  resources: {gpus_per_node: 1}\n"
    )
    sweep = load_sweep_file(path)
    assert sweep.method is SearchMethod.RANDOM and sweep.samples == 5 and sweep.max_concurrent == 2
    assert len(sweep.points()) == 5 and sweep.job.resources.gpus_per_node == 1


def test_sweep_file_reads_exponents_without_a_dot(tmp_path: Path) -> None:
    """PyYAML (YAML 1.1) leaves ``1e-5`` as a string; the sweep file means the number."""
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "method: random\nsamples: 4\nparameters: {lr: {distribution: loguniform, min: 1e-5, max: 1e-1}}\n"
        "job: {command: python train.py}\n"
    )
    sweep = load_sweep_file(path)
    assert sweep.parameters["lr"].low == 1e-5 and sweep.parameters["lr"].high == 0.1
    assert all(1e-5 <= p["lr"] <= 0.1 for p in sweep.points())  # type: ignore[operator]
    for bad in ("min: low, max: 1", "min: .nan, max: 1", "min: 2, max: 1", "min: true, max: 2"):
        path.write_text(f"parameters: {{lr: {{distribution: uniform, {bad}}}}}\njob: {{command: x}}\n")
        with pytest.raises(
            UsageError, match=r"sweep\.yaml:1: parameters\.lr: needs finite numbers min <= max, got"
        ):
            load_sweep_file(path)


def test_sweep_file_errors_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("parameters:\n  lr: [0.1]\njob:\n  command: [python, t.py]\n  resources:\n    nodes: 0\n")
    with pytest.raises(UsageError, match=r"sweep\.yaml:6: job\.resources\.nodes: must be at least 1"):
        load_sweep_file(path)
    path.write_text("method: bayes\nparameters:\n  lr: [0.1]\njob:\n  command: [x]\n")
    with pytest.raises(UsageError, match=r"sweep\.yaml:1: method: unknown method 'bayes'"):
        load_sweep_file(path)
    path.write_text("parameters:\n  lr: [0.1]\n")
    with pytest.raises(UsageError, match=r"job: missing"):
        load_sweep_file(path)
