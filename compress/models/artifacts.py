"""The kinds of model a stage can hand on, and how each is saved, loaded and run.

- `torch`: a `PreTrainedModel` saved with `save_pretrained` (also bitsandbytes and fp16 models);
- `torch-int8`: a PyTorch model whose Linear layers were dynamically quantized; its packed
  weights do not fit `save_pretrained`, so `config.json` and `model_int8.safetensors` hold what rebuilds it:
  the float tensors, and each quantized Linear's int8 weight, scale(s) and zero point(s) (no pickle, which
  would run code from a replaced file in a shared results folder);
- a runtime model (`RUNTIMES`): a folder of files another engine runs, beside `config.json` and the
  tokenizer, that its stage wrote there:
  - `onnx` (`OnnxModel`): `onnx/model.onnx` (or `onnx/model_quantized.onnx`), the layout optimum's
    ORTModel and transformers.js load as it is, run by onnxruntime;
  - `openvino` (`OpenVinoModel`): `openvino_model.xml` and `.bin`, the layout optimum-intel's
    OVModelForSequenceClassification loads, run by OpenVINO.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import ClassVar, Literal, Union

import numpy as np
import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from torch.nn.functional import pad
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from compress.errors import CompressError, excerpt, failure, one_line
from compress.exporters import onnx_file
from compress.exporters.openvino_convert import IR_FILE
from compress.exporters.torch_quantize import torch_dynamic_int8
from compress.folders import model_folder
from compress.models.embedding import SENTENCE_EMBEDDING, embed, embedding_of
from compress.models.loading import count_parameters, load_config, load_saved, load_tokenizer, saved_class
from compress.registry import Registry
from compress.surgery.architectures import max_sequence_length

Kind = Literal["torch", "onnx", "torch-int8", "openvino", "runtime"]
"""What a stage takes and makes; 'runtime': ONNX or OpenVINO, whichever a stage chose as it ran."""

TORCH_INT8_FILE = "model_int8.safetensors"
PICKLED_INT8_FILE = "model_int8.pt"
"""What compress wrote for a torch-int8 model before: the module pickled whole. Refused, never loaded."""
QUANTIZED_LINEARS = "quantized_linears"
"""Metadata of TORCH_INT8_FILE: JSON of each quantized Linear's name and how its weight is quantized."""
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx_data", ".data")


Predictor = Callable[[dict[str, torch.Tensor]], np.ndarray]
"""Maps one padded batch of inputs to its logits (an embedder: its sentence vectors); lets every kind of model share
evaluation and timing."""


def output_name(config: PretrainedConfig) -> str:
    """The graph output a runtime model is run for: a classifier's logits, an embedder's sentence vectors."""
    return SENTENCE_EMBEDDING if embedding_of(config) else "logits"

QUANTIZATION_FIELD = "compress_quantization"
"""Config field recording how a model was quantized (mode and settings), for cards and loading."""

PADDING_SETTING = "pad_to_multiple_of"
"""The quantization setting of a model run padded to fixed shapes (OpenVINO's): the multiple of tokens."""


@dataclass
class RuntimeModel(ABC):
    """A model folder that another engine than PyTorch runs."""

    folder: Path
    kind: ClassVar[Kind]

    @classmethod
    @abstractmethod
    def found_in(cls, folder: Path) -> bool:
        """Whether `folder` holds this kind's files."""

    @cached_property
    def config(self) -> PretrainedConfig:
        return AutoConfig.from_pretrained(self.folder)

    @abstractmethod
    def predictor(self, threads: int | None = None) -> Predictor:
        """Logits from the engine, with `threads` compute threads (None: as many as PyTorch computes with,
        so a process given fewer cores than the machine has, a test worker or a Ray task, keeps to them)."""

    def device(self) -> str:
        """Where the engine runs it: 'cuda' or 'cpu'."""
        return "cpu"


def _numpy_feed(batch: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, np.ndarray]:
    """The batch as the int64 arrays a graph takes; inputs it does not take are left out."""
    return {name: tensor.numpy().astype(np.int64) for name, tensor in batch.items() if name in wanted}


def onnx_predictor(path: Path, threads: int | None = None, output: str = "logits") -> Predictor:
    """The `output` of an onnxruntime session on the graph at `path` (.onnx, or onnxruntime's .ort)."""
    from compress.exporters.onnx_runtime import ort_session

    session = ort_session(path, threads or torch.get_num_threads())
    wanted = {i.name for i in session.get_inputs()}
    return lambda batch: session.run([output], _numpy_feed(batch, wanted))[0]


