"""Turning sweep records into what people read: a Markdown table, a CSV, and three plots.

Deltas are computed here, not when a combination runs, because the rows they refer to (the full
fine-tuned model, plain top-K dropping with the same K) may finish later or in another shard.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from adjustText import adjust_text  # noqa: E402
from matplotlib import ticker  # noqa: E402

from compress.benchmarking.precisions import PRECISIONS, TRAINED, Precision  # noqa: E402
from compress.benchmarking.predictions import PREDICTIONS_FILE, PairedErrors  # noqa: E402
from compress.benchmarking.records import BenchRecord, Timing, merge_records  # noqa: E402
from compress.benchmarking.rows import FULL  # noqa: E402
from compress.benchmarking.sweep import TRAININGS, is_plain, training_label  # noqa: E402
from compress.evaluation.metrics import metric_texts  # noqa: E402
from compress.folders import replace_file, write_text  # noqa: E402
from compress.stages.fastest import SCORE_BUDGET_POINTS  # noqa: E402
from compress.surgery.strategies import STRATEGIES  # noqa: E402
from compress.timing.latency import describe_environment, processor_of  # noqa: E402
from compress.timing.load import CONTENDED_LOAD, contended  # noqa: E402

PREFERRED_HEADLINE = (1, "128")
"""Batch size and sequence length of the latency column in tables and the Pareto plot, where the rows were timed so."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportRow:
    """A record with what the report derives from the rows beside it (None: a failed row, or no row to compare with)."""

    record: BenchRecord
    delta_vs_full: float | None = None
    """Score change in points against the full fine-tuned PyTorch fp32 model."""
    delta_vs_top: float | None = None
    """Score change in points against plain top-K dropping with the same K."""
    delta_vs_full_stderr: float | None = None
    """The standard error of `delta_vs_full`, paired over the dev examples (None: either row's predictions are not kept)."""
    delta_vs_top_stderr: float | None = None
    speedup_vs_full: float | None = None


def latency_of(record: BenchRecord, headline: tuple[int, str] | None) -> Timing | None:
    if headline is None:
        return None
    batch_size, length = headline
    return next((t for t in record.latency or [] if t.batch_size == batch_size and t.sequence_length == length), None)


def headline_timing(group: list[BenchRecord]) -> tuple[int, str] | None:
    """The timing that tables and the Pareto plot show for a group of rows: batch 1 at 128 tokens where
    the rows have it, else the one most rows have, the smallest batch at a fixed length first (a sweep may
    time any batch sizes and length); None when no row was timed."""
    counts = Counter((t.batch_size, t.sequence_length) for r in group if r.status == "ok" for t in r.latency or [])
    if not counts:
        return None
    if PREFERRED_HEADLINE in counts:
        return PREFERRED_HEADLINE
    return min(counts, key=lambda pair: (-counts[pair], pair[1] == "task", pair[0]))


def describe_timing(headline: tuple[int, str] | None) -> str:
    if headline is None:
        return "not timed"
    batch_size, length = headline
    return f"batch {batch_size}, " + ("the task's own lengths" if length == "task" else f"sequence {length}")


def strategy_rank(strategy: str) -> tuple[int, str]:
    """Tables list strategies in the paper's order (top first), any other name after them."""
    return (STRATEGIES.names().index(strategy) if strategy in STRATEGIES else len(STRATEGIES), strategy)


