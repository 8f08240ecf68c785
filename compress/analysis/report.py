"""Showing per-layer statistics (compress/analysis/layers.py): a printed table, JSON, CSV and a PNG plot."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, fields
from pathlib import Path

from rich.table import Table

from compress.analysis.layers import LayerStatistics
from compress.folders import claimed, replace_file, write_text

JSON_FILE = "analysis.json"
CSV_FILE = "analysis.csv"
PLOT_FILE = "analysis.png"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def statistics_table(rows: list[LayerStatistics], title: str, block: int | None) -> Table:
    """One row per layer; the angular and fine-tuned columns only when they were measured."""
    columns: list[tuple[str, str]] = [
        ("layer", "layer"),
        ("original_layer", "original layer"),
        ("cosine", "contribution cos(in, out)"),
        ("block_influence", "block influence"),
    ]
    if block:
        columns.append(("angular_distance", f"angular distance (block {block})"))
    columns.append(("classifier_token_cosine", "classifier token: cos between inputs"))
    if any(row.finetuned_layer is not None for row in rows):
        columns += [
            ("finetuned_layer", "fine-tuned layer"),
            ("finetuned_cosine", "base vs fine-tuned cos"),
            ("finetuned_cka", "base vs fine-tuned CKA"),
        ]
    table = Table(title=title)
    for _, header in columns:
        table.add_column(header, justify="right")
    for row in rows:
        values = [getattr(row, field) for field, _ in columns]
        table.add_row(*(str(v) if isinstance(v, int) else _number(v) for v in values))
    return table


def write_analysis(rows: list[LayerStatistics], about: dict, folder: Path, title: str) -> list[Path]:
    """analysis.json (`about` and the rows), analysis.csv (the rows) and analysis.png in `folder`
    (made and marked as compress's if new; the caller has checked that an existing one is)."""
    json_path, csv_path, plot_path = folder / JSON_FILE, folder / CSV_FILE, folder / PLOT_FILE
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=[f.name for f in fields(LayerStatistics)])
    writer.writeheader()
    writer.writerows(asdict(row) for row in rows)
    with claimed(folder, "layer analysis"):
        write_text(json_path, json.dumps({**about, "layers": [asdict(row) for row in rows]}, indent=2) + "\n")
        write_text(csv_path, table.getvalue())
        plot_layers(rows, title, about.get("block"), plot_path)
    return [json_path, csv_path, plot_path]


def plot_layers(rows: list[LayerStatistics], title: str, block: int | None, path: Path) -> None:
    """Scores by layer: contribution, angular distance and the classifier token; base vs fine-tuned cosine and CKA when measured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display needed
    from matplotlib.figure import Figure

    compared = [row for row in rows if row.finetuned_layer is not None]
    figure = Figure(figsize=(6.4 * (2 if compared else 1), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 2 if compared else 1, squeeze=False)[0]
    # Original layer numbers on the x axis: a dropped model's layers stay where they came from.
    layers = [row.original_layer for row in rows]

    contribution = panels[0]
    contribution.plot(layers, [row.cosine for row in rows], marker="o", label="contribution: cos(layer input, output)")
    angular = [(row.original_layer, row.angular_distance) for row in rows if row.angular_distance is not None]
    if block and angular:
        contribution.plot(*zip(*angular), marker="s", label=f"angular distance, block of {block} starting here")
    token = [(row.original_layer, row.classifier_token_cosine) for row in rows if row.classifier_token_cosine is not None]
    if token:
        contribution.plot(*zip(*token), marker="^", label="classifier token: cos between inputs (1: same for all)")
    contribution.set(title="Each layer of the analysed model", xlabel="layer (0-based)", ylabel="score")
    contribution.legend(fontsize="small")

    if compared:
        similarity = panels[1]
        x = [row.original_layer for row in compared]
        similarity.plot(x, [row.finetuned_cosine for row in compared], marker="o", label="mean per-token cosine")
        similarity.plot(x, [row.finetuned_cka for row in compared], marker="s", label="linear CKA")
        similarity.set(title="Base vs fine-tuned, per layer output", xlabel="layer (0-based)", ylabel="similarity")
        similarity.set_ylim(top=1.02)
        similarity.legend(fontsize="small")
    for panel in panels:
        panel.set_xticks(layers)
        panel.grid(alpha=0.3)
    figure.suptitle(title)
    replace_file(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110))
