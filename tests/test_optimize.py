"""`compress optimize`: real trainings of the embedded MiniLM at tiny size. A goal that is met, one whose target
no trial meets, a kill -9 mid-search and a resume that trains nothing twice, the held-out split, bad goal
files; the bisection itself on every monotone pattern."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

import compress
from compress.benchmarking.records import read_records
from compress.data.loading import HOLDOUT, DataSettings, load_task_data
from compress.errors import CompressError
from compress.search.goal import Goal
from compress.search.optimize import Bisection, BudgetSpent, Search, Trial, largest_within
from tests.helpers import GOAL, assert_one_line_error, bench_record, invoke, write_goal

@pytest.mark.parametrize("smallest_first", [False, True])
@pytest.mark.parametrize("holds", [[], [True], [False], *[[True] * n + [False] * (7 - n) for n in range(8)]])
def test_bisection_finds_the_largest_k_within_budget_in_log_questions(holds, smallest_first):
    candidates = list(range(1, len(holds) + 1))
    asked = []

    def within(k):
        asked.append(k)
        return holds[k - 1]

    expected = max((k for k, ok in zip(candidates, holds) if ok), default=None)
    assert largest_within(candidates, within, smallest_first) == expected
    assert len(asked) <= 1 + math.ceil(math.log2(len(candidates) + 1))
    assert len(set(asked)) == len(asked)  # never asks twice
    if smallest_first and holds and not holds[0]:
        assert asked == [1]  # a strategy that cannot beat the best so far costs one training


class Answered(Search):
    """The search's rounds, answered from a table of points instead of trained: (strategy, k, training) -> points
    (a missing entry fails). Every K of a 12-layer model may be tried; converting changes nothing."""

    def __init__(self, points: dict[tuple[str, int, str], float], budget: float = 1.0, trainings: int | None = None, **search):
        self.goal = Goal.model_validate({**GOAL, "max_score_drop": budget, "budget": {"trainings": trainings},
                                         "search": {"precisions": ["torch-fp32"], **search}})
        self.console, self.points = Console(quiet=True), points
        self.trials, self.failed, self.trainings, self.rounds_asked = {}, set(), 0, []

    layers = 12

    def arm_ks(self, strategy, training):
        return list(range(1, 12))

    def ask(self, combinations):
        new = [c for c in dict.fromkeys(combinations) if c.key not in self.trials and c.key not in self.failed]
        if not new:
            return
        self.rounds_asked.append([c.label for c in new])
        for c in new:
            points = self.points.get((c.strategy, c.k, c.training))
            if points is None:
                self.failed.add(c.key)
                continue
            if self.goal.budget.trainings is not None and self.trainings >= self.goal.budget.trainings:
                raise BudgetSpent(f"{self.goal.budget.trainings} trainings")
            self.trainings += 1
            self.trials[c.key] = Trial(c, bench_record(key=c.key, strategy=c.strategy, k=c.k, training=c.training, score=points / 100,
                                                       latency=[{"batch_size": 1, "sequence_length": "task", "p50_ms": 12.0 - c.k}]), "accuracy")


def falling(start: float, per_layer: float, strategy: str = "top", training: str = "finetune") -> dict:
    """A strategy whose score falls by `per_layer` points with each layer dropped."""
    return {(strategy, k, training): start - per_layer * k for k in range(1, 12)}


def test_the_rounds_find_the_largest_k_and_stop_the_weaker_strategies_after_one_question():
    points = {("full", 0, "finetune"): 90.0, **falling(90.0, 0.3), **falling(90.0, 0.6, "bottom")}
    search = Answered(points, budget=1.0, strategies=["top", "bottom"], training=["finetune"])
    chosen = search.run()
    assert chosen.combination.label == "top k=3 finetune torch-fp32"  # 90 - 3 x 0.3 = 89.1, within 1 point; k=4 is not
    assert search.rounds_asked[0] == ["full torch-fp32"], "the reference alone first"
    bottom = [label for round_ in search.rounds_asked for label in round_ if label.startswith("bottom")]
    assert bottom == ["bottom k=4 finetune torch-fp32"], "bottom must beat k=3 first, fails there, and is stopped"


def test_a_reference_that_fails_ends_the_search_before_any_student_trains():
    search = Answered({**falling(90.0, 0.3)}, strategies=["top"], training=["finetune"])
    with pytest.raises(CompressError, match="no full model to compare with: it could not be fine-tuned"):
        search.run()
    assert search.rounds_asked == [["full torch-fp32"]]


def test_a_training_budget_spent_mid_round_keeps_what_was_trained_and_says_so():
    points = {("full", 0, "finetune"): 90.0, **falling(90.0, 0.1), **falling(90.0, 0.1, "bottom"), **falling(90.0, 0.1, "symmetric")}
    search = Answered(points, budget=1.0, trainings=4, strategies=["top", "bottom", "symmetric"], training=["finetune"])
    chosen = search.run()
    assert search.stopped == "4 trainings" and search.trainings == 4
    assert chosen.combination.k > 0 and search.within_budget(chosen)


def test_each_strategy_is_asked_only_the_ks_it_can_drop(tmp_path):
    """The default Ks are 1 to L-1, and alternate-odd reaches only every other layer: 3 of MiniLM's 6."""
    goal = Goal.model_validate({**GOAL, "search": {**GOAL["search"], "strategies": ["top", "alternate-odd"], "k": None}})
    search = Search(goal, tmp_path, Console(quiet=True))
    assert search.arm_ks("top", "finetune") == [1, 2, 3, 4, 5]
    assert search.arm_ks("alternate-odd", "finetune") == [1, 2, 3]


