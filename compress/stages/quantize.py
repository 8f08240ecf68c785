"""The `quantize` stage: int8 with onnxruntime (dynamic or static), PyTorch, or bitsandbytes; fp16 on CUDA."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from transformers import AutoConfig, AutoModelForSequenceClassification, BitsAndBytesConfig, PreTrainedModel

from compress.data.encoding import padded_batches, tokenize
from compress.errors import CompressError
from compress.exporters import ONNX_DIR, QUANTIZED_FILE
from compress.exporters.onnx_quantize import quantize_dynamic_int8, quantize_static_int8
from compress.pipeline.artifacts import QUANTIZATION_FIELD, Artifact, Kind, OnnxModel
from compress.stages.base import StageContext, StageSettings

Mode = Literal["dynamic-int8", "static-int8", "torch-dynamic-int8", "bnb-8bit", "bnb-4bit", "fp16"]
ONNX_MODES = ("dynamic-int8", "static-int8")


class QuantizeSettings(StageSettings):
    stage: Literal["quantize"] = "quantize"
    mode: Mode
    per_channel: bool = Field(True, description="ONNX int8: one weight scale per output channel.")
    reduce_range: bool = Field(False, description="ONNX int8: 7-bit weights, for CPUs without VNNI.")
    calibration_examples: int = Field(300, ge=1, description="static-int8: training examples to calibrate on.")
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_batch_size: int = Field(8, ge=1)
    bnb_4bit_type: Literal["nf4", "fp4"] = "nf4"
    seed: int = 42

    def input_kind(self) -> Kind:
        return "onnx" if self.mode in ONNX_MODES else "torch"

    def output_kind(self) -> Kind:
        return {"dynamic-int8": "onnx", "static-int8": "onnx", "torch-dynamic-int8": "torch-int8"}.get(self.mode, "torch")

    def record(self) -> dict:
        return {"mode": self.mode, **self.model_dump(exclude={"stage", "name", "source", "mode"})}


def machine_cannot_run(mode: str) -> str | None:
    """Why this machine cannot run `mode`, or None; checked before a run starts."""
    if mode == "fp16" and not torch.cuda.is_available():
        return "fp16 needs a CUDA device and this machine has none (use dynamic-int8 on a CPU)"
    if mode.startswith("bnb-"):
        try:
            import bitsandbytes  # noqa: F401
        except Exception as error:  # a broken native library raises more than ImportError
            return f"{mode} needs bitsandbytes, which does not load here ({error})"
    return None


TRANSFORMERS_JS_CONFIG = "transformers.js_config"


def _quantized_path(context: StageContext) -> Path:
    path = context.output_dir / ONNX_DIR / QUANTIZED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_onnx_config(source: OnnxModel, settings: QuantizeSettings, folder: Path) -> None:
    """The source's config, with how it was quantized, and (as only the int8 graph ships) the dtype
    transformers.js should load by default: q8, its name for `model_quantized.onnx`."""
    config = AutoConfig.from_pretrained(source.folder)
    setattr(config, QUANTIZATION_FIELD, settings.record())
    setattr(config, TRANSFORMERS_JS_CONFIG, {"dtype": "q8"})
    config.save_pretrained(folder)


def _calibration_feeds(context: StageContext, settings: QuantizeSettings, inputs: set[str]) -> Iterator[dict]:
    train = context.data.train.shuffle(seed=settings.seed)
    chosen = train.select(range(min(settings.calibration_examples, len(train))))
    for batch in padded_batches(tokenize(chosen, context.tokenizer, context.max_length), context.tokenizer, settings.calibration_batch_size):
        yield {name: tensor.numpy().astype(np.int64) for name, tensor in batch.items() if name in inputs}


def _onnx_dynamic(model: OnnxModel, settings: QuantizeSettings, context: StageContext) -> OnnxModel:
    quantize_dynamic_int8(model.path, _quantized_path(context), settings.per_channel, settings.reduce_range)
    _write_onnx_config(model, settings, context.output_dir)
    return OnnxModel(context.output_dir)


def _onnx_static(model: OnnxModel, settings: QuantizeSettings, context: StageContext) -> OnnxModel:
    from compress.exporters.onnx_runtime import ort_session

    inputs = {i.name for i in ort_session(model.path).get_inputs()}
    feeds = _calibration_feeds(context, settings, inputs)
    quantize_static_int8(
        model.path, _quantized_path(context), feeds, settings.calibration_method, settings.per_channel, settings.reduce_range
    )
    _write_onnx_config(model, settings, context.output_dir)
    return OnnxModel(context.output_dir)


def _torch_dynamic(model: PreTrainedModel, settings: QuantizeSettings, context: StageContext) -> PreTrainedModel:
    quantized = torch.ao.quantization.quantize_dynamic(model.cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8)
    setattr(quantized.config, QUANTIZATION_FIELD, settings.record())
    return quantized


def _bitsandbytes(model: PreTrainedModel, settings: QuantizeSettings, context: StageContext) -> PreTrainedModel:
    """Reload through BitsAndBytesConfig, keeping the task head (everything outside the encoder) in full precision."""
    head = [name for name, _ in model.named_children() if name != model.base_model_prefix]
    cuda = torch.cuda.is_available()
    if settings.mode == "bnb-8bit":
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=head)
    else:
        compute = torch.float16 if cuda else torch.float32
        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=settings.bnb_4bit_type, bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=head
        )
    with tempfile.TemporaryDirectory() as scratch:
        model.save_pretrained(scratch)
        try:
            quantized = AutoModelForSequenceClassification.from_pretrained(
                scratch, quantization_config=config, device_map="cuda" if cuda else "cpu",
                dtype=torch.float16 if cuda else torch.float32,
            )
        except (RuntimeError, ImportError, ValueError, NotImplementedError) as error:
            where = "this CUDA device" if cuda else "the CPU (it may need a CUDA device)"
            raise CompressError(f"quantize: bitsandbytes cannot run {settings.mode} on {where}: {error}") from None
    setattr(quantized.config, QUANTIZATION_FIELD, settings.record())
    return quantized


def _fp16(model: PreTrainedModel, settings: QuantizeSettings, context: StageContext) -> PreTrainedModel:
    if not torch.cuda.is_available():
        raise CompressError(f"quantize: {machine_cannot_run('fp16')}")
    half = model.half().to("cuda")
    setattr(half.config, QUANTIZATION_FIELD, settings.record())
    return half


MODES: dict[str, Callable[[Artifact, QuantizeSettings, StageContext], Artifact]] = {
    "dynamic-int8": _onnx_dynamic,
    "static-int8": _onnx_static,
    "torch-dynamic-int8": _torch_dynamic,
    "bnb-8bit": _bitsandbytes,
    "bnb-4bit": _bitsandbytes,
    "fp16": _fp16,
}


def quantize(model: Artifact, settings: QuantizeSettings, context: StageContext) -> Artifact:
    return MODES[settings.mode](model, settings, context)
