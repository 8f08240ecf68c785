"""Exporting a sequence-classification model to ONNX, with its config and tokenizer beside it, in the
layout that optimum's ORTModel and transformers.js both load as it is (`onnx/model.onnx`).

Every architecture goes through `torch.onnx.export` (the TorchScript exporter) with eager attention:
that is the graph onnxruntime's transformer optimizer recognises, so `optimization: O2` can fuse
attention, LayerNorm and GELU where the architecture's attention has the standard pattern.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import onnx
import torch
from compress.exporters import FP32_FILE, ONNX_DIR
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

OPTIMIZATION_LEVELS = ("O1", "O2", "O3")
"""O1: onnxruntime's basic graph optimizations; O2: and the transformer fusions (attention, LayerNorm,
GELU, embeddings); O3: and GELU approximated by tanh (optimum's levels of the same names)."""
FUSING_LEVELS = ("O2", "O3")
"""The levels whose transformer fusions include attention."""
PROTOBUF_LIMIT = 2**31 - 1


class ExportError(Exception):
    """An export that cannot be done as asked (unsupported architecture, file too large, ...)."""


GraphOutputs = tuple[dict[str, dict[int, str]], Callable[[object, dict[str, torch.Tensor]], tuple[torch.Tensor, ...]]]
"""The graph's outputs (name -> its dynamic axes), and the function of (the model's outputs, its named inputs)
that makes them, in that order."""
BATCH, TOKENS = {0: "batch_size"}, {0: "batch_size", 1: "sequence_length"}
LOGITS: GraphOutputs = ({"logits": BATCH}, lambda outputs, inputs: (outputs.logits,))


class _Traced(torch.nn.Module):
    """The model with positional inputs and the graph's outputs alone: what the exporter traces."""

    def __init__(self, model: PreTrainedModel, names: list[str], outputs: GraphOutputs):
        super().__init__()
        self.model, self.names, self.select = model, names, outputs[1]

    def forward(self, *inputs):
        named = dict(zip(self.names, inputs))
        return self.select(self.model(**named), named)


def input_names(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The tokenizer outputs the model takes, in the order transformers.js and optimum feed them."""
    accepted = inspect.signature(model.forward).parameters
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted and n in tokenizer.model_input_names]


MASK_BUILDER = "create_bidirectional_mask"


def _padding_mask(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """transformers 4.57's form of an encoder's attention mask: the padding mask broadcast over heads and
    queries, 0 where a token is kept and the dtype's lowest value where it is padding."""
    dtype = inputs_embeds.dtype
    return (1.0 - attention_mask.unsqueeze(1).unsqueeze(2).to(dtype)) * torch.finfo(dtype).min


@contextmanager
def _plain_padding_masks(model: PreTrainedModel) -> Iterator[None]:
    """While tracing, the modules of `model` that build a padding-only bidirectional mask with transformers 5's
    mask builder get `_padding_mask` instead. The builder's graph indexes a query and a key range (Range,
    Gather, And, Where: about 75 more nodes in MPNet-12 than 4.57's), and at review lengths that fixed cost
    made the int8 graph 1-2 % slower than the optimum export's (bench/results/exporter). Masks with
    extra rules (cross-attention, sliding windows, custom functions) still go to the builder, and so does
    every mask of a graph to be fused: onnxruntime's attention fusion matches the builder's graph, not this."""
    modules = {sys.modules[type(m).__module__] for m in model.modules()}
    patched = {module: getattr(module, MASK_BUILDER) for module in modules if callable(getattr(module, MASK_BUILDER, None))}

    def builder(original):
        def build(config, inputs_embeds, attention_mask, *args, **kwargs):
            extra_rules = args or any(kwargs.get(k) is not None for k in ("encoder_hidden_states", "or_mask_function", "and_mask_function"))
            if not extra_rules and attention_mask is not None and attention_mask.dim() == 2 and config._attn_implementation == "eager":
                return _padding_mask(inputs_embeds, attention_mask)
            return original(config, inputs_embeds, attention_mask, *args, **kwargs)
        return build

    for module, original in patched.items():
        setattr(module, MASK_BUILDER, builder(original))
    try:
        yield
    finally:
        for module, original in patched.items():
            setattr(module, MASK_BUILDER, original)


def _torch_export(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path, opset: int, outputs: GraphOutputs) -> None:
    names = input_names(model, tokenizer)
    # Two rows of different lengths, so the traced graph sees padding and a real attention mask.
    dummy = tokenizer(["a short one", "a somewhat longer example, with padding in the other row"], padding=True, return_tensors="pt")
    axes = {name: TOKENS for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python branches it fixes for padded batches
        torch.onnx.export(
            _Traced(model, names, outputs).eval(),  # the exporter restores the wrapper's mode afterwards, and with it the model's
            tuple(dummy[n] for n in names),
            str(path),
            input_names=names,
            output_names=list(outputs[0]),
            dynamic_axes={**axes, **outputs[0]},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter: its graph is the one onnxruntime's fusions match
        )


def _inline_external_data(path: Path) -> None:
    """Rewrite the model as one self-contained file (edge runtimes often take a single file)."""
    proto = onnx.load(str(path), load_external_data=True)
    if proto.ByteSize() > PROTOBUF_LIMIT:
        raise ExportError(f"{path}: {proto.ByteSize() / 1e9:.1f} GB does not fit one ONNX file (2 GB limit); use single_file: false")
    external = {entry.value for tensor in proto.graph.initializer for entry in tensor.external_data if entry.key == "location"}
    onnx.save_model(proto, str(path), save_as_external_data=False)
    for name in external:
        (path.parent / name).unlink(missing_ok=True)


def export_onnx(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: Path,
    opset: int = 18,
    single_file: bool = True,
    fused_later: bool = False,
    outputs: GraphOutputs = LOGITS,
) -> Path:
    """Write `onnx/model.onnx` (inputs: token ids, attention mask[, token types]; outputs: `outputs`, the logits
    unless told otherwise),
    `config.json` and the tokenizer into `output_dir`; returns the ONNX file's path. `fused_later`: the
    graph goes on to onnxruntime's attention fusion (O2, O3), which needs transformers' own mask graph."""
    model = model.eval().to("cpu")
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    path = output_dir / ONNX_DIR / FP32_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with nullcontext() if fused_later else _plain_padding_masks(model):
            _torch_export(model, tokenizer, path, opset, outputs)
    except Exception as error:  # the exporter fails in many ways on code it cannot trace; each is one line
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"torch.onnx.export cannot export {model.config.model_type} ({reason})") from None
    if single_file:
        _inline_external_data(path)
    model.config.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return path


def optimize_onnx(path: Path, level: str, config: PretrainedConfig, model_type: str) -> None:
    """Fuse the graph in place with onnxruntime's transformer optimizer at level O1, O2 or O3, told the
    model's head count and width (its attention fusion needs both); `model_type` is the optimizer's name
    for the architecture's family ("bert" for the BERT-like encoders)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if level not in OPTIMIZATION_LEVELS:
        raise ExportError(f"optimization: expected one of {', '.join(OPTIMIZATION_LEVELS)} (got '{level}')")
    options = FusionOptions(model_type)
    options.enable_gelu_approximation = level == "O3"
    try:
        optimized = optimize_model(
            str(path), model_type=model_type, num_heads=config.num_attention_heads, hidden_size=config.hidden_size,
            optimization_options=options, opt_level=1 if level == "O1" else 2, only_onnxruntime=level == "O1", use_gpu=False,
        )
        optimized.save_model_to_file(str(path), use_external_data_format=False)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"optimization: onnxruntime's transformer optimizer cannot optimize this model ({reason})") from None


def fused_operators(path: Path) -> dict[str, int]:
    """How many nodes of each onnxruntime fused kind (Attention, SkipLayerNormalization, ...) a graph holds."""
    fused = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization", "LayerNormalization",
             "BiasGelu", "FastGelu", "Gelu", "QAttention")
    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in fused:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
