"""The `quantize` stage and its registry of methods: int8 with onnxruntime (dynamic or static), PyTorch or
bitsandbytes, and fp16 on CUDA.

A method is one entry of `METHODS`, in the manner of torchao's `quantize_(model, config)`: a settings
class (the recipe's `mode` picks it, and only its fields are accepted), the kinds of model it takes
and makes, what the machine needs for it, its name in sweeps, tables and plots, and the function
that applies it. Everything else (recipe checks, sweeps, report labels) reads these entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
import torch
from pydantic import Field
from transformers import AutoConfig, PretrainedConfig

from compress.data.encoding import padded_batches, tokenize
from compress.errors import CompressError
from compress.exporters import ONNX_DIR, QUANTIZED_FILE
from compress.exporters.onnx_quantize import quantize_dynamic_int8, quantize_static_int8
from compress.exporters.torch_quantize import QuantizationError, bitsandbytes, fp16, torch_dynamic_int8
from compress.pipeline.artifacts import QUANTIZATION_FIELD, Artifact, Kind, OnnxModel
from compress.stages.base import ModelDescription, StageContext, StageOutput, StageSettings
from compress.stages.export import onnx_precision


class QuantizeSettings(StageSettings):
    """Fields every quantization method takes."""

    stage: Literal["quantize"] = "quantize"
    mode: str
    seed: int = Field(42, description="Which training examples calibration draws (static-int8).")

    @property
    def method(self) -> QuantizationMethod:
        return METHODS[self.mode]

    def input_kind(self) -> Kind:
        return self.method.takes

    def output_kind(self) -> Kind:
        return self.method.makes

    def wants_gpu(self) -> bool:
        return self.method.wants_gpu

    def check_chain(self, config: PretrainedConfig, layers_before: int, train_examples: int) -> None:
        if reason := self.method.cannot_run():
            raise CompressError(f"mode: {reason}")

    def describe(self, described: ModelDescription) -> None:
        onnx = self.method.takes == "onnx"
        described.precision = onnx_precision(self.method.precision, described.optimization) if onnx else self.method.precision

    def record(self) -> dict:
        """How the model was quantized, kept in its config for model cards and loading."""
        return {"mode": self.mode, **self.model_dump(exclude={"stage", "name", "source", "mode"})}


class OnnxInt8Settings(QuantizeSettings):
    per_channel: bool = Field(True, description="One weight scale per output channel.")
    reduce_range: bool = Field(False, description="7-bit weights, for CPUs without VNNI.")


class DynamicInt8Settings(OnnxInt8Settings):
    mode: Literal["dynamic-int8"]


class StaticInt8Settings(OnnxInt8Settings):
    mode: Literal["static-int8"]
    calibration_examples: int = Field(300, ge=1, description="Training examples to calibrate on.")
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_batch_size: int = Field(8, ge=1)


class TorchDynamicInt8Settings(QuantizeSettings):
    mode: Literal["torch-dynamic-int8"]


class Bnb8bitSettings(QuantizeSettings):
    mode: Literal["bnb-8bit"]


class Bnb4bitSettings(QuantizeSettings):
    mode: Literal["bnb-4bit"]
    bnb_4bit_type: Literal["nf4", "fp4"] = "nf4"


class Fp16Settings(QuantizeSettings):
    mode: Literal["fp16"]


# --- what each method needs ------------------------------------------------------------------------


def _needs_cuda() -> str | None:
    return None if torch.cuda.is_available() else "fp16 needs a CUDA device and this machine has none (use dynamic-int8 on a CPU)"


def _needs_bitsandbytes() -> str | None:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as error:  # a broken native library raises more than ImportError
        return f"bitsandbytes does not load here ({error})"
    return None


def _runs_anywhere() -> str | None:
    return None


# --- how each method is applied --------------------------------------------------------------------

TRANSFORMERS_JS_CONFIG = "transformers.js_config"


def _quantized_path(context: StageContext) -> Path:
    path = context.output_dir / ONNX_DIR / QUANTIZED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _onnx_output(source: OnnxModel, settings: QuantizeSettings, context: StageContext) -> OnnxModel:
    """The source's config, with how it was quantized, and (as only the int8 graph ships) the dtype
    transformers.js should load by default: q8, its name for `model_quantized.onnx`."""
    config = AutoConfig.from_pretrained(source.folder)
    setattr(config, QUANTIZATION_FIELD, settings.record())
    setattr(config, TRANSFORMERS_JS_CONFIG, {"dtype": "q8"})
    config.save_pretrained(context.output_dir)
    return OnnxModel(context.output_dir)


def _calibration_feeds(context: StageContext, settings: StaticInt8Settings, inputs: set[str]) -> Iterator[dict]:
    train = context.data.train.shuffle(seed=settings.seed)
    chosen = train.select(range(min(settings.calibration_examples, len(train))))
    for batch in padded_batches(tokenize(chosen, context.tokenizer, context.max_length), context.tokenizer, settings.calibration_batch_size):
        yield {name: tensor.numpy().astype(np.int64) for name, tensor in batch.items() if name in inputs}


def _onnx_dynamic(model: OnnxModel, settings: DynamicInt8Settings, context: StageContext) -> OnnxModel:
    quantize_dynamic_int8(model.path, _quantized_path(context), settings.per_channel, settings.reduce_range)
    return _onnx_output(model, settings, context)


def _onnx_static(model: OnnxModel, settings: StaticInt8Settings, context: StageContext) -> OnnxModel:
    from compress.exporters.onnx_runtime import ort_session

    inputs = {i.name for i in ort_session(model.path).get_inputs()}
    feeds = _calibration_feeds(context, settings, inputs)
    quantize_static_int8(
        model.path, _quantized_path(context), feeds, settings.calibration_method, settings.per_channel, settings.reduce_range
    )
    return _onnx_output(model, settings, context)


def _in_torch(convert: Callable) -> Callable:
    """A method that converts a PyTorch model, with how it was quantized kept in its config."""

    def apply(model, settings: QuantizeSettings, context: StageContext):
        try:
            converted = convert(model, settings)
        except QuantizationError as error:
            raise CompressError(f"quantize: {error}") from None
        setattr(converted.config, QUANTIZATION_FIELD, settings.record())
        return converted

    return apply


@dataclass(frozen=True)
class QuantizationMethod:
    settings: type[QuantizeSettings]
    takes: Kind
    makes: Kind
    cannot_run: Callable[[], str | None]
    """Why this machine cannot run the method, or None; asked before any work."""
    precision: str
    """Its name in sweeps, tables and plots (an ONNX method's gets the optimizer level of its export appended)."""
    plot_label: str
    """Beside a point in the Pareto plot."""
    plot_marker: str
    apply: Callable[[Artifact, QuantizeSettings, StageContext], Artifact]
    wants_gpu: bool = False
    """Runs on a CUDA device where there is one."""


METHODS: dict[str, QuantizationMethod] = {
    "dynamic-int8": QuantizationMethod(DynamicInt8Settings, "onnx", "onnx", _runs_anywhere, "onnx-int8-dynamic", "int8", "s", _onnx_dynamic),
    "static-int8": QuantizationMethod(StaticInt8Settings, "onnx", "onnx", _runs_anywhere, "onnx-int8-static", "int8s", "D", _onnx_static),
    "torch-dynamic-int8": QuantizationMethod(TorchDynamicInt8Settings, "torch", "torch-int8", _runs_anywhere, "torch-int8", "torch-int8", "v",
                                             _in_torch(lambda model, settings: torch_dynamic_int8(model))),
    "bnb-8bit": QuantizationMethod(Bnb8bitSettings, "torch", "torch", _needs_bitsandbytes, "bnb-8bit", "bnb-8bit", "P",
                                   _in_torch(lambda model, settings: bitsandbytes(model, 8)), wants_gpu=True),
    "bnb-4bit": QuantizationMethod(Bnb4bitSettings, "torch", "torch", _needs_bitsandbytes, "bnb-4bit", "bnb-4bit", "X",
                                   _in_torch(lambda model, settings: bitsandbytes(model, 4, settings.bnb_4bit_type)), wants_gpu=True),
    "fp16": QuantizationMethod(Fp16Settings, "torch", "torch", _needs_cuda, "fp16", "fp16", "*",
                               _in_torch(lambda model, settings: fp16(model)), wants_gpu=True),
}

AnyQuantizeSettings = Annotated[Union[tuple(method.settings for method in METHODS.values())], Field(discriminator="mode")]


def quantize(model: Artifact, settings: QuantizeSettings, context: StageContext) -> StageOutput:
    return StageOutput(settings.method.apply(model, settings, context))
