"""The `quantize` stage and its registry of methods: int8 with onnxruntime (dynamic or static), PyTorch or
bitsandbytes, fp16 on CUDA, OpenVINO (fp32, bf16, or int8 calibrated by NNCF), and `best`: the fastest of
those that run here within a score budget, chosen by timing them on this machine.

A method is one entry of `METHODS`, in the manner of torchao's `quantize_(model, config)`: a settings
class (the recipe's `mode` picks it, and only its fields are accepted), the kinds of model it takes
and makes, what the machine needs for it, its name in sweeps, tables and plots, and the function
that applies it. Everything else (recipe checks, sweeps, report labels) reads these entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Union

import numpy as np
import torch
from pydantic import Field
from transformers import AutoConfig, PretrainedConfig

from compress.data.encoding import model_inputs, padded_batches, tokenize
from compress.data.seeds import Seed
from compress.errors import CompressError
from compress.exporters import ONNX_DIR, QUANTIZED_FILE
from compress.exporters.onnx_quantize import quantize_dynamic_int8, quantize_static_int8
from compress.exporters.onnx_runtime import ort_session
from compress.exporters.openvino_convert import IR_FILE, computed_precision, convert_onnx
from compress.exporters.openvino_convert import quantize_int8 as quantize_openvino_int8
from compress.exporters.torch_quantize import QuantizationError, bitsandbytes, fp16, torch_dynamic_int8
from compress.models.artifacts import (
    PADDING_SETTING,
    QUANTIZATION_FIELD,
    Artifact,
    Kind,
    OnnxModel,
    OpenVinoModel,
    output_name,
)
from compress.models.embedding import embed, embedding_of
from compress.registry import Registry
from compress.stages.base import ModelDescription, StageContext, StageFacts, StageOutput, StageSettings
from compress.stages.export import ORT_FORMAT_HELP, PARITY_EXAMPLES, OrtFormatFacts, onnx_precision, parity_batch, write_ort_format


class QuantizeSettings(StageSettings):
    """Fields every quantization method takes."""

    stage: Literal["quantize"] = "quantize"
    mode: str
    seed: Seed = Field(42, description="Which training examples calibration draws (static-int8).")

    @property
    def method(self) -> QuantizationMethod:
        return METHODS[self.mode]

    def input_kind(self) -> Kind:
        return self.method.takes

    def output_kind(self) -> Kind:
        return self.method.makes

    def wants_gpu(self) -> bool:
        return self.method.wants_gpu

    def task_data_use(self) -> str | None:
        return "checks (or calibrates) the quantized model on the task's examples"

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
    ort_format: bool = Field(False, description=ORT_FORMAT_HELP)
    added_later: ClassVar[dict[str, object]] = {"ort_format": False}


DEFAULT_INT8 = "dynamic-int8"
"""The int8 method every benchmark's baseline row and a goal search's defaults compare with: onnxruntime's dynamic int8."""


class DynamicInt8Settings(OnnxInt8Settings):
    mode: Literal["dynamic-int8"] = DEFAULT_INT8


class CalibratedSettings(QuantizeSettings):
    """A method that fixes activation ranges on training examples before it runs."""

    calibration_examples: int = Field(300, ge=1, description="Training examples to calibrate on.")
    calibration_batch_size: int = Field(8, ge=1)


class StaticInt8Settings(OnnxInt8Settings, CalibratedSettings):
    mode: Literal["static-int8"]
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"


class OpenVinoSettings(QuantizeSettings):
    """The ONNX graph converted to OpenVINO IR and run by OpenVINO's CPU plugin."""

    tolerance: float = Field(1e-3, gt=0, description="Largest allowed |OpenVINO logit - ONNX logit| (fp32 only: "
                             "bf16 and int8 change logits by design; their difference and label agreement are reported).")
    parity_examples: int = Field(32, ge=2, description="Dev examples, of spread lengths, in the parity batch.")
    pad_to_multiple_of: int | None = Field(32, ge=8, description=(
        "compress runs each batch padded to the next multiple of this many tokens, on a model compiled for that "
        "fixed shape: OpenVINO runs a fixed shape faster, and prepares a dynamic one again for every new length "
        "(4-layer MiniLM int8 on a Zen 5: 1.1x at 128 tokens, 1.5x at SST-2's lengths). 16 pads less where most "
        "inputs run just past 32 tokens (bench/results/fastest/zen5/pad_multiples_by_task.md); at least 8, as a smaller "
        "multiple compiles a model for nearly every length. null: one model for every shape."))
    added_later: ClassVar[dict[str, object]] = {PADDING_SETTING: None}


