"""The `finetune` stage: train the whole model on the task with the Hugging Face Trainer.

The Trainer is what lets `accelerate launch` or `torchrun` spread the same recipe over several GPUs.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from transformers import DataCollatorWithPadding, PretrainedConfig, PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from compress.data.encoding import tokenize
from compress.data.seeds import Seed
from compress.errors import CompressError, first_line
from compress.folders import require_ours
from compress.stages.base import ModelDescription, StageContext, StageFacts, StageOutput, StageSettings, TrainingCheckpoints

MAX_TRAINING_STEPS = 300_000
"""More optimizer steps than any GLUE recipe takes (MNLI, 3 epochs at batch size 8: 147k) by a wide margin."""


class TrainingHyperparameters(BaseModel):
    """What a training run is given; shared by fine-tuning, distillation and benchmark sweeps."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf passes gt=0, then fails in training

    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(2e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    seed: Seed = 42
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="What the forward and backward passes compute in: bf16 autocast (weights and optimizer "
        "stay fp32), fp32, or auto (bf16 where the device computes it natively: a CUDA GPU with bf16, or a CPU with "
        "AVX512-BF16 or AMX).",
    )
    batches: Literal["shuffled", "by-length"] = Field(
        "shuffled", description="How training examples are drawn into batches: shuffled, or by-length (shuffled, then "
        "grouped with examples of similar length, the Trainer's length-grouped sampler): each batch is padded to its "
        "longest example, so by-length computes fewer padding tokens when lengths vary.",
    )
    allow_long_training: bool = Field(
        False, exclude=True,  # it changes no model, so it is no part of a stage's identity or record
        description=f"Allow more than {MAX_TRAINING_STEPS:,} optimizer steps (a budget that is otherwise taken for a typo).",
    )

    def budget_problem(self, examples: int) -> str | None:
        """Why training `examples` examples with these settings is refused before any work, if it is."""
        steps = math.ceil(examples / self.batch_size) * self.epochs
        if steps > MAX_TRAINING_STEPS and not self.allow_long_training:
            return (f"epochs: {self.epochs:g} epochs of {examples:,} examples at batch size {self.batch_size} are "
                    f"{steps:,.0f} optimizer steps, more than {MAX_TRAINING_STEPS:,}; set allow_long_training: true if you mean it")
        return None

    def training_precision(self) -> str:
        """What this machine trains in under these settings ('bf16' or 'fp32')."""
        if self.precision == "auto":
            return "fp32" if bf16_training_problem() else "bf16"
        return self.precision


