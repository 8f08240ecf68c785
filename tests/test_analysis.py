"""Layer analysis: exact scores on constructed layers, CKA's properties, the analyze command end to end.

Real components throughout: tiny random models of the table's architectures, the embedded MiniLM and
its embedded Rotten Tomatoes data, the real CLI.
"""

from __future__ import annotations

import copy
import csv
import json
import math

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, BertConfig

from compress.analysis.layers import analyze_layers, linear_cka, matched_layers, mean_pairwise_cosine, metric_scores
from compress.errors import CompressError
from compress.surgery.architectures import layer_list
from compress.surgery.layer_drop import drop_layers
from compress.surgery.strategies import contiguous_block_to_drop, layers_to_drop
from tests.test_contribution import Scale, layer_output
from tests.test_layer_drop import batch, tiny_classifier
from tests.test_recipe_errors import QUICKSTART, assert_one_line_error, invoke, write_recipe
from tests.tiny_models import tiny_config

REVIEWS = ("--task", "rotten-tomatoes", "--data-source", "embedded", "--max-length", "32")


# --- exact scores on constructed layers ----------------------------------------------------------


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "xlnet"])
def test_identity_and_negation_layers(model_type):
    model = tiny_classifier(model_type, layers=5)
    layers = layer_list(model)
    replaced = layer_output(model, 1)  # XLNet layers also return their query stream
    layers[1] = Scale(1.0, replaced)
    layers[2] = Scale(1.0, replaced)
    layers[3] = Scale(-1.0, replaced)

    single = analyze_layers(model, [batch()], block=1)
    assert single[1].cosine == pytest.approx(1.0, abs=1e-9)
    assert single[1].block_influence == pytest.approx(0.0, abs=1e-9)
    assert single[1].angular_distance == pytest.approx(0.0, abs=1e-6)
    assert single[3].cosine == pytest.approx(-1.0, abs=1e-9)
    assert single[3].block_influence == pytest.approx(2.0, abs=1e-9)
    assert single[3].angular_distance == pytest.approx(1.0, abs=1e-6)
    assert all(-1 - 1e-9 <= row.cosine <= 1 + 1e-9 for row in single)

    pairs = analyze_layers(model, [batch()], block=2)
    assert pairs[1].angular_distance == pytest.approx(0.0, abs=1e-6)  # identity block 1-2
    assert pairs[2].angular_distance == pytest.approx(1.0, abs=1e-6)  # identity then negation
    assert pairs[4].angular_distance is None  # a block of 2 starting at the top layer runs past it
    assert [row.cosine for row in pairs] == pytest.approx([row.cosine for row in single], abs=1e-12)


def test_scores_match_hidden_states_of_a_real_model():
    model = tiny_classifier("bert", layers=4)
    rows = analyze_layers(model, [batch()], block=3)
    with torch.no_grad():
        states = model(**batch(), output_hidden_states=True).hidden_states
    mask = batch()["attention_mask"].bool()

    def mean_cosine(a, b):
        return torch.nn.functional.cosine_similarity(a[mask].double(), b[mask].double(), dim=-1).mean().item()

    for layer in range(4):
        assert rows[layer].cosine == pytest.approx(mean_cosine(states[layer], states[layer + 1]), abs=1e-6)
    for start in range(2):
        cosines = torch.nn.functional.cosine_similarity(states[start][mask].double(), states[start + 3][mask].double(), dim=-1)
        expected = (torch.arccos(cosines.clamp(-1, 1)) / math.pi).mean().item()
        assert rows[start].angular_distance == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("model_type", "read_at"), [("bert", (0, 0)), ("xlnet", (8, 5)), ("gpt2", (8, 5))])
def test_classifier_token_is_the_token_the_head_reads(model_type, read_at):
    # batch(): the second example is padded from position 6, so its last real token is at 5.
    model = tiny_classifier(model_type, layers=3)
    rows = analyze_layers(model, [batch()], block=None)
    with torch.no_grad():
        states = model(**batch(), output_hidden_states=True).hidden_states
    for layer in range(2):  # below the top, every architecture's hidden_states are the raw layer outputs
        first, second = states[layer + 1][0, read_at[0]], states[layer + 1][1, read_at[1]]
        expected = torch.nn.functional.cosine_similarity(first.double(), second.double(), dim=0).item()
        assert rows[layer].classifier_token_cosine == pytest.approx(expected, abs=1e-6)


