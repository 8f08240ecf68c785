"""The stage graph: each stage of a recipe as a node, identified by what decides the model it makes.

A node's identity is a digest of the run's model, task, data, length and seed, of the stage's
settings (not its name), and of the identities of the nodes it starts from and reads (a
distillation teacher). Training is seeded, so two nodes with one identity make the same model:
recipes that share a stage share its node, and the executor builds it once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from transformers import PretrainedConfig

from compress.models.loading import has_task_head, load_config, resolve_model
from compress.pipeline.cache import STAGE_FILE, read_stage_record
from compress.pipeline.recipe import BASE, Recipe
from compress.stages import STAGES, StageSettings
from compress.surgery.architectures import num_layers


@dataclass(frozen=True, eq=False)
class StageNode:
    identity: str
    name: str
    """The stage's name in the recipe that named it."""
    settings: StageSettings
    recipe: Recipe
    """What the stage runs with: the model, task, data, max_length, eval batch size and seed."""
    recipe_text: str
    """The recipe as written, for the model card."""
    source: StageNode | None
    """The node whose model this stage starts from; None: the recipe's model itself."""
    reads: dict[str, StageNode] = field(default_factory=dict)
    """Stage names this stage's settings name (e.g. its teacher) -> their nodes; a model folder named there is no node."""
    trained: bool = False
    """Whether the model it makes has been trained on the task (and so is worth scoring)."""

    @property
    def source_name(self) -> str:
        return self.source.name if self.source else BASE

    @property
    def trains(self) -> bool:
        return STAGES[self.settings.stage].trains


@cache
def _config(model: str) -> PretrainedConfig:
    return load_config(model)


def _made_as(model: str) -> str | None:
    """The identity of the stage that made `model`, where it is a folder compress made (None: any other model)."""
    folder = Path(resolve_model(model))
    return read_stage_record(folder).identity if (folder / STAGE_FILE).is_file() else None


def recipe_graph(recipe: Recipe, recipe_text: str) -> dict[str, StageNode]:
    """Stage name -> node, in the recipe's order."""
    config = _config(recipe.model)
    run = {key: getattr(recipe, key) for key in ("model", "task", "max_length", "eval_batch_size", "seed")}
    if recipe.embedding is not None:  # only where set, so that every classifier keeps the identity it had
        run["embedding"] = recipe.embedding.model_dump()
    if (made := _made_as(recipe.model)) is not None:
        run["model_made_as"] = made  # a folder compress made, and may make again with other settings at the same path
    base_identity = json.dumps({**run, "data": recipe.data.identity_settings()}, sort_keys=True)
    nodes: dict[str, StageNode] = {}
    layers = {BASE: num_layers(config)}
    for index, settings in enumerate(recipe.stages):
        source = recipe.source_of(index)
        references = settings.model_references()
        reads = {ref: nodes[ref] for ref in references.values() if ref in nodes}
        described = {
            "from": nodes[source].identity if source in nodes else base_identity,
            "settings": settings.identity_settings(layers[source]),
            "reads": {name: nodes[ref].identity if ref in nodes else ref for name, ref in references.items()},
        }
        identity = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
        # an embedder is ready as it is; a pre-trained encoder has no task head until it is trained
        ready = has_task_head(config) or recipe.embedding is not None
        trained = STAGES[settings.stage].trains or (nodes[source].trained if source in nodes else ready)
        nodes[settings.name] = StageNode(identity, settings.name, settings, recipe, recipe_text, nodes.get(source), reads, trained)
        layers[settings.name] = settings.layers_after(layers[source])
    return nodes

