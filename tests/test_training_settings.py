"""The training settings of finetune and distill that change how, not what, they train: `precision`
(bf16 autocast really reaches the layers, fp32 stays fp32, `auto` picks what this machine computes
natively, a bf16 request is refused before any work where the machine has no bf16 units) and `batches`
(by-length batches pad fewer tokens); at their defaults, stages keep the identities (caches) they had
before the settings existed.

Real components only: tiny random BERTs, the MiniLM tokenizer, the embedded reviews and the Trainer.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from pydantic import ValidationError

from compress.data.loading import DataSettings, load_task_data
from compress.stages.distill import DistillSettings, distill
from compress.stages.finetune import FinetuneSettings, bf16_training_problem, finetune
from compress.surgery.layer_drop import drop_layers
from tests.helpers import assert_one_line_error, invoke, write_recipe
from tests.test_distill import FAST, context_with_teacher, tiny_teacher
from tests.test_engine import nodes

NATIVE_BF16 = bf16_training_problem() is None


def linear_outputs(model: torch.nn.Module) -> tuple[set[torch.dtype], set[int]]:
    """Records the dtypes of every Linear layer's outputs while the model trains, and the padded lengths
    of the batches (from the outputs that have a sequence axis)."""
    dtypes: set[torch.dtype] = set()
    lengths: set[int] = set()

    def record(_module, _inputs, output):
        dtypes.add(output.dtype)
        if output.dim() == 3:
            lengths.add(output.shape[1])

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(record)
    return dtypes, lengths


def computes_in(model: torch.nn.Module, tokenizer) -> set[torch.dtype]:
    """The dtypes of the Linear layers' outputs in one forward pass after training (bf16 training's autocast, if the
    Trainer left it on the model, would make them bf16)."""
    found: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, output: found.add(output.dtype)) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model(**tokenizer(["a fine film"], return_tensors="pt"))
    for hook in hooks:
        hook.remove()
    return found


@pytest.mark.parametrize("precision, computed", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_finetune_computes_in_the_precision_it_reports(precision, computed, reviews, tokenizer, tmp_path, one_thread):
    # Called past the recipe check, so bf16 runs here even where the CPU only emulates it.
    model = tiny_teacher()
    before = model.classifier.weight.detach().clone()
    dtypes, lengths = linear_outputs(model)
    context = context_with_teacher(reviews, tokenizer, model, tmp_path)
    context.max_length = 40  # most reviews are longer: fp32 batches are 40 tokens, bf16 ones 48
    output = finetune(model, FinetuneSettings(precision=precision, **FAST), context)
    assert dtypes == {computed}
    # bf16 batches are padded to a multiple of 16 (few shapes for the GPU); fp32 ones to their longest example, as before
    assert all(n % 16 == 0 for n in lengths) == (precision == "bf16"), lengths
    assert output.facts.precision == precision
    assert output.facts.train_steps_per_second > 0
    # autocast: the weights the stage saves stay fp32 either way
    assert {p.dtype for p in output.model.parameters()} == {torch.float32}
    assert all(math.isfinite(loss) for loss in output.facts.train_loss_by_step.values())
    assert not torch.equal(output.model.classifier.weight, before), "training moved the weights"
    assert computes_in(output.model, tokenizer) == {torch.float32}, "the model handed on, and scored, computes as saved"


def test_distill_trains_the_student_in_bf16(reviews, tokenizer, tmp_path, one_thread):
    teacher = tiny_teacher()
    student = drop_layers(copy.deepcopy(teacher), [4, 5], "top")
    dtypes, lengths = linear_outputs(student)
    settings = DistillSettings(teacher="teacher", precision="bf16", alpha=0.0, **FAST)
    output = distill(student, settings, context_with_teacher(reviews, tokenizer, teacher, tmp_path))
    assert torch.bfloat16 in dtypes and all(n % 16 == 0 for n in lengths)
    assert output.facts.precision == "bf16"
    assert output.facts.kl_to_teacher_after < output.facts.kl_to_teacher_before
    assert computes_in(output.model, tokenizer) == {torch.float32}, "no autocast left on the student it hands on"


def test_auto_is_bf16_exactly_where_the_machine_has_it():
    assert FinetuneSettings(precision="auto").training_precision() == ("bf16" if NATIVE_BF16 else "fp32")
    assert FinetuneSettings().training_precision() == "fp32", "fp32 stays the default: results do not depend on the host"
    with pytest.raises(ValidationError, match="precision"):
        FinetuneSettings(precision="fp16")


@pytest.mark.skipif(NATIVE_BF16, reason="this machine trains in bf16 natively")
def test_bf16_without_bf16_units_is_refused_before_any_work(tmp_path):
    recipe = write_recipe(tmp_path, "bf16", {
        "name": "bf16", "model": "minilm-l6", "task": "rotten-tomatoes", "data": {"source": "embedded", "max_train_examples": 32},
        "stages": [{"stage": "finetune", "epochs": 1, "precision": "bf16"}]})
    out = tmp_path / "out"
    result = invoke("run", recipe, "--out", out)
    assert_one_line_error(result, "precision: bf16", "AVX512-BF16", "precision: auto")
    assert not out.exists()


def padded_tokens(model: torch.nn.Module) -> list[tuple[int, int]]:
    """Records (batch size, padded length) of every batch the model's embeddings see."""
    shapes: list[tuple[int, int]] = []
    model.get_input_embeddings().register_forward_hook(lambda _module, _inputs, output: shapes.append(tuple(output.shape[:2])))
    return shapes