class OpenVinoFp32Settings(OpenVinoSettings):
    mode: Literal["openvino-fp32"]


class OpenVinoBf16Settings(OpenVinoSettings):
    mode: Literal["openvino-bf16"]


class OpenVinoInt8Settings(OpenVinoSettings, CalibratedSettings):
    mode: Literal["openvino-int8"]
    calibration_batch_size: int = Field(1, ge=1)


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


def runs_anywhere() -> str | None:
    return None


def _needs_openvino() -> str | None:
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as error:
        return f"OpenVINO is not installed here ({error}); pip install openvino nncf"
    return None


def _needs_bf16_cpu() -> str | None:
    from compress.exporters.openvino_convert import cpu_capabilities

    if reason := _needs_openvino():
        return reason
    found = cpu_capabilities()
    return None if "BF16" in found else f"openvino-bf16 needs a CPU that computes in bf16 (AVX512-BF16 or AMX); this one offers {', '.join(found)}"


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


def _calibration_feeds(model: OnnxModel, context: StageContext, settings: CalibratedSettings) -> Iterator[dict]:
    """Padded batches of seeded training examples, as the graph's inputs take them. The graph is read now,
    not at the first feed: onnxruntime's quantizer draws the feeds from a scratch working directory, where
    a relative model path would not resolve."""
    inputs = {i.name for i in ort_session(model.path).get_inputs()}
    train = context.data.train.shuffle(seed=settings.seed)
    chosen = train.select(range(min(settings.calibration_examples, len(train))))
    chosen = model_inputs(context.data.task, chosen)
    batches = padded_batches(tokenize(chosen, context.tokenizer, context.max_length), context.tokenizer, settings.calibration_batch_size)
    return ({name: tensor.numpy().astype(np.int64) for name, tensor in batch.items() if name in inputs} for batch in batches)


def _onnx_int8_output(source: OnnxModel, settings: OnnxInt8Settings, context: StageContext) -> StageOutput:
    quantized = _onnx_output(source, settings, context)
    if not settings.ort_format:
        return StageOutput(quantized)
    batch = parity_batch(context, PARITY_EXAMPLES)
    ort_difference = write_ort_format(quantized.path, batch, quantized.predictor()(batch), output_name(quantized.config))
    return StageOutput(quantized, OrtFormatFacts(ort_format_max_abs_logit_diff=ort_difference))


def _onnx_dynamic(model: OnnxModel, settings: DynamicInt8Settings, context: StageContext) -> StageOutput:
    quantize_dynamic_int8(model.path, _quantized_path(context), settings.per_channel, settings.reduce_range)
    return _onnx_int8_output(model, settings, context)


def _onnx_static(model: OnnxModel, settings: StaticInt8Settings, context: StageContext) -> StageOutput:
    feeds = _calibration_feeds(model, context, settings)
    quantize_static_int8(
        model.path, _quantized_path(context), feeds, settings.calibration_method, settings.per_channel, settings.reduce_range
    )
    return _onnx_int8_output(model, settings, context)


class OpenVinoFacts(StageFacts):
    computed_precision: str
    """What OpenVINO's CPU plugin computed the float operations in (f32, bf16)."""
    parity_max_abs_logit_diff: float
    """Against the ONNX graph it was made from (itself checked against PyTorch when exported)."""
    parity_label_agreement: float | None
    """Share of parity examples whose predicted label stayed the same (None for regression)."""
    parity_examples: int