def bf16_training_problem() -> str | None:
    """Why this machine cannot train in bf16 at full speed (None: it can). Training runs on the GPU where
    there is one (the Trainer's choice), else on the CPU, which without bf16 units would only emulate it."""
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        return f"{torch.cuda.get_device_name(0)} does not compute in bf16"
    native = [name for name, check in (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
              if getattr(torch.cpu, check, lambda: False)()]
    return None if native else "this CPU has neither AVX512-BF16 nor AMX and there is no CUDA GPU"


class FinetuneSettings(StageSettings, TrainingHyperparameters):
    stage: Literal["finetune"] = "finetune"
    added_later: ClassVar[dict[str, object]] = {"precision": "fp32", "batches": "shuffled"}

    def wants_gpu(self) -> bool:
        return True

    def task_data_use(self) -> str | None:
        return "trains on the task's examples"

    def kind_problem(self, embedder: bool) -> str | None:
        if embedder:
            return ("stage: finetune trains a task head on labels, and an embedder has none; an embedding recipe trains by "
                    "distill from the full embedder (teacher: base), on texts alone")
        return None

    def check_chain(self, config: PretrainedConfig, layers_before: int, train_examples: int) -> None:
        if problem := self.budget_problem(train_examples):
            raise CompressError(problem)
        if self.precision == "bf16" and (problem := bf16_training_problem()):
            raise CompressError(f"precision: bf16 needs a device that computes in bf16, and {problem}; "
                                "use precision: auto (bf16 only where it is native) or fp32")

    def describe(self, described: ModelDescription) -> None:
        if described.training != "distill":
            # fine-tuned, dropped, fine-tuned again: the paper's task-specific dropping (a sweep's `refinetune`)
            described.training = "refinetune" if described.dropped_after_training else self.stage


class TrainingFacts(StageFacts):
    """The training loss over the whole run and as logged along it (by step): whether the model learnt
    the task at all, or sat at the loss of a constant guess (log 2 = 0.69 for two balanced classes)."""

    train_loss_mean: float
    train_loss_by_step: dict[str, float]
    precision: str
    """What the passes computed in ('bf16' autocast or 'fp32'), after `auto` was resolved on this machine."""
    train_steps_per_second: float
    """Optimizer steps per second over the whole run, as the Trainer timed it."""
    resumed_from_step: int | None = None
    """The checkpoint an interrupted run left, resumed from: the loss mean and speed then cover only the later
    steps, and the first logged loss after it only the steps since the checkpoint."""


# transformers 5 takes a warm-up ratio as a fraction in warmup_steps and has no warmup_ratio; 4.57 has both
# but reads warmup_steps as a count, so the ratio goes where the installed version reads it as one.
WARMUP_RATIO_ARGUMENT = "warmup_ratio" if "warmup_ratio" in inspect.signature(TrainingArguments).parameters else "warmup_steps"


# transformers 5 names the length-grouped sampler in train_sampling_strategy; 4.57 has a group_by_length flag.
SAMPLER_ARGUMENTS = {
    "shuffled": {},
    "by-length": {"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in inspect.signature(TrainingArguments).parameters
    else {"group_by_length": True},
}


def training_arguments(settings: FinetuneSettings, output_dir: str) -> TrainingArguments:
    """Trainer settings for a stage that saves its final model itself; the checkpoints it may keep to resume
    from (`train`) go to `output_dir`, one at a time."""
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        **{WARMUP_RATIO_ARGUMENT: settings.warmup_ratio},
        weight_decay=settings.weight_decay,
        seed=settings.seed,
        data_seed=settings.seed,
        save_strategy="no",  # checkpoints are asked for by time (CheckpointEvery), not by step
        save_total_limit=1,
        report_to=[],
        logging_steps=0.1,  # a tenth of the steps: ten points of the loss curve however long the training
        disable_tqdm=False,
        use_cpu=not torch.cuda.is_available(),
        bf16=settings.training_precision() == "bf16",
        dataloader_num_workers=0,
        **SAMPLER_ARGUMENTS[settings.batches],
    )


BF16_PAD_MULTIPLE = 16


def training_collator(settings: FinetuneSettings, tokenizer) -> DataCollatorWithPadding:
    """Pads each batch to its longest example, and under bf16 up to a multiple of 16 as well: bf16 autocast on
    a CUDA GPU pays for every new batch shape (bench/results/gpu/diagnose.txt: MiniLM trained at 0.17x the
    fp32 speed on 43 shapes, 0.80x on 5). fp32 batches are padded as before, so fp32 models do not change."""
    multiple = BF16_PAD_MULTIPLE if settings.training_precision() == "bf16" else None
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)


class EpochSeededLengthSampler(LengthGroupedSampler):
    """transformers' by-length sampler draws each epoch's order from torch's global generator, which a resumed
    Trainer restores only after it has drawn the order of the epoch it resumes in: from the second epoch on, the
    resumed run would skip the batches of one order and train on the rest of another. Here each epoch's order
    comes from the seed and the epoch number alone (the Trainer calls set_epoch), as for shuffled batches."""

    def __init__(self, sampler: LengthGroupedSampler, seed: int):
        super().__init__(sampler.batch_size, lengths=sampler.lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class ResumableTrainer(Trainer):
    """The Trainer, with by-length batches in an order a resumed run draws again (EpochSeededLengthSampler),
    and checkpoints that are a safeguard, not a condition: one that cannot be written (a full disk) is
    removed with a warning, and training goes on."""

    def _get_train_sampler(self, *args, **kwargs):
        sampler = super()._get_train_sampler(*args, **kwargs)
        if isinstance(sampler, LengthGroupedSampler):
            return EpochSeededLengthSampler(sampler, self.args.data_seed)
        return sampler

    def _save_checkpoint(self, model, trial):
        try:
            super()._save_checkpoint(model, trial)
        except OSError as error:
            name, folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}", Path(self.args.output_dir)
            # saves go only to a stage's marked checkpoints folder (`train`), and the one cut short is the Trainer's
            # of this step; the Trainer removes the one before only after a save is whole, so a kill resumes from that
            require_ours(folder, "remove a checkpoint cut short from")
            shutil.rmtree(folder / name, ignore_errors=True)
            Console(stderr=True).print(f"[yellow]warning:[/] {name} not saved ({first_line(error)}); training goes on")


ELAPSED_SECONDS = "elapsed_seconds"