def test_classifier_token_is_the_same_for_identical_inputs_and_needs_two_examples():
    model = tiny_classifier("bert", layers=2)
    same = {name: tensor[:1].repeat(3, 1) for name, tensor in batch().items()}
    assert all(row.classifier_token_cosine == pytest.approx(1.0, abs=1e-9) for row in analyze_layers(model, [same]))
    single = {name: tensor[:1] for name, tensor in batch().items()}
    assert all(row.classifier_token_cosine is None for row in analyze_layers(model, [single]))


def test_mean_pairwise_cosine_matches_every_pair():
    rows = torch.randn(7, 5, generator=torch.Generator().manual_seed(3))
    pairs = [
        torch.nn.functional.cosine_similarity(rows[i].double(), rows[j].double(), dim=0).item()
        for i in range(7)
        for j in range(7)
        if i != j
    ]
    assert mean_pairwise_cosine(rows) == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)


# --- base vs fine-tuned ---------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["bert", "xlnet", "albert"])
def test_a_model_compared_with_itself_is_identical_in_every_layer(model_type):
    model = tiny_classifier(model_type, layers=4)
    for other in (model, copy.deepcopy(model)):
        rows = analyze_layers(model, [batch()], finetuned=other)
        assert [row.finetuned_layer for row in rows] == [0, 1, 2, 3]
        for row in rows:
            assert row.finetuned_cka == pytest.approx(1.0, abs=1e-9)
            assert row.finetuned_cosine == pytest.approx(1.0, abs=1e-9)


def test_a_dropped_finetuned_model_is_compared_with_the_layers_it_kept():
    base = tiny_classifier("bert", layers=6)
    dropped = drop_layers(copy.deepcopy(base), [1, 4], "layers")  # kept 0, 2, 3, 5
    assert matched_layers(base.config, dropped.config) == {0: 0, 2: 1, 3: 2, 5: 3}

    rows = analyze_layers(base, [batch()], finetuned=dropped)
    assert [row.finetuned_layer for row in rows] == [0, None, 1, 2, None, 3]
    assert rows[0].finetuned_cka == pytest.approx(1.0, abs=1e-9)  # same layer, same input
    assert rows[1].finetuned_cka is None and rows[1].finetuned_cosine is None
    assert rows[2].finetuned_cosine < 1 - 1e-7  # layer 2 now reads the output of layer 0 (tiny random layers change little)

    # A dropped base: rows follow its own layers; the fine-tuned layers map by original index.
    smaller_base = drop_layers(copy.deepcopy(base), [1], "layers")  # kept 0, 2, 3, 4, 5
    assert matched_layers(smaller_base.config, dropped.config) == {0: 0, 1: 1, 2: 2, 4: 3}
    with pytest.raises(CompressError, match=r"^--finetuned: has original layers \[1\]"):
        matched_layers(smaller_base.config, base.config)


def test_mismatched_finetuned_configs_are_refused():
    bert = tiny_config("bert", 6)
    with pytest.raises(CompressError, match=r"^--finetuned: a mpnet model cannot be compared with a bert base"):
        matched_layers(bert, tiny_config("mpnet", 6))
    wider = BertConfig(num_hidden_layers=6, hidden_size=32, num_attention_heads=2, intermediate_size=32, vocab_size=100)
    with pytest.raises(CompressError, match=r"^--finetuned: hidden size 32 does not match the base model's 16"):
        matched_layers(bert, wider)
    with pytest.raises(CompressError, match=r"^--finetuned: comes from a 4-layer model, the base model from a 6-layer"):
        matched_layers(bert, tiny_config("bert", 4))


def random_orthogonal(size: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


@pytest.mark.parametrize("seed", range(5))
def test_cka_is_invariant_to_rotation_and_isotropic_scaling(seed):
    generator = torch.Generator().manual_seed(seed)
    tokens, width = 200 + 50 * seed, 8 + 4 * seed
    x = torch.randn(tokens, width, generator=generator, dtype=torch.float64)
    y = x @ torch.randn(width, width + 3, generator=generator, dtype=torch.float64) + 0.5 * torch.randn(
        tokens, width + 3, generator=generator, dtype=torch.float64
    )
    rotation = random_orthogonal(width + 3, generator)
    scale = float(torch.rand(1, generator=generator)) * 10 + 0.1

    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, scale * x @ random_orthogonal(width, generator)) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, scale * y @ rotation) == pytest.approx(linear_cka(x, y), abs=1e-12)
    assert linear_cka(x, y + 3.0) == pytest.approx(linear_cka(x, y), abs=1e-12)  # centring: offsets do not count
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)
    assert 0.0 <= linear_cka(x, y) < 1.0
    unrelated = torch.randn(tokens, width, generator=generator, dtype=torch.float64)
    assert linear_cka(x, unrelated) < linear_cka(x, y)