def with_deltas(records: list[BenchRecord], paired: PairedErrors | None = None) -> list[ReportRow]:
    """The table's rows, in its order: each finished record with its score change (in points) against the
    full fine-tuned fp32 model and against plain top-K with the same K (with its paired standard error where
    `paired` has both rows' predictions), and its speed-up over the full model."""
    paired = paired or PairedErrors([])

    def error(record: BenchRecord, base: BenchRecord | None) -> float | None:
        found = None if base is None or base is record else paired(record, base)
        return None if found is None else round(100 * found, 2)

    ok = [r for r in records if r.status == "ok"]
    reference = {(r.model, r.task, r.strategy, r.k): r for r in ok if is_plain(r.training) and r.precision == TRAINED}
    headlines = {key: headline_timing(group) for key, group in _grouped(records).items()}
    rows = []
    for r in records:
        if r.status != "ok":
            rows.append(ReportRow(r))
            continue
        full = reference.get((r.model, r.task, FULL, 0))
        top = reference.get((r.model, r.task, "top", r.k))
        headline = latency_of(r, headlines[r.model, r.task])
        base_latency = latency_of(full, headlines[r.model, r.task]) if full else None
        comparable = headline and base_latency and timed_alike(r, headline, full, base_latency)
        rows.append(ReportRow(
            r,
            delta_vs_full=round(100 * (r.score - full.score), 2) if full else None,
            delta_vs_top=round(100 * (r.score - top.score), 2) if top and r.k else None,
            delta_vs_full_stderr=error(r, full),
            delta_vs_top_stderr=error(r, top) if r.k else None,
            speedup_vs_full=round(base_latency.p50_ms / headline.p50_ms, 2) if comparable else None,
        ))
    return sorted(rows, key=lambda row: (row.record.model, row.record.task, row.record.strategy != FULL, strategy_rank(row.record.strategy),
                                         row.record.k, row.record.training, row.record.precision))


def _flat(row: ReportRow) -> dict:
    r = row.record
    flat = {"model": r.model, "task": r.task, "recipe": r.recipe, "strategy": r.strategy, "k": r.k, "training": r.training,
            "precision": r.precision, "status": r.status, "primary_metric": r.primary_metric, "score": r.score, "score_stderr": r.score_stderr,
            "majority_score": r.majority_score, "delta_vs_full": row.delta_vs_full, "delta_vs_top": row.delta_vs_top,
            "speedup_vs_full": row.speedup_vs_full, "layers": r.layers, "parameters": r.parameters, "size_mb": r.size_mb,
            "peak_memory_mb": r.peak_memory_mb, "threads": r.threads, "device": r.device, "train_seconds": r.train_seconds, "error": r.error}
    flat["kept_layers"] = " ".join(map(str, r.kept_layers or []))
    for name in ("delta_vs_full_stderr", "delta_vs_top_stderr"):  # only folders that keep predictions have these
        if getattr(row, name) is not None:
            flat[name] = getattr(row, name)
    for name, value in (r.metrics or {}).items():
        flat[f"metric_{name}"] = value
    for t in r.latency or []:
        prefix = f"b{t.batch_size}_s{t.sequence_length}"
        flat[f"{prefix}_p50_ms"], flat[f"{prefix}_p95_ms"], flat[f"{prefix}_per_s"] = t.p50_ms, t.p95_ms, t.throughput
        flat[f"{prefix}_other_cpu_load"] = t.other_cpu_load  # None in records from before it was measured
        for field in ("matmul_gop", "fraction_of_int8_peak", "fraction_of_fp32_peak"):  # None before the roofline was measured
            flat[f"{prefix}_{field}"] = getattr(t, field)
    return flat


def write_csv(rows: list[ReportRow], path: Path) -> None:
    flats = [_flat(r) for r in rows]
    columns = list(dict.fromkeys(k for f in flats for k in f))
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows(flats)
    write_text(path, table.getvalue())


def _fmt(value, spec: str = "") -> str:
    return "–" if value is None else format(value, spec)


def _row_name(r: BenchRecord) -> str:
    return f"{r.strategy} ({r.recipe})" if r.recipe else r.strategy


def _majority_score(group: list[BenchRecord]) -> float | None:
    """The dev score of always predicting the majority class, if a record of the group knows it
    (records from before it was kept, and regression tasks, do not)."""
    return next((r.majority_score for r in group if r.majority_score is not None), None)