def test_bisection_asks_nothing_at_or_below_a_k_found_elsewhere():
    bisection = Bisection(list(range(1, 12)), smallest_first=True)
    bisection.only_above(5)
    assert bisection.question() == 6 and bisection.found() is None  # found: only what its own answers say
    bisection.answer(6, False)
    assert bisection.question() is None and bisection.found() is None


@pytest.fixture(scope="module")
def searched(module_folder):
    folder = module_folder("optimize")
    result = invoke("optimize", write_goal(folder), "--out", folder / "run")
    assert result.exit_code == 0, result.output
    return folder / "run", result


def test_a_goal_that_is_met_gives_a_model_a_recipe_and_a_report(searched):
    run, result = searched
    summary = json.loads((run / "summary.json").read_text())
    records = [r for r in read_records(run) if r.status == "ok"]
    students = {(r.strategy, r.k) for r in records if r.k}
    # top first: k=2, then k=4 (the largest); bottom is asked only whether it beats k=4, which it cannot
    assert students == {("top", 2), ("top", 4)}
    assert summary["trainings"] == 3  # the full model and two students
    def task_p50(record):
        return next(t.p50_ms for t in record.latency if t.sequence_length == "task" and t.batch_size == 1)

    # everything is within a 100-point budget: the chosen one is the fastest trial
    assert summary["cost"] == min(map(task_p50, records)) == task_p50(next(r for r in records if r.key == summary["chosen_key"]))
    dev = summary["dev"]
    assert dev["chosen"]["points"] > 0 and dev["within_budget"] and dev["paired"] and dev["drop_stderr_points"] >= 0
    model = compress.load(run / "final")
    assert model.kind in ("torch", "onnx") and len(model(["a fine film"])) == 1
    check = invoke("check", run / "chosen.yaml")
    assert check.exit_code == 0, check.output
    report = (run / "report.md").read_text()
    assert f"Chosen: {summary['chosen']}" in report and "3 trainings" in report
    assert f"a drop of {dev['drop_points']:.2f} ± {dev['drop_stderr_points']:.2f} points (paired" in report
    for name in ("results.md", "pareto.png", "search.png", "trials.db"):
        assert (run / name).is_file()


