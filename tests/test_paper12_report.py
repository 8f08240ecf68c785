"""bench/paper12_report.py reads the paper12 sweeps into verdicts and the open question's answer (issue #38): its
rules, on records written as the sweeps write them."""

import json
import sys

import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef

from compress.benchmarking.predictions import PairedErrors, add_predictions
from compress.benchmarking.records import DevPredictions
from tests.helpers import bench_record, load_bench_script

report = load_bench_script("paper12_report")

AMD = {"model": "AMD EPYC", "family": "25", "model_number": "17"}
INTEL = {"model": "Intel(R) Xeon(R) Processor", "family": "6", "model_number": "167"}


def row(strategy: str, k: int, score: float, training: str = "finetune", precision: str = "torch-fp32", se: float = 0.02,
        cpu: dict = AMD, train_seconds: float | None = None, metric: str = "matthews_correlation", kept: list[int] | None = None,
        task: str = "cola"):
    return bench_record(key=f"mpnet-12|{task}|{strategy}|k{k}|{training}|{precision}", task=task, strategy=strategy, k=k,
                        training=training, precision=precision, score=score, score_stderr=se, primary_metric=metric,
                        measured_in=f"mpnet-12/{task}/{strategy}-{k}-{training}-{precision}", environment={"cpu": cpu},
                        train_seconds=train_seconds, kept_layers=kept)


def write(folder, records) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(r.line() for r in records))


def test_a_bound_on_a_loss_holds_only_two_errors_within_it_and_fails_only_two_errors_beyond_it():
    # changes as every table writes them: negative, a loss
    assert report.bound_verdict(0.1, 1.0, 2.0).startswith("holds (a change of +0.1 ± 1.0 points: a loss within 2 even 2 SE below")
    assert report.bound_verdict(-0.1, 1.0, 2.0).startswith("cannot be told apart (a change of -0.1 ± 1.0 points: the estimate within 2")
    assert report.bound_verdict(-3.9, 1.0, 2.0).startswith("cannot be told apart (a change of -3.9 ± 1.0 points: the estimate a loss beyond 2")
    assert report.bound_verdict(-4.1, 1.0, 2.0).startswith("does not hold")


def test_a_bound_claim_over_seeds_is_their_mean_with_the_dev_error_and_the_seed_spread_over_their_number():
    by_seed = [[row("full", 0, full, se=0.015), row("top", 4, full - loss)] for full, loss in ((0.60, 0.01), (0.61, 0.03), (0.62, 0.05))]
    found = dict(report.claims(by_seed, by_seed[0][0]))
    # mean change -3.0 points, seeds' sd 2.0; unpaired dev error hypot(1.5, 2.0) = 2.5: error sqrt(2.5^2 + 2^2 / 3) = 2.8
    assert found["top-4 costs at most about 2 points"] == (
        "cannot be told apart (a change of -3.0 ± 2.8 points, mean of 3 seeds, sd 2.0; dev error seed 42's (unpaired): "
        "the estimate a loss beyond 2, but 2 SE reach the other side)")
    by_seed[2] = by_seed[2][:1]  # the third seed's top-4 not finished: seed 42's alone, not a mean of two
    assert dict(report.claims(by_seed, by_seed[0][0]))["top-4 costs at most about 2 points"].endswith(
        "(a change of -1.0 ± 2.5 points, training seed 42 (unpaired), dev error only: training's spread not measured yet: "
        "the estimate within 2, but 2 SE reach the other side)")


def test_the_average_over_tasks_takes_each_task_change_as_its_own_claim_reads_it():
    seeded = [[row("full", 0, full), row("top", 4, full - loss)] for full, loss in ((0.60, 0.01), (0.61, 0.03), (0.62, 0.05))]
    one_seed = [[row("full", 0, 0.70), row("top", 4, 0.66)], [], []]
    lines = report.average_claims({"cola": seeded, "rte": one_seed})
    # unpaired dev errors hypot(2, 2) = 2.83; cola: the mean over its seeds, -3.0 ± sqrt(2.83^2 + 2^2 / 3) = 3.06 (as its own
    # claim); rte: seed 42's, -4.0 ± 2.83; the mean -3.5 ± sqrt(3.06^2 + 2.83^2) / 2 = 2.1
    assert lines[0] == ("- top-4 costs at most about 2 points on average over the tasks: cannot be told apart (a change of -3.5 ± 2.1 "
                        "points, 2 of 4 tasks: the estimate a loss beyond 2, but 2 SE reach the other side)")


