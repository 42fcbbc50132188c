"""Search objective, ranking, the samplers' configuration, and bad input (no Slurm needed)."""

from __future__ import annotations

import statistics

import optuna
import pytest

from hpcplat.errors import UsageError
from hpcplat.spec import JobSpec
from hpcplat.submission.objective import Objective, TrialRow, rank
from hpcplat.submission.search import Method, Search, distributions, make_sampler
from hpcplat.submission.sweep import parse_distribution
from tests.fixtures.submission import invoke


def test_objective_parse_and_value() -> None:
    series = [(0, 5.0), (1, 2.0), (2, 3.0)]
    assert Objective.parse("loss").value(series) == 3.0
    assert Objective.parse("loss:min:best").value(series) == 2.0
    assert Objective.parse("acc:max:best").value(series) == 5.0
    assert Objective.parse("loss").value([]) is None
    for bad in ("", "loss:down", "loss:min:median", "9x"):
        with pytest.raises(UsageError):
            Objective.parse(bad)


def test_rank_orders_by_objective_and_counts_savings() -> None:
    rows = [
        TrialRow(0, {"x": 1}, "COMPLETE", value=4.0, elapsed_s=100),
        TrialRow(1, {"x": 3}, "COMPLETE", value=0.5, elapsed_s=100),
        TrialRow(2, {"x": 9}, "PRUNED", steps=2, elapsed_s=20),
        TrialRow(3, {"x": 8}, "FAIL", elapsed_s=5),
    ]
    ranking = rank(Objective.parse("loss:min"), rows, gpus_per_trial=2)
    assert [t.number for t in ranking.trials] == [1, 0, 2, 3]
    assert ranking.best is not None and ranking.best.params == {"x": 3}
    summary = ranking.summary()
    assert summary["pruned"] == 1 and summary["failed"] == 1
    assert summary["trial_hours_saved"] == pytest.approx(80 / 3600)
    assert summary["gpu_hours_saved"] == pytest.approx(160 / 3600)
    assert [t.number for t in rank(Objective.parse("loss:max"), rows).trials][:2] == [0, 1]


def _search(method: Method, trials: int) -> Search:
    return Search(
        job=JobSpec(command=("true",)),
        parameters={"x": parse_distribution("x", {"distribution": "uniform", "min": -10, "max": 10})},
        method=method,
        objective=Objective.parse("loss:min"),
        max_trials=trials,
        startup_trials=5,
    )


def _trials_to_target(method: Method, seed: int, budget: int = 40) -> int:
    """Trials until loss (x-3)^2 is within 5% of the range's worst (0.05 * 169 ~ 8.45 -> |x-3| < 0.5)."""
    search = _search(method, budget)
    search = Search(**{**search.__dict__, "seed": seed})
    study = optuna.create_study(sampler=make_sampler(search), direction="minimize")
    dists = distributions(search)
    for n in range(budget):
        trial = study.ask(dists)
        loss = (trial.params["x"] - 3) ** 2
        study.tell(trial, loss)
        if loss < 0.25:
            return n + 1
    return budget + 1


def test_tpe_reaches_the_optimum_in_fewer_trials_than_random() -> None:
    tpe = [_trials_to_target(Method.TPE, seed) for seed in range(9)]
    rnd = [_trials_to_target(Method.RANDOM, seed) for seed in range(9)]
    assert statistics.median(tpe) < statistics.median(rnd), (tpe, rnd)


def test_bad_searches_are_clear_errors() -> None:
    with pytest.raises(UsageError, match="pbt is not available"):
        Method.parse("pbt")
    with pytest.raises(UsageError, match="hyperband needs"):
        Search(**{**_search(Method.TPE, 5).__dict__, "method": Method.HYPERBAND})
    result = invoke(["sweep", "submit", "--method", "tpe", "--space", "x=uniform:0:1", "--", "true"])
    assert result.exit_code == 2 and "needs an objective" in result.output
    result = invoke(["sweep", "submit", "--objective", "loss", "--grid", "x=1,2", "--", "true"])
    assert result.exit_code == 2 and "need --method" in result.output