RUNTIMES: Registry[type[RuntimeModel]] = Registry("runtime")
"""Each kind of runtime model, by its `kind`; a folder is loaded as the first whose files it holds."""


class OnnxModel(RuntimeModel):
    kind = "onnx"

    @classmethod
    def found_in(cls, folder: Path) -> bool:
        return onnx_file(folder) is not None

    @property
    def path(self) -> Path:
        return onnx_file(self.folder)

    def predictor(self, threads: int | None = None) -> Predictor:
        return onnx_predictor(self.path, threads, output_name(self.config))

    def device(self) -> str:
        from compress.exporters.onnx_runtime import onnx_device

        return onnx_device()


RUNTIMES.add(OnnxModel.kind, OnnxModel)


class OpenVinoModel(RuntimeModel):
    kind = "openvino"

    @classmethod
    def found_in(cls, folder: Path) -> bool:
        return (folder / IR_FILE).is_file()

    @property
    def path(self) -> Path:
        return self.folder / IR_FILE

    @property
    def quantization(self) -> dict:
        """How its quantize stage made it and asks for it to be run (QUANTIZATION_FIELD; empty for other folders)."""
        return getattr(self.config, QUANTIZATION_FIELD, None) or {}

    @cached_property
    def ir(self):
        """The IR read once: fixed-shape compilations are made from copies of it that share its weights."""
        from compress.exporters.openvino_convert import read_ir

        return read_ir(self.path)

    def compiled(self, threads: int | None = None, input_shape: tuple[int, int] | None = None):
        """The IR compiled by OpenVINO's CPU plugin in the precision its method asks for (`compute_precision`:
        'fp32', 'bf16'; None: OpenVINO's choice), for inputs of any shape or of the one `input_shape`."""
        from compress.exporters.openvino_convert import compile_ir, with_input_shape

        model = self.path if input_shape is None else with_input_shape(self.ir, *input_shape)
        return compile_ir(model, threads or torch.get_num_threads(), self.quantization.get("compute_precision"))

    def predictor(self, threads: int | None = None) -> Predictor:
        if multiple := self.quantization.get(PADDING_SETTING):
            return padded_predictor(self, multiple, threads)
        return compiled_predictor(self.compiled(threads), output_name(self.config))


RUNTIMES.add(OpenVinoModel.kind, OpenVinoModel)


def compiled_predictor(compiled, output: str) -> Predictor:
    """The `output` of a model OpenVINO compiled; inputs it does not take are left out."""
    wanted = {i.any_name for i in compiled.inputs}
    chosen = compiled.output(output)
    return lambda batch: compiled(_numpy_feed(batch, wanted))[chosen]


FIXED_SHAPES_KEPT = 16
"""Fixed-shape compilations a padded OpenVINO predictor keeps: every padded length up to 256 tokens at a multiple
of 16 (512 at 32). Each holds its own packed weights (about 2.5 times the IR's size); one let go is compiled
again (about half a second for a 6-layer MPNet) when next needed, which inputs cycling through more shapes pay
often (bench/openvino_shapes_cost.py)."""


