"""Which layers to drop: the strategies of Sajjad et al. (arXiv 2004.03844), as pure functions.

Indices here are 0-based (layer 0 is the one next to the embeddings). The paper numbers layers
from 1, so its "drop layers 12, 10, 8, 6" of a 12-layer model is `[11, 9, 7, 5]` here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from compress.errors import CompressError, excerpt
from compress.registry import Registry

CONTRIBUTION = "contribution"
"""The strategy that scores layers on task examples first: which layers it drops is known only at run time."""
EXPLICIT = "layers"
"""The strategy given the list of layers to drop (and no K)."""


@dataclass(frozen=True)
class Given:
    """What a strategy may read besides the model's layers and K."""

    layers: Sequence[int] | None
    scores: Sequence[float] | None
    metric: str


STRATEGIES: Registry[Callable[[int, int, Given], list[int]]] = Registry("strategy")
"""Each strategy's function: the sorted 0-based layers it drops, given the model's layer count and K."""


@dataclass(frozen=True)
class ContributionMetric:
    """How strategy `contribution` reads one metric's scores."""

    per_block: bool
    """One score per start of a contiguous block of K layers (else one score per layer)."""
    drop_highest: bool
    """The highest scores are dropped (else the lowest)."""
    statistic: str
    """The field of compress.analysis.layers.LayerStatistics that holds the score."""
    meaning: str


CONTRIBUTION_METRICS: dict[str, ContributionMetric] = {
    # Sajjad et al.: the layers whose output is most similar to their input
    "cosine": ContributionMetric(
        per_block=False,
        drop_highest=True,
        statistic="cosine",
        meaning="cosine(layer input, layer output); the K highest are dropped",
    ),
    # ShortGPT (Men et al. 2024): the same ranking, named as the LLM papers name it
    "block-influence": ContributionMetric(
        per_block=False,
        drop_highest=False,
        statistic="block_influence",
        meaning="1 - cosine(layer input, layer output); the K lowest are dropped",
    ),
    # Gromov et al. 2024: the contiguous block whose input and output are closest in angle
    "angular": ContributionMetric(
        per_block=True,
        drop_highest=False,
        statistic="angular_distance",
        meaning="arccos(cosine(input of layer l, output of layer l+K-1))/pi; the closest block of K is dropped",
    ),
}


@STRATEGIES.register("top")
def _top(num_layers: int, k: int, given: Given) -> list[int]:
    return list(range(num_layers - k, num_layers))


@STRATEGIES.register("bottom")
def _bottom(num_layers: int, k: int, given: Given) -> list[int]:
    return list(range(k))


def _alternate(num_layers: int, k: int, paper_parity: int) -> list[int]:
    """Every other layer counting down from the top, among layers whose 1-based number has this parity."""
    candidates = [i for i in reversed(range(num_layers)) if (i + 1) % 2 == paper_parity]
    if k > len(candidates):
        variant = "even" if paper_parity == 0 else "odd"
        raise CompressError(
            f"k: alternate-{variant} can drop at most {len(candidates)} of {num_layers} layers (got {k})"
        )
    return sorted(candidates[:k])


STRATEGIES.add("alternate-even", lambda num_layers, k, given: _alternate(num_layers, k, paper_parity=0))
STRATEGIES.add("alternate-odd", lambda num_layers, k, given: _alternate(num_layers, k, paper_parity=1))


@STRATEGIES.register("symmetric")
def _symmetric(num_layers: int, k: int, given: Given) -> list[int]:
    """A middle block; with an odd number of kept layers the extra one stays on top."""
    start = (num_layers - k) // 2
    return list(range(start, start + k))


@STRATEGIES.register(CONTRIBUTION)
def _by_contribution(num_layers: int, k: int, given: Given) -> list[int]:
    scores, metric = given.scores, given.metric
    if metric not in CONTRIBUTION_METRICS:
        raise CompressError(f"metric: expected one of {', '.join(CONTRIBUTION_METRICS)} (got {excerpt(metric)})")
    rule = CONTRIBUTION_METRICS[metric]
    if rule.per_block:
        return contiguous_block_to_drop(num_layers, k, scores)
    if scores is None or len(scores) != num_layers:
        raise CompressError(f"contribution: needs one {metric} score per layer ({num_layers})")
    first_dropped_first = sorted(range(num_layers), key=lambda i: scores[i], reverse=rule.drop_highest)
    return sorted(first_dropped_first[:k])


@STRATEGIES.register(EXPLICIT)
def _explicit(num_layers: int, k: int, given: Given) -> list[int]:
    return sorted(given.layers)  # checked by layers_to_drop, which takes K from them


Strategy = Literal[STRATEGIES.names()]


def layers_to_drop(
    strategy: str,
    num_layers: int,
    k: int | None = None,
    *,
    layers: Sequence[int] | None = None,
    scores: Sequence[float] | None = None,
    metric: str = "cosine",
) -> list[int]:
    """Sorted 0-based indices of the layers that `strategy` drops from a `num_layers`-layer model.

    `layers` is the explicit list for strategy "layers"; `scores` are, for strategy "contribution",
    the scores of `metric` (see CONTRIBUTION_METRICS): one per layer, or for "angular" one per
    possible start of a block of K layers.
    """
    if strategy == EXPLICIT:
        if layers is None:
            raise CompressError(f"layers: strategy '{EXPLICIT}' needs the list of layer indices to drop")
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad:
            raise CompressError(f"layers: indices must be in 0..{num_layers - 1} (got {bad})")
        if len(set(layers)) != len(layers):
            raise CompressError(f"layers: indices must be distinct (got {list(layers)})")
        k = len(layers)
    if k is None:
        raise CompressError(f"k: strategy '{strategy}' needs k, the number of layers to drop")
    if not 0 <= k < num_layers:
        raise CompressError(f"k: must be at least 0 and less than the model's {num_layers} layers (got {k})")
    if strategy not in STRATEGIES:
        raise CompressError(f"strategy: expected one of {', '.join(STRATEGIES)} (got {excerpt(strategy)})")
    return STRATEGIES[strategy](num_layers, k, Given(layers, scores, metric))


def can_drop(strategy: str, num_layers: int, k: int) -> bool:
    """Whether `strategy` can drop `k` of `num_layers` layers (an alternate strategy reaches only every other layer)."""
    try:
        layers_to_drop(strategy, num_layers, k, scores=[0.0] * num_layers)
    except CompressError:
        return False
    return True


def contiguous_block_to_drop(num_layers: int, k: int, distances: Sequence[float] | None) -> list[int]:
    """The block of K consecutive layers whose input and output are closest: `distances[l]` is the
    distance between the input of layer l and the output of layer l+K-1 (the lowest block wins ties)."""
    if k == 0:
        return []
    starts = num_layers - k + 1
    if distances is None or len(distances) != starts:
        raise CompressError(f"contribution: angular needs one distance per block of {k} layers ({starts})")
    start = min(range(starts), key=lambda l: distances[l])
    return list(range(start, start + k))