def _majority_note(group: list[BenchRecord]) -> str:
    score = _majority_score(group)
    return "" if score is None else f"; majority class: {score:.4f}"


def _mark_majority(axis, group: list[BenchRecord], plotted: list[float] | None = None) -> None:
    """A line at the majority class's score; where the `plotted` scores all lie further above it than
    their own spread, a note instead: the line would squeeze every point into a thin band."""
    score = _majority_score(group)
    if score is None:
        return
    if plotted and score < 2 * min(plotted) - max(plotted):
        axis.annotate(f"majority class: {score:.4f} (below)", (0, 0), xycoords="axes fraction", xytext=(3, 3),
                      textcoords="offset points", fontsize=6, color="grey")
        return
    axis.axhline(score, color="grey", linestyle=":", linewidth=1)
    axis.annotate("majority class", (0, score), xycoords=("axes fraction", "data"), xytext=(3, 2),
                  textcoords="offset points", fontsize=6, color="grey")


def _full_model(group: list[BenchRecord]) -> BenchRecord | None:
    """The full fine-tuned model in PyTorch fp32: the row every change is measured against."""
    return next((r for r in group if r.strategy == FULL and is_plain(r.training) and r.precision == TRAINED and r.status == "ok"), None)


def _mark_full_model_noise(axis, group: list[BenchRecord]) -> None:
    """A band of one standard error either side of the full model's score: points inside it are not told
    apart from the full model by this dev set (records from before the error was kept have none)."""
    full = _full_model(group)
    error = full and full.score_stderr
    if error:
        axis.axhspan(full.score - error, full.score + error, color="grey", alpha=0.15, linewidth=0)
        axis.annotate("full model ± 1 standard error", (0, full.score - error), xycoords=("axes fraction", "data"),
                      xytext=(3, -2), textcoords="offset points", fontsize=6, color="grey", va="top")


def _change_text(change: float | None, error: float | None, spec: str) -> str:
    """A change in points, with its paired standard error where there is one: `-1.44 ± 1.10`."""
    return _fmt(change, "+" + spec) + ("" if error is None else f" ± {error:{spec}}")


def _score_cell(r: BenchRecord) -> str:
    error = {"score_stderr": r.score_stderr} if r.score_stderr is not None else {}
    return metric_texts({"score": r.score, **error})["score"]


