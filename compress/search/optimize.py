"""`compress optimize`: the fastest (or smallest) model within a score budget, found by a search that uses
the problem's structure instead of training every combination.

- The reference is the full model fine-tuned the same way; the budget is `max_score_drop` points below it.
- For one strategy and training, the score falls as more layers are dropped, so the largest K within budget
  is found by bisection (about log2(L) trainings).
- The strategy the paper ranks first (top, distilled before fine-tuned where both are searched) is bisected
  first; every other one only matters if it can drop more layers than that, so its first training is at
  that K + 1 and one that fails there is stopped after that one training.
- The full model and the students near the budget are tried in every precision and engine of the search
  space (nothing trains).

The search runs in rounds: a round asks every question that does not wait on another's answer (the next
K of each strategy still open, the conversions of students measured already), and the next round is
decided by the answers alone. So `--executor ray` runs a round's trials in parallel and asks exactly
the trials the local executor asks one after another.

Every trial is a row of the goal's sweep (compress/search/goal.py), built by the one executor into the run
folder's cache (work/) and measured as a benchmark row (results.jsonl), so a killed search resumes without
training anything twice and a changed budget reuses every finished trial. Trials are scored on examples
held out of the training data; the chosen model's dev score (never seen by the search) is reported beside,
with its drop from the full model's and that drop's standard error, paired over the same dev examples. Optuna's SQLite storage (`trials.db`) keeps the trials for its tools.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml
from rich.console import Console

from compress.benchmarking.bench import guard_settings
from compress.benchmarking.executors import EXECUTORS
from compress.benchmarking.predictions import keep_record
from compress.benchmarking.records import RESULTS_FILE, BenchRecord, drop_cut_record, merge_records, read_records
from compress.benchmarking.report import pareto_front, write_report
from compress.benchmarking.rows import FULL, BenchRow, Combination, trained_node
from compress.benchmarking.precisions import TRAINED
from compress.benchmarking.sweep import combination_recipe, full_training, training_label
from compress.errors import CompressError
from compress.evaluation.evaluate import compare
from compress.folders import FINAL, claimed, copy_folder, replace_file, write_text, writing
from compress.models.loading import load_config
from compress.pipeline.recipe import recipe_yaml
from compress.search.goal import Goal, goal_sweep
from compress.surgery.architectures import num_layers
from compress.surgery.strategies import can_drop
from compress.timing.latency import describe_environment

CHOSEN_RECIPE = "chosen.yaml"
REPORT = "report.md"
PLOT = "search.png"
TRIALS_DB = "trials.db"
REFERENCE_PRECISION = TRAINED
"""Students are compared in the precision they are trained in; other precisions are tried once a student is chosen."""


class BudgetSpent(Exception):
    """The goal's training or time budget allows no further training."""


@dataclass
class Trial:
    combination: Combination
    record: BenchRecord
    metric: str
    """The metric the goal's budget counts points of."""

    @property
    def points(self) -> float:
        return 100 * self.record.metrics[self.metric]

    @property
    def stderr_points(self) -> float:
        return 100 * self.record.metrics.get(f"{self.metric}_stderr", 0.0)