def padded_predictor(model: OpenVinoModel, multiple: int, threads: int | None = None) -> Predictor:
    """Logits from compilations of `model` for fixed shapes, one per batch size and padded length: each batch
    is padded, on its tokenizer's padding side and masked out, to the next multiple of `multiple` tokens
    (never past what the model's positions serve), so that a few fixed shapes serve every length."""
    tokenizer = load_tokenizer(model.folder)
    fill = {"input_ids": tokenizer.pad_token_id or 0, "token_type_ids": tokenizer.pad_token_type_id}
    bound = max_sequence_length(model.config)
    threads = threads or torch.get_num_threads()  # every shape's compilation computes with the same threads

    @lru_cache(maxsize=FIXED_SHAPES_KEPT)
    def predictor_for_shape(rows: int, length: int) -> Predictor:
        return compiled_predictor(model.compiled(threads, (rows, length)), output_name(model.config))

    def predict(batch: dict[str, torch.Tensor]) -> np.ndarray:
        rows, length = batch["input_ids"].shape
        padded = -(-length // multiple) * multiple
        if bound is not None:
            padded = min(padded, max(length, bound))
        sides = (padded - length, 0) if tokenizer.padding_side == "left" else (0, padded - length)
        return predictor_for_shape(rows, padded)({name: pad(tensor, sides, value=fill.get(name, 0)) for name, tensor in batch.items()})

    return predict



Artifact = Union[PreTrainedModel, RuntimeModel]


def torch_predictor(model: PreTrainedModel) -> Predictor:
    model.eval()
    embedder = embedding_of(model.config) is not None

    @torch.no_grad()
    def predict(batch: dict[str, torch.Tensor]) -> np.ndarray:
        inputs = {k: v.to(model.device) for k, v in batch.items() if k != "labels"}
        output = embed(model, inputs)[0] if embedder else model(**inputs).logits
        return output.float().cpu().numpy()

    return predict


def predictor_for(model: Artifact, threads: int | None = None) -> Predictor:
    """Logits from the model's own engine; `threads` fixes a runtime model's compute threads."""
    return model.predictor(threads) if isinstance(model, RuntimeModel) else torch_predictor(model)


def kind_of(artifact: Artifact) -> Kind:
    if isinstance(artifact, RuntimeModel):
        return artifact.kind
    return "torch-int8" if _quantized_linears(artifact) else "torch"


def _quantized_linears(model: torch.nn.Module) -> dict[str, DynamicQuantizedLinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, DynamicQuantizedLinear)}


def _int8_weight_tensors(name: str, weight: torch.Tensor) -> tuple[dict, dict[str, torch.Tensor]]:
    """How a quantized weight is quantized (for the metadata), and the plain tensors that make it again."""
    scheme = {"dtype": str(weight.dtype).removeprefix("torch."), "qscheme": str(weight.qscheme()).removeprefix("torch.")}
    tensors = {f"{name}.weight": weight.int_repr()}
    if weight.qscheme() == torch.per_tensor_affine:
        tensors |= {f"{name}.weight_scale": torch.tensor(weight.q_scale(), dtype=torch.float64),
                    f"{name}.weight_zero_point": torch.tensor(weight.q_zero_point(), dtype=torch.int64)}
    elif weight.qscheme() == torch.per_channel_affine:
        scheme["axis"] = weight.q_per_channel_axis()
        tensors |= {f"{name}.weight_scale": weight.q_per_channel_scales(), f"{name}.weight_zero_point": weight.q_per_channel_zero_points()}
    else:
        raise ValueError(f"{name}: cannot save a weight quantized {weight.qscheme()}")
    return scheme, tensors


