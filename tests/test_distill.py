"""The `distill` stage: its loss, the student-to-teacher layer map, and that training moves the student
towards the teacher.

Real components only: tiny random BERTs with the real MiniLM tokenizer, the embedded Rotten Tomatoes
data, the Hugging Face Trainer, teacher folders saved in tmp_path; and one tiny end-to-end run of the
embedded all-MiniLM-L6-v2 through `compress run`.
"""

from __future__ import annotations

import copy
import json
import math

import datasets
import pytest
import torch
import transformers
import yaml
from pydantic import ValidationError
from transformers import BertForSequenceClassification

from compress.data.encoding import padded_batches, tokenize
from compress.data.loading import TaskData
from compress.data.tasks import TaskSpec
from compress.errors import CompressError
from compress.stages import STAGES
from compress.stages.base import StageContext
from compress.stages.distill import (
    DistillSettings,
    distance_to_teacher,
    distill,
    hidden_pairs,
    output_loss,
    teacher_layer_map,
)
from compress.surgery.layer_drop import drop_layers
from tests.helpers import assert_scored_on, invoke
from tests.tiny_models import tiny_config

MINILM_VOCAB = 30522
REGRESSION = TaskSpec("toy-score", None, ("pearson", "spearman"), None, (), {}, None)

# A few dozen optimizer steps on 64 examples: enough to move a tiny model, seconds on a CPU.
FAST = dict(epochs=8, learning_rate=1e-3, batch_size=16, warmup_ratio=0.0, seed=0)


@pytest.fixture(scope="module")
def scores(reviews):
    """The same review texts with a made-up score per review: a regression task."""

    def scored(dataset: datasets.Dataset) -> datasets.Dataset:
        texts = dataset["text_a"]
        features = datasets.Features({"text_a": datasets.Value("string"), "label": datasets.Value("float32")})
        labels = [float(len(text.split()) % 5) for text in texts]
        return datasets.Dataset.from_dict({"text_a": texts, "label": labels}, features=features)

    return TaskData(REGRESSION, scored(reviews.train), {"validation": scored(reviews.dev["validation"])}, "test")


def tiny_teacher(num_labels: int = 2, layers: int = 6, **config) -> BertForSequenceClassification:
    """A random 6-layer BERT whose layers change their input enough that dropping some shows."""
    transformers.set_seed(0)
    settings = tiny_config("bert", layers)
    settings.vocab_size = MINILM_VOCAB
    settings.initializer_range = 0.2
    settings.num_labels = num_labels
    if num_labels == 1:
        settings.problem_type = "regression"
    for key, value in config.items():
        setattr(settings, key, value)
    return BertForSequenceClassification(settings).eval()


def context_with_teacher(data, tokenizer, teacher, tmp_path) -> StageContext:
    folder = tmp_path / "teacher"
    teacher.save_pretrained(folder)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return StageContext(data, tokenizer, out, max_length=32, eval_batch_size=32, stage_folders={"teacher": folder})


def dev_batches(context: StageContext) -> list[dict]:
    dev = tokenize(context.data.dev["validation"], context.tokenizer, context.max_length)
    return list(padded_batches(dev, context.tokenizer, 32))


# --- settings and registration ---------------------------------------------------------------------


def test_settings_are_registered_and_checked():
    assert STAGES["distill"].settings is DistillSettings and STAGES["distill"].trains
    settings = DistillSettings(teacher="teacher")
    assert (settings.alpha, settings.temperature, settings.hidden_weight) == (0.5, 2.0, 0.0)
    assert settings.epochs == 3.0  # the fine-tuning fields are inherited
    assert settings.model_references() == {"teacher": "teacher"}
    for bad in ({"alpha": 1.5}, {"alpha": -0.1}, {"temperature": 0}, {"hidden_weight": -1}, {}):
        with pytest.raises(ValidationError):
            DistillSettings(**({"teacher": "teacher"} if bad else {}), **bad)


# --- the loss ----------------------------------------------------------------------------------------


def test_classification_loss_by_hand():
    student = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 3.0, 0.5]])
    labels = torch.tensor([0, 2])
    alpha, t = 0.3, 2.0
    ce = -(torch.log_softmax(student, -1)[0, 0] + torch.log_softmax(student, -1)[1, 2]) / 2
    p_teacher = torch.softmax(teacher / t, -1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / t, -1))).sum() / 2
    expected = alpha * ce + (1 - alpha) * t * t * kl
    assert torch.allclose(output_loss(student, teacher, labels, alpha, t, regression=False), expected)
    # alpha 1: the teacher is not needed at all
    assert torch.allclose(output_loss(student, None, labels, 1.0, t, regression=False), ce)
    # a student equal to its teacher has no soft loss
    assert output_loss(teacher, teacher, labels, 0.0, t, regression=False).abs() < 1e-6