def test_the_fastest_within_a_budget_is_read_from_the_timings_in_turns_and_untimed_rows_are_counted():
    full, quick, slow, far = row("full", 0, 0.62), row("top", 4, 0.615, "refinetune", "onnx-int8-dynamic"), row("top", 4, 0.611), row("top", 6, 0.605)
    untimed, retrained = row("top", 4, 0.619, "distill"), row("top", 6, 0.615, "refinetune")
    turns = {"by_folder": {r.measured_in: {"real_p50_ms": ms, "score": r.score} for r, ms in ((full, 40.0), (quick, 5.0), (slow, 30.0), (far, 2.0))}}
    turns["by_folder"][retrained.measured_in] = {"real_p50_ms": 1.0, "score": 0.5}  # timed before it was trained again
    records = [full, quick, slow, far, untimed, retrained]
    assert report.fastest_within(records, full, turns, 1.0) == (quick, [], [untimed, retrained])
    assert report.fastest_within(records, full, turns, 2.0) == (far, [], [untimed, retrained])
    twin = row("top", 6, 0.601, "distill")  # far's shape, timed a hair faster: a tie, and far scores higher
    turns["by_folder"][twin.measured_in] = {"real_p50_ms": 1.95, "score": twin.score, "real_speedup": 40.0 / 1.95}
    assert report.fastest_within([*records, twin], full, turns, 2.0) == (far, [twin], [untimed, retrained])
    assert report.tied_phrase([twin], full, turns) == "tied in time with it, p50 within 3%: top-6 distill, torch-fp32 at -1.9, 1.9 ms, 20.5x"
    turns["by_folder"][twin.measured_in]["real_p50_ms"] = 1.9  # beyond the tie: the faster is named, whatever its score
    assert report.fastest_within([*records, twin], full, turns, 2.0) == (twin, [], [untimed, retrained])
    # top-4 distill keeps more layers than top-6 but the re-trained top-6 does not: the untimed might be faster
    assert report.untimed_note([untimed, retrained], far) == "2 within it not timed"
    assert report.untimed_note([untimed], far) == "1 within it not timed, each with more layers in the same or wider precision"
    assert report.untimed_note([untimed], quick) == "1 within it not timed", "as many layers as the int8 pick"
    assert report.untimed_note([row("top", 2, 0.62, precision="onnx-int8-dynamic")], far) == "1 within it not timed", "int8 against fp32"
    # how to time them is said only where one of them might be faster than the pick
    assert report.untimed_text([untimed], far, "cola") == "; 1 within it not timed, each with more layers in the same or wider precision"
    assert report.untimed_text([untimed, retrained], far, "cola").endswith("`bench/paper12_in_turns.py cola` again once they are here)")
    assert report.untimed_text([], far, "cola") == ""


def test_rows_with_their_dev_predictions_are_told_apart_by_a_paired_difference(tmp_path, monkeypatch):
    # 1,000 examples; top-4 differs from the full model on 30 of them: 4 MCC points, within twice either score's own
    # error (2 points each), well beyond twice the paired difference's
    labels = np.array([0, 1] * 500)
    full_predicted = labels.copy()
    full_predicted[:100] = 1 - full_predicted[:100]
    top_predicted = full_predicted.copy()
    top_predicted[100:125] = 1 - labels[100:125]
    top_predicted[:5] = labels[:5]
    full, top = (row(strategy, k, matthews_corrcoef(labels, predicted)) for strategy, k, predicted in
                 (("full", 0, full_predicted), ("top", 4, top_predicted)))
    monkeypatch.setattr(report, "PAIRED", PairedErrors([]))
    # unpaired: the two errors (2 points each) in quadrature, 2.8
    assert report.verdict([[full, top]], full, top).startswith("cannot be told apart (+4.0 points, within 2 SE = 5.7, training seed 42 (unpaired), dev error only")
    # a gap and its bar that a tenth would print alike get one more digit
    close_full, close_top = row("full", 0, 0.8700, se=0.0017, metric="pearson"), row("top", 4, 0.8752, se=0.0017, metric="pearson")
    assert report.verdict([[close_full, close_top]], close_top, close_full).startswith(
        "holds (+0.52 points, beyond 2 SE = 0.48, training seed 42 (unpaired), dev error only")
    folder = tmp_path / "paper12_cola"
    folder.mkdir()
    for record, predicted in ((full, full_predicted), (top, top_predicted)):
        record.dev_predictions = DevPredictions(split="validation", labels=labels.tolist(), predicted=predicted.tolist())
        add_predictions(folder, record)
    monkeypatch.setattr(report, "PAIRED", PairedErrors([folder]))
    gap, error, paired = report.difference(full, top)
    assert paired and 0.5 < error < 1.5, error  # sqrt(30) / 1000 in accuracy, half a point; about twice that in MCC
    assert report.verdict([[full, top]], full, top).startswith(f"holds (+4.0 points, beyond 2 SE = {2 * error:.1f}, training seed 42 (paired), dev error only")
    # predictions that do not score what the record says (written by bench/dev_predictions.py for a model scored
    # otherwise when it was built) are not paired
    content = json.loads((folder / "dev_predictions.json").read_text())
    content["rows"][top.measured_in]["rescored"] = top.score + 0.005
    (folder / "dev_predictions.json").write_text(json.dumps(content))
    monkeypatch.setattr(report, "PAIRED", PairedErrors([folder]))
    assert report.difference(full, top)[2] is False


