"""The `distill` stage: train the (dropped) model to match a fine-tuned teacher, with the Hugging Face Trainer.

Loss per batch, a sentence embedder (a recipe with `embedding:`), on texts alone, no labels:
    |normalize(student vector) - normalize(teacher vector)|^2 (= 2 - 2 cos), the batch's mean
classification:
    alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))
regression (one output):
    alpha * MSE(student, labels) + (1 - alpha) * MSE(student, teacher)
plus, when `hidden_weight` > 0, hidden_weight * the mean MSE between hidden states over non-padding
tokens: the embeddings pair and every student layer with the teacher layer it was kept from.

The Trainer subclass overrides only `compute_loss` (on finetune's ResumableTrainer), so `accelerate
launch` and `torchrun` work as for `finetune`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from datasets import Dataset
from pydantic import BaseModel, ConfigDict, Field
from transformers import PretrainedConfig, PreTrainedModel

from compress.data.encoding import model_inputs, padded_batches, tokenize
from compress.errors import CompressError
from compress.models.embedding import embed, embedding_of
from compress.stages.base import ModelDescription, StageContext, StageOutput
from compress.stages.finetune import (
    FinetuneSettings,
    ResumableTrainer,
    TrainingFacts,
    train,
    trainer_folder,
    training_arguments,
    training_collator,
)
from compress.surgery.architectures import layout_for, num_layers
from compress.surgery.layer_drop import kept_original_layers, original_num_layers

NOTE_EXAMPLES = 256
"""Dev examples the before/after distance to the teacher is measured on."""


class DistillationLoss(BaseModel):
    """How the student's loss mixes labels, the teacher's outputs and its hidden states."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf passes gt=0, then fails in training

    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the hard-label loss; 1 - alpha on the soft loss.")
    temperature: float = Field(2.0, gt=0, description="Softens both distributions in the KL term.")
    hidden_weight: float = Field(
        0.0, ge=0, description="Weight of the MSE between each student layer and the teacher layer it was kept from."
    )


class DistillSettings(FinetuneSettings, DistillationLoss):
    stage: Literal["distill"] = "distill"
    teacher: str = Field(
        description="An earlier stage's name in this recipe, or a fine-tuned model's folder, alias or hub id."
    )

    added_later: ClassVar[dict[str, object]] = {**FinetuneSettings.added_later, "sentences": None}
    sentences: Path | None = Field(
        None, description="An embedding recipe's own texts to distil on, instead of the task's training texts: a plain "
        "text file (one text per line) or JSON lines with a 'text' field.")

    def model_references(self) -> dict[str, str]:
        return {"teacher": self.teacher}

    def kind_problem(self, embedder: bool) -> str | None:
        if self.sentences is not None and not embedder:
            return "sentences: only an embedding recipe (embedding:) distils on texts alone; a classifier learns from the task's examples"
        return None

    def identity_settings(self, layers_before: int) -> dict:
        settings = super().identity_settings(layers_before)
        if self.sentences is not None:  # the texts, not where they lie, decide the model
            settings["sentences"] = hashlib.sha256(self.sentences.read_bytes()).hexdigest()
        return settings

    def check_chain(self, config: PretrainedConfig, layers_before: int, train_examples: int) -> None:
        if self.sentences is not None:
            train_examples = len(read_sentences(self.sentences))
        super().check_chain(config, layers_before, train_examples)

    def describe(self, described: ModelDescription) -> None:
        described.training = self.stage

    def loss_note(self) -> dict:
        return {"teacher": self.teacher, "alpha": self.alpha, "temperature": self.temperature,
                "hidden_weight": self.hidden_weight}


class DistillFacts(TrainingFacts):
    """The loss settings, and how far the student's outputs (and hidden states, with hidden_weight) were
    from the teacher's on dev examples before and after training."""

    teacher: str
    alpha: float
    temperature: float
    hidden_weight: float
    loss: Literal["kl", "mse", "vector-mse"]
    note_examples: int
    cosine_to_teacher_before: float | None = None
    """An embedder's: the mean cosine similarity of its vectors to the teacher's, on dev texts."""
    cosine_to_teacher_after: float | None = None
    kl_to_teacher_before: float | None = None
    kl_to_teacher_after: float | None = None
    mse_to_teacher_before: float | None = None
    mse_to_teacher_after: float | None = None
    hidden_mse_to_teacher_before: float | None = None
    hidden_mse_to_teacher_after: float | None = None


# --- the loss --------------------------------------------------------------------------------------