def pipe_table(frame: pd.DataFrame) -> list[str]:
    """A DataFrame of cell texts as the lines of a Markdown (pipe) table."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in frame.itertuples(index=False)]


def _result_cells(row: ReportRow, metric: str, headline: tuple[int, str] | None) -> dict[str, str]:
    """One row of the results table (whose score column is `metric`), as the texts of its cells."""
    r = row.record
    cells = {"strategy": _row_name(r), "K": str(r.k), "training": r.training, "precision": r.precision}
    if r.status != "ok":
        return {**cells, metric: f"failed: {(r.error or '')[:80]}"}
    t = latency_of(r, headline)
    busy = "†" if t and contended(t.other_cpu_load) else ""  # records from before it was measured have none
    busy_training = "‡" if contended(r.train_other_cpu_load) else ""
    return {
        **cells,
        metric: _score_cell(r),
        "Δ vs full": _change_text(row.delta_vs_full, row.delta_vs_full_stderr, ".2f"),
        "Δ vs top-K": _change_text(row.delta_vs_top, row.delta_vs_top_stderr, ".2f"),
        "layers": str(r.layers),
        "params (M)": _fmt(r.parameters and r.parameters / 1e6, ".1f"),
        "size (MB)": f"{r.size_mb:.1f}",
        "p50 ms": f"{_fmt(t and t.p50_ms, '.2f')}{busy}",
        "p95 ms": _fmt(t and t.p95_ms, ".2f"),
        "MatMul GOP": _fmt(t and t.matmul_gop, ".2f"),
        "of peak": peak_text(r, t),
        "speed-up": f"{_fmt(row.speedup_vs_full, '.2f')}x",
        "train s": f"{_fmt(r.train_seconds, '.0f')}{busy_training}",
    }


def markdown_table(rows: list[ReportRow]) -> str:
    lines = []
    for (model, task), group in itertools.groupby(rows, key=lambda row: (row.record.model, row.record.task)):
        group = list(group)
        records = [row.record for row in group]
        sample = next((r for r in records if r.status == "ok"), None)
        metric = sample.primary_metric if sample else "score"
        headline = headline_timing(records)
        columns = ["strategy", "K", "training", "precision", metric, "Δ vs full", "Δ vs top-K", "layers", "params (M)",
                   "size (MB)", "p50 ms", "p95 ms", "MatMul GOP", "of peak", "speed-up", "train s"]
        frame = pd.DataFrame([_result_cells(row, metric, headline) for row in group], columns=columns).fillna("")
        threads, device = (sample.threads, sample.device) if sample else (None, None)
        lines += [f"### {model} on {task} ({metric}{_majority_note(records)}; latency: {describe_timing(headline)}, "
                  f"{'?' if threads is None else threads} threads, {'?' if device is None else device})", "", *pipe_table(frame)]
        if frame["p50 ms"].str.endswith("†").any():
            lines += ["", f"† timed while other work used at least {CONTENDED_LOAD} CPU cores: slower than on a quiet machine "
                      "(`compress bench ... --retime` measures again)."]
        if any(row.delta_vs_full_stderr is not None or row.delta_vs_top_stderr is not None for row in group):
            lines += ["", "± after a Δ: that change's standard error, paired over the dev examples both rows are scored on "
                      f"(their predictions: `{PREDICTIONS_FILE}`); far smaller than either score's own where both rows are "
                      "right and wrong on mostly the same examples."]
        if frame["train s"].str.endswith("‡").any():
            lines += ["", f"‡ trained while other work used at least {CONTENDED_LOAD} CPU cores: a longer training time than on a quiet machine."]
        lines += _peak_lines(records)
        environment = _environment_lines(records)
        lines += ["", *environment] if environment else []
        lines.append("")
    return "\n".join(lines)


def peak_text(r: BenchRecord, timing: Timing | None) -> str:
    """The share of the host's MatMul peak a timing reached, against the peak of the type the row's
    matrix products compute in ('' where that peak was not measured, or the row not timed)."""
    dtype = _precision(r.precision).matmul_dtype
    fraction = getattr(timing, f"fraction_of_{dtype}_peak", None)
    return f"{fraction:.0%} {dtype}" if fraction is not None else ""


def _peak_lines(group: list[BenchRecord]) -> list[str]:
    """What "of peak" is set against: the host's MatMul peaks measured in the run(s) of these rows."""
    peaks = {(p["int8"], p["fp32"]): None for r in group if r.status == "ok" and (p := r.matmul_peaks_gops)}
    if not peaks:
        return []
    measured = "; ".join(f"int8 {int8:.0f} GOPS, fp32 {fp32:.0f} GFLOPS" for int8, fp32 in peaks)
    return ["", f"MatMul GOP: the layers' matrix products per call (billions of operations). Of peak: that work over p50, as a "
            f"share of this host's MatMul throughput in the type the row computes in, measured with onnxruntime in the same run "
            f"({measured})."]


def _environment_lines(group: list[BenchRecord]) -> list[str]:
    """What the rows were timed with; several lines when merged shards or reruns differ (records from
    before the environment was stored have none)."""
    environments = {describe_environment(r.environment): None for r in group if r.status == "ok" and r.environment}
    if len(environments) > 1:
        return ["Timed with different software or processors, so their latencies compare less well (a speed-up is given only "
                "between timings on one processor):",
                *(f"- {e}" for e in environments)]
    return [f"Timed with {e}." for e in environments]