def test_the_report_answers_the_open_question_first_and_names_rows_trained_on_another_host(tmp_path, monkeypatch):
    results, out = tmp_path / "results", tmp_path / "paper12"
    cola = results / "paper12_cola"
    # top-4 trained again here (its own training time); top-4 distilled only scored again (its build's time kept)
    records = [row("full", 0, 0.62), row("full", 0, 0.50, precision="onnx-int8-dynamic"),
               row("top", 4, 0.63, cpu=INTEL, train_seconds=900.0), row("top", 4, 0.61, train_seconds=600.0),
               row("top", 4, 0.616, "distill", train_seconds=1000.0), row("top", 4, 0.61, "distill", train_seconds=1000.0),
               row("top", 4, 0.605, "distill", "onnx-int8-dynamic"), row("bottom", 4, 0.0, se=0.0, cpu=INTEL),
               row("symmetric", 4, 0.58, cpu=INTEL, train_seconds=800.0), row("symmetric", 4, 0.58, train_seconds=500.0),
               row("top", 6, 0.55, train_seconds=700.0), row("top", 6, 0.55, train_seconds=710.0)]  # again on one host: not news
    write(cola, records)
    full, int8 = records[0], records[6]
    (cola / "in_turns.json").write_text(json.dumps({"host": "a host", "fixed_length": 64, "models": [
        {"measured_in": r.measured_in, "score": r.score, "real_p50_ms": ms, "real_speedup": speedup, "fixed_speedup": speedup}
        for r, ms, speedup in ((full, 40.0, 1.0), (int8, 4.0, 10.0))]}))
    monkeypatch.setattr(report, "PAIRED", PairedErrors([]))  # main sets it: undone after the test
    monkeypatch.setattr(sys, "argv", ["paper12_report.py", "--results", str(results), "--out", str(out)])
    report.main()
    page = (out / "README.md").read_text()
    assert page.index("## The open question, answered") < page.index("## Verdicts") < page.index("## CoLA")
    assert ("| CoLA | n/a / +0.0† / n/a | n/a / -0.5† / n/a | -12.0*† | unknown (2 within it not timed) | "
            "top-4 distill, onnx-int8-dynamic: -1.5, 10.0x (2 within it not timed) |") in page
    assert "In short, over the 1 of 4 tasks run" in page
    assert "against fine-tuning it alone: beyond twice its error in 0 of 1 (changes from +0.0 to +0.0 points)" in page
    assert ("The full model in the same int8, no training (the mean over the three training seeds where each has it; \\*: "
            "beyond twice its error): CoLA -12.0*†.") in page
    assert "| SST-2 | not run yet |" in page
    assert "matthews_correlation at least 50; met (62.0)" in page
    assert "top-4 finetune, torch-fp32 63.0 (Intel(R) Xeon(R) Processor, family 6 model 167) then 61.0" in page
    assert "symmetric-4 finetune, torch-fp32 58.0 (Intel(R) Xeon(R) Processor, family 6 model 167) then 58.0" in page, "the same score is news too"
    assert "Trained again here" in page and "top-4 distill, torch-fp32 61.6" not in page.split("Trained again here")[1]
    assert "top-6 finetune, torch-fp32 55.0" not in page.split("Trained again here")[1]
    assert "Scored again as saved (fp32), the same model" in page and "top-4 distill, torch-fp32 61.6 then 61.0" in page
    assert ("on another host than the full model (AMD EPYC, family 25 model 17): on Intel(R) Xeon(R) Processor, family 6 model 167: "
            "bottom-4. Their changes") in page
    assert (out / "strategies_by_task.png").stat().st_size > 0