def test_cka_in_float32_inputs_is_computed_in_float64():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0)) * 1e3 + 1e4  # large offset
    assert linear_cka(x, x.clone()) == pytest.approx(1.0, abs=1e-12)


# --- contribution dropping by metric --------------------------------------------------------------


def test_block_influence_ranks_like_cosine_and_angular_drops_a_contiguous_block():
    cosines = [0.5, 0.9, 0.7, 0.95, 0.6, 0.8]
    influence = [1 - c for c in cosines]
    for k in range(6):
        assert layers_to_drop("contribution", 6, k, scores=influence, metric="block-influence") == layers_to_drop(
            "contribution", 6, k, scores=cosines
        )
    distances = [0.4, 0.3, 0.1, 0.2, 0.5]  # blocks of 2 starting at 0..4
    assert layers_to_drop("contribution", 6, 2, scores=distances, metric="angular") == [2, 3]
    assert contiguous_block_to_drop(6, 0, None) == []
    with pytest.raises(CompressError, match="one distance per block of 2 layers"):
        layers_to_drop("contribution", 6, 2, scores=cosines, metric="angular")


def test_metric_scores_are_what_the_strategy_ranks():
    rows = analyze_layers(tiny_classifier("bert", layers=5), [batch()], block=2)
    assert metric_scores(rows, "cosine") == [row.cosine for row in rows]
    assert metric_scores(rows, "block-influence") == [row.block_influence for row in rows]
    assert metric_scores(rows, "angular") == [row.angular_distance for row in rows[:4]]


def test_drop_contribution_by_angular_distance_drops_the_closest_contiguous_block(tmp_path):
    out = tmp_path / "angular"
    result = invoke(
        "drop", "minilm-l6", "--strategy", "contribution", "--metric", "angular", "-k", "2",
        *REVIEWS, "--examples", "16", "-o", out,
    )
    assert result.exit_code == 0, (result.output, result.exception)
    scores = json.loads((out / "final" / "contribution_scores.json").read_text())
    assert scores["metric"] == "angular" and scores["block"] == 2
    distances = [row["score"] for row in scores["layers"]]
    assert distances[-1] is None and all(0 < d < 1 for d in distances[:-1])
    start = min(range(5), key=lambda i: distances[i])
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["compress_layer_drop"]["drops"][0]["dropped_layers"] == [start, start + 1]


def test_metric_on_another_strategy_fails_the_recipe_check(tmp_path):
    recipe = yaml.safe_load(QUICKSTART.read_text())
    recipe["stages"][1]["metric"] = "angular"  # the quickstart's drop stage: strategy top
    result = invoke("check", write_recipe(tmp_path, "metric", recipe))
    assert_one_line_error(result, "metric.yaml", "stages[1]", "metric: only used with strategy 'contribution'")

    recipe["stages"][1].update(strategy="contribution", k=2)
    assert invoke("check", write_recipe(tmp_path, "metric", recipe)).exit_code == 0


def test_metric_on_another_strategy_fails_the_drop_command(tmp_path):
    result = invoke("drop", "minilm-l6", "--strategy", "top", "-k", "2", "--metric", "angular", "-o", tmp_path / "x")
    assert_one_line_error(result, "--metric")


# --- the analyze command --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dropped_minilm(module_folder):
    """The embedded MiniLM with layers 2 and 4 dropped and saved, standing in for a fine-tuned model."""
    out = module_folder("models") / "minilm-odd"
    result = invoke("drop", "minilm-l6", "--strategy", "alternate-odd", "-k", "2", "-o", out)
    assert result.exit_code == 0, result.output
    card = (out / "final" / "README.md").read_text()
    assert card.startswith("# minilm-l6, 4 of 6 layers\n") and "not fine-tuned" in card and "kept [0, 1, 3, 5]" in card
    return out