def strategy_table(rows: list[ReportRow]) -> str:
    """The paper's table shape: one row per strategy, one column per K, each cell the score and its
    change in points against the full fine-tuned model (PyTorch fp32 rows only)."""
    lines = []
    for (model, task), group in _grouped(rows, lambda row: row.record).items():
        plain = {(row.record.strategy, row.record.k, row.record.training): row for row in group if row.record.precision == TRAINED}
        ks = sorted({k for _, k, _ in plain if k})
        full = next((row for (strategy, _, training), row in plain.items() if strategy == FULL and is_plain(training)), None)
        if not ks or not full:
            continue
        kinds = sorted(TRAININGS, key=lambda name: not is_plain(name))  # plain first, then each other kind, each in the paper's strategy order
        names = sorted({(s, t) for s, _, t in plain if s != FULL},
                       key=lambda st: (kinds.index(st[1]) if st[1] in kinds else len(kinds), st[1], strategy_rank(st[0])))
        frame = pd.DataFrame(
            [[f"{strategy}{training_label(training)}",
              *(f"{row.record.score:.4f} ({_change_text(row.delta_vs_full, row.delta_vs_full_stderr, '.1f')})"
                if (row := plain.get((strategy, k, training))) else "" for k in ks)]
             for strategy, training in names],
            columns=["strategy", *(f"K={k}" for k in ks)],
        )
        majority = _majority_note([row.record for row in group])
        lines += [f"### {model} on {task}: {full.record.primary_metric} by strategy and layers dropped (full model: {full.record.score:.4f}{majority})", "",
                  *pipe_table(frame), ""]
    return "\n".join(lines)


def timed_alike(first: BenchRecord, first_timing: Timing, second: BenchRecord, second_timing: Timing) -> bool:
    """Whether two timings may be set against each other: one device and thread count (merged shards may come from other
    machines; ONNX rows of a GPU machine run on its CPU), and one processor where both records name theirs (a row
    built again on another machine keeps the device line of the first, brand only)."""
    first_processor, second_processor = processor_of(first.environment), processor_of(second.environment)
    return ((first_timing.device, first_timing.threads) == (second_timing.device, second_timing.threads)
            and (first_processor is None or second_processor is None or first_processor == second_processor))