def test_the_seeds_table_sets_the_spread_over_seeds_beside_the_dev_error_and_each_seeds_change(monkeypatch):
    monkeypatch.setattr(report, "PAIRED", PairedErrors([]))
    by_seed = [[row("full", 0, 0.62), row("top", 4, 0.61)], [row("full", 0, 0.60, se=0.04), row("top", 4, 0.61)],
               [row("full", 0, 0.64)]]
    lines = report.seed_lines("cola", by_seed)
    # full: 62, 60, 64 (sd 2.0), dev SE the mean of 2, 4, 2; top-4 against its own seed's full model: -1.0 and +1.0
    assert "| full | 62.0, 60.0, 64.0 | 62.0 | 2.0 | 2.7 | – | – | – |" in lines
    # unpaired: the two rows' errors in quadrature, hypot(2, 2) and hypot(4, 2)
    assert "| top-4 | 61.0, 61.0, – | 61.0 | 0.0 | 2.0 | -1.0 ± 2.8†, +1.0 ± 4.5†, – | +0.0 | 1.4 |" in lines
    assert "| bottom-4 | not yet | | | | | | |" in lines
    assert report.seed_lines("qnli", by_seed[:1])[1].startswith("One training seed (42): no seed sweep for this task")


def test_a_comparison_every_seed_has_both_rows_of_is_read_over_the_seeds(monkeypatch):
    monkeypatch.setattr(report, "PAIRED", PairedErrors([]))
    by_seed = [[row("full", 0, 0.66, se=0.01), row("top", 2, top, se=0.01), row("alternate-even", 2, other, se=0.01)]
               for top, other in ((0.632, 0.686), (0.66, 0.65), (0.64, 0.66))]
    claim = "top is the best strategy at K=2"
    # seed 42 alone: alternate-even-2 5.4 points above top-2, beyond twice the (unpaired) error of hypot(1, 1) = 1.4
    assert dict(report.claims([by_seed[0], [], []], by_seed[0][0]))[claim].startswith(
        "so far does not hold (-5.4 points, beyond 2 SE = 2.8, training seed 42 (unpaired), dev error only: training's "
        "spread not measured yet)")
    # the three seeds' gaps -5.4, +1.0, -2.0: mean -2.1, sd 3.2; error sqrt(1.4^2 + 3.2^2 / 3) = 2.3
    assert dict(report.claims(by_seed, by_seed[0][0]))[claim].startswith(
        "so far cannot be told apart (-2.1 points, within 2 SE = 4.7, mean of 3 seeds, sd 3.2; dev error seed 42's (unpaired))")
    # the seeds table lists the rows the task's seed sweep runs, these among them
    assert "| alternate-even-2 | 68.6, 65.0, 66.0 | 66.5 | 1.9 | 1.0 | +2.6 ± 1.4†, -1.0 ± 1.4†, +0.0 ± 1.4† | +0.5 | 1.9 |" in report.seed_lines("rte", by_seed)


def test_the_full_model_in_int8_is_read_over_the_seeds_once_every_seed_has_it(monkeypatch):
    monkeypatch.setattr(report, "PAIRED", PairedErrors([]))
    by_seed = [[row("full", 0, full, se=0.005), row("full", 0, full - loss, precision="onnx-int8-dynamic", se=0.005)]
               for full, loss in ((0.62, 0.01), (0.60, 0.02), (0.61, 0.03))]
    full, int8 = by_seed[0]
    # seed 42 alone: -1.0 within 2 x hypot(0.5, 0.5) = 1.4, and no training spread: int8 is made from that very model
    assert report._marked_change(int8, full, [by_seed[0], by_seed[1][:1], []], trained_apart=False) == "-1.0†"
    # the seeds' -1, -2, -3: mean -2.0, sd 1.0; error sqrt(0.71^2 + 1 / 3) = 0.91, and -2.0 is beyond twice it
    assert report._marked_change(int8, full, by_seed, trained_apart=False) == "-2.0*†"