def _openvino(precision: str | None) -> Callable:
    """A method that converts the ONNX graph to OpenVINO IR (int8: calibrated by NNCF on training
    examples), computing in `precision` ('fp32', 'bf16'; None: OpenVINO's choice for what int8 leaves)."""

    def apply(model: OnnxModel, settings: OpenVinoSettings, context: StageContext) -> StageOutput:
        if quantized := getattr(model.config, QUANTIZATION_FIELD, None):
            raise CompressError(f"{settings.mode}: starts from an fp32 ONNX export, and its source is already quantized "
                                f"({quantized['mode']})")
        ir_path = context.output_dir / IR_FILE
        if isinstance(settings, OpenVinoInt8Settings):
            batches = _calibration_feeds(model, context, settings)
            quantize_openvino_int8(model.path, ir_path, batches, subset_size=-(-settings.calibration_examples // settings.calibration_batch_size))
        else:
            convert_onnx(model.path, ir_path)
        config = AutoConfig.from_pretrained(model.folder)
        setattr(config, QUANTIZATION_FIELD, {**settings.record(), "compute_precision": precision})
        config.save_pretrained(context.output_dir)
        context.tokenizer.save_pretrained(context.output_dir)  # padding to fixed shapes pads as the tokenizer does
        converted = OpenVinoModel(context.output_dir)

        batch = parity_batch(context, settings.parity_examples)
        ours, reference = converted.predictor()(batch), model.predictor()(batch)
        difference = float(np.abs(ours - reference).max())
        if precision == "fp32" and difference > settings.tolerance:
            raise CompressError(f"{settings.mode}: OpenVINO logits differ from the ONNX graph's by {difference:.2e} on "
                                f"{len(ours)} dev examples (tolerance {settings.tolerance:g})")
        computed = computed_precision(converted.compiled())
        # a regression head's one output has no label to agree on, nor an embedder's vector
        labelled = ours.shape[-1] > 1 and not embedding_of(config)
        agreement = float((ours.argmax(-1) == reference.argmax(-1)).mean()) if labelled else None
        return StageOutput(converted, OpenVinoFacts(computed_precision=computed, parity_max_abs_logit_diff=difference,
                                                    parity_label_agreement=agreement, parity_examples=len(ours)))

    return apply


BATCH_CHECK_EXAMPLES = 16
MIN_BATCH_AGREEMENT = 0.9
"""Share of dev examples whose label must not change between a padded batch and the example alone, but for
changes within NOISE_LOGITS: a kernel that mixes up rows moves half of them (bitsandbytes 0.50.2's int8 on an
H200: labels agreed on 0.56 with logits 1.78 apart, bench/results/gpu/gpu_check.md)."""
NOISE_LOGITS = 0.1
"""A label that flips while the example's logits move by at most this much is noise, not a fault: int8
activation scales taken over a whole batch move logits by a few hundredths, which flips an example the
model is torn on (a MiniLM trained for 50 steps: 2 of 16 labels flipped by logit changes of at most 0.05)."""


class BatchConsistencyFacts(StageFacts):
    """How far the quantized model's answers for a padded batch of dev examples are from its answers for
    each example alone (an fp32 model: float noise)."""

    batch_max_abs_logit_diff: float
    batch_label_agreement: float | None
    """Share of examples whose label stayed; None for a regression head, whose one output has no label."""
    batch_flips_beyond_noise: int | None
    """Labels that changed while the example's logits moved by more than NOISE_LOGITS."""
    batch_examples: int

    def consistent_share(self) -> float | None:
        """Share of examples whose label stayed, or changed within noise."""
        return None if self.batch_flips_beyond_noise is None else 1 - self.batch_flips_beyond_noise / self.batch_examples


def batch_consistency(model, batch: dict) -> BatchConsistencyFacts:
    """Runs `batch` (padded) at once and each of its examples alone, without padding."""
    device = next(model.parameters()).device
    mask = batch["attention_mask"].bool()
    embedder = embedding_of(getattr(model, "config", None)) is not None

    def answers(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v.to(device) for k, v in inputs.items()}
        return (embed(model, inputs)[0] if embedder else model(**inputs).logits).float().cpu()

    with torch.no_grad():
        together = answers(batch)
        alone = torch.cat([answers({k: v[i : i + 1, mask[i]] for k, v in batch.items()}) for i in range(len(mask))])
    moved = (together - alone).abs().amax(-1)
    agreement = flips = None
    if together.shape[-1] > 1 and not embedder:  # labels: not a value's, nor a vector's
        flipped = together.argmax(-1) != alone.argmax(-1)
        agreement = float((~flipped).float().mean())
        flips = int((flipped & (moved > NOISE_LOGITS)).sum())
    return BatchConsistencyFacts(batch_max_abs_logit_diff=float(moved.max()), batch_label_agreement=agreement,
                                 batch_flips_beyond_noise=flips, batch_examples=len(mask))


def _in_torch(convert: Callable) -> Callable:
    """A method that converts a PyTorch model, with how it was quantized kept in its config; refused when
    the converted model answers a batch otherwise than its examples one by one."""

    def apply(model, settings: QuantizeSettings, context: StageContext) -> StageOutput:
        try:
            converted = convert(model, settings)
        except QuantizationError as error:
            raise CompressError(f"quantize: {error}") from None
        setattr(converted.config, QUANTIZATION_FIELD, settings.record())
        facts = batch_consistency(converted, parity_batch(context, BATCH_CHECK_EXAMPLES))
        consistent = facts.consistent_share()
        if consistent is not None and consistent < MIN_BATCH_AGREEMENT:
            raise CompressError(
                f"quantize: {settings.mode} on this machine gives a batch other answers than one example at a time "
                f"({facts.batch_flips_beyond_noise} of {facts.batch_examples} dev examples change label, logits differ by up to "
                f"{facts.batch_max_abs_logit_diff:.2f}): its kernels are wrong here; choose another mode")
        return StageOutput(converted, facts)

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
    apply: Callable[[Artifact, QuantizeSettings, StageContext], StageOutput]
    wants_gpu: bool = False
    """Runs on a CUDA device where there is one."""
    matmul_dtype: str = "fp32"
    """What its matrix products compute in: which of the host's MatMul peaks a timing is set against."""
    chooses: bool = False
    """Picks one of the other methods on this machine (`best`): neither a candidate itself nor a sweep precision."""

    def settings_for(self, mode: str, seed: int, calibration_examples: int, **fields) -> QuantizeSettings:
        """Its settings under `mode`, with the seed and calibration size shared by a sweep or a `best` stage
        where it takes them."""
        shared = {"seed": seed, "calibration_examples": calibration_examples}
        return self.settings(mode=mode, **{k: v for k, v in shared.items() if k in self.settings.model_fields}, **fields)


METHODS: Registry[QuantizationMethod] = Registry("quantization method")
"""By the `mode` a recipe names; `best` is added by compress/stages/fastest.py, which chooses among the others."""
METHODS.add(DEFAULT_INT8, QuantizationMethod(DynamicInt8Settings, "onnx", "onnx", runs_anywhere, "onnx-int8-dynamic", "int8", "s", _onnx_dynamic,
    matmul_dtype="int8"))
METHODS.add("static-int8", QuantizationMethod(StaticInt8Settings, "onnx", "onnx", runs_anywhere, "onnx-int8-static", "int8s", "D", _onnx_static,
    matmul_dtype="int8"))
METHODS.add("torch-dynamic-int8", QuantizationMethod(TorchDynamicInt8Settings, "torch", "torch-int8", runs_anywhere, "torch-int8", "torch-int8", "v",
    _in_torch(lambda model, settings: torch_dynamic_int8(model)), matmul_dtype="int8"))
METHODS.add("bnb-8bit", QuantizationMethod(Bnb8bitSettings, "torch", "torch", _needs_bitsandbytes, "bnb-8bit", "bnb-8bit", "P",
    _in_torch(lambda model, settings: bitsandbytes(model, 8)), wants_gpu=True, matmul_dtype="int8"))
METHODS.add("bnb-4bit", QuantizationMethod(Bnb4bitSettings, "torch", "torch", _needs_bitsandbytes, "bnb-4bit", "bnb-4bit", "X",
    _in_torch(lambda model, settings: bitsandbytes(model, 4, settings.bnb_4bit_type)), wants_gpu=True,
    matmul_dtype="fp16"))
METHODS.add("fp16", QuantizationMethod(Fp16Settings, "torch", "torch", _needs_cuda, "fp16", "fp16", "*",
    _in_torch(lambda model, settings: fp16(model)), wants_gpu=True, matmul_dtype="fp16"))
METHODS.add("openvino-fp32", QuantizationMethod(OpenVinoFp32Settings, "onnx", "openvino", _needs_openvino, "openvino-fp32", "ov", "h",
    _openvino("fp32")))
METHODS.add("openvino-bf16", QuantizationMethod(OpenVinoBf16Settings, "onnx", "openvino", _needs_bf16_cpu, "openvino-bf16", "ov-bf16", "p",
    _openvino("bf16"), matmul_dtype="bf16"))
METHODS.add("openvino-int8", QuantizationMethod(OpenVinoInt8Settings, "onnx", "openvino", _needs_openvino, "openvino-int8", "ov-int8", "d",
    _openvino(None), matmul_dtype="int8"))


def candidate_methods() -> dict[str, QuantizationMethod]:
    """The methods `best` may choose from: those that start from an ONNX export."""
    return {mode: method for mode, method in METHODS.items() if method.takes == "onnx" and not method.chooses}


def any_quantize_settings() -> object:
    """The settings of every method, told apart by `mode`: taken once all are registered (compress/stages/__init__.py)."""
    return Annotated[Union[tuple(method.settings for method in METHODS.values())], Field(discriminator="mode")]


def quantize(model: Artifact, settings: QuantizeSettings, context: StageContext) -> StageOutput:
    return settings.method.apply(model, settings, context)
