"""Per-layer contribution scores: how much each layer changes its input (Sajjad et al., section 3).

The score of a layer is the cosine similarity between its input and output hidden states,
averaged over all non-padding tokens of the examples given. A score near 1 means the layer
barely changes its input, which makes it the first candidate to drop.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from datasets import Dataset
from rich.progress import track
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from compress.architectures import layer_list, layout_for, num_layers
from compress.encoding import padded_batches, tokenize


def _first_tensor(value) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


@torch.no_grad()
def layer_contributions(model: PreTrainedModel, batches: Iterable[dict[str, torch.Tensor]]) -> list[float]:
    """Mean input/output cosine similarity of every layer, in layer order."""
    layout = layout_for(model.config)
    count = num_layers(model.config)
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(module, args, kwargs, output):
        layer_input = args[0] if args else kwargs["hidden_states"]
        calls.append((layer_input, _first_tensor(output)))

    # Hooks fire in execution order, once per layer application; for ALBERT's shared group
    # that is once per repetition, so `calls` always lines up with the layer numbering.
    handles = [layer.register_forward_hook(record, with_kwargs=True) for layer in layer_list(model)]
    sums = torch.zeros(count, dtype=torch.float64)
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        for batch in track(list(batches), description="Scoring layers"):
            calls.clear()
            inputs = {k: v.to(model.device) for k, v in batch.items() if k != "labels"}
            model(**inputs)
            mask = inputs["attention_mask"].bool()
            for index, (layer_input, layer_output) in enumerate(calls):
                if layout.sequence_first:
                    layer_input, layer_output = layer_input.transpose(0, 1), layer_output.transpose(0, 1)
                cosine = torch.nn.functional.cosine_similarity(layer_input.float(), layer_output.float(), dim=-1)
                sums[index] += cosine[mask].double().sum().cpu()
            tokens += int(mask.sum())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return (sums / max(tokens, 1)).tolist()


def score_layers_on_task(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Dataset,
    count: int,
    max_length: int,
    seed: int,
    batch_size: int = 32,
) -> list[float]:
    """Contribution scores over `count` seeded random examples of a task's training set."""
    chosen = examples.shuffle(seed=seed).select(range(min(count, len(examples))))
    return layer_contributions(model, padded_batches(tokenize(chosen, tokenizer, max_length), tokenizer, batch_size))
