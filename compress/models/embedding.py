"""Sentence embedders: an encoder whose token vectors are pooled (and, where the model says so, normalised) into
one vector per text.

A model folder says it is an embedder in two places that agree: its config.json holds `EMBEDDING_FIELD`
(how compress pools it), and beside it lie the files sentence-transformers reads (modules.json,
1_Pooling/config.json, 2_Normalize/), so that `SentenceTransformer(folder)` loads what compress wrote. A
folder sentence-transformers wrote (all-MiniLM-L6-v2, all-mpnet-base-v2) is read from those files alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import PretrainedConfig, PreTrainedModel

from compress.errors import CompressError, first_line
from compress.exporters.onnx_export import BATCH, TOKENS, GraphOutputs
from compress.models.loading import resolve_model
from compress.registry import Registry

EMBEDDING_FIELD = "compress_embedding"
"""Config field of an embedder compress made: its `Embedding` settings."""
MODULES_FILE = "modules.json"
POOLING_FOLDER = "1_Pooling"
NORMALIZE_FOLDER = "2_Normalize"
SENTENCE_BERT_CONFIG = "sentence_bert_config.json"
SENTENCE_EMBEDDING = "sentence_embedding"
"""The graph output (and sentence-transformers' name) of the pooled vector."""
TOKEN_EMBEDDINGS = "token_embeddings"
"""The graph output of the encoder's last hidden state (sentence-transformers' name for it)."""
LAST_HIDDEN_STATE = "last_hidden_state"
"""The same tensor under the name optimum's ORTModelForFeatureExtraction (sentence-transformers' ONNX backend) and
transformers.js's feature-extraction pipeline read."""


@dataclass(frozen=True)
class PoolingMode:
    """One way to pool token vectors, and the key sentence-transformers' 1_Pooling/config.json gives it."""

    config_key: str
    pool: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """(token vectors (B, L, H), attention mask (B, L)) -> sentence vectors (B, H); traceable for ONNX."""


POOLINGS: Registry[PoolingMode] = Registry("pooling")


def _at_least(values: torch.Tensor, floor: float) -> torch.Tensor:
    """`values.clamp(min=floor)` as an ONNX Max: a Clip with no upper bound leaves onnxruntime's symbolic shape
    inference (static int8's pre-processing) without the shape of what it feeds."""
    return torch.maximum(values, values.new_tensor(floor))


def _mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / _at_least(weights.sum(1), 1e-9)


def _max(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return tokens.masked_fill(mask.unsqueeze(-1) == 0, -1e9).max(1).values


def _last_token(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # the last position the mask keeps, whichever side the tokenizer pads on
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    last = (positions * mask.to(positions.dtype)).argmax(1)
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), last]


POOLINGS.add("mean", PoolingMode("pooling_mode_mean_tokens", _mean))
POOLINGS.add("cls", PoolingMode("pooling_mode_cls_token", lambda tokens, mask: tokens[:, 0]))
POOLINGS.add("max", PoolingMode("pooling_mode_max_tokens", _max))
POOLINGS.add("lasttoken", PoolingMode("pooling_mode_lasttoken", _last_token))


class Embedding(BaseModel):
    """How an embedder turns token vectors into one sentence vector."""

    model_config = ConfigDict(extra="forbid")

    pooling: str = Field(description=f"One of {', '.join(POOLINGS)}.")
    normalize: bool = Field(description="Whether the sentence vector is scaled to unit length (cosine = dot product).")


class EmbeddingSettings(BaseModel):
    """The `embedding:` section of a recipe or goal: make a sentence embedder rather than a classifier."""

    model_config = ConfigDict(extra="forbid")

    pooling: Literal[("model", *POOLINGS.names())] = Field(
        "model", description="How token vectors become one sentence vector; 'model': as the model folder's "
        "sentence-transformers config (1_Pooling/config.json) names it.")
    normalize: bool | None = Field(None, description="Scale sentence vectors to unit length; default: as the model "
                                   "folder's modules.json says (a Normalize module), else false.")

    def resolve(self, model: str) -> Embedding:
        """The pooling these settings give `model` (an alias, a local folder or a hub id)."""
        found = read_embedding(config_folder(model)) if self.pooling == "model" or self.normalize is None else None
        if self.pooling == "model" and found is None:
            raise CompressError(f"embedding.pooling: model '{model}' has no sentence-transformers pooling config "
                                f"({MODULES_FILE}, {POOLING_FOLDER}/config.json); name one of {', '.join(POOLINGS)}")
        pooling = found.pooling if self.pooling == "model" else self.pooling
        normalize = self.normalize if self.normalize is not None else bool(found and found.normalize)
        return Embedding(pooling=pooling, normalize=normalize)


SENTENCE_TRANSFORMERS_FILES = ["config.json", MODULES_FILE, f"{POOLING_FOLDER}/config.json"]


def config_folder(model: str) -> Path:
    """A folder holding the model's config and sentence-transformers files: its own, or for a hub id the few
    files fetched from the hub (the weights come with the model itself)."""
    location = resolve_model(model)
    if Path(location).is_dir():
        return Path(location)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(location, allow_patterns=SENTENCE_TRANSFORMERS_FILES))
    except Exception as error:  # offline, no such repository: one line
        raise CompressError(f"model: cannot read the pooling config of '{model}' from the Hugging Face hub ({first_line(error)}); "
                            "offline, use a local folder") from None