def _int8_weight(name: str, scheme: dict, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The quantized weight `_int8_weight_tensors` took apart; its tensors are taken out of `tensors`."""
    values, scale, zero_point = (tensors.pop(f"{name}.{key}") for key in ("weight", "weight_scale", "weight_zero_point"))
    if scheme["qscheme"] == "per_channel_affine":
        return torch._make_per_channel_quantized_tensor(values, scale, zero_point, scheme["axis"])
    return torch._make_per_tensor_quantized_tensor(values, scale.item(), zero_point.item())


def _save_torch_int8(model: PreTrainedModel, folder: Path) -> None:
    """The config and one safetensors file: the float tensors under their own names, and each quantized
    Linear's weight as int8 values with its scale(s) and zero point(s) (its bias stays float)."""
    model.config.architectures = [type(model).__name__]  # what save_pretrained records: the class to build again
    model.config.save_pretrained(folder)
    quantized = _quantized_linears(model)
    packed = {f"{name}.{key}" for name, module in quantized.items() for key in module.state_dict()}
    tensors = {key: tensor for key, tensor in model.state_dict().items() if key not in packed}
    schemes = {}
    for name, module in quantized.items():
        schemes[name], weight_tensors = _int8_weight_tensors(name, module.weight())
        tensors |= weight_tensors | ({f"{name}.bias": module.bias()} if module.bias() is not None else {})
    save_file(tensors, folder / TORCH_INT8_FILE, metadata={QUANTIZED_LINEARS: json.dumps(schemes)})


def _load_torch_int8(folder: Path) -> PreTrainedModel:
    """Built as `_save_torch_int8` found it: the config's architecture given the saved tensors, quantized as
    the quantize stage does, then given the saved int8 weights. Its parameters are made empty and take the
    saved tensors as they are, and a quantized Linear's float weight is zeros that take no memory until it
    is quantized: loading needs little more memory than the int8 model (not the float model's, twice)."""
    path = folder / TORCH_INT8_FILE
    try:
        with safe_open(path, "pt") as file:
            schemes = json.loads((file.metadata() or {})[QUANTIZED_LINEARS])
            tensors = {key: file.get_tensor(key) for key in file.keys()}
        weights = {name: _int8_weight(name, scheme, tensors) for name, scheme in schemes.items()}
    except (OSError, SafetensorError, KeyError, ValueError) as error:
        raise CompressError(f"{path}: not a torch-int8 model as compress writes one ({failure(error)})") from None
    placeholders = {f"{name}.weight": torch.zeros(()).expand(weight.shape) for name, weight in weights.items()}
    config = load_config(folder)
    with init_empty_weights():
        model = saved_class(config)._from_config(config)
    try:
        model.load_state_dict(tensors | placeholders, assign=True)
    except RuntimeError as error:
        raise CompressError(one_line(f"{path}: does not fit the architecture of its config ({error})")) from None
    model = torch_dynamic_int8(model, inplace=True)
    built = _quantized_linears(model)
    if built.keys() != weights.keys():
        raise CompressError(f"{path}: quantizes other Linear layers ({excerpt(sorted(weights.keys() - built.keys()))} not here, "
                            f"{excerpt(sorted(built.keys() - weights.keys()))} here only) than PyTorch does to its architecture")
    for name, module in built.items():
        module.set_weight_bias(weights[name], module.bias())
    return model


def save_artifact(artifact: Artifact, folder: Path) -> None:
    """Write the model into `folder` (a runtime model is already there: its stage wrote it)."""
    kind = kind_of(artifact)
    if isinstance(artifact, RuntimeModel):
        if artifact.folder != folder:
            raise ValueError(f"{kind} stage wrote to {artifact.folder}, expected {folder}")
    elif kind == "torch-int8":
        _save_torch_int8(artifact, folder)
    else:
        artifact.save_pretrained(folder)


def load_artifact(folder: Path, device: str | None = None) -> Artifact:
    """The model saved in `folder`; a PyTorch model is loaded onto `device` (default: the CPU) when it can
    move (a torch-int8 model runs on the CPU only), in the precision it was saved in (fp16 stays fp16)."""
    for runtime in RUNTIMES.values():
        if runtime.found_in(folder):
            return runtime(folder)
    if (folder / TORCH_INT8_FILE).exists():
        return _load_torch_int8(folder)
    if (folder / PICKLED_INT8_FILE).exists():
        raise CompressError(
            f"{folder}: its {PICKLED_INT8_FILE} was written by an older compress, a pickled module, and compress no longer "
            f"loads pickles from results folders (a replaced file would run code); build this stage again: run the same "
            f"command with {folder} removed, or with --overwrite")
    # "auto": the dtype the config records (an fp16 model stays fp16), not transformers' default fp32
    return load_saved(folder, dtype="auto", **({"device_map": device} if device else {}))


def base_kind(ref: str) -> Kind:
    """The kind of model a recipe's `model:` names: an ONNX folder, or anything from_pretrained loads."""
    from compress.models.loading import MODEL_ALIASES

    if ref in MODEL_ALIASES:
        return "torch"
    folder = model_folder(Path(ref).expanduser())
    return "onnx" if folder.is_dir() and onnx_file(folder) else "torch"


def onnx_parameter_count(model: OnnxModel) -> int:
    """Elements of the graph's weight tensors (initializers): the exported model's parameters."""
    import numpy as np
    import onnx

    graph = onnx.load(str(model.path), load_external_data=False).graph
    return int(sum(np.prod(tensor.dims, dtype=np.int64) for tensor in graph.initializer))


def size_on_disk(folder: Path) -> int:
    """Bytes of weight files in a model folder, `onnx/` included (tokenizer and config files not counted)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))


def parameter_count(artifact: Artifact) -> int | None:
    """Weights of an unquantized PyTorch model; None for exported or quantized models, whose packed
    weights do not count the same: they keep the count of the model they were made from."""
    if isinstance(artifact, RuntimeModel) or getattr(artifact.config, QUANTIZATION_FIELD, None):
        return None
    return count_parameters(artifact)