GROUPED = 8
"""Batches the length-grouped sampler sorts together when it has 8 x 4 batches' worth of examples (it groups
min(examples // (4 x batch size), 50) batches; fewer than 4 batches' worth would be sorted within each batch only)."""


@pytest.fixture(scope="module")
def more_reviews():
    """512 training reviews: 32 batches of 16, which the length-grouped sampler sorts in 4 groups of 8."""
    return load_task_data("rotten-tomatoes", DataSettings(source="embedded", max_train_examples=32 * FAST["batch_size"], max_eval_examples=32))


@pytest.mark.slow
def test_by_length_batches_train_on_the_same_examples_with_less_padding(more_reviews, tokenizer, tmp_path, one_thread):
    computed = {}
    for batches in ("shuffled", "by-length"):
        model = tiny_teacher()
        shapes = padded_tokens(model)
        context = context_with_teacher(more_reviews, tokenizer, model, tmp_path)
        context.max_length = 64  # few reviews are longer: batches differ in length
        output = finetune(model, FinetuneSettings(batches=batches, **{**FAST, "epochs": 1}), context)
        assert all(math.isfinite(loss) for loss in output.facts.train_loss_by_step.values())
        computed[batches] = shapes
    examples = [sum(size for size, _ in shapes) for shapes in computed.values()]
    assert examples == [len(more_reviews.train)] * 2, "every example once an epoch, either way"
    tokens = {batches: sum(size * length for size, length in shapes) for batches, shapes in computed.items()}
    assert tokens["by-length"] < 0.8 * tokens["shuffled"], tokens


@pytest.mark.slow
def test_distill_draws_by_length_batches_too(more_reviews, tokenizer, tmp_path, one_thread):
    teacher = tiny_teacher()
    student = drop_layers(copy.deepcopy(teacher), [4, 5], "top")
    shapes = padded_tokens(student)
    context = context_with_teacher(more_reviews, tokenizer, teacher, tmp_path)
    context.max_length = 64
    settings = DistillSettings(teacher="teacher", batches="by-length", **{**FAST, "epochs": 1})
    distill(student, settings, context)
    # shapes[0] is the KL measurement on the 32 dev reviews before training; then the training batches,
    # each group of 8 sorted longest first
    lengths = [length for _, length in shapes[1 : 1 + len(more_reviews.train) // FAST["batch_size"]]]
    groups = [lengths[i : i + GROUPED] for i in range(0, len(lengths), GROUPED)]
    assert all(group == sorted(group, reverse=True) and group[0] > group[-1] for group in groups), lengths


def test_stages_at_the_default_settings_keep_the_identities_they_had_before_the_settings_existed():
    # Hashes computed before the field was added: a change here rebuilds every cached model of every user.
    assert nodes({"stage": "finetune", "epochs": 1})["01-finetune"].identity.startswith("47e152e330ea53e8")
    distilled = nodes({"stage": "drop", "strategy": "top", "k": 2}, {"stage": "distill", "teacher": "minilm-l6", "epochs": 1})
    assert distilled["02-distill"].identity.startswith("e45fe727b760a8ba")
    identities = {p: nodes({"stage": "finetune", "epochs": 1, "precision": p})["01-finetune"].identity for p in ("fp32", "bf16", "auto")}
    assert identities["fp32"].startswith("47e152e330ea53e8") and len(set(identities.values())) == 3
    by_length = nodes({"stage": "finetune", "epochs": 1, "batches": "by-length"})["01-finetune"].identity
    assert nodes({"stage": "finetune", "epochs": 1, "batches": "shuffled"})["01-finetune"].identity.startswith("47e152e330ea53e8")
    assert not by_length.startswith("47e152e330ea53e8"), "by-length batches train another model"
