"""ONNX export parity on tiny random models; int8 on the real embedded model; stage-order and device errors."""

import json

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from compress.cli import app
from compress.errors import CompressError
from compress.models import load_tokenizer
from exporters.onnx_export import export_onnx, optimum_supports
from exporters.onnx_runtime import ort_session
from tests.tiny_models import tiny_config

TEXTS = ["ok", "a film that is much longer, with commas and words nobody needs", "fine, really", "bad"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm-l6")


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "roberta", "mpnet", "xlnet"])
def test_export_matches_pytorch_on_padded_batch(model_type, tokenizer, tmp_path):
    config = tiny_config(model_type, 3)
    config.vocab_size = tokenizer.vocab_size
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    path = export_onnx(model, tokenizer, tmp_path)

    assert path.name == "model.onnx" and not list(tmp_path.glob("*.onnx_data")), "one self-contained file"
    assert (tmp_path / "config.json").exists() and (tmp_path / "tokenizer_config.json").exists()
    session = ort_session(path)
    inputs = {i.name for i in session.get_inputs()}
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    onnx_logits = session.run(["logits"], {k: batch[k].astype(np.int64) for k in inputs})[0]
    with torch.no_grad():
        torch_logits = model(**{k: torch.from_numpy(batch[k]) for k in inputs}).logits.numpy()
    assert np.abs(onnx_logits - torch_logits).max() < 1e-4


def test_xlnet_takes_the_torch_exporter_and_bert_optimum():
    assert not optimum_supports("xlnet")
    assert optimum_supports("bert") and optimum_supports("mpnet")


def write_recipe(path, stages, **data):
    recipe = {
        "model": "minilm-l6",
        "task": "rotten-tomatoes",
        "data": {"source": "embedded", "max_train_examples": 800, "max_eval_examples": 200, **data},
        "max_length": 64,
        "stages": stages,
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    recipe = write_recipe(
        folder / "int8.yaml",
        [
            {"stage": "finetune", "name": "teacher", "epochs": 1, "learning_rate": 1.0e-4, "batch_size": 16},
            {"stage": "export", "name": "onnx"},
            {"stage": "quantize", "name": "dynamic", "mode": "dynamic-int8"},
            {"stage": "quantize", "name": "static", "from": "onnx", "mode": "static-int8", "calibration_examples": 64},
            {"stage": "quantize", "name": "torch-int8", "from": "teacher", "mode": "torch-dynamic-int8"},
        ],
    )
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(folder / "run")])
    assert result.exit_code == 0, result.output
    return folder / "run", result.output


def test_int8_models_keep_the_fp32_accuracy(int8_run):
    run, output = int8_run
    stages = {s["name"]: s for s in json.loads((run / "results.json").read_text())["stages"]}
    reference = stages["teacher"]["metrics"]["accuracy"]
    assert reference > 0.6, "the fine-tuned reference should be well above chance on 200 reviews"
    assert stages["onnx"]["metrics"]["accuracy"] == pytest.approx(reference, abs=0.005)
    assert stages["onnx"]["notes"]["parity_max_abs_logit_diff"] < 1e-3
    # Stated bound: int8 within 3 points (6 of the 200 dev reviews) of fp32.
    for name in ("dynamic", "static", "torch-int8"):
        changed = abs(stages[name]["metrics"]["accuracy"] - reference) * 200
        assert round(changed) <= 6, (name, changed)
    assert stages["dynamic"]["size_mb"] <= 0.3 * stages["onnx"]["size_mb"]
    assert [stages[n]["kind"] for n in ("onnx", "dynamic", "torch-int8")] == ["onnx", "onnx", "torch-int8"]
    for column in ("kind", "size", "accuracy", "dynamic", "static"):
        assert column in output


def test_final_int8_folder_loads_with_optimum(int8_run):
    from optimum.onnxruntime import ORTModelForSequenceClassification

    run, _ = int8_run
    onnx_folder = run / "dynamic"
    model = ORTModelForSequenceClassification.from_pretrained(onnx_folder)
    tokenizer = load_tokenizer(str(onnx_folder))
    logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    assert logits.shape == (len(TEXTS), 2)
    assert model.config.id2label == {0: "rotten", 1: "fresh"}
    assert model.config.compress_quantization["mode"] == "dynamic-int8"