def test_regression_loss_is_mse_to_labels_and_to_teacher():
    student = torch.tensor([[1.0], [2.0], [0.0]])
    teacher = torch.tensor([[1.5], [2.0], [1.0]])
    labels = torch.tensor([0.0, 3.0, 0.0])
    to_labels = (1.0 + 1.0 + 0.0) / 3
    to_teacher = (0.25 + 0.0 + 1.0) / 3
    loss = output_loss(student, teacher, labels, 0.25, 2.0, regression=True)
    assert math.isclose(loss.item(), 0.25 * to_labels + 0.75 * to_teacher, rel_tol=1e-6)


# --- the layer map -------------------------------------------------------------------------------------


def test_layer_map_follows_the_original_layers():
    teacher = tiny_teacher()
    student = drop_layers(copy.deepcopy(teacher), [2, 4, 5], "layers")  # keeps original layers 0, 1, 3
    assert teacher_layer_map(student.config, teacher.config) == [0, 1, 3]
    assert hidden_pairs([0, 1, 3], 6) == [(0, 0), (1, 1), (2, 2), (3, 4)]
    # a decoder's last state is after its final norm: paired only with the teacher's last
    assert hidden_pairs([0, 1, 3], 6, normed_last=True) == [(0, 0), (1, 1), (2, 2)]
    assert hidden_pairs([0, 1, 5], 6, normed_last=True) == [(0, 0), (1, 1), (2, 2), (3, 6)]
    # a teacher that was itself dropped: indices are its own, not the original ones
    dropped_teacher = drop_layers(copy.deepcopy(teacher), [2], "layers")  # keeps 0, 1, 3, 4, 5
    assert teacher_layer_map(student.config, dropped_teacher.config) == [0, 1, 2]


def test_layer_map_names_a_student_layer_the_teacher_lacks():
    teacher = drop_layers(tiny_teacher(), [3, 4], "layers")  # keeps 0, 1, 2, 5
    student = drop_layers(tiny_teacher(), [2, 4, 5], "layers")  # keeps 0, 1, 3
    with pytest.raises(CompressError, match=r"teacher: .*student layer 2 \(original layer 3\)"):
        teacher_layer_map(student.config, teacher.config)


def test_layer_map_refuses_other_hidden_sizes_and_depths():
    student = tiny_teacher().config
    with pytest.raises(CompressError, match="hidden size 32"):
        teacher_layer_map(student, tiny_teacher(hidden_size=32).config)
    with pytest.raises(CompressError, match="8-layer model"):
        teacher_layer_map(student, tiny_teacher(layers=8).config)


# --- training moves the student towards the teacher ----------------------------------------------------


def test_distillation_lowers_the_kl_to_the_teacher(reviews, tokenizer, tmp_path, one_thread):
    teacher = tiny_teacher()
    student = drop_layers(copy.deepcopy(teacher), [4, 5], "top")
    context = context_with_teacher(reviews, tokenizer, teacher, tmp_path)
    output = distill(student, DistillSettings(teacher="teacher", alpha=0.0, **FAST), context)
    trained = output.model

    assert trained.config.num_hidden_layers == 4
    notes = output.facts.model_dump(exclude_none=True)
    assert notes["teacher"] == "teacher" and notes["loss"] == "kl" and notes["alpha"] == 0.0
    assert notes["note_examples"] == 32
    assert notes["kl_to_teacher_before"] > 0.01, notes
    assert notes["kl_to_teacher_after"] < 0.3 * notes["kl_to_teacher_before"], notes
    # the note agrees with an independent measurement on the same dev examples
    measured = distance_to_teacher(trained, teacher, dev_batches(context), regression=False)
    assert math.isclose(measured["kl_to_teacher"], notes["kl_to_teacher_after"], rel_tol=1e-4)


