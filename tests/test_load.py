"""`compress.load(folder)` and `compress predict` on every kind of folder compress writes (PyTorch, torch int8,
ONNX, ONNX int8, OpenVINO int8 on fixed shapes), each against its own engine run directly on one input at a
time: batching, sorting by length, padding and truncation must not change an answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import openvino
import pytest
import torch
from compress.exporters import onnx_file
from compress.exporters.openvino_convert import IR_FILE
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import compress
from compress.models.artifacts import load_artifact
from tests.helpers import assert_one_line_error, invoke, write_recipe
from tests.test_safety import tiny_recipe

SENTENCES = ["a gripping, beautifully shot film", "dull", "I wanted to like it, but the second half drags on and on and on",
             "fine", "not bad at all, actually rather good", "the worst two hours I have spent in a cinema this year", "ok"]
LENGTH = 32


@pytest.fixture(scope="module")
def run(module_folder) -> Path:
    """A recipe whose stages leave a folder of each kind: dropped (PyTorch), torch int8, ONNX, ONNX int8, OpenVINO int8,
    of a model fine-tuned briefly (compress.load refuses a head never trained)."""
    folder = module_folder("load")
    stages = [
        {"stage": "finetune", "name": "trained", "epochs": 1},
        {"stage": "drop", "name": "dropped", "strategy": "top", "k": 4},
        {"stage": "quantize", "name": "torch-int8", "mode": "torch-dynamic-int8"},
        {"stage": "export", "name": "onnx", "from": "dropped"},
        {"stage": "quantize", "name": "onnx-int8", "mode": "dynamic-int8"},
        {"stage": "quantize", "name": "openvino", "from": "onnx", "mode": "openvino-int8", "calibration_examples": 16},
    ]
    recipe = write_recipe(folder, "kinds", tiny_recipe(stages=stages, max_length=LENGTH))
    result = invoke("run", recipe, "--out", folder / "run")
    assert result.exit_code == 0, result.output
    return folder / "run"


def _one_at_a_time(folder: Path, kind: str) -> np.ndarray:
    """Each sentence's logits from the folder's engine, called directly, one unpadded input at a time."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = [tokenizer(s, truncation=True, max_length=LENGTH, return_tensors="np") for s in SENTENCES]
    if kind == "torch":
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            return np.concatenate([model(**{k: torch.from_numpy(v) for k, v in e.items()}).logits.numpy() for e in encoded])
    if kind == "torch-int8":
        model = load_artifact(folder)
        with torch.no_grad():
            return np.concatenate([model(**{k: torch.from_numpy(v) for k, v in e.items()}).logits.numpy() for e in encoded])
    if kind == "onnx":
        session = onnxruntime.InferenceSession(str(onnx_file(folder)), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        return np.concatenate([session.run(["logits"], {k: v.astype(np.int64) for k, v in e.items() if k in wanted})[0] for e in encoded])
    precision = load_artifact(folder).quantization.get("compute_precision")  # None: OpenVINO's own choice, as compress leaves it
    compiled = openvino.Core().compile_model(str(folder / IR_FILE), "CPU", {"INFERENCE_PRECISION_HINT": precision} if precision else {})
    wanted = {i.any_name for i in compiled.inputs}
    return np.concatenate([compiled({k: v.astype(np.int64) for k, v in e.items() if k in wanted})[compiled.output(0)] for e in encoded])


# Dynamic int8 quantizes each batch's activations over the range the batch holds, padding included, so those
# folders are compared one input per batch (unpadded); the others in batches of mixed lengths, sorted and padded.
# OpenVINO computes in bf16 where the CPU has it, whose rounding depends on the shape compiled: 1e-3 there.
@pytest.mark.parametrize(("stage", "kind", "batch_size", "tolerance"), [
    ("dropped", "torch", 3, 1e-5), ("torch-int8", "torch-int8", 1, 1e-5), ("onnx", "onnx", 3, 1e-5), ("onnx-int8", "onnx", 1, 1e-5),
    ("openvino", "openvino", 3, 1e-3),
])
def test_load_runs_every_kind_of_folder_as_its_engine_does(run, stage, kind, batch_size, tolerance):
    model = compress.load(run / stage, batch_size=batch_size)
    assert model.kind == kind and model.max_length == LENGTH
    logits = model.logits(SENTENCES)
    expected = _one_at_a_time(run / stage, kind)
    assert logits.shape == expected.shape == (len(SENTENCES), 2)
    np.testing.assert_allclose(logits, expected, atol=tolerance)
    predictions = model(SENTENCES)
    assert [p.label for p in predictions] == [model.labels[i] for i in expected.argmax(axis=1)]
    assert model.labels == ["rotten", "fresh"]  # the embedded reviews' labels in their class order
    assert all(abs(sum(p.scores.values()) - 1) < 1e-5 and p.score == max(p.scores.values()) for p in predictions)


def test_final_loads_as_the_last_stage_and_pairs_and_truncation_are_the_tokenizers(run):
    final, last = compress.load(run / "final"), compress.load(run / "openvino")
    assert final.kind == "openvino"
    np.testing.assert_allclose(final.logits(SENTENCES), last.logits(SENTENCES), atol=1e-6)
    model = compress.load(run / "dropped", max_length=8)
    long = "word " * 200
    assert np.allclose(model.logits([long]), model.logits([long + " and more"]), atol=1e-6)  # both cut at 8 tokens
    tokenizer = AutoTokenizer.from_pretrained(run / "dropped")
    torch_model = AutoModelForSequenceClassification.from_pretrained(run / "dropped").eval()
    with torch.no_grad():
        expected = torch_model(**tokenizer("a premise", "a hypothesis", return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(model.logits([("a premise", "a hypothesis")]), expected, atol=1e-5)
    assert model.logits([]).shape == (0, 2)


def test_predict_writes_one_json_line_per_input(run, tmp_path):
    texts = tmp_path / "reviews.txt"
    texts.write_text("\n".join(SENTENCES) + "\n\n")
    table = tmp_path / "reviews.csv"
    table.write_text("id,sentence\n" + "".join(f'{i},"{s}"\n' for i, s in enumerate(SENTENCES)))
    expected = [p.label for p in compress.load(run / "onnx-int8")(SENTENCES)]
    for given in (texts, table):
        out = tmp_path / f"{given.stem}-{given.suffix[1:]}.jsonl"
        result = invoke("predict", run / "onnx-int8", given, "--out", out)
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [line["text"] for line in lines] == SENTENCES
        assert [line["label"] for line in lines] == expected
    result = invoke("predict", run / "dropped", texts)  # to standard output
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == len(SENTENCES)


def test_bad_inputs_to_load_and_predict_are_one_line(run, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("fine\n")
    assert_one_line_error(invoke("predict", tmp_path, texts), "no config.json")
    table = tmp_path / "t.csv"
    table.write_text("review\nfine\n")
    assert_one_line_error(invoke("predict", run / "onnx", table), "--text-column", "review")
    taken = tmp_path / "taken.jsonl"
    taken.write_text("mine")
    assert_one_line_error(invoke("predict", run / "onnx", texts, "--out", taken), "exists")
    assert taken.read_text() == "mine"
    bare = tmp_path / "bare"
    assert invoke("drop", "minilm-l6", "--strategy", "top", "-k", "4", "-o", bare).exit_code == 0
    assert_one_line_error(invoke("predict", bare, texts), "bare encoder", "fine-tune or distil it")
    with pytest.raises(compress.errors.CompressError, match="input 1: expected a text or a pair"):
        compress.load(run / "dropped")(["fine", 3])