def check(recipe):
    result = CliRunner().invoke(app, ["check", str(recipe)])
    return result.exit_code, result.output.strip()


def test_quantizing_onnx_modes_need_an_export_first(tmp_path):
    recipe = write_recipe(tmp_path / "order.yaml", [{"stage": "finetune"}, {"stage": "quantize", "mode": "dynamic-int8"}])
    code, message = check(recipe)
    assert code == 2 and len(message.splitlines()) == 1
    assert "order.yaml: stages[1]: quantize needs a model of kind 'onnx'" in message and "add an export stage" in message


def test_finetuning_an_onnx_model_is_refused(tmp_path):
    recipe = write_recipe(tmp_path / "onnx.yaml", [{"stage": "export"}, {"stage": "finetune"}])
    code, message = check(recipe)
    assert code == 2 and "stages[1]: finetune needs a model of kind 'torch'" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_fp16_fails_cleanly_without_cuda(tmp_path):
    recipe = write_recipe(tmp_path / "fp16.yaml", [{"stage": "finetune"}, {"stage": "quantize", "mode": "fp16"}])
    code, message = check(recipe)
    assert code == 2 and "fp16.yaml: stages[1].mode: fp16 needs a CUDA device" in message


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_saved_model_loads_in_the_precision_it_was_saved_in(dtype, tmp_path):
    from compress.artifacts import load_artifact

    AutoModelForSequenceClassification.from_config(tiny_config("bert", 2)).to(dtype).save_pretrained(tmp_path)
    assert load_artifact(tmp_path).dtype == dtype


def test_parity_failure_is_a_clear_error(tmp_path):
    from compress.data import DataSettings, load_task_data
    from compress.stages.base import StageContext
    from compress.stages.export import ExportSettings, export

    tokenizer = load_tokenizer("minilm-l6")
    config = tiny_config("bert", 2)
    config.vocab_size = tokenizer.vocab_size
    model = AutoModelForSequenceClassification.from_config(config).eval()
    data = load_task_data("rotten-tomatoes", DataSettings(source="embedded", max_eval_examples=16))
    context = StageContext(data, tokenizer, tmp_path, max_length=32, eval_batch_size=8)
    with pytest.raises(CompressError, match=r"export: ONNX logits differ from PyTorch by .* on 16 dev examples"):
        export(model, ExportSettings(tolerance=1e-15), context)


def test_stages_run_alone_from_the_command_line(int8_run, tmp_path):
    run, _ = int8_run
    data = ["--task", "rotten-tomatoes", "--data", "source=embedded", "--data", "max_eval_examples=200", "--max-length", "64"]
    exported = CliRunner().invoke(app, ["stage", "export", str(run / "teacher"), *data, "-o", str(tmp_path / "export")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "export" / "final" / "model.onnx").exists()

    quantized = CliRunner().invoke(
        app, ["stage", "quantize", str(tmp_path / "export" / "final"), *data, "--set", "mode=dynamic-int8", "-o", str(tmp_path / "int8")]
    )
    assert quantized.exit_code == 0, quantized.output
    result = json.loads((tmp_path / "int8" / "results.json").read_text())["final"]
    reference = {s["name"]: s for s in json.loads((run / "results.json").read_text())["stages"]}["dynamic"]
    assert result["kind"] == "onnx" and result["metrics"]["accuracy"] == pytest.approx(reference["metrics"]["accuracy"], abs=1e-9)
    assert result["parameters"] > 20_000_000  # counted from the ONNX graph's weights


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["stage", "quantize", "minilm-l6", "--set", "mode=dynamic-int8"], "quantize needs a model of kind 'onnx'"),
        (["stage", "quantize", "minilm-l6", "--set", "mode"], "--set: expected key=value (got 'mode')"),
        (["stage", "drop", "minilm-l6", "--set", "strategy=top", "--set", "k=9"], "stages[0].k: must be at least 0 and less than"),
    ],
)
def test_stage_command_errors(args, expected, tmp_path):
    result = CliRunner().invoke(app, [*args, "--task", "rotten-tomatoes", "--data", "source=embedded", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