class CheckpointEvery(TrainerCallback, ExportableState):
    """Asks the Trainer for a checkpoint once `checkpoints.every_seconds` have passed since the last one (or
    the start). Its state, the build's time so far, goes into each checkpoint's Trainer state file, which
    the Trainer writes last: a checkpoint that counts as whole has it."""

    def __init__(self, checkpoints: TrainingCheckpoints):
        self.checkpoints = checkpoints
        self.last = time.monotonic()

    def state(self) -> dict:
        return {"args": {}, "attributes": {ELAPSED_SECONDS: round(self.checkpoints.elapsed(), 1)}}

    def on_train_begin(self, args, state, control, **kwargs):
        state.stateful_callbacks.setdefault(type(self).__name__, {})  # resumed from a checkpoint saved without it

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.last >= self.checkpoints.every_seconds and state.global_step < state.max_steps:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last = time.monotonic()


def elapsed_at(checkpoint: Path) -> float:
    """The seconds the build that saved `checkpoint` had taken (0 for a checkpoint saved without them)."""
    state = json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
    return state.get("stateful_callbacks", {}).get(CheckpointEvery.__name__, {}).get("attributes", {}).get(ELAPSED_SECONDS, 0.0)


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-"))


def _whole(checkpoint: Path) -> bool:
    """The Trainer writes its state file last: a save cut short has none, or one cut short."""
    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
    except (OSError, ValueError):
        return False
    return True


def last_checkpoint(folder: Path) -> Path | None:
    """The newest whole checkpoint in `folder` (the Trainer removes the one before only after a save is whole)."""
    return max(filter(_whole, folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")), key=checkpoint_step, default=None)


@contextmanager
def trainer_folder(context: StageContext) -> Iterator[str]:
    """Where the Trainer writes: the stage's checkpoints folder, else a temporary one."""
    if context.checkpoints is not None:
        yield str(context.checkpoints.folder)
        return
    with tempfile.TemporaryDirectory() as scratch:
        yield scratch


def train(trainer: Trainer, context: StageContext) -> dict:
    """Run the Trainer and return the fields of TrainingFacts: from the newest checkpoint an interrupted run
    left, if any, saving one every few minutes (context.checkpoints). A resumed run sees the same batches
    in the same order, with the optimizer, schedule and random state of the checkpoint, so it ends where
    an uninterrupted one would."""
    checkpoints = context.checkpoints
    start = None if checkpoints is None else last_checkpoint(checkpoints.folder)
    if checkpoints is not None and checkpoints.every_seconds > 0:
        trainer.add_callback(CheckpointEvery(checkpoints))
    if start is not None:
        checkpoints.seconds_before = elapsed_at(start)
        Console().print(f"resuming training from {start.name}, left by an interrupted run ({checkpoints.folder})")
    output = trainer.train(resume_from_checkpoint=None if start is None else str(start))
    # The Trainer leaves bf16 training's autocast wrapped around the model's forward: scored with it on, the model
    # would score as no one who loads its folder runs it. Taken off in place, so trainer.model is the model as saved.
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    return training_record(trainer, output, None if start is None else checkpoint_step(start))


def finetune(model: PreTrainedModel, settings: FinetuneSettings, context: StageContext) -> StageOutput:
    train_set = tokenize(context.data.train, context.tokenizer, context.max_length)
    with trainer_folder(context) as folder:
        trainer = ResumableTrainer(
            model=model,
            args=training_arguments(settings, folder),
            train_dataset=train_set,
            data_collator=training_collator(settings, context.tokenizer),
            processing_class=context.tokenizer,
        )
        record = train(trainer, context)
    return StageOutput(trainer.model, TrainingFacts(**record))


def training_record(trainer: Trainer, output: TrainOutput, resumed_from_step: int | None) -> dict:
    """The fields of TrainingFacts, from a finished Trainer."""
    logged = {str(entry["step"]): round(entry["loss"], 4) for entry in trainer.state.log_history if "loss" in entry}
    loss = output.training_loss
    if resumed_from_step is not None:
        # 4.57 divides the loss summed over this run's steps by all steps, 5.x by this run's: the mean of this run's
        loss = trainer._total_loss_scalar / max(trainer.state.global_step - resumed_from_step, 1)
    return {"train_loss_mean": round(loss, 4), "train_loss_by_step": logged, "precision": "bf16" if trainer.args.bf16 else "fp32",
            "train_steps_per_second": round(output.metrics["train_steps_per_second"], 3), "resumed_from_step": resumed_from_step}