def test_analyze_writes_table_json_csv_and_plot(tmp_path, dropped_minilm):
    out = tmp_path / "analysis"
    result = invoke("analyze", "minilm-l6", *REVIEWS, "--examples", "32", "--finetuned", dropped_minilm, "--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "contribution" in result.stdout and "CKA" in result.stdout  # the printed table

    plot = (out / "analysis.png").read_bytes()
    assert len(plot) > 1000 and plot.startswith(b"\x89PNG\r\n\x1a\n")
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["examples"] == 32 and analysis["block"] == 1 and analysis["tokens"] > 32
    rows = analysis["layers"]
    assert [row["finetuned_layer"] for row in rows] == [0, 1, None, 2, None, 3]  # kept 0, 1, 3, 5
    for row in rows[:2]:  # the same layers on the same inputs
        assert row["finetuned_cosine"] == pytest.approx(1.0, abs=1e-6)
        assert row["finetuned_cka"] == pytest.approx(1.0, abs=1e-6)
    for row in (rows[3], rows[5]):  # their inputs changed with the drop
        assert 0 < row["finetuned_cka"] < 1 - 1e-4 and row["finetuned_cosine"] < 1 - 1e-4
    assert all(0 < row["cosine"] < 1 for row in rows)
    assert "classifier token" in result.stdout
    assert all(-1 <= row["classifier_token_cosine"] <= 1 + 1e-9 for row in rows)
    with (out / "analysis.csv").open() as table:
        assert [row["layer"] for row in csv.DictReader(table)] == [str(i) for i in range(6)]

    again = invoke("analyze", "minilm-l6", *REVIEWS, "--examples", "8", "--out", out)
    assert_one_line_error(again, str(out), "--overwrite")
    assert json.loads((out / "analysis.json").read_text())["examples"] == 32  # untouched
    replaced = invoke("analyze", "minilm-l6", *REVIEWS, "--examples", "8", "--out", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "analysis.json").read_text())["finetuned"] is None


def save_config(folder, config):
    config.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("finetuned", "expected"),
    [
        (lambda: tiny_config("mpnet", 6), "a mpnet model cannot be compared with a bert base"),
        (lambda: tiny_config("bert", 6), "hidden size 16 does not match the base model's 384"),
        (
            lambda: BertConfig(num_hidden_layers=12, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
            "comes from a 12-layer model, the base model from a 6-layer one",
        ),
    ],
    ids=["architecture", "hidden-size", "layer-count"],
)
def test_analyze_refuses_a_finetuned_model_of_another_base(tmp_path, finetuned, expected):
    other = save_config(tmp_path / "other", finetuned())
    result = invoke("analyze", "minilm-l6", *REVIEWS, "--finetuned", other, "--out", tmp_path / "out")
    assert_one_line_error(result, "--finetuned", expected)
    assert not (tmp_path / "out").exists()


def test_analyze_refuses_a_missing_finetuned_folder_missing_data_and_no_task(tmp_path):
    missing = invoke("analyze", "minilm-l6", *REVIEWS, "--finetuned", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert_one_line_error(missing, "--finetuned", "does not exist")
    no_data = invoke(
        "analyze", "minilm-l6", "--task", "sst2", "--data-source", "glue-dir", "--data-path", tmp_path / "glue",
        "--out", tmp_path / "out",
    )
    assert_one_line_error(no_data, "glue", "not found")
    no_task = invoke("analyze", "minilm-l6", "--data-source", "embedded", "--out", tmp_path / "out")
    assert_one_line_error(no_task, "--task")
    block = invoke("analyze", "minilm-l6", *REVIEWS, "--block", "7", "--out", tmp_path / "out")
    assert_one_line_error(block, "--block", "6 layers")
    assert not (tmp_path / "out").exists()


def test_a_saved_sequence_classifier_reloads_for_analysis(tmp_path):
    """The fine-tuned side is usually a classifier with a head; only its layers are compared."""
    model = tiny_classifier("bert", layers=3)
    model.save_pretrained(tmp_path / "classifier")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "classifier")
    rows = analyze_layers(model, [batch()], finetuned=reloaded)
    assert all(row.finetuned_cka == pytest.approx(1.0, abs=1e-9) for row in rows)
