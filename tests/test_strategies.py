"""Exact layers each strategy drops, in 0-based indices (the paper's 1-based numbers in comments)."""

import pytest

from compress.errors import CompressError
from compress.surgery.strategies import layers_to_drop

EXPECTED = {
    # N=12, K=4
    (12, 4, "top"): [8, 9, 10, 11],  # paper: 9-12
    (12, 4, "bottom"): [0, 1, 2, 3],  # paper: 1-4
    (12, 4, "alternate-even"): [5, 7, 9, 11],  # paper: 12, 10, 8, 6
    (12, 4, "alternate-odd"): [4, 6, 8, 10],  # paper: 11, 9, 7, 5
    (12, 4, "symmetric"): [4, 5, 6, 7],  # paper: 5-8
    # N=12, K=6
    (12, 6, "top"): [6, 7, 8, 9, 10, 11],
    (12, 6, "bottom"): [0, 1, 2, 3, 4, 5],
    (12, 6, "alternate-even"): [1, 3, 5, 7, 9, 11],
    (12, 6, "alternate-odd"): [0, 2, 4, 6, 8, 10],
    (12, 6, "symmetric"): [3, 4, 5, 6, 7, 8],  # paper: 4-9, three kept at each end
    # N=12, K=2
    (12, 2, "symmetric"): [5, 6],
    (12, 2, "alternate-even"): [9, 11],
    # N=6
    (6, 2, "top"): [4, 5],
    (6, 2, "bottom"): [0, 1],
    (6, 2, "alternate-even"): [3, 5],
    (6, 2, "alternate-odd"): [2, 4],
    (6, 2, "symmetric"): [2, 3],
    (6, 3, "symmetric"): [1, 2, 3],  # odd number kept: the extra layer stays on top
    (6, 4, "top"): [2, 3, 4, 5],
}


@pytest.mark.parametrize(("num_layers", "k", "strategy"), list(EXPECTED))
def test_strategy_drops_the_papers_layers(num_layers, k, strategy):
    assert layers_to_drop(strategy, num_layers, k) == EXPECTED[(num_layers, k, strategy)]


@pytest.mark.parametrize("strategy", ["top", "bottom", "alternate-even", "alternate-odd", "symmetric"])
def test_k_zero_drops_nothing(strategy):
    assert layers_to_drop(strategy, 12, 0) == []


def test_contribution_drops_the_layers_that_change_their_input_least():
    scores = [0.5, 0.9, 0.7, 0.95, 0.6, 0.8]
    assert layers_to_drop("contribution", 6, 2, scores=scores) == [1, 3]
    assert layers_to_drop("contribution", 6, 3, scores=scores) == [1, 3, 5]


def test_explicit_layers_are_sorted_and_checked():
    assert layers_to_drop("layers", 6, layers=[4, 1]) == [1, 4]
    with pytest.raises(CompressError, match=r"layers: indices must be in 0\.\.5"):
        layers_to_drop("layers", 6, layers=[0, 6])
    with pytest.raises(CompressError, match="distinct"):
        layers_to_drop("layers", 6, layers=[2, 2])
    with pytest.raises(CompressError, match="less than the model's 6 layers"):
        layers_to_drop("layers", 6, layers=list(range(6)))


@pytest.mark.parametrize("k", [6, 7, -1])
def test_k_must_leave_at_least_one_layer(k):
    with pytest.raises(CompressError, match=r"^k: must be at least 0 and less than the model's 6 layers"):
        layers_to_drop("top", 6, k)


def test_alternate_cannot_drop_more_than_half():
    assert layers_to_drop("alternate-odd", 6, 3) == [0, 2, 4]
    with pytest.raises(CompressError, match="alternate-even can drop at most 3 of 6"):
        layers_to_drop("alternate-even", 6, 4)


def test_unknown_strategy():
    with pytest.raises(CompressError, match="strategy: expected one of"):
        layers_to_drop("middle", 6, 2)