def fastest_table(records: list[BenchRecord], budget: float = SCORE_BUDGET_POINTS) -> str:
    """For each trained model (strategy, K, training) and each timing its rows share (batch size and
    length), the fastest precision or engine that scores at most `budget` points below the model's
    PyTorch fp32 row, timed on the same device and threads."""
    lines = []
    for (model, task), group in _grouped(records).items():
        cells = []
        trained_models: dict[tuple, list[BenchRecord]] = {}
        for r in group:  # in the order of the rows (the full model first)
            trained_models.setdefault((r.strategy, r.k, r.training), []).append(r)
        for trained, variants in trained_models.items():
            fp32 = next((r for r in variants if r.precision == TRAINED), None)
            if fp32 is None or len(variants) < 2:
                continue
            allowed = [r for r in variants if 100 * (fp32.score - r.score) <= budget]
            for reference in fp32.latency or []:
                shape = (reference.batch_size, reference.sequence_length)
                timed = [(t.p50_ms, r) for r in allowed for t in r.latency or []
                         if (t.batch_size, t.sequence_length) == shape and timed_alike(r, t, fp32, reference)]
                best_ms, best = min(timed, key=lambda pair: pair[0])
                cells.append([f"{trained[0]}{trained[1] or ''}{training_label(trained[2])}", describe_timing(shape),
                              best.precision, f"{best.score:.4f} ({100 * (best.score - fp32.score):+.2f})",
                              f"{best_ms:.2f}", f"{reference.p50_ms / best_ms:.2f}x"])
        if cells:
            frame = pd.DataFrame(cells, columns=["model", "timing", "fastest", "score (Δ vs its fp32)", "p50 ms", "speed-up over PyTorch fp32"])
            lines += [f"### {model} on {task}: the fastest engine and precision per timing, at most {budget:g} points below PyTorch fp32",
                      "", *pipe_table(frame), ""]
    return "\n".join(lines)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both lower latency and higher score."""
    front = []
    for i, (latency, score) in enumerate(points):
        dominated = any(l2 <= latency and s2 >= score and (l2, s2) != (latency, score) for l2, s2 in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _panels(groups: dict, title: str):
    columns = min(2, len(groups))
    rows = -(-len(groups) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(7.5 * columns, 5.2 * rows), squeeze=False)
    figure.suptitle(title)
    for axis in axes.flat[len(groups):]:
        axis.set_visible(False)
    return figure, list(axes.flat)


def timed_with_full_model(group: list[BenchRecord], headline: tuple[int, str] | None) -> tuple[list[tuple[BenchRecord, Timing]], int]:
    """The rows of one model and task timed at `headline` that one plot may set side by side: those timed alike the
    full model (the first timed row where it was not timed), and how many were left out (timed on another processor:
    a row built again on another machine)."""
    timed = [(r, latency_of(r, headline)) for r in group if r.status == "ok"]
    timed = [(r, t) for r, t in timed if t and t.p50_ms > 0]
    full = _full_model(group)
    reference = next(((r, t) for r, t in timed if r is full), timed[0] if timed else None)
    alike = [(r, t) for r, t in timed if timed_alike(r, t, *reference)]
    return alike, len(timed) - len(alike)


def plot_pareto(records: list[BenchRecord], path: Path) -> None:
    groups = _grouped(records)
    figure, axes = _panels(groups, "Score against p50 latency; Pareto front in red\n(n%): share of the host's MatMul peak reached")
    for axis, ((model, task), group) in zip(axes, groups.items()):
        headline = headline_timing(group)
        timed, left_out = timed_with_full_model(group, headline)
        other_processor = f"\n{left_out} rows timed on another processor left out" if left_out else ""
        axis.set(title=f"{model} on {task} ({describe_timing(headline)}){other_processor}")
        if not timed:
            axis.text(0.5, 0.5, "no timed rows", ha="center", va="center", transform=axis.transAxes)
            continue
        points = [(t.p50_ms, r.score) for r, t in timed]
        axis.scatter([p[0] for p in points], [p[1] for p in points], s=18, color="tab:blue")
        front = pareto_front(points)
        axis.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:red", marker="o", markersize=6)
        _mark_majority(axis, group, [p[1] for p in points])
        _mark_full_model_noise(axis, group)
        labels = [axis.text(x, y, _short_label(r, t), fontsize=6) for (r, t), (x, y) in zip(timed, points)]
        # clustered rows (the int8 models, the students of one K) would print over each other; placed
        # once the axis has its final range
        adjust_text(labels, x=[p[0] for p in points], y=[p[1] for p in points], ax=axis,
                    expand=(1.2, 1.6), force_text=(0.3, 0.6), min_arrow_len=0, arrowprops=dict(arrowstyle="-", color="grey", linewidth=0.4))
        axis.set(xlabel="p50 latency (ms)", ylabel=group[0].primary_metric, xscale="log")
        axis.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))  # 1, 2, 5, 10, 20, 50 ms ... in plain numbers
        axis.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.grid(alpha=0.3)
    _save(figure, path)


def plot_layers_dropped(records: list[BenchRecord], path: Path) -> None:
    """The shape of the paper's figure: score against layers dropped, one line per strategy."""
    groups = _grouped(records)
    figure, axes = _panels(groups, "Score against layers dropped (PyTorch fp32)")
    for axis, ((model, task), group) in zip(axes, groups.items()):
        trained = [r for r in group if r.precision == TRAINED and r.strategy != FULL]
        full = _full_model(group)
        colours: dict[str, str] = {}
        # the plain training of each strategy as a solid line, each other training as a dashed one in its colour
        for strategy, training in sorted({(r.strategy, r.training) for r in trained}, key=lambda st: (not is_plain(st[1]), st)):
            line = sorted((r.k, r.score) for r in trained if (r.strategy, r.training) == (strategy, training))
            if full:
                line = [(0, full.score), *line]
            plain = is_plain(training)
            drawn = axis.plot([k for k, _ in line], [s for _, s in line], marker="o" if plain else "s", linestyle="-" if plain else "--",
                              color=colours.get(strategy), label=f"{strategy}{training_label(training)}")
            colours.setdefault(strategy, drawn[0].get_color())
        _mark_majority(axis, group)
        _mark_full_model_noise(axis, group)
        axis.set(xlabel="layers dropped (K)", ylabel=group[0].primary_metric, title=f"{model} on {task}")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    _save(figure, path)