def embedding_of(config: PretrainedConfig) -> Embedding | None:
    """The embedding a model's config records, or None for a model that is no embedder compress made."""
    recorded = getattr(config, EMBEDDING_FIELD, None)
    return None if recorded is None else Embedding.model_validate(recorded)


def read_embedding(folder: Path) -> Embedding | None:
    """The pooling a model folder describes: compress's config field, else sentence-transformers' files; None
    where it describes none."""
    try:
        recorded = json.loads((folder / "config.json").read_text()).get(EMBEDDING_FIELD)
        if recorded is not None:
            return Embedding.model_validate(recorded)
        modules = json.loads((folder / MODULES_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise CompressError(f"{folder}: unreadable embedder config ({error})") from None
    types = {module.get("type", "").rsplit(".", 1)[-1]: module.get("path", "") for module in modules if isinstance(module, dict)}
    if "Pooling" not in types:
        return None
    pooling_file = folder / types["Pooling"] / "config.json"
    try:
        settings = json.loads(pooling_file.read_text())
    except (OSError, ValueError) as error:
        raise CompressError(f"{pooling_file}: unreadable pooling config ({error})") from None
    modes = [name for name, mode in POOLINGS.items() if settings.get(mode.config_key)]
    if len(modes) != 1:
        known = ", ".join(mode.config_key for mode in POOLINGS.values())
        raise CompressError(f"{pooling_file}: expected exactly one of {known} set to true; compress pools one way")
    return Embedding(pooling=modes[0], normalize="Normalize" in types)


def mark_embedder(model: PreTrainedModel, embedding: Embedding) -> PreTrainedModel:
    """Record the embedding in the model's config, which every stage's output carries on."""
    setattr(model.config, EMBEDDING_FIELD, embedding.model_dump())
    return model


def write_sentence_transformers_files(folder: Path, config: PretrainedConfig, max_length: int) -> None:
    """The files sentence-transformers loads an embedder folder by, beside its config and weights."""
    embedding = embedding_of(config)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": POOLING_FOLDER, "type": "sentence_transformers.models.Pooling"}]
    if embedding.normalize:
        modules.append({"idx": 2, "name": "2", "path": NORMALIZE_FOLDER, "type": "sentence_transformers.models.Normalize"})
        (folder / NORMALIZE_FOLDER).mkdir(exist_ok=True)
    (folder / MODULES_FILE).write_text(json.dumps(modules, indent=2) + "\n")
    (folder / POOLING_FOLDER).mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": config.hidden_size,
               **{mode.config_key: name == embedding.pooling for name, mode in POOLINGS.items()}}
    (folder / POOLING_FOLDER / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    (folder / SENTENCE_BERT_CONFIG).write_text(json.dumps({"max_seq_length": max_length, "do_lower_case": False}, indent=2) + "\n")


def sentence_vectors(embedding: Embedding, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Pooled (and normalised, where the embedding is) sentence vectors from token vectors."""
    pooled = POOLINGS[embedding.pooling].pool(tokens, attention_mask)
    if not embedding.normalize:
        return pooled
    # F.normalize's value, in operators onnxruntime's symbolic shape inference (static int8's pre-processing) follows:
    # not its Expand, nor an opset-18 ReduceL2
    return pooled / _at_least((pooled * pooled).sum(-1, keepdim=True).sqrt(), 1e-12)


def embed(model: PreTrainedModel, inputs: dict[str, torch.Tensor], **options) -> tuple[torch.Tensor, object]:
    """(sentence vectors, the encoder's outputs) of an embedder for one batch; `options` go to its forward
    (output_hidden_states)."""
    outputs = model(**inputs, **options)
    return sentence_vectors(embedding_of(model.config), outputs.last_hidden_state, inputs["attention_mask"]), outputs


def graph_outputs(embedding: Embedding) -> GraphOutputs:
    """What an exported embedder's graph outputs: its names, and the function of (model outputs, inputs) that
    makes them: the token vectors, for runtimes that pool them themselves (under both names they are read by),
    and the sentence vector."""
    def outputs(model_outputs, inputs: dict[str, torch.Tensor]):
        tokens = model_outputs.last_hidden_state
        return tokens, tokens.clone(), sentence_vectors(embedding, tokens, inputs["attention_mask"])

    return {LAST_HIDDEN_STATE: TOKENS, TOKEN_EMBEDDINGS: TOKENS, SENTENCE_EMBEDDING: BATCH}, outputs
