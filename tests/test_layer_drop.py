"""Drop mechanics on tiny random models of every architecture in the table."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, T5Config

from compress.errors import CompressError
from compress.surgery.architectures import ARCHITECTURES, layer_list, layout_for, num_layers
from compress.surgery.layer_drop import drop_layers, kept_original_layers
from tests.tiny_models import DECODERS, ENCODERS, tiny_config


def tiny_classifier(model_type: str, layers: int = 6):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config(model_type, layers)).eval()


def batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 100, (2, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def test_every_table_entry_has_a_tiny_model():
    assert set(ARCHITECTURES) == set(ENCODERS + DECODERS)


@pytest.mark.parametrize("model_type", ENCODERS + DECODERS)
def test_dropping_nothing_leaves_logits_unchanged(model_type):
    model = tiny_classifier(model_type)
    with torch.no_grad():
        before = model(**batch()).logits
        drop_layers(model, [])
        after = model(**batch()).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert kept_original_layers(model.config) == list(range(6))


@pytest.mark.parametrize("model_type", [m for m in ENCODERS + DECODERS if not layout_for(tiny_config(m, 1)).shared_weights])
def test_drop_keeps_the_original_weights_and_reloads_without_missing_keys(model_type, tmp_path):
    model = tiny_classifier(model_type)
    original = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in layer_list(model)]
    drop_layers(model, [1, 4, 5], "layers")

    assert num_layers(model.config) == 3
    assert kept_original_layers(model.config) == [0, 2, 3]
    for new_index, old_index in enumerate([0, 2, 3]):
        kept = layer_list(model)[new_index].state_dict()
        assert kept.keys() == original[old_index].keys()
        assert all(torch.equal(kept[name], original[old_index][name]) for name in kept)

    with torch.no_grad():
        logits = model(**batch()).logits
    model.save_pretrained(tmp_path)
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # lists in transformers 4, sets in 5
    assert len(layer_list(reloaded)) == 3
    assert reloaded.config.compress_layer_drop["kept_layers"] == [0, 2, 3]
    assert reloaded.config.compress_layer_drop["drops"] == [{"strategy": "layers", "dropped_layers": [1, 4, 5]}]
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**batch()).logits, logits)


def test_repeated_drops_compose_to_original_indices():
    model = tiny_classifier("bert", layers=12)
    drop_layers(model, [8, 9, 10, 11], "top")  # keeps 0..7
    drop_layers(model, [0, 2], "layers")  # current 0 and 2 are original 0 and 2
    assert kept_original_layers(model.config) == [1, 3, 4, 5, 6, 7]
    record = model.config.compress_layer_drop
    assert record["original_num_layers"] == 12
    assert [d["dropped_layers"] for d in record["drops"]] == [[8, 9, 10, 11], [0, 2]]


def test_albert_drop_means_fewer_repetitions_of_the_shared_layer(tmp_path):
    model = tiny_classifier("albert")
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    layer_list(model)[0].register_forward_hook(lambda *args: calls.append(1))
    drop_layers(model, [4, 5], "top")
    with torch.no_grad():
        logits = model(**batch()).logits
    assert len(calls) == 4 and model.config.num_hidden_layers == 4
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # nothing removed
    model.save_pretrained(tmp_path)
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**batch()).logits, logits)


def test_modernbert_keeps_each_layers_attention_kind(tmp_path):
    model = tiny_classifier("modernbert")
    kinds = list(model.config.layer_types)
    assert kinds == ["full_attention", "sliding_attention", "sliding_attention"] * 2
    drop_layers(model, [1, 2], "layers")  # the kept layers 0, 3, 4, 5: full, full, sliding, sliding
    assert model.config.layer_types == [kinds[i] for i in (0, 3, 4, 5)]
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert [layer.attention_type for layer in layer_list(reloaded)] == [kinds[i] for i in (0, 3, 4, 5)]


def test_modernbert_layer_0_is_not_dropped():
    model = tiny_classifier("modernbert")
    with pytest.raises(CompressError, match="layer 0 unlike the others"):
        drop_layers(model, [0, 1], "bottom")
    assert num_layers(model.config) == 6 and kept_original_layers(model.config) == list(range(6))


def test_albert_with_several_weight_groups_is_refused():
    config = tiny_config("albert", 6)
    config.num_hidden_groups = 2
    model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(CompressError, match="num_hidden_groups"):
        drop_layers(model, [5])


def test_layers_that_compute_with_their_own_index_are_refused():
    config = tiny_config("gpt2", layers=3)
    config.scale_attn_by_inverse_layer_idx = True
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(CompressError, match="scale_attn_by_inverse_layer_idx"):
        drop_layers(model, [2])
    assert num_layers(model.config) == 3


@pytest.mark.parametrize("model_type", DECODERS)
def test_generation_with_a_cache_after_a_drop(model_type, tmp_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, 6)).eval()
    drop_layers(model, [1, 3], "layers")
    attention_indices = [m.layer_idx for m in model.modules() if hasattr(m, "layer_idx") and m.layer_idx is not None]
    assert sorted(set(attention_indices)) == [0, 1, 2, 3]
    prompt = torch.tensor([[5, 17, 42, 8]])
    with torch.no_grad():
        cached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        again = reloaded.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    assert torch.equal(again, cached)


def test_per_layer_config_lists_follow_the_kept_layers():
    config = tiny_config("qwen2", 6)
    config.layer_types = ["full_attention", "sliding_attention"] * 3
    model = AutoModelForCausalLM.from_config(config)
    drop_layers(model, [0, 2, 4])
    assert model.config.layer_types == ["sliding_attention"] * 3


def test_architecture_without_entry_is_named():
    with pytest.raises(CompressError, match="architecture 't5' has no layer-layout entry"):
        layout_for(T5Config())


@pytest.mark.parametrize("drop", [[6], [-1], list(range(6))])
def test_bad_indices_are_refused(drop):
    with pytest.raises(CompressError):
        drop_layers(tiny_classifier("bert"), drop)
