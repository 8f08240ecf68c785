"""Contribution scores (the `cosine` of compress.analysis.layers, which the drop stage ranks by): exact on
constructed layers, and cross-checked on the real MiniLM."""

import pytest
import torch
from torch import nn

from compress.analysis.contribution import scoring_batches
from compress.analysis.layers import analyze_layers
from compress.data.encoding import padded_batches, tokenize
from compress.data.loading import DataSettings, load_task_data
from compress.models.loading import load_for_task, load_tokenizer
from compress.surgery.architectures import layer_list
from tests.test_layer_drop import batch, tiny_classifier


class Scale(nn.Module):
    """Stands in for a Transformer layer: returns its input times a constant, in the form the layer it
    replaces returns (a tensor in transformers 5's encoders, a tuple in 4.x and in XLNet)."""

    def __init__(self, factor: float, replaced: object):
        super().__init__()
        self.factor = factor
        self.returns_tuple = isinstance(replaced, tuple)
        self.second_stream = self.returns_tuple and len(replaced) > 1

    def forward(self, hidden_states, *args, **kwargs):
        if not self.returns_tuple:
            return hidden_states * self.factor
        if self.second_stream:  # XLNet layers also return their query stream (None here)
            return (hidden_states * self.factor, args[0])
        return (hidden_states * self.factor,)


def layer_output(model, index: int) -> object:
    """What layer `index` of the model returns, as the installed transformers version has it."""
    seen = []
    handle = layer_list(model)[index].register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        model(**batch())
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "xlnet"])
def test_identity_scores_one_and_negation_minus_one(model_type):
    model = tiny_classifier(model_type, layers=4)
    layers = layer_list(model)
    replaced = layer_output(model, 1)
    layers[1] = Scale(1.0, replaced)
    layers[2] = Scale(-1.0, replaced)
    scores = [row.cosine for row in analyze_layers(model, [batch()], block=None)]
    assert scores[1] == pytest.approx(1.0, abs=1e-6)
    assert scores[2] == pytest.approx(-1.0, abs=1e-6)
    assert all(-1 - 1e-6 <= s <= 1 + 1e-6 for s in scores)


@pytest.fixture(scope="module")
def minilm_on_reviews():
    data = load_task_data("rotten-tomatoes", DataSettings(source="embedded"))
    tokenizer = load_tokenizer("minilm-l6")
    return load_for_task("minilm-l6", data.task, tokenizer), tokenizer, data


def test_real_minilm_scores_match_its_hidden_states(minilm_on_reviews):
    model, tokenizer, data = minilm_on_reviews
    examples = data.train.select(range(24))
    batches = scoring_batches(examples, tokenizer, 24, max_length=64, seed=0)
    scores = [row.cosine for row in analyze_layers(model, batches, block=None)]

    # Independent path: BERT's hidden_states[i] is layer i's input, hidden_states[i + 1] its output.
    sums, tokens = torch.zeros(6, dtype=torch.float64), 0
    for inputs in padded_batches(tokenize(examples, tokenizer, 64), tokenizer, 8):
        inputs.pop("labels")
        with torch.no_grad():
            states = model(**inputs, output_hidden_states=True).hidden_states
        mask = inputs["attention_mask"].bool()
        for i in range(6):
            sums[i] += nn.functional.cosine_similarity(states[i], states[i + 1], dim=-1)[mask].double().sum()
        tokens += int(mask.sum())
    assert scores == pytest.approx((sums / tokens).tolist(), abs=1e-5)
    assert all(0 < s < 1 for s in scores)
