"""Per-layer statistics: which layers change their input, and how fine-tuning changed each layer.

All statistics are over the non-padding tokens of the batches given:

- contribution: mean cosine between a layer's input and output (Sajjad et al., arXiv 2004.03844);
- block influence: 1 - that cosine (ShortGPT, Men et al. 2024, arXiv 2403.03853);
- angular distance: mean arccos(cosine)/pi between the input of layer l and the output of layer
  l+n-1, for a block of n layers starting at every l (Gromov et al. 2024, arXiv 2403.17887);
- classifier token: the mean cosine between different examples' states of the token a classification
  head reads, at each layer's output. Near 1, that token is the same for every input, so a model cut
  just above that layer hands its new classifier almost nothing to go on (sentence-embedding models
  trained for mean pooling keep [CLS] so below their top layer);
- against a fine-tuned model of the same base: per layer, the mean per-token cosine between the two
  models' outputs, and linear CKA (Kornblith et al. 2019) of the two sets of token representations.

A fine-tuned model that had layers dropped is compared layer by layer with the base layers it kept
(`kept_original_layers`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from rich.progress import track
from transformers import PretrainedConfig, PreTrainedModel

from compress.analysis.contribution import layer_states, token_cosines
from compress.errors import CompressError
from compress.surgery.architectures import layout_for, num_layers
from compress.surgery.layer_drop import kept_original_layers, original_num_layers
from compress.surgery.strategies import CONTRIBUTION_METRICS

CKA_TOKENS = 4096
"""Tokens (a seeded sample) that CKA is computed on: its cost and memory grow with the token count."""


@dataclass
class LayerStatistics:
    layer: int
    """0-based index in the analysed model."""
    original_layer: int
    """Index in the pre-trained model the layer comes from (differs after a drop)."""
    cosine: float
    block_influence: float
    angular_distance: float | None
    """Of the block of `block` layers starting here; None where such a block would run past the top."""
    classifier_token_cosine: float | None
    """Mean cosine between different examples' classifier-token states at this layer's output; None
    with fewer than two examples."""
    finetuned_layer: int | None = None
    """The fine-tuned model's layer kept from the same original layer; None if it was dropped there."""
    finetuned_cosine: float | None = None
    finetuned_cka: float | None = None


def linear_cka(first: torch.Tensor, second: torch.Tensor) -> float:
    """Linear CKA between two (tokens, features) matrices whose rows match, computed in float64.

    ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred X and Y: 1 for representations equal up
    to an orthogonal transform and isotropic scaling, 0 for unrelated ones.
    """
    x = first.double() - first.double().mean(dim=0)
    y = second.double() - second.double().mean(dim=0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    scale = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / scale) if scale > 0 else math.nan


def matched_layers(base: PretrainedConfig, finetuned: PretrainedConfig, where: str = "--finetuned") -> dict[int, int]:
    """Base layer index -> index of the fine-tuned layer kept from the same pre-trained layer.

    The fine-tuned model must be of the base's architecture and width and come from a model with as
    many layers; a one-line error naming `where` otherwise.
    """
    layout_for(finetuned, where)
    if finetuned.model_type != base.model_type:
        raise CompressError(f"{where}: a {finetuned.model_type} model cannot be compared with a {base.model_type} base")
    if finetuned.hidden_size != base.hidden_size:
        raise CompressError(
            f"{where}: hidden size {finetuned.hidden_size} does not match the base model's {base.hidden_size}"
        )
    if original_num_layers(finetuned) != original_num_layers(base):
        raise CompressError(
            f"{where}: comes from a {original_num_layers(finetuned)}-layer model, "
            f"the base model from a {original_num_layers(base)}-layer one"
        )
    base_index = {original: index for index, original in enumerate(kept_original_layers(base))}
    missing = [original for original in kept_original_layers(finetuned) if original not in base_index]
    if missing:
        raise CompressError(f"{where}: has original layers {missing}, which the base model no longer has")
    return {base_index[original]: index for index, original in enumerate(kept_original_layers(finetuned))}


def classifier_token_states(mask: torch.Tensor, states: torch.Tensor, position: str) -> torch.Tensor:
    """(batch, hidden): each example's state of the token the classification head reads (`position`
    from the layout table: the first token, or the last non-padding one)."""
    if position == "first":
        return states[:, 0]
    last = mask.shape[1] - 1 - mask.flip(1).int().argmax(dim=1)
    return states[torch.arange(states.shape[0], device=states.device), last]