def test_a_single_seed_comparison_adds_the_spread_the_seeded_rows_measured(monkeypatch):
    monkeypatch.setattr(report, "PAIRED", PairedErrors([]))
    by_seed = [[row("full", 0, full, se=0.01), row("top", 4, top, se=0.01)] for full, top in ((0.60, 0.61), (0.61, 0.59), (0.62, 0.60))]
    by_seed[0].append(row("alternate-even", 4, 0.55, se=0.01))
    # top-4's change against its seed's full model: +1, -2, -2, sd sqrt(3) = 1.7 (top-6 and bottom-4 not run: not pooled);
    # alternate-even-4 has seed 42 only: +6.0 ± sqrt(hypot(1, 1)^2 + 3) = 2.2
    assert report.training_noise(by_seed, "cola") == pytest.approx(3 ** 0.5)
    assert dict(report.claims(by_seed, by_seed[0][0]))["top is the best strategy at K=4"].startswith(
        "so far holds (+6.0 points, beyond 2 SE = 4.5, training seed 42 (unpaired) + training's sd 1.7, from the seeded rows)")
    # a seeded drop whose run failed on a seed measures that failure, not training's spread: left out of the pool
    for records, bottom in zip(by_seed, (0.3, 0.0, 0.4)):
        records.append(row("bottom", 4, bottom, se=0.01))
        records[-1].majority_score = 0.0
    assert report.training_noise(by_seed, "cola") == pytest.approx(3 ** 0.5)


def test_a_run_no_better_than_the_majority_class_is_marked_failed_in_both_tables(monkeypatch):
    monkeypatch.setattr(report, "PAIRED", PairedErrors([]))
    failed, majority = row("top", 2, 0.52), 0.527  # RTE's dev majority class: a run at it learned nothing
    failed.majority_score = majority
    full = row("full", 0, 0.63)
    full.majority_score = majority
    assert report._cell(failed, full).startswith("52.0‡ ± 2.0")
    assert report._cell(full, None) == "63.0 ± 2.0"
    lines = report.seed_lines("rte", [[full], [full, failed], []])
    assert any(line.startswith("| top-2 | –, 52.0‡, – |") for line in lines)
    assert f"‡: {report.FAILED_NOTE}" in lines[1]
    # a regression has no majority class: a constant prediction's correlation, 0 (undefined: NaN), is its floor
    for score, failed in ((0.05, False), (-0.1, True), (float("nan"), True)):
        regression = row("top", 2, score, se=float("nan") if score != score else 0.02, metric="pearson", task="stsb")
        assert ("‡" in report._cell(regression, None)) is failed, score
    assert report._cell(regression, None) == "0.0‡ ± 0.0"


def test_a_verdict_resting_on_a_failed_run_names_it_and_gives_the_mean_without_it(monkeypatch):
    monkeypatch.setattr(report, "PAIRED", PairedErrors([]))
    by_seed = []
    for top, other in ((0.632, 0.686), (0.52, 0.69), (0.653, 0.697)):  # seed 43's top-2 at RTE's majority class: failed
        records = [row("full", 0, 0.66), row("top", 2, top), row("alternate-even", 2, other)]
        for record in records:
            record.majority_score = 0.527
        by_seed.append(records)
    claim = "top is the best strategy at K=2"
    found = dict(report.claims(by_seed, by_seed[0][0]))[claim]
    # gaps -5.4, -17.0, -4.4: mean -8.9; without seed 43's, -4.9
    assert found.startswith("so far cannot be told apart (-8.9 points")
    assert "a failed run (‡) among the rows compared: top-2 (seed 43); -4.9 over the seeds without one" in found
    empty = [[], [], []]
    table = report.verdict_table({"sst2": empty, "cola": empty, "stsb": empty, "rte": by_seed})
    assert f"| {claim} | not yet run | not yet run | not yet run | so far cannot be told apart‡ |" in table


def test_a_collapsed_regressor_is_a_failed_run_and_never_the_best_strategy(monkeypatch):
    monkeypatch.setattr(report, "PAIRED", PairedErrors([]))
    records = [row(strategy, 2, score, metric="pearson", task="stsb") for strategy, score in
               (("full", 0.88), ("top", 0.86), ("bottom", float("nan")), ("alternate-even", 0.85))]
    records[0].k = 0
    found = dict(report.claims([records, [], []], records[0]))
    assert "nan" not in " ".join(found.values())
    assert found["top is the best strategy at K=2"].startswith("so far cannot be told apart (+1.0 points")
    assert found["bottom is the worst at K=2"].startswith("so far holds (+85.0 points")
    assert "a failed run (‡) among the rows compared: bottom-2 (seed 42)" in found["bottom is the worst at K=2"]