def output_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    regression: bool,
) -> torch.Tensor:
    """Hard-label loss weighted `alpha`, soft (teacher) loss weighted `1 - alpha`.

    `teacher_logits` may be None when alpha == 1.
    """
    student_logits = student_logits.float()
    if regression:
        hard = F.mse_loss(student_logits.view(-1), labels.float().view(-1))
    else:
        hard = F.cross_entropy(student_logits, labels.view(-1))
    if alpha == 1.0:
        return hard
    teacher_logits = teacher_logits.float()
    if regression:
        soft = F.mse_loss(student_logits.view(-1), teacher_logits.view(-1))
    else:
        t = temperature
        soft = t * t * F.kl_div(
            F.log_softmax(student_logits / t, dim=-1),
            F.log_softmax(teacher_logits / t, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
    return alpha * hard + (1 - alpha) * soft


def teacher_layer_map(student: PretrainedConfig, teacher: PretrainedConfig) -> list[int]:
    """For each student layer j, the index of the teacher layer that is the same original layer.

    Both sides are read from the layer-drop provenance in the configs (`kept_original_layers`), so a
    student dropped from the teacher's own pre-trained model, or from a dropped teacher, maps exactly.
    """
    student_hidden = getattr(student, "hidden_size", None)
    teacher_hidden = getattr(teacher, "hidden_size", None)
    if student_hidden is not None and teacher_hidden is not None and student_hidden != teacher_hidden:
        raise CompressError(
            f"teacher: hidden size {teacher_hidden} differs from the student's {student_hidden}; "
            "hidden_weight needs equal sizes (set hidden_weight: 0)"
        )
    if original_num_layers(student) != original_num_layers(teacher):
        raise CompressError(
            f"teacher: comes from a {original_num_layers(teacher)}-layer model, the student from a "
            f"{original_num_layers(student)}-layer one; hidden_weight needs both cut from the same model "
            "(set hidden_weight: 0)"
        )
    student_layers = kept_original_layers(student)
    teacher_layers = kept_original_layers(teacher)
    missing = [(j, layer) for j, layer in enumerate(student_layers) if layer not in teacher_layers]
    if missing:
        which = ", ".join(f"layer {j} (original layer {layer})" for j, layer in missing)
        raise CompressError(
            f"teacher: has no counterpart for student {which}; the teacher keeps original layers "
            f"{teacher_layers} (set hidden_weight: 0, or distill from a teacher that keeps them)"
        )
    return [teacher_layers.index(layer) for layer in student_layers]


def hidden_pairs(layer_map: list[int], teacher_layers: int, normed_last: bool = False) -> list[tuple[int, int]]:
    """(student, teacher) indices into `hidden_states`: the embeddings, then each student layer's output.
    With `normed_last` (decoders), the student's last state has passed the final norm, so it is paired
    only with the teacher's last state, which has too."""
    pairs = [(0, 0)] + [(j + 1, t + 1) for j, t in enumerate(layer_map)]
    if normed_last and layer_map and layer_map[-1] != teacher_layers - 1:
        pairs.pop()
    return pairs


def hidden_loss(
    student_states: tuple[torch.Tensor, ...],
    teacher_states: tuple[torch.Tensor, ...],
    pairs: list[tuple[int, int]],
    attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """MSE per element over non-padding tokens, averaged over the matched pairs."""
    reference = student_states[0]
    if attention_mask is None:
        mask = torch.ones(reference.shape[:2], device=reference.device)
    else:
        mask = attention_mask.to(reference.device, torch.float32)
    denominator = mask.sum().clamp(min=1) * reference.shape[-1]
    total = reference.new_zeros((), dtype=torch.float32)
    for s, t in pairs:
        squared = (student_states[s].float() - teacher_states[t].float()).pow(2)
        total = total + (squared * mask.unsqueeze(-1)).sum() / denominator
    return total / len(pairs)


# --- training --------------------------------------------------------------------------------------


def _accepted_inputs(model: PreTrainedModel) -> set[str] | None:
    """Keyword inputs the model's forward takes, or None when it takes any."""
    parameters = inspect.signature(model.forward).parameters
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return set(parameters)


class DistillationTrainer(ResumableTrainer):
    """A Trainer whose loss compares the student with a frozen teacher (see the module docstring)."""

    def __init__(
        self,
        *args,
        teacher: PreTrainedModel,
        settings: DistillSettings,
        regression: bool,
        pairs: list[tuple[int, int]] | None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.teacher_inputs = _accepted_inputs(teacher)
        self.settings = settings
        self.regression = regression
        self.pairs = pairs
        # The loss is a batch mean, so the Trainer must divide it by the gradient-accumulation steps.
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        want_hidden = self.pairs is not None
        outputs = model(**inputs, output_hidden_states=want_hidden)
        needs_teacher = self.settings.alpha < 1.0 or want_hidden
        teacher_outputs = None
        if needs_teacher:
            accepted = self.teacher_inputs
            feed = inputs if accepted is None else {k: v for k, v in inputs.items() if k in accepted}
            with torch.no_grad():
                teacher_outputs = self.teacher(**feed, output_hidden_states=want_hidden)
        loss = output_loss(
            outputs.logits,
            teacher_outputs.logits if teacher_outputs is not None else None,
            labels,
            self.settings.alpha,
            self.settings.temperature,
            self.regression,
        )
        if want_hidden:
            hidden = hidden_loss(
                outputs.hidden_states, teacher_outputs.hidden_states, self.pairs, inputs.get("attention_mask")
            )
            loss = loss + self.settings.hidden_weight * hidden
        return (loss, outputs) if return_outputs else loss


def vector_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Squared distance of the unit vectors (2 - 2 cos), the batch's mean: what an embedder is distilled by."""
    return (F.normalize(student.float(), dim=-1) - F.normalize(teacher.float(), dim=-1)).pow(2).sum(-1).mean()


class EmbeddingDistillationTrainer(DistillationTrainer):
    """A Trainer whose student reproduces a frozen teacher embedder's sentence vectors (and, with hidden_weight,
    its hidden states); the examples are texts without labels."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        want_hidden = self.pairs is not None
        vectors, outputs = embed(model, inputs, output_hidden_states=want_hidden)
        accepted = self.teacher_inputs
        with torch.no_grad():
            teacher_vectors, teacher_outputs = embed(self.teacher, inputs if accepted is None else {k: v for k, v in inputs.items() if k in accepted},
                                                     output_hidden_states=want_hidden)
        loss = vector_loss(vectors, teacher_vectors)
        if want_hidden:
            loss = loss + self.settings.hidden_weight * hidden_loss(outputs.hidden_states, teacher_outputs.hidden_states, self.pairs,
                                                                    inputs.get("attention_mask"))
        return (loss, outputs) if return_outputs else loss


def read_sentences(path: Path) -> list[str]:
    """Texts of a plain text file (one per line) or of JSON lines (each an object with a 'text' field)."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except FileNotFoundError:
        raise CompressError(f"sentences: {path}: no such file; expected texts, one per line, or JSON lines with 'text'") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CompressError(f"sentences: {path}: cannot read as UTF-8 text ({error})") from None
    if path.suffix.lower() not in (".jsonl", ".json"):
        texts = lines
    else:
        texts = []
        for number, line in enumerate(lines, start=1):
            try:
                text = json.loads(line).get("text")
            except (ValueError, AttributeError):
                text = None
            if not isinstance(text, str):
                raise CompressError(f"sentences: {path}, line {number}: expected a JSON object with a 'text' string")
            texts.append(text)
    if not texts:
        raise CompressError(f"sentences: {path}: no texts; expected at least one")
    return texts


# --- checks and the before/after note -------------------------------------------------------------

_GENERIC_LABEL = re.compile(r"LABEL_\d+")


def check_teacher(teacher: object, student: PreTrainedModel, settings: DistillSettings, regression: bool) -> None:
    name = settings.teacher
    if not isinstance(teacher, PreTrainedModel):
        raise CompressError(f"teacher: '{name}' is not a PyTorch model (distill from a model before export/quantize)")
    if embedding_of(student.config) is not None:
        if embedding_of(teacher.config) is None:
            raise CompressError(f"teacher: '{name}' is not a sentence embedder; an embedder distils from one (teacher: base, the full model)")
        if teacher.config.hidden_size != student.config.hidden_size:
            raise CompressError(f"teacher: '{name}' makes vectors of {teacher.config.hidden_size} numbers, the student "
                                f"{student.config.hidden_size}; their vectors must be comparable")
        return
    if not type(teacher).__name__.endswith("ForSequenceClassification"):
        raise CompressError(
            f"teacher: '{name}' loads as {type(teacher).__name__}, not a sequence-classification model; "
            "use a model fine-tuned on the task"
        )
    if teacher.config.num_labels != student.config.num_labels:
        raise CompressError(
            f"teacher: '{name}' has {teacher.config.num_labels} output(s), the student "
            f"{student.config.num_labels}; the teacher must be fine-tuned on the same task"
        )
    if not regression:
        teacher_labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
        student_labels = [student.config.id2label[i] for i in range(student.config.num_labels)]
        named = not any(_GENERIC_LABEL.fullmatch(str(label)) for label in teacher_labels + student_labels)
        if named and teacher_labels != student_labels:
            raise CompressError(
                f"teacher: '{name}' has labels {teacher_labels}, the student {student_labels}; "
                "class ids must mean the same labels"
            )


@torch.no_grad()
def cosine_to_teacher(student: PreTrainedModel, teacher: PreTrainedModel, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """The mean cosine similarity of an embedder's vectors to its teacher's."""
    was_training = student.training
    student.eval()
    device = next(student.parameters()).device
    similarities = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        similarities.append(F.cosine_similarity(embed(student, batch)[0].float(), embed(teacher, batch)[0].float(), dim=-1))
    student.train(was_training)
    return {"cosine_to_teacher": float(torch.cat(similarities).mean())}


@torch.no_grad()
def distance_to_teacher(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    batches: Iterable[dict[str, torch.Tensor]],
    regression: bool,
    pairs: list[tuple[int, int]] | None = None,
) -> dict[str, float]:
    """Mean KL(teacher || student) at temperature 1 per example (or the mean squared difference of the
    outputs for regression), and the hidden-state MSE when `pairs` is given."""
    was_training = student.training
    student.eval()
    teacher.eval()
    teacher_inputs = _accepted_inputs(teacher)
    device = next(student.parameters()).device
    teacher.to(device)
    output_total, hidden_total, examples, batch_count = 0.0, 0.0, 0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        feed = batch if teacher_inputs is None else {k: v for k, v in batch.items() if k in teacher_inputs}
        s = student(**batch, output_hidden_states=pairs is not None)
        t = teacher(**feed, output_hidden_states=pairs is not None)
        s_logits, t_logits = s.logits.float(), t.logits.float()
        if regression:
            output_total += (s_logits.view(-1) - t_logits.view(-1)).pow(2).sum().item()
        else:
            output_total += F.kl_div(
                F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1), log_target=True, reduction="sum"
            ).item()
        if pairs is not None:
            hidden_total += hidden_loss(s.hidden_states, t.hidden_states, pairs, batch.get("attention_mask")).item()
        examples += s_logits.shape[0]
        batch_count += 1
    student.train(was_training)
    measured = {("mse_to_teacher" if regression else "kl_to_teacher"): output_total / max(examples, 1)}
    if pairs is not None:
        measured["hidden_mse_to_teacher"] = hidden_total / max(batch_count, 1)
    return measured


def _note_batches(context: StageContext) -> list[dict[str, torch.Tensor]]:
    """Up to NOTE_EXAMPLES examples of the primary dev split, tokenized and batched once."""
    dev = next(iter(context.data.dev.values()), None)
    if dev is None or len(dev) == 0:
        return []
    # an embedder takes each text of a pair alone: the first examples' texts, cut again to NOTE_EXAMPLES
    inputs = model_inputs(context.data.task, dev.select(range(min(NOTE_EXAMPLES, len(dev)))))
    tokenized = tokenize(inputs.select(range(min(NOTE_EXAMPLES, len(inputs)))), context.tokenizer, context.max_length)
    return list(padded_batches(tokenized, context.tokenizer, context.eval_batch_size))


def distill(model: PreTrainedModel, settings: DistillSettings, context: StageContext) -> StageOutput:
    regression = context.data.task.is_regression
    embedder = embedding_of(model.config) is not None
    teacher = context.load_model(settings.teacher)
    check_teacher(teacher, model, settings, regression)
    teacher.eval().requires_grad_(False)
    pairs = None
    if settings.hidden_weight > 0:
        normed_last = layout_for(model.config).normed_last_hidden_state
        pairs = hidden_pairs(teacher_layer_map(model.config, teacher.config), num_layers(teacher.config), normed_last)

    texts = context.data.train if settings.sentences is None else Dataset.from_dict({"text_a": read_sentences(settings.sentences)})
    train_set = tokenize(model_inputs(context.data.task, texts), context.tokenizer, context.max_length)
    note_batches = _note_batches(context)
    with trainer_folder(context) as folder:
        args = training_arguments(settings, folder)
        model.to(args.device)
        teacher.to(args.device)

        def measure(when: str) -> dict[str, float]:
            if not note_batches:
                return {}
            if embedder:
                distances = cosine_to_teacher(model, teacher, note_batches)
            else:
                distances = distance_to_teacher(model, teacher, note_batches, regression, pairs)
            return {f"{key}_{when}": value for key, value in distances.items()}

        before = measure("before")
        trainer = (EmbeddingDistillationTrainer if embedder else DistillationTrainer)(
            model=model,
            args=args,
            train_dataset=train_set,
            data_collator=training_collator(settings, context.tokenizer),
            processing_class=context.tokenizer,
            teacher=teacher,
            settings=settings,
            regression=regression,
            pairs=pairs,
        )
        record = train(trainer, context)
        model = trainer.model
        after = measure("after")

    facts = DistillFacts(
        **settings.loss_note(), loss="vector-mse" if embedder else "mse" if regression else "kl", **before, **after,
        note_examples=sum(len(b["input_ids"]) for b in note_batches), **record,
    )
    return StageOutput(model, facts)
