"""What per-layer contribution scores (Sajjad et al., section 3) are computed from.

The score of a layer is the cosine similarity between its input and output hidden states,
averaged over all non-padding tokens of the examples given (compress/analysis/layers.py): near 1, the
layer barely changes its input, which makes it the first candidate to drop. `layer_states` is
the one place that captures each layer's input and output; `scoring_batches` picks the examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from compress.data.encoding import length_order, padded_batches, tokenize
from compress.surgery.architectures import layer_list, layout_for

LayerStates = list[tuple[torch.Tensor, torch.Tensor]]
"""(input, output) hidden states of every layer, in layer order, each (batch, sequence, hidden)."""


def _first_tensor(value) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


@torch.no_grad()
def layer_states(
    model: PreTrainedModel, batches: Iterable[dict[str, torch.Tensor]]
) -> Iterator[tuple[torch.Tensor, LayerStates]]:
    """Run the model (in eval mode) on each batch; yield its non-padding mask and every layer's input and output."""
    sequence_first = layout_for(model.config).sequence_first
    calls: LayerStates = []

    def record(module, args, kwargs, output):
        layer_input = args[0] if args else kwargs["hidden_states"]
        calls.append((layer_input, _first_tensor(output)))

    # Hooks fire in execution order, once per layer application; for ALBERT's shared group
    # that is once per repetition, so `calls` always lines up with the layer numbering.
    handles = [layer.register_forward_hook(record, with_kwargs=True) for layer in layer_list(model)]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            calls.clear()  # before the forward pass: two generators may hook the same model
            inputs = {k: v.to(model.device) for k, v in batch.items() if k != "labels"}
            # The bare model: a head adds nothing to the layer states, and an MLM head's vocabulary
            # projection costs as much as several of MPNet's layers.
            model.base_model(**inputs)
            if sequence_first:
                states = [(i.transpose(0, 1), o.transpose(0, 1)) for i, o in calls]
            else:
                states = list(calls)
            yield inputs["attention_mask"].bool(), states
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def _row_dots(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    # A batched matrix product: on the CPU several times faster than multiplying and summing.
    return (first.unsqueeze(-2) @ second.unsqueeze(-1)).flatten()


def token_cosines(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Cosine between matching rows (tokens) of two (tokens, hidden) matrices, in float64."""
    # float64: arccos near cosine 1 turns float32 rounding (1e-7) into an angle of 5e-4
    x, y = first.double(), second.double()
    norms = _row_dots(x, x).clamp_min(1e-16).sqrt() * _row_dots(y, y).clamp_min(1e-16).sqrt()
    return _row_dots(x, y) / norms


def scoring_batches(
    examples: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    count: int,
    max_length: int,
    seed: int,
    batch_size: int = 32,
) -> list[dict[str, torch.Tensor]]:
    """Padded batches of `count` seeded random examples, shortest first (less padding: same means, less work)."""
    chosen = tokenize(examples.shuffle(seed=seed).select(range(min(count, len(examples)))), tokenizer, max_length)
    return list(padded_batches(chosen.select(length_order(chosen)), tokenizer, batch_size))