def test_each_seeds_full_model_is_held_to_the_bar():
    by_seed = [[row("full", 0, score, metric="accuracy")] for score in (0.661, 0.632, 0.661)]
    line = report.bar_line("rte", by_seed)
    assert "the full model of seeds 42, 43, 44: 66.1, 63.2 (**missed**), 66.1; seed 43's changes are read against a weaker" in line
    assert report.bar_line("rte", by_seed[:1]).endswith("accuracy at least 65; met (66.1).")


def test_a_strategy_that_kept_another_strategys_layers_is_named_as_the_same_model(monkeypatch):
    monkeypatch.setattr(report, "PAIRED", PairedErrors([]))
    records = [row("full", 0, 0.62), row("top", 2, 0.55, kept=list(range(10))), row("symmetric", 2, 0.60, kept=[0, 1, 2, 3, 4, 7, 8, 9, 10, 11]),
               row("contribution", 2, 0.60, kept=[0, 1, 2, 3, 4, 7, 8, 9, 10, 11]), row("alternate-odd", 2, 0.58, kept=[0, 2, 3, 4, 5, 6, 7, 8, 10, 11])]
    assert report.twins(records, 2) == {"contribution": "symmetric"}
    assert report.same_layers_lines(records)[1].startswith("At K = 2, contribution kept the layers symmetric keeps: the same model")
    assert "; contribution kept symmetric's layers)" in dict(report.claims([records, [], []], records[0]))["top is the best strategy at K=2"]


def test_a_best_pick_timed_on_a_busy_machine_is_flagged_and_a_quiet_one_is_not(tmp_path):
    def best_file(k: int, load: float | None) -> None:
        candidates = [{"name": name, "mode": mode, "score": 0.6, "p50_ms": {"task": ms}, "speedup_over_export": {"task": 40 / ms}}
                      for name, mode, ms in (("none", "none", 40.0), ("openvino-int8", "openvino-int8", 10.0))]
        notes = {"chosen": "openvino-int8", "choose_by": "task", "candidates": candidates, "timing_other_cpu_load": load}
        (tmp_path / f"best_top{k}.json").write_text(json.dumps({"host": "a host", "notes": notes}))

    best_file(2, 0.9)
    best_file(4, 0.1)
    best_file(6, None)  # chosen before the timing window's load was recorded
    lines = {line[:8]: line for line in report.best_lines(tmp_path) if line.startswith("- top-")}
    assert "timed while other work used 0.90 CPU cores" in lines["- top-2:"]
    assert "timed while" not in lines["- top-4:"] and "timed while" not in lines["- top-6:"]
    assert "4.00x" in lines["- top-4:"]


def test_rows_above_the_full_model_beyond_twice_the_error_are_named_and_rows_within_it_are_not(monkeypatch):
    monkeypatch.setattr(report, "PAIRED", PairedErrors([]))
    full = row("full", 0, 0.873, se=0.006, metric="pearson", task="stsb")
    records = [full, row("top", 4, 0.900, se=0.005, metric="pearson", task="stsb"),
               row("top", 6, 0.880, se=0.006, metric="pearson", task="stsb"),  # +0.7, within 2 SE (1.7)
               row("top", 4, 0.899, "distill", se=0.005, metric="pearson", task="stsb")]
    line = report.above_full_lines([records, [], []], full)[1]
    assert line.startswith("Above the full model by more than twice the error (as the claims read it: the mean over the seeds "
                           "where every seed has the row, else seed 42's with training's spread added): top-4 (+2.7 ± 0.8†), "
                           "top-4 distill (+2.6 ± 0.8†).")
    assert "top-6" not in line
    assert report.above_full_lines([records[:1] + records[2:3], [], []], full) == []
    # top-4's seeds 43 and 44 scored 0.87 and 0.88 against full models of 0.873: the mean change, +1.0 (sd 1.5), is
    # within 2 x sqrt(0.8^2 + 1.5^2 / 3) = 2.4; distill, one seed, now carries that spread: 2 x hypot(0.8, 1.5) = 3.4 > 2.6
    seeded = [records, [row("full", 0, 0.873, se=0.006, metric="pearson", task="stsb"), row("top", 4, 0.870, se=0.005, metric="pearson", task="stsb")],
              [row("full", 0, 0.873, se=0.006, metric="pearson", task="stsb"), row("top", 4, 0.880, se=0.005, metric="pearson", task="stsb")]]
    assert report.above_full_lines(seeded, full) == []
