"""The roofline: the MatMul work a call does, counted from the config, against the matrix products the
real layers compute; and the host's MatMul peaks measured with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import numpy_helper
from transformers import AutoModelForSequenceClassification

from compress.models.loading import load_config
from compress.surgery.architectures import layer_list
from compress.timing.latency import timed_in_turns
from compress.timing.roofline import (
    PEAK_DEPTH,
    PEAK_GOP,
    PEAK_ROWS,
    PEAK_WEIGHT_SCALE,
    describe_peaks,
    fractions_in_turns,
    matmul_gop,
    matmul_peaks,
    peak_fractions,
    peak_models,
    peak_runners,
    peak_session,
    peaks_of_rounds,
    take_peaks,
)
from tests.tiny_models import tiny_config


def test_minilm_at_128_tokens_does_the_work_counted_by_hand():
    config = load_config("minilm-l6")
    config.num_hidden_layers = 4  # the quickstart's student
    # per layer: 128 tokens x (4 x 384^2 + 2 x 384 x 1536) multiply-adds, plus 2 x 128^2 x 384 for scores and context
    assert matmul_gop(config, [(1, 128)]) == pytest.approx(2 * 4 * (128 * (4 * 384**2 + 2 * 384 * 1536) + 2 * 128**2 * 384) / 1e9)
    assert matmul_gop(config, [(1, 128)]) == pytest.approx(1.913, abs=1e-3)
    assert matmul_gop(config, [(2, 64), (1, 32)]) == pytest.approx((matmul_gop(config, [(2, 64)]) + matmul_gop(config, [(1, 32)])) / 2)
    config.model_type = "an-architecture-the-table-lacks"
    assert matmul_gop(config, [(1, 128)]) is None, "unknown work is not guessed; the timing stands without it"


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "roberta", "mpnet", "modernbert", "electra", "llama", "qwen2"])
def test_the_count_matches_the_projections_the_layers_run(model_type):
    """Every Linear layer inside the Transformer layers, hooked while a batch runs: their multiply-adds
    are the count less the two attention products (whose shapes no Linear shows)."""
    config = tiny_config(model_type, 2)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    macs = []
    for module in layer_list(model).modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda m, inputs, _: macs.append(inputs[0].shape[:-1].numel() * m.in_features * m.out_features))
    batch, length = 2, 12
    with torch.no_grad():
        model(input_ids=torch.randint(5, config.vocab_size, (batch, length)))
    attention = 2 * 2 * batch * 2 * length * length * config.hidden_size / 1e9  # 2 layers, 2 products, 2 ops per multiply-add
    assert 2 * sum(macs) / 1e9 == pytest.approx(matmul_gop(config, [(batch, length)]) - attention, rel=1e-6)


def test_the_peak_graphs_multiply_correctly():
    x = np.random.default_rng(2).standard_normal((PEAK_ROWS, PEAK_DEPTH)).astype(np.float32)
    for name, model in peak_models().items():
        weights = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "W")).astype(np.float32)
        expected = x @ (weights * PEAK_WEIGHT_SCALE if name == "int8" else weights)
        (result,) = peak_session(model, threads=1).run(None, {"X": x})
        if name == "fp32":
            assert np.abs(result - expected).max() < 1e-3 * np.abs(expected).max()
        else:
            # the inputs are quantized on the fly to 8 bits, and on CPUs without VNNI onnxruntime's u8s8
            # dot products saturate (up to 13% of the output's spread on a Zen 1), so agreement is
            # checked as correlation: a wrong graph (other weights, scales or layout) gives about 0
            assert np.corrcoef(result.ravel(), expected.ravel())[0, 1] > 0.99


def test_peaks_are_measured_on_this_cpu_and_fractions_follow():
    peaks = matmul_peaks(1, calls=5, warmup=1)
    assert "int8" in describe_peaks(peaks, 1)
    assert peaks.keys() == {"int8", "fp32"} and all(value > 0.1 for value in peaks.values())
    fractions = peak_fractions(2.0, 1000.0, {"int8": 4.0, "fp32": 8.0})  # 2 GOP in a second
    assert fractions == {"int8": 0.5, "fp32": 0.25}


def test_a_slow_spell_that_slows_a_model_and_its_peak_alike_leaves_its_share_alone():
    # round 2 runs at half speed throughout; set against one peak for the run, the share would halve
    shares = fractions_in_turns(PEAK_GOP, model_ms=[2.0, 4.0, 2.0], peak_ms={"int8": [1.0, 2.0, 1.0]})
    assert shares == {"int8": 0.5}
    assert fractions_in_turns(PEAK_GOP, [2.0, 4.0, 2.0], {"int8": [1.0, 1.0, 1.0]}) == {"int8": 0.5}  # the median round
    assert peak_fractions(PEAK_GOP, 2.0, {"int8": PEAK_GOP / 0.001}) == {"int8": 0.5}  # the same work against one peak


def test_peaks_timed_in_turns_beside_a_model_are_taken_apart_from_it():
    x = torch.randn(256, 256)
    runners = {"model": lambda batch: x @ x, **peak_runners(threads=1)}
    per_round = timed_in_turns(runners, {"fixed": [{}] * 3}, rounds=2)
    peak_ms = take_peaks(per_round)
    assert set(per_round) == {"model"} and set(peak_ms) == {"int8", "fp32"}
    assert all(len(by_set["fixed"]) == 2 for by_set in peak_ms.values())
    peaks = peaks_of_rounds(peak_ms)
    assert peaks.keys() == {"int8", "fp32"} and all(value > 0.1 for value in peaks.values())