def test_hidden_term_pulls_each_layer_towards_the_layer_it_was_kept_from(reviews, tokenizer, tmp_path, one_thread):
    """Dropping layers 1 and 3 changes what the kept layers see; the hidden term undoes that, labels alone do not."""
    teacher = tiny_teacher()
    pairs = hidden_pairs([0, 2, 4, 5], 6)
    after = {}
    for weight in (0.0, 1.0):
        student = drop_layers(copy.deepcopy(teacher), [1, 3], "layers")
        context = context_with_teacher(reviews, tokenizer, teacher, tmp_path / f"w{weight}")
        batches = dev_batches(context)
        before = distance_to_teacher(student, teacher, batches, False, pairs)["hidden_mse_to_teacher"]
        settings = DistillSettings(teacher="teacher", alpha=1.0, hidden_weight=weight, **FAST)
        output = distill(student, settings, context)
        after[weight] = distance_to_teacher(output.model, teacher, batches, False, pairs)["hidden_mse_to_teacher"]
    notes = output.facts.model_dump(exclude_none=True)
    assert notes["hidden_weight"] == 1.0
    assert math.isclose(notes["hidden_mse_to_teacher_before"], before, rel_tol=1e-4)
    assert math.isclose(notes["hidden_mse_to_teacher_after"], after[1.0], rel_tol=1e-4)
    assert after[1.0] < 0.7 * before, (before, after)
    assert after[1.0] < 0.7 * after[0.0], (before, after)


def test_regression_distills_with_mse(scores, tokenizer, tmp_path, one_thread):
    teacher = tiny_teacher(num_labels=1)
    student = drop_layers(copy.deepcopy(teacher), [4, 5], "top")
    context = context_with_teacher(scores, tokenizer, teacher, tmp_path)
    notes = distill(student, DistillSettings(teacher="teacher", alpha=0.0, **FAST), context).facts.model_dump(exclude_none=True)
    assert notes["loss"] == "mse" and "kl_to_teacher_before" not in notes
    assert notes["mse_to_teacher_before"] > 0.01, notes
    assert notes["mse_to_teacher_after"] < 0.3 * notes["mse_to_teacher_before"], notes


def test_teacher_with_another_label_count_is_refused_before_training(reviews, tokenizer, tmp_path):
    student = drop_layers(tiny_teacher(), [4, 5], "top")
    context = context_with_teacher(reviews, tokenizer, tiny_teacher(num_labels=3), tmp_path)
    with pytest.raises(CompressError, match=r"teacher: 'teacher' has 3 output\(s\), the student 2"):
        distill(student, DistillSettings(teacher="teacher", **FAST), context)


def test_teacher_with_other_label_names_is_refused(reviews, tokenizer, tmp_path):
    names = dict(id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
    student = drop_layers(tiny_teacher(**names), [4, 5], "top")
    swapped = dict(id2label={0: "fresh", 1: "rotten"}, label2id={"fresh": 0, "rotten": 1})
    context = context_with_teacher(reviews, tokenizer, tiny_teacher(**swapped), tmp_path)
    with pytest.raises(CompressError, match="class ids must mean the same labels"):
        distill(student, DistillSettings(teacher="teacher", **FAST), context)


def test_hidden_term_with_a_teacher_lacking_a_layer_is_refused_before_training(reviews, tokenizer, tmp_path):
    teacher = drop_layers(tiny_teacher(), [3], "layers")
    student = drop_layers(tiny_teacher(), [4, 5], "top")  # keeps original layer 3
    context = context_with_teacher(reviews, tokenizer, teacher, tmp_path)
    with pytest.raises(CompressError, match=r"original layer 3"):
        distill(student, DistillSettings(teacher="teacher", hidden_weight=1.0, **FAST), context)


# --- end to end: fine-tune a teacher, drop, distill ----------------------------------------------------


@pytest.mark.slow
def test_recipe_with_a_distill_stage_runs_end_to_end(tmp_path):
    recipe = {
        "model": "minilm-l6",
        "task": "rotten-tomatoes",
        "data": {"source": "embedded", "max_train_examples": 48, "max_eval_examples": 48},
        "max_length": 32,
        "stages": [
            {"stage": "finetune", "name": "teacher", "epochs": 1},
            {"stage": "drop", "name": "dropped", "from": "base", "strategy": "top", "k": 2},
            {"stage": "distill", "name": "student", "teacher": "teacher", "epochs": 1},
        ],
    }
    file = tmp_path / "distill.yaml"
    file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    run = tmp_path / "run"
    result = invoke("run", file, "--out", run)
    assert result.exit_code == 0, (result.output, result.exception)

    results = json.loads((run / "results.json").read_text())
    stages = {s["name"]: s for s in results["stages"]}
    student = stages["student"]
    assert student["stage"] == "distill" and student["source"] == "dropped"
    assert student["layers"] == 4 and student["kept_layers"] == [0, 1, 2, 3]
    assert_scored_on(student["metrics"], recipe["data"]["max_eval_examples"])
    notes = student["notes"]
    assert notes["teacher"] == "teacher" and notes["loss"] == "kl"
    assert notes["kl_to_teacher_before"] >= 0 and notes["kl_to_teacher_after"] >= 0
    assert json.loads((run / "student" / "stage.json").read_text())["settings"]["teacher"] == "teacher"