def mean_pairwise_cosine(rows: torch.Tensor) -> float | None:
    """Mean cosine over all pairs of different rows, in float64 (None for fewer than two rows)."""
    count = rows.shape[0]
    if count < 2:
        return None
    unit = torch.nn.functional.normalize(rows.double(), dim=-1)
    total = unit.sum(dim=0)
    # The sum over i != j of u_i . u_j is |sum u|^2 minus the n diagonal terms: no n x n matrix.
    return float((total @ total - count) / (count * (count - 1)))


def _token_sample(total: int, limit: int, seed: int) -> torch.Tensor:
    """Sorted positions of at most `limit` of `total` tokens, drawn with a fixed seed."""
    if total <= limit:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


@torch.no_grad()
def analyze_layers(
    model: PreTrainedModel,
    batches: Sequence[dict[str, torch.Tensor]],
    block: int | None = 1,
    finetuned: PreTrainedModel | None = None,
    cka_tokens: int = CKA_TOKENS,
    seed: int = 0,
) -> list[LayerStatistics]:
    """Statistics of every layer of `model`; with `finetuned`, also how its layers compare with the base's.

    `block` is the block size n of the angular distance (None: no angular distance).
    """
    count = num_layers(model.config)
    classifier_token = layout_for(model.config).classifier_token
    if block is not None and not 1 <= block <= count:
        raise CompressError(f"block: must be between 1 and the model's {count} layers (got {block})")
    if not batches:
        raise CompressError("examples: no task examples to analyse")
    pairs = matched_layers(model.config, finetuned.config) if finetuned is not None else {}
    block_starts = count - block + 1 if block else 0
    total_tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    sampled = _token_sample(total_tokens, cka_tokens, seed)

    cosine_sums = torch.zeros(count, dtype=torch.float64)
    angle_sums = torch.zeros(block_starts, dtype=torch.float64)
    finetuned_cosine_sums = torch.zeros(count, dtype=torch.float64)
    classifier_states: list[list[torch.Tensor]] = [[] for _ in range(count)]
    samples: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {layer: ([], []) for layer in pairs}

    base_states = layer_states(model, track(batches, description="Analysing layers"))
    finetuned_states = layer_states(finetuned, batches) if finetuned is not None else itertools.repeat(None)
    offset = 0
    for (mask, states), other in zip(base_states, finetuned_states):
        # float64 once per tensor: every tensor enters several cosines below.
        tokens = [(layer_input[mask].double(), layer_output[mask].double()) for layer_input, layer_output in states]
        # This batch's tokens are positions offset .. offset+n-1 of the whole token sequence.
        n = tokens[0][0].shape[0]
        local = (sampled[(sampled >= offset) & (sampled < offset + n)] - offset).to(mask.device)
        offset += n
        for layer, (layer_input, layer_output) in enumerate(tokens):
            cosine_sums[layer] += token_cosines(layer_input, layer_output).sum().cpu()
            classifier_states[layer].append(classifier_token_states(mask, states[layer][1], classifier_token).cpu())
        for start in range(block_starts):
            cosines = token_cosines(tokens[start][0], tokens[start + block - 1][1]).clamp(-1.0, 1.0)
            angle_sums[start] += (torch.arccos(cosines) / math.pi).sum().cpu()
        if other is None:
            continue
        other_mask, other_states = other
        for layer, other_layer in pairs.items():
            base_output, finetuned_output = tokens[layer][1], other_states[other_layer][1][other_mask].double()
            finetuned_cosine_sums[layer] += token_cosines(base_output, finetuned_output).sum().cpu()
            samples[layer][0].append(base_output[local].float().cpu())
            samples[layer][1].append(finetuned_output[local].float().cpu())

    original = kept_original_layers(model.config)
    rows = []
    for layer in range(count):
        cosine = float(cosine_sums[layer] / total_tokens)
        row = LayerStatistics(
            layer=layer,
            original_layer=original[layer],
            cosine=cosine,
            block_influence=1.0 - cosine,
            angular_distance=float(angle_sums[layer] / total_tokens) if layer < block_starts else None,
            classifier_token_cosine=mean_pairwise_cosine(torch.cat(classifier_states[layer])),
        )
        if layer in pairs:
            row.finetuned_layer = pairs[layer]
            row.finetuned_cosine = float(finetuned_cosine_sums[layer] / total_tokens)
            row.finetuned_cka = linear_cka(torch.cat(samples[layer][0]), torch.cat(samples[layer][1]))
        rows.append(row)
    return rows


def metric_scores(statistics: list[LayerStatistics], metric: str) -> list[float]:
    """The scores strategy `contribution` ranks by, for `metric` (angular: one per block start)."""
    field = CONTRIBUTION_METRICS[metric].statistic
    # Angular distances exist only for blocks that fit below the top: one score per block start.
    return [score for row in statistics if (score := getattr(row, field)) is not None]