def plot_size(records: list[BenchRecord], path: Path) -> None:
    groups = _grouped(records)
    figure, axes = _panels(groups, "Size on disk against score")
    for axis, ((model, task), group) in zip(axes, groups.items()):
        for precision in sorted({r.precision for r in group}):
            chosen = [r for r in group if r.precision == precision]
            axis.scatter([r.size_mb for r in chosen], [r.score for r in chosen], label=precision, marker=_precision(precision).plot_marker)
        axis.set(xlabel="size on disk (MB)", ylabel=group[0].primary_metric, title=f"{model} on {task}")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    _save(figure, path)


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    replace_file(path, lambda temporary: figure.savefig(temporary, format="png", dpi=130))
    plt.close(figure)


def _grouped(items: list, record_of: Callable = lambda record: record) -> dict[tuple[str, str], list]:
    """Finished records (or rows that hold them: `record_of`) by model and task, in the order they come."""
    groups: dict = {}
    for item in items:
        r = record_of(item)
        if r.status == "ok":
            groups.setdefault((r.model, r.task), []).append(item)
    return groups


def _precision(name: str) -> Precision:
    """The precision a record names (records of a recipe list may name one no sweep can, e.g. an O1 graph quantized)."""
    return PRECISIONS.get(name) or Precision(name, None, None)


def _short_label(r: BenchRecord, timing: Timing | None = None) -> str:
    precision = _precision(r.precision).plot_label or ("" if r.precision in PRECISIONS else f" {r.precision}")
    peak = f" ({text.split()[0]})" if timing and (text := peak_text(r, timing)) else ""
    if r.strategy == FULL:
        return f"full{precision}{peak}"
    return f"{r.strategy}{r.k}{training_label(r.training, short=True)}{precision}{peak}"


TABLE_FILES = ("results.csv", "results.md")
PLOTS = {"pareto.png": plot_pareto, "layers_dropped.png": plot_layers_dropped, "size.png": plot_size}
REPORT_FILES = (*TABLE_FILES, *PLOTS)
"""What `write_report` writes beside results.jsonl."""


def write_report(records: list[BenchRecord], out_dir: Path, command: str | None = None) -> list[ReportRow]:
    """results.csv, results.md and the three plots beside results.jsonl; returns the table's rows."""
    rows = with_deltas(merge_records(records), PairedErrors([out_dir]))
    in_order = [row.record for row in rows]
    write_csv(rows, out_dir / TABLE_FILES[0])
    header = [f"Command: `{command}`", ""] if command else []
    write_text(out_dir / TABLE_FILES[1], "\n".join(header) + strategy_table(rows) + "\n" + fastest_table(in_order) + "\n" + markdown_table(rows) + "\n")
    if any(r.status == "ok" for r in in_order):
        for name, plot in PLOTS.items():
            try:
                plot(in_order, out_dir / name)
            except Exception as error:  # a picture that cannot be drawn never turns finished results into a failed run
                plt.close("all")
                log.warning("could not draw %s (%s: %s); the records and tables are complete", out_dir / name, type(error).__name__, error)
    return rows
