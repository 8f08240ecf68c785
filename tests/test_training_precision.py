"""The training `precision` setting of finetune and distill: bf16 autocast really reaches the layers,
fp32 stays fp32, `auto` picks what this machine computes natively, a bf16 request is refused before any
work where the machine has no bf16 units, and fp32 stages keep the identities (caches) they had
before the setting existed.

Real components only: tiny random BERTs, the MiniLM tokenizer, the embedded reviews and the Trainer.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from pydantic import ValidationError

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


def test_distill_trains_the_student_in_bf16(reviews, tokenizer, tmp_path, one_thread):
    teacher = tiny_teacher()
    student = drop_layers(copy.deepcopy(teacher), [4, 5], "top")
    dtypes, lengths = linear_outputs(student)
    settings = DistillSettings(teacher="teacher", precision="bf16", alpha=0.0, **FAST)
    output = distill(student, settings, context_with_teacher(reviews, tokenizer, teacher, tmp_path))
    assert torch.bfloat16 in dtypes and all(n % 16 == 0 for n in lengths)
    assert output.facts.precision == "bf16"
    assert output.facts.kl_to_teacher_after < output.facts.kl_to_teacher_before


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


def test_fp32_stages_keep_the_identities_they_had_before_precision_existed():
    # Hashes computed before the field was added: a change here rebuilds every cached model of every user.
    assert nodes({"stage": "finetune", "epochs": 1})["01-finetune"].identity.startswith("47e152e330ea53e8")
    distilled = nodes({"stage": "drop", "strategy": "top", "k": 2}, {"stage": "distill", "teacher": "minilm-l6", "epochs": 1})
    assert distilled["02-distill"].identity.startswith("e45fe727b760a8ba")
    identities = {p: nodes({"stage": "finetune", "epochs": 1, "precision": p})["01-finetune"].identity for p in ("fp32", "bf16", "auto")}
    assert identities["fp32"].startswith("47e152e330ea53e8") and len(set(identities.values())) == 3
