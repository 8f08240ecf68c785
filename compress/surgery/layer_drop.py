"""Removing layers from a pre-trained model in place, and recording which original layers remain."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from compress.errors import CompressError
from compress.surgery.architectures import layer_list, layout_for, num_layers, set_layer_list

PROVENANCE_FIELD = "compress_layer_drop"
"""Config field (saved in config.json) that records the original layer count and the kept layers."""


def kept_original_layers(config: PretrainedConfig) -> list[int]:
    """Indices, in the original pre-trained model, of the layers a model with this config still has."""
    provenance = getattr(config, PROVENANCE_FIELD, None)
    return list(provenance["kept_layers"]) if provenance else list(range(num_layers(config)))


def original_num_layers(config: PretrainedConfig) -> int:
    provenance = getattr(config, PROVENANCE_FIELD, None)
    return provenance["original_num_layers"] if provenance else num_layers(config)


def check_droppable(config: PretrainedConfig, drop: Sequence[int]) -> None:
    """Refuse drops that would make a model compute other than its kept layers did."""
    layout = layout_for(config)
    if 0 in drop and layout.first_layer_built_apart:
        raise CompressError(f"layers: {config.model_type} builds its layer 0 unlike the others (no attention norm), so a model "
                            "without it would compute differently; keep layer 0 (e.g. strategy top, or layers without 0)")
    missing = [field for field in layout.per_layer_config_fields if getattr(config, field, None) is None]
    if drop and missing:
        raise CompressError(f"model: this transformers version's {config.model_type} config has no {', '.join(missing)}, so each "
                            "layer's kind follows its index, which dropping would change; install transformers 5 to drop its layers")


def drop_layers(model: PreTrainedModel, drop: Sequence[int], strategy: str = "layers") -> PreTrainedModel:
    """Remove the layers at the given (current, 0-based) indices and return the same model object.

    The config's layer count follows, per-layer config lists follow, every kept layer's
    `layer_idx` is renumbered (decoders index their KV cache by it), and the config records
    which layers of the original model remain, so repeated drops compose.
    """
    layout = layout_for(model.config)
    count = num_layers(model.config)
    drop = sorted(set(drop))
    if any(not 0 <= i < count for i in drop) or len(drop) >= count:
        raise CompressError(f"layers: cannot drop {drop} from a model with {count} layers")
    check_droppable(model.config, drop)
    flags = [flag for flag in layout.position_dependent_flags if getattr(model.config, flag, False)]
    if drop and flags:
        raise CompressError(f"model: {', '.join(flags)} is set, so its layers compute with their own index, "
                            "which dropping layers would change; layer dropping supports this model only without it")
    keep = [i for i in range(count) if i not in drop]
    kept_before = kept_original_layers(model.config)
    original_count = original_num_layers(model.config)

    if layout.shared_weights:
        # ALBERT applies its shared layer group `num_hidden_layers` times; dropping any K
        # layers leaves the same model with K fewer repetitions.
        if getattr(model.config, "num_hidden_groups", 1) != 1:
            raise CompressError("model: layer dropping on ALBERT needs num_hidden_groups == 1")
    else:
        layers = layer_list(model)
        kept_modules = nn.ModuleList(layers[i] for i in keep)
        for new_index, layer in enumerate(kept_modules):
            for module in layer.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = new_index
        set_layer_list(model, kept_modules)

    setattr(model.config, layout.num_layers_field, len(keep))
    for field in layout.per_layer_config_fields:
        values = getattr(model.config, field, None)
        if values is not None:
            setattr(model.config, field, [values[i] for i in keep])

    history = (getattr(model.config, PROVENANCE_FIELD, None) or {}).get("drops", [])
    setattr(
        model.config,
        PROVENANCE_FIELD,
        {
            "original_num_layers": original_count,
            "kept_layers": [kept_before[i] for i in keep],
            "drops": [*history, {"strategy": strategy, "dropped_layers": [kept_before[i] for i in drop]}],
        },
    )
    return model
