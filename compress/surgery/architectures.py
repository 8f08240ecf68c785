"""Per-architecture facts that layer dropping needs, kept as one table of data.

Each entry says where the list of Transformer layers lives (relative to the model's
`base_model`, so the same entry serves `BertModel` and `BertForSequenceClassification`)
and which config field counts the layers. Adding an architecture means adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from compress.errors import CompressError
from compress.registry import Registry


@dataclass(frozen=True)
class LayerLayout:
    layers_path: str
    """Dotted path from `model.base_model` to the `nn.ModuleList` of layers."""
    num_layers_field: str
    """Config field that holds the number of layers."""
    shared_weights: bool = False
    """ALBERT: one set of weights applied `num_layers` times; dropping means fewer repetitions."""
    per_layer_config_fields: tuple[str, ...] = ()
    """Config lists with one entry per layer (e.g. `layer_types`) that must follow the kept layers."""
    sequence_first: bool = False
    """XLNet runs its layers on (sequence, batch, hidden) tensors instead of (batch, sequence, hidden)."""
    normed_last_hidden_state: bool = False
    """Decoders apply their final norm to the last entry of `hidden_states` only (the other entries are
    raw layer outputs), so a last state is comparable only with another model's last state."""
    position_dependent_flags: tuple[str, ...] = ()
    """Config flags that, when set, make a layer compute with its own index, which a dropped (and
    reloaded) model renumbers: such models are refused rather than silently changed."""
    max_positions_field: str | None = "max_position_embeddings"
    """Config field bounding the tokens per example (absolute position embeddings); None where positions
    are relative and set no bound."""
    positions_after_padding: bool = False
    """RoBERTa-style position ids start after the padding id, so `pad_token_id + 1` positions are never used."""
    first_layer_built_apart: bool = False
    """The model builds its layer 0 unlike the others (ModernBERT: no attention LayerNorm, the embeddings'
    norm serves), so a kept layer moved into place 0 would be rebuilt without its own norm: layer 0 stays."""
    onnx_optimizer: str | None = "bert"
    """onnxruntime transformer optimizer's model type for `optimization: O1..O3` (its fusions find what
    matches: attention in BERT-like graphs, LayerNorm and GELU more widely); None where it has none."""
    classifier_token: Literal["first", "last"] = "first"
    """The token whose top-layer state the sequence-classification head reads: the first ([CLS], <s>),
    or the last non-padding one (XLNet, whose tokenizer pads on the left, and decoders)."""
    ffn_size_field: str = "intermediate_size"
    """Config field with the feed-forward width (unset: 4 x hidden), for the MatMul work of a call."""
    ffn_matrices: int = 2
    """Weight matrices of that width in a feed-forward block: 2, or 3 where it is gated (GLU)."""


ARCHITECTURES: Registry[LayerLayout] = Registry("architecture")
"""Every architecture layer dropping knows, by `config.model_type`; adding one is adding its entry here."""

ARCHITECTURES.add("bert", LayerLayout("encoder.layer", "num_hidden_layers"))
ARCHITECTURES.add("roberta", LayerLayout("encoder.layer", "num_hidden_layers", positions_after_padding=True))
ARCHITECTURES.add("xlm-roberta", LayerLayout("encoder.layer", "num_hidden_layers", positions_after_padding=True))
ARCHITECTURES.add("electra", LayerLayout("encoder.layer", "num_hidden_layers"))
ARCHITECTURES.add("mpnet", LayerLayout("encoder.layer", "num_hidden_layers", positions_after_padding=True))
ARCHITECTURES.add("deberta-v2", LayerLayout("encoder.layer", "num_hidden_layers", max_positions_field=None))
ARCHITECTURES.add("distilbert", LayerLayout("transformer.layer", "n_layers", ffn_size_field="hidden_dim"))
ARCHITECTURES.add("modernbert", LayerLayout("layers", "num_hidden_layers", per_layer_config_fields=("layer_types",),
                                             first_layer_built_apart=True, ffn_matrices=3))
ARCHITECTURES.add("xlnet", LayerLayout("layer", "n_layer", sequence_first=True, max_positions_field=None, classifier_token="last", ffn_size_field="d_inner"))
ARCHITECTURES.add("albert", LayerLayout("encoder.albert_layer_groups", "num_hidden_layers", shared_weights=True))
ARCHITECTURES.add("gpt2", LayerLayout("h", "n_layer", normed_last_hidden_state=True, max_positions_field="n_positions", onnx_optimizer="gpt2",
                                       position_dependent_flags=("scale_attn_by_inverse_layer_idx",), classifier_token="last",
                                       ffn_size_field="n_inner"))
ARCHITECTURES.add("llama", LayerLayout("layers", "num_hidden_layers", normed_last_hidden_state=True, onnx_optimizer=None, classifier_token="last", ffn_matrices=3))
ARCHITECTURES.add("qwen2", LayerLayout("layers", "num_hidden_layers", normed_last_hidden_state=True, per_layer_config_fields=("layer_types",),
                                        onnx_optimizer=None, classifier_token="last", ffn_matrices=3))


def layout_for(config: PretrainedConfig, where: str = "model") -> LayerLayout:
    """The table entry for a config's `model_type`, or a one-line error listing what is supported."""
    if config.model_type not in ARCHITECTURES:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise CompressError(f"{where}: architecture '{config.model_type}' has no layer-layout entry (supported: {supported})")
    return ARCHITECTURES[config.model_type]


def num_layers(config: PretrainedConfig) -> int:
    return int(getattr(config, layout_for(config).num_layers_field))


def max_sequence_length(config: PretrainedConfig) -> int | None:
    """The most tokens per example the model's position embeddings serve (None: no such bound)."""
    layout = layout_for(config)
    if layout.max_positions_field is None:
        return None
    positions = int(getattr(config, layout.max_positions_field))
    return positions - (config.pad_token_id + 1) if layout.positions_after_padding else positions


def check_max_length(config: PretrainedConfig, max_length: int, field: str) -> None:
    """`max_length` against the model's position embeddings, or a one-line error naming `field`."""
    bound = max_sequence_length(config)
    if bound is not None and max_length > bound:
        raise CompressError(f"{field}: at most {bound} tokens for this model (its position embeddings), got {max_length}")


def layer_list(model: PreTrainedModel) -> nn.ModuleList:
    """The model's `nn.ModuleList` of Transformer layers (for ALBERT: its weight groups)."""
    module = model.base_model
    for attribute in layout_for(model.config).layers_path.split("."):
        module = getattr(module, attribute)
    return module


def set_layer_list(model: PreTrainedModel, layers: nn.ModuleList) -> None:
    parent_path, _, attribute = layout_for(model.config).layers_path.rpartition(".")
    parent = model.base_model
    for name in filter(None, parent_path.split(".")):
        parent = getattr(parent, name)
    setattr(parent, attribute, layers)