class Bisection:
    """The largest of the ascending `candidates` for which a question holds, asked as a bisection, given that it
    holds for every candidate below one it holds for (fewer layers dropped lose less): one question at a time
    (`question`, `answer`), so that the questions of several run together. With `smallest_first` the smallest
    is asked first: where it fails, nothing larger can hold, and one question settles it (the way to rule out
    a strategy that must beat a K found already). Without, the bisection starts in the middle, which a small
    student that failed to learn at all (it happens, at small budgets) cannot mislead as easily."""

    def __init__(self, candidates: list[int], smallest_first: bool = False):
        self.candidates = candidates
        # the question holds for candidates[low] (-1: none known to); candidates[high:] fail or are past the end
        self.low, self.high = -1, len(candidates)
        self.floor = -1
        """Candidates up to this index are not asked: a K found elsewhere makes them moot (`only_above`)."""
        self.smallest_first = smallest_first

    def question(self) -> int | None:
        """The next candidate to ask about; None once settled."""
        low = max(self.low, self.floor)
        if self.high - low <= 1:
            return None
        return self.candidates[low + 1 if self.smallest_first else (low + self.high) // 2]

    def answer(self, k: int, holds: bool) -> None:
        index = self.candidates.index(k)
        if holds:
            self.low = max(self.low, index)
        else:
            self.high = min(self.high, index)
        self.smallest_first = False

    def only_above(self, k: int) -> None:
        """Only candidates above `k` matter now (a K found elsewhere): those at or below it are not asked."""
        self.floor = max(self.floor, sum(c <= k for c in self.candidates) - 1)

    def found(self) -> int | None:
        """The largest candidate this bisection's own answers hold for (None: none asked held)."""
        return self.candidates[self.low] if self.low >= 0 else None


@dataclass
class Arm:
    """One strategy and training of the search space, and its bisection over K."""

    strategy: str
    training: str
    bisection: Bisection


class Search:
    def __init__(self, goal: Goal, out: Path, console: Console, executor: str = "local", address: str | None = None):
        self.goal, self.out, self.console = goal, out, console
        self.sweep = goal_sweep(goal)
        where = {"address": address} if address else {}
        self.benchmark = EXECUTORS[executor](out, self.sweep.latency, console, self.sweep, peak_memory=False, **where)
        self.trials: dict[str, Trial] = {}
        self.failed: set[str] = set()
        """Keys of the combinations that failed in this run (not asked again)."""
        self.trainings = 0
        """Models this search has trained, in this and earlier runs (the records' distinct trained folders)."""
        self.training: set[str] = set()
        """Identities of the trained models this run has asked for (each counted once)."""
        self.started = time.monotonic()
        self.spent_before = 0.0

    # --- trials -------------------------------------------------------------------------------------

    def _row(self, c: Combination) -> BenchRow:
        recipe = combination_recipe(self.sweep, c)
        text = yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False)
        return BenchRow(c, recipe, text, f"goal {self.sweep.name}", recipe.stages[-1].name)

    def combination(self, strategy: str, k: int, training: str, precision: str = REFERENCE_PRECISION) -> Combination:
        full = full_training(self.goal.embedding is not None)
        return Combination(self.goal.model, self.goal.task, FULL if k == 0 else strategy, k, full if k == 0 else training, precision)

    def trial(self, strategy: str, k: int, training: str, precision: str = REFERENCE_PRECISION) -> Trial | None:
        """The measured trial of one combination: asked in a round before (None: it failed, or was never asked)."""
        return self.trials.get(self.combination(strategy, k, training, precision).key)

    def ask(self, combinations: list[Combination]) -> None:
        """Measure, as one round, every combination not measured yet (in parallel, on Ray); each that succeeds
        becomes a trial. Trainings past the training budget are not started: those before them still run,
        then BudgetSpent is raised."""
        rows, spent = [], None
        for c in dict.fromkeys(c for c in combinations if c.key not in self.trials and c.key not in self.failed):
            row = self._row(c)
            trained = trained_node(row.node)
            if trained is not None and self.benchmark.executor.cache.find(trained) is None and trained.identity not in self.training:
                try:
                    self._check_budget()
                except BudgetSpent as error:
                    spent = error
                    continue
                self.training.add(trained.identity)
                self.trainings += 1
            rows.append(row)
        if rows:
            self.console.print("[bold]trials[/] " + "; ".join(row.combination.label for row in rows))
        for record in self.benchmark.records(rows, lambda text: None):
            if record is None:
                continue
            keep_record(self.out, record)
            c = next(row.combination for row in rows if row.combination.key == record.key)
            if record.status != "ok":
                self.console.print(f"[yellow]trial failed[/] {c.label}: {record.error}")
                self.failed.add(c.key)
                continue
            self.trials[c.key] = Trial(c, record, self.goal.metric or record.primary_metric)
            self._keep_in_optuna(self.trials[c.key])
        if spent is not None:
            raise spent

    def _keep_in_optuna(self, trial: Trial) -> None:
        """The trial in Optuna's storage (trials.db), for optuna-dashboard and Optuna's analyses."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=f"sqlite:///{self.out / TRIALS_DB}", study_name=self.sweep.name, load_if_exists=True)
        c = trial.combination
        params = {"strategy": c.strategy, "k": c.k, "training": c.training, "precision": c.precision}
        search = self.goal.search
        # One value space per parameter for the whole study, as Optuna requires: the goal's search space.
        distributions = {
            "strategy": optuna.distributions.CategoricalDistribution(sorted({FULL, *search.strategies})),
            "k": optuna.distributions.IntDistribution(0, self.layers),
            "training": optuna.distributions.CategoricalDistribution(sorted({full_training(self.goal.embedding is not None), *self.goal.trainings})),
            "precision": optuna.distributions.CategoricalDistribution(sorted({REFERENCE_PRECISION, *search.precisions})),
        }
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions, value=self.cost(trial),
            user_attrs={"key": c.key, "score": trial.points / 100, "measured_in": trial.record.measured_in}))

    def _check_budget(self) -> None:
        budget = self.goal.budget
        if budget.trainings is not None and self.trainings >= budget.trainings:
            raise BudgetSpent(f"{budget.trainings} trainings")
        if budget.hours is not None and self.spent_before + time.monotonic() - self.started >= 3600 * budget.hours:
            raise BudgetSpent(f"{budget.hours:g} hours")

    def resume(self) -> None:
        """Trials recorded by earlier runs of this folder count as done, and their trainings and time as spent."""
        records = read_records(self.out)
        for record in merge_records(records):
            if record.status == "ok":
                c = Combination(record.model, record.task, record.strategy, record.k, record.training, record.precision)
                self.trials[c.key] = Trial(c, record, self.goal.metric or record.primary_metric)
        self.trainings = len({r.trained_in for r in records if r.trained_in})
        self.spent_before = sum(r.seconds_total or 0.0 for r in records)

    # --- what the goal asks -------------------------------------------------------------------------

    def cost(self, trial: Trial) -> float:
        """What the goal minimises, for one trial: latency in ms at the goal's timing, or size on disk in MB."""
        objective = self.goal.objective
        if objective.minimize == "size":
            return trial.record.size_mb
        length = str(objective.sequence_length)
        for timing in trial.record.latency or []:
            if timing.batch_size == objective.batch_size and timing.sequence_length == length:
                return timing.p50_ms
        raise CompressError(f"{self.out / RESULTS_FILE}: {trial.combination.label} has no timing at batch {objective.batch_size}, "
                            f"length {length}")

    def within_budget(self, trial: Trial | None) -> bool:
        reference = self.reference
        return trial is not None and reference is not None and trial.points >= reference.points - self.goal.max_score_drop

    # --- the search ---------------------------------------------------------------------------------

    @cached_property
    def layers(self) -> int:
        return num_layers(load_config(self.goal.model))

    def arm_ks(self, strategy: str, training: str) -> list[int]:
        """The Ks one strategy and training may try, ascending: those it can drop (alternate-odd at most half)."""
        return sorted(k for k in (self.goal.search.k or range(1, self.layers)) if can_drop(strategy, self.layers, k))

    def run(self) -> Trial:
        """Search, and return the chosen trial (`stopped`: why the search ended early, if it did)."""
        self.stopped = None
        arms = [Arm(strategy, training, Bisection(self.arm_ks(strategy, training)))
                for training in self.goal.trainings for strategy in self.goal.search.strategies]
        try:
            # The reference alone first: the first arm's student may be distilled from it, and must not train it again if it failed.
            self.ask([self.combination(FULL, 0, "")])
            self._check_reference()
            first, later = arms[:1], arms[1:]
            self.rounds(first)
            best = self.best(first)
            for arm in later:
                arm.bisection = Bisection([k for k in arm.bisection.candidates if best is None or k > best.combination.k], smallest_first=True)
            self.rounds(later)
        except BudgetSpent as spent:
            self.stopped = str(spent)
            self.console.print(f"[yellow]budget spent[/]: {spent}; the models trained so far are still tried in every precision")
        self.ask(self.conversions())  # converting trains nothing: the training budget does not stop it
        self._check_reference()
        return self.choose()

    def _check_reference(self) -> None:
        if self.reference is None:
            why = (f"the budget of {self.stopped} was spent before it was fine-tuned" if self.stopped
                   else "it could not be fine-tuned (see results.jsonl)")
            raise CompressError(f"{self.goal.model}: no full model to compare with: {why}")

    @property
    def reference(self) -> Trial | None:
        return self.trial(FULL, 0, "")

    def rounds(self, arms: list[Arm]) -> None:
        """Bisect `arms` together, a round at a time: each round asks each open arm's next K and converts the
        students the last round found near the budget; an arm that can no longer beat the best K found is closed.
        The budget of hours is checked before each round: the trainings of a round start together."""
        while True:
            questions = [(arm, k) for arm in arms if (k := arm.bisection.question()) is not None]
            asked = [self.combination(arm.strategy, k, arm.training) for arm, k in questions] + self.conversions()
            if not asked:
                return
            self.ask(asked)
            for arm, k in questions:
                arm.bisection.answer(k, self.within_budget(self.trial(arm.strategy, k, arm.training)))
            if (best := self.best(arms)) is not None:
                for arm in arms:
                    arm.bisection.only_above(best.combination.k)
            if not questions:
                return

    def best(self, arms: list[Arm]) -> Trial | None:
        """The student of `arms` within budget that drops the most layers (the first arm's, on a tie)."""
        found = [self.trial(arm.strategy, k, arm.training) for arm in arms for k in arm.bisection.candidates]
        within = [t for t in found if self.within_budget(t)]
        return max(within, key=lambda t: t.combination.k, default=None)

    def conversions(self) -> list[Combination]:
        """Every precision of the models worth converting that is not measured yet."""
        return [self.combination(t.combination.strategy, t.combination.k, t.combination.training, precision)
                for t in self.worth_converting() for precision in self.goal.search.precisions
                if self.trial(t.combination.strategy, t.combination.k, t.combination.training, precision) is None]

    def worth_converting(self) -> list[Trial]:
        """The trained models to try in every precision (which trains nothing): the full model and every student
        whose score is within the budget or short of it by less than twice its standard error, as a quantized
        model's score can differ from its own by that much either way; those that drop most layers first."""
        reference = self.reference
        if reference is None:
            return []

        def near(t: Trial) -> bool:
            return t.points + 2 * t.stderr_points >= reference.points - self.goal.max_score_drop

        trained = [t for t in self.trials.values() if t.combination.precision == REFERENCE_PRECISION and near(t)]
        return sorted(trained, key=lambda t: (-t.combination.k, -t.points))

    def meets_target(self, trial: Trial) -> bool:
        return self.goal.objective.target is None or self.cost(trial) <= self.goal.objective.target

    def choose(self) -> Trial:
        """The trial the goal asks for: within the score budget, the smallest cost; with a target, the best score
        that meets it (the smallest cost where none does)."""
        within = [t for t in self.trials.values() if self.within_budget(t)]
        meeting = [t for t in within if self.goal.objective.target is not None and self.meets_target(t)]
        if meeting:
            return max(meeting, key=lambda t: (t.points, -self.cost(t)))
        return min(within, key=lambda t: (self.cost(t), -t.points))

    def write(self, chosen: Trial, command: str | None = None) -> dict:
        """final/, chosen.yaml, report.md and summary.json for the chosen trial (`command`: the one named in the
        report); returns the summary."""
        target = self.goal.objective.target
        faster = sorted((t for t in self.trials.values() if self.cost(t) < self.cost(chosen)), key=self.cost, reverse=True)
        folder = self.out / "work" / chosen.record.measured_in
        with writing(self.out / FINAL) as partial:
            copy_folder(folder, partial)
        recipe = combination_recipe(self.sweep, chosen.combination)
        write_text(self.out / CHOSEN_RECIPE, f"# What compress optimize chose; `compress run {CHOSEN_RECIPE}` builds it again.\n"
                   + recipe_yaml(recipe))
        dev = self._dev_scores(chosen)
        summary = {
            "goal": self.goal.model_dump(mode="json", exclude_none=True),
            "chosen": chosen.combination.label,
            "chosen_key": chosen.combination.key,
            "metric": chosen.metric,
            "reference_points": round(self.reference.points, 2),
            "chosen_points": round(chosen.points, 2),
            "cost": self.cost(chosen),
            "reference_cost": self.cost(self.reference),
            "next_faster": None if not faster else {"label": faster[0].combination.label, "points": round(faster[0].points, 2),
                                                    "cost": self.cost(faster[0])},
            "dev": dev,
            "trials": len(self.trials),
            "trainings": self.trainings,
            "compute_seconds": round(sum(t.record.seconds_total or 0.0 for t in self.trials.values()), 1),
            "stopped": self.stopped,
            "target_missed_by": None if self.meets_target(chosen) else round(self.cost(chosen) - target, 3),
            "command": command,
            "timed_with": describe_environment(chosen.record.environment) if chosen.record.environment else None,
        }
        write_text(self.out / REPORT, render_report(summary, self.goal))
        self.plot(chosen)
        write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    def plot(self, chosen: Trial) -> None:
        """search.png: every trial's score against what the goal minimises, the budget's line and the chosen one marked."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter

        figure = Figure(figsize=(7.5, 4.8), layout="constrained")
        FigureCanvasAgg(figure)
        axis = figure.subplots()
        trials = list(self.trials.values())
        within = [self.within_budget(t) for t in trials]
        axis.scatter([self.cost(t) for t in trials], [t.points for t in trials], c=["tab:blue" if w else "tab:gray" for w in within], s=24)
        # Only the trials no other beats on both axes, and the reference, are named: 60 labels would hide each other.
        front = set(pareto_front([(self.cost(t), t.points) for t in trials]))
        for index, t in enumerate(trials):
            c = t.combination
            if index in front or t is self.reference:
                label = "full" if not c.k else f"{c.strategy}{c.k}{training_label(c.training, short=True)}"
                axis.annotate(f"{label} {c.precision}", (self.cost(t), t.points), fontsize=6, xytext=(3, 2), textcoords="offset points")
        axis.axhline(self.reference.points - self.goal.max_score_drop, color="tab:red", linestyle="--", linewidth=1,
                     label=f"budget: {self.goal.max_score_drop:g} points below the full model")
        axis.scatter([self.cost(chosen)], [chosen.points], marker="*", s=220, color="tab:red", zorder=3, label=f"chosen: {chosen.combination.label}")
        unit = "median latency (ms)" if self.goal.objective.minimize == "latency" else "size on disk (MB)"
        axis.set(xscale="log", xlabel=unit, ylabel="score on the held-out split (points)",
                 title=f"{self.goal.model} on {self.goal.task}: {len(trials)} trials (named: those no other beats on both axes)")
        plain = FuncFormatter(lambda value, _: f"{value:g}")  # 2, 5, 10 rather than 2 x 10^0
        axis.xaxis.set_major_formatter(plain)
        axis.xaxis.set_minor_formatter(plain)
        axis.tick_params(axis="x", which="minor", labelsize=7)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
        replace_file(self.out / PLOT, lambda temporary: figure.savefig(temporary, format="png", dpi=120))

    def _dev_scores(self, chosen: Trial) -> dict:
        """The chosen model's and the reference's scores on the task's dev split, which no trial was scored on, and the
        drop with its standard error, paired over the same dev examples where the metric is scored per example."""
        from compress.models.artifacts import load_artifact, predictor_for

        predictors = [predictor_for(load_artifact(self.out / "work" / t.record.measured_in), self.goal.objective.threads)
                      for t in (self.reference, chosen)]
        found = compare(*predictors, self.goal.load_data(holdout=False), self.benchmark.executor.tokenizer(self.goal.model),
                        self.goal.max_length, 64, self.goal.metric)
        drop, error = 100 * found.difference, 100 * found.difference_stderr
        return {"reference": {"points": round(100 * found.first, 2), "stderr_points": round(100 * found.first_stderr, 2)},
                "chosen": {"points": round(100 * found.second, 2), "stderr_points": round(100 * found.second_stderr, 2)},
                "drop_points": round(drop, 2), "drop_stderr_points": round(error, 2), "paired": found.paired,
                "within_budget": drop <= self.goal.max_score_drop,
                # the dev set cannot tell the drop from the budget: within 2 SE of it either way
                "told_from_budget": abs(drop - self.goal.max_score_drop) > 2 * error}


def largest_within(candidates: list[int], within: Callable[[int], bool], smallest_first: bool = False) -> int | None:
    """The largest of the ascending `candidates` for which `within` holds, asking one question at a time (Bisection)."""
    bisection = Bisection(candidates, smallest_first)
    while (k := bisection.question()) is not None:
        bisection.answer(k, within(k))
    return bisection.found()


def render_report(summary: dict, goal: Goal) -> str:
    unit = "ms" if goal.objective.minimize == "latency" else "MB"
    dev = summary["dev"]
    lines = [
        f"# {goal.name}: {goal.model} on {goal.task}, at most {goal.max_score_drop:g} points of {summary.get('metric', 'its score')} below the full model",
        "",
        *([f"Made by `{summary['command']}`.", ""] if summary.get("command") else []),
        *([f"Timed with {summary['timed_with']}.", ""] if summary.get("timed_with") else []),
        f"**Chosen: {summary['chosen']}** — {summary['cost']:.2f} {unit} against the full model's {summary['reference_cost']:.2f} {unit} "
        f"({summary['reference_cost'] / summary['cost']:.2f}x), {summary['chosen_points']:.2f} points on the held-out split against "
        f"{summary['reference_points']:.2f}.",
        "",
        f"On the dev split, which the search never scored on: {dev['chosen']['points']:.2f} ± {dev['chosen']['stderr_points']:.2f} "
        f"against {dev['reference']['points']:.2f} ± {dev['reference']['stderr_points']:.2f}: a drop of {dev['drop_points']:.2f} "
        f"± {dev['drop_stderr_points']:.2f} points ({'paired: both models on the same dev examples' if dev['paired'] else 'the two errors combined'}), "
        + ("within the budget" if dev["within_budget"] else f"**more than the budget of {goal.max_score_drop:g}** (the held-out split flattered it)")
        + ("." if dev["told_from_budget"] else "; the dev set cannot tell it from the budget (within 2 SE)."),
        "",
    ]
    if summary["next_faster"]:
        nxt = summary["next_faster"]
        lines.append(f"The next faster trial, {nxt['label']} ({nxt['cost']:.2f} {unit}), scored {nxt['points']:.2f} points: "
                     f"{summary['reference_points'] - nxt['points']:.2f} below the full model, over the budget.")
    else:
        lines.append("No trial was faster.")
    lines += ["", f"Search cost: {summary['trials']} trials, {summary['trainings']} trainings, "
              f"{summary['compute_seconds'] / 60:.1f} minutes of compute."]
    if summary["stopped"]:
        lines.append(f"The search stopped early: its budget of {summary['stopped']} was spent.")
    if summary["target_missed_by"] is not None:
        lines.append(f"**No trial met the target of {goal.objective.target:g} {unit}**: the fastest within the score budget "
                     f"missed it by {summary['target_missed_by']:g} {unit}.")
    return "\n".join(lines) + "\n"


def optimize(goal: Goal, out: Path, console: Console, command: str | None = None, executor: str = "local",
             address: str | None = None) -> dict:
    """Search for the goal's model in `out` (resuming what an earlier run of it left), its trials run by `executor`
    ('local', or 'ray': on the cluster at `address`, else a local Ray instance); returns the summary."""
    search = Search(goal, out, console, executor, address)
    # Ray's processes start before the folder is held: they keep the machine's own temporary folder.
    with search.benchmark.session(), claimed(out, "optimize run"):
        if drop_cut_record(out / RESULTS_FILE):
            console.print(f"[yellow]note[/]: {out / RESULTS_FILE} ended in a record cut short; that trial runs again")
        guard_settings(goal_sweep(goal), out, retime=True)
        search.resume()
        summary = search.write(search.run(), command)
        write_report(read_records(out), out, command)
    return summary