def test_a_changed_goal_reuses_every_finished_trial(searched, tmp_path):
    run, _ = searched
    before = {p: p.stat().st_mtime_ns for p in (run / "work").rglob("stage.json")}
    goal = write_goal(tmp_path, objective={"threads": 1, "minimize": "size"})
    result = invoke("optimize", goal, "--out", run)
    assert result.exit_code == 0, result.output
    after = {p: p.stat().st_mtime_ns for p in (run / "work").rglob("stage.json")}
    assert {p: after[p] for p in before} == before  # nothing rebuilt
    assert json.loads((run / "summary.json").read_text())["trainings"] == 3


def test_a_target_no_trial_meets_ends_with_the_fastest_and_by_how_much(searched, tmp_path):
    run, _ = searched
    goal = write_goal(tmp_path, objective={"threads": 1, "target": 0.001})
    result = invoke("optimize", goal, "--out", run)  # the report is printed, then one line says what was missed
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1 and "objective.target" in result.stderr and "missed it by" in result.stderr
    assert (run / "final" / "config.json").is_file() and "**No trial met the target" in (run / "report.md").read_text()


def test_a_training_budget_stops_the_search_and_the_trained_models_are_still_converted(searched, tmp_path):
    run, _ = searched  # three models trained there already
    goal = write_goal(tmp_path, budget={"trainings": 2}, search={**GOAL["search"], "k": [2, 3, 4]})  # k=3 would train
    result = invoke("optimize", goal, "--out", run)
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "2 trainings" and summary["trainings"] == 3
    assert not any(r.k == 3 for r in read_records(run))
    assert "budget of 2 trainings was spent" in (run / "report.md").read_text()


def test_a_search_killed_mid_way_resumes_without_training_twice(tmp_path):
    goal = write_goal(tmp_path, search={**GOAL["search"], "strategies": ["top"], "precisions": ["torch-fp32"]})
    run = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "compress"), "optimize", str(goal), "--out", str(run)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while len(read_records(run)) < 2 and time.monotonic() < deadline:  # the full model and the first student
        time.sleep(1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = {r.key for r in read_records(run)}
    assert len(first) >= 2
    result = invoke("optimize", goal, "--out", run)
    assert result.exit_code == 0, result.output
    keys = [r.key for r in read_records(run)]
    assert len(keys) == len(set(keys)), "a trial was measured twice"
    trained = [p for p in (run / "work").rglob("stage.json") if json.loads(p.read_text())["stage"] == "finetune"]
    assert len(trained) == json.loads((run / "summary.json").read_text())["trainings"] == 3


def test_the_held_out_split_is_carved_from_train_and_disjoint_from_dev():
    settings = DataSettings(source="embedded", max_train_examples=400)
    plain = load_task_data("rotten-tomatoes", settings)
    carved = load_task_data("rotten-tomatoes", settings.model_copy(update={"holdout": 0.25}))
    held, train = list(carved.dev[HOLDOUT]["text_a"]), list(carved.train["text_a"])
    assert list(carved.dev) == [HOLDOUT] and len(held) == 100 and len(train) == 300
    assert sorted(held + train) == sorted(plain.train["text_a"])
    assert not set(held) & set(next(iter(plain.dev.values()))["text_a"])


@pytest.mark.parametrize(("change", "expected"), [
    ({"max_score_drop": -1}, "max_score_drop"),
    ({"max_score_drop": None}, "max_score_drop"),
    ({"objective": {"minimize": "speed"}}, "objective.minimize"),
    ({"search": {"precisions": ["fp8"]}}, "search.precisions"),
    ({"data": {"source": "embedded", "holdout": 0.2}}, "data.holdout"),
    ({"budget": {"trainings": 0}}, "budget.trainings"),
    ({"surprise": 1}, "surprise"),
])
def test_a_bad_goal_file_is_one_line(tmp_path, change, expected):
    goal = write_goal(tmp_path, **change)
    for command in (("check", goal), ("optimize", goal, "--out", tmp_path / "run")):
        assert_one_line_error(invoke(*command), "goal.yaml", expected)
    assert not (tmp_path / "run").exists()
