"""A torch-int8 model's folder holds no pickle: the quantize stage's model is saved as a config and a
safetensors file, and loaded again with the same logits, for every architecture of tests/tiny_models.py;
a folder an older compress pickled its module into is refused without being unpickled."""

import json
import zipfile

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

from compress.errors import CompressError
from compress.models.artifacts import (
    PICKLED_INT8_FILE,
    QUANTIZED_LINEARS,
    TORCH_INT8_FILE,
    kind_of,
    load_artifact,
    save_artifact,
    size_on_disk,
)
from compress.stages import StageContext, run_stage
from compress.stages.drop import DropSettings
from compress.stages.quantize import METHODS
from compress.surgery.architectures import num_layers
from tests.tiny_models import DECODERS, ENCODERS, tiny_config

TEXTS = ["ok", "a film that is much longer, with commas and words nobody needs", "fine, really", "bad"]


def tiny_model(model_type: str, layers: int, tokenizer):
    config = tiny_config(model_type, layers)
    config.vocab_size = tokenizer.vocab_size
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config).eval()


def quantized_in(folder, model, reviews, tokenizer):
    """The quantize stage's torch-dynamic-int8 model of `model`, saved into `folder` as a pipeline saves it."""
    settings = METHODS["torch-dynamic-int8"].settings(mode="torch-dynamic-int8")
    return run_stage(settings, model, StageContext(reviews, tokenizer, folder, max_length=32, eval_batch_size=32)).model


def logits(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits


def assert_no_pickle(folder) -> None:
    """No .pt file, no raw pickle (protocol 2 and later start with 0x80), no zip holding one (torch.save's
    format); a safetensors file (whose 8-byte header length may start with any byte) must open as one."""
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert files and not [path for path in files if path.suffix == ".pt"]
    for path in files:
        if path.suffix == ".safetensors":
            with safe_open(path, "pt") as file:
                assert file.keys(), path
            continue
        assert path.read_bytes()[:1] != b"\x80", path
        if zipfile.is_zipfile(path):
            assert not [name for name in zipfile.ZipFile(path).namelist() if name.endswith(".pkl")], path


@pytest.mark.parametrize("model_type", ENCODERS + DECODERS)
def test_a_torch_int8_model_loads_again_with_its_logits_and_no_pickle(model_type, reviews, tokenizer, tmp_path):
    quantized = quantized_in(tmp_path, tiny_model(model_type, 3, tokenizer), reviews, tokenizer)
    loaded = load_artifact(tmp_path)
    assert type(loaded) is type(quantized) and kind_of(loaded) == "torch-int8"
    assert str(loaded) == str(quantized), "the same modules, quantized the same way"
    assert (logits(loaded, tokenizer) - logits(quantized, tokenizer)).abs().max() <= 1e-6
    assert_no_pickle(tmp_path)
    assert size_on_disk(tmp_path) == (tmp_path / TORCH_INT8_FILE).stat().st_size > 0
    with safe_open(tmp_path / TORCH_INT8_FILE, "pt") as file:
        schemes = json.loads(file.metadata()[QUANTIZED_LINEARS])
    assert schemes and all(scheme == {"dtype": "qint8", "qscheme": "per_tensor_affine"} for scheme in schemes.values())


def test_a_per_channel_weight_keeps_its_scales(reviews, tokenizer, tmp_path):
    """The stage quantizes per tensor; a weight quantized per output channel is saved and loaded as one too."""
    quantized = quantized_in(tmp_path / "stage", tiny_model("bert", 2, tokenizer), reviews, tokenizer)
    layer = quantized.bert.encoder.layer[1].output.dense
    weight = layer.weight().dequantize()
    scales = weight.abs().amax(dim=1).double() / 127
    layer.set_weight_bias(torch.quantize_per_channel(weight, scales, torch.zeros(len(scales), dtype=torch.long), 0, torch.qint8),
                          layer.bias())
    save_artifact(quantized, tmp_path / "saved")
    loaded = load_artifact(tmp_path / "saved")
    before, again = layer.weight(), loaded.bert.encoder.layer[1].output.dense.weight()
    assert again.qscheme() == torch.per_channel_affine and torch.equal(again.q_per_channel_scales(), before.q_per_channel_scales())
    assert torch.equal(again.int_repr(), before.int_repr()) and torch.equal(again.q_per_channel_zero_points(), before.q_per_channel_zero_points())
    assert (logits(loaded, tokenizer) - logits(quantized, tokenizer)).abs().max() <= 1e-6
    with safe_open(tmp_path / "saved" / TORCH_INT8_FILE, "pt") as file:
        scheme = json.loads(file.metadata()[QUANTIZED_LINEARS])["bert.encoder.layer.1.output.dense"]
    assert scheme == {"dtype": "qint8", "qscheme": "per_channel_affine", "axis": 0}


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "modernbert", "xlnet", "qwen2"])
def test_a_layer_dropped_model_quantized_loads_again(model_type, reviews, tokenizer, tmp_path):
    """Built again from its config, which records fewer layers (and, where the layers differ, which kinds are left)."""
    context = StageContext(reviews, tokenizer, tmp_path / "dropped", max_length=32, eval_batch_size=32)
    run_stage(DropSettings(strategy="top", k=1), tiny_model(model_type, 3, tokenizer), context)
    quantized = quantized_in(tmp_path / "int8", load_artifact(tmp_path / "dropped"), reviews, tokenizer)
    loaded = load_artifact(tmp_path / "int8")
    assert num_layers(loaded.config) == num_layers(quantized.config) == 2
    assert (logits(loaded, tokenizer) - logits(quantized, tokenizer)).abs().max() <= 1e-6


class WritesMarker:
    """Unpickling it creates a file: what a replaced model_int8.pt could do, harmlessly."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_folder_with_a_pickled_module_is_refused_unread(tmp_path):
    folder, marker = tmp_path / "int8", tmp_path / "unpickled"
    AutoModelForSequenceClassification.from_config(tiny_config("bert", 2)).config.save_pretrained(folder)
    torch.save(WritesMarker(marker), folder / PICKLED_INT8_FILE)
    with pytest.raises(CompressError) as refused:
        load_artifact(folder)
    message = str(refused.value)
    assert len(message.splitlines()) == 1
    for piece in (f"{folder}: its {PICKLED_INT8_FILE} was written by an older compress, a pickled module",
                  "no longer loads pickles from results folders", f"run the same command with {folder} removed, or with --overwrite"):
        assert piece in message, message
    assert not marker.exists(), "the pickle was never loaded"
    torch.load(folder / PICKLED_INT8_FILE, weights_only=False)
    assert marker.exists(), "the file would have run code, had it been loaded as compress loaded it before"


def test_tensors_that_do_not_fit_the_config_are_one_line(reviews, tokenizer, tmp_path):
    quantized_in(tmp_path, tiny_model("bert", 2, tokenizer), reviews, tokenizer)
    path = tmp_path / TORCH_INT8_FILE
    with safe_open(path, "pt") as file:
        metadata = file.metadata()
    tensors = load_file(path)
    tensors["bert.pooler.dense.extra"] = tensors.pop("bert.embeddings.LayerNorm.weight")
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(CompressError) as refused:
        load_artifact(tmp_path)
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"{path}: does not fit the architecture of its config")
    assert "bert.embeddings.LayerNorm.weight" in message and "bert.pooler.dense.extra" in message, message
    save_file(tensors, path)  # no metadata: not a file compress wrote
    with pytest.raises(CompressError, match=r"not a torch-int8 model as compress writes one \(KeyError: 'quantized_linears'\)$"):
        load_artifact(tmp_path)
