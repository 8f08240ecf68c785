"""Which layers to drop: the strategies of Sajjad et al. (arXiv 2004.03844), as pure functions.

Indices here are 0-based (layer 0 is the one next to the embeddings). The paper numbers layers
from 1, so its "drop layers 12, 10, 8, 6" of a 12-layer model is `[11, 9, 7, 5]` here.
"""

from __future__ import annotations

from collections.abc import Sequence

from compress.errors import CompressError

STRATEGIES = ("top", "bottom", "alternate-even", "alternate-odd", "symmetric", "contribution", "layers")


def _alternate(num_layers: int, k: int, paper_parity: int) -> list[int]:
    """Every other layer counting down from the top, among layers whose 1-based number has this parity."""
    candidates = [i for i in reversed(range(num_layers)) if (i + 1) % 2 == paper_parity]
    if k > len(candidates):
        variant = "even" if paper_parity == 0 else "odd"
        raise CompressError(
            f"k: alternate-{variant} can drop at most {len(candidates)} of {num_layers} layers (got {k})"
        )
    return sorted(candidates[:k])


def layers_to_drop(
    strategy: str,
    num_layers: int,
    k: int | None = None,
    *,
    layers: Sequence[int] | None = None,
    scores: Sequence[float] | None = None,
) -> list[int]:
    """Sorted 0-based indices of the layers that `strategy` drops from a `num_layers`-layer model.

    `layers` is the explicit list for strategy "layers"; `scores` are the per-layer contribution
    scores (cosine between a layer's input and output) for strategy "contribution": the layers
    that change their input least, i.e. score highest, are dropped.
    """
    if strategy == "layers":
        if layers is None:
            raise CompressError("layers: strategy 'layers' needs the list of layer indices to drop")
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

    if strategy == "layers":
        return sorted(layers)
    if strategy == "top":
        return list(range(num_layers - k, num_layers))
    if strategy == "bottom":
        return list(range(k))
    if strategy == "alternate-even":
        return _alternate(num_layers, k, paper_parity=0)
    if strategy == "alternate-odd":
        return _alternate(num_layers, k, paper_parity=1)
    if strategy == "symmetric":
        # A middle block; with an odd number of kept layers the extra one stays on top.
        start = (num_layers - k) // 2
        return list(range(start, start + k))
    if strategy == "contribution":
        if scores is None or len(scores) != num_layers:
            raise CompressError(f"contribution: needs one score per layer ({num_layers})")
        highest_first = sorted(range(num_layers), key=lambda i: scores[i], reverse=True)
        return sorted(highest_first[:k])
    raise CompressError(f"strategy: expected one of {', '.join(STRATEGIES)} (got '{strategy}')")
