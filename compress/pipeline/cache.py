"""The stage cache: finished stage folders under one root, found by the identity of the node that made them.

A folder is a finished build when its `stage.json` (a `StageRecord`, written last, inside the
folder's `.partial`) names the identity. Where a node's folder lies is the cache's layout: a run
folder names stage folders after the recipe's stages; a benchmark's `work/` after model, task,
stage and identity, so every node of many recipes has one folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from compress.folders import PARTIAL, copy_folder, writing
from compress.pipeline.graph import StageNode
from compress.pipeline.model_card import CARD_FILE

STAGE_FILE = "stage.json"
RECORD_VERSION = 2
"""1: records from before the version was written (the same fields, no `other_cpu_load`)."""


class StageRecord(BaseModel):
    """What a finished stage folder's stage.json says about its model."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = RECORD_VERSION
    identity: str
    name: str
    stage: str
    settings: dict
    source: str
    """The stage it started from, by name ('base': the recipe's model)."""
    folder: str
    """Where it lies, relative to the cache's root."""
    kind: str
    layers: int
    kept_layers: list[int]
    parameters: int | None
    size_mb: float
    seconds: float
    metrics: dict[str, float] = {}
    notes: dict = {}
    other_cpu_load: float | None = None
    """CPU cores other processes kept busy while it was built (its time is only as good as the machine's quiet)."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data):
        if isinstance(data, dict) and "schema_version" not in data:
            data = {**data, "schema_version": RECORD_VERSION}  # version 1 lacks only what defaults fill in
        return data

    def write(self, folder: Path) -> None:
        (folder / STAGE_FILE).write_text(self.model_dump_json(indent=2) + "\n")


def read_stage_record(folder: Path) -> StageRecord | None:
    """The record of a finished stage folder; None for a folder without a whole one."""
    try:
        return StageRecord.model_validate(json.loads((folder / STAGE_FILE).read_text()))
    except (OSError, ValueError, ValidationError):
        return None


class StageCache:
    def __init__(self, root: Path, folder_name: Callable[[StageNode], str]):
        self.root = root
        self.folder_name = folder_name
        self._index: dict[str, Path] | None = None

    def folder(self, node: StageNode) -> Path:
        return self.root / self.folder_name(node)

    def _known(self) -> dict[str, Path]:
        if self._index is None:
            self._index = {}
            for path in sorted(self.root.rglob(STAGE_FILE)):
                if any(part.endswith(PARTIAL) for part in path.relative_to(self.root).parts):
                    continue
                record = read_stage_record(path.parent)
                if record is not None:
                    self._index.setdefault(record.identity, path.parent)
        return self._index

    def find(self, node: StageNode) -> tuple[Path, StageRecord] | None:
        """A finished folder of `node`'s model: its own folder first, else any other the cache holds."""
        for folder in (self.folder(node), self._known().get(node.identity)):
            record = folder and read_stage_record(folder)
            if record is not None and record.identity == node.identity:
                return folder, record
        return None

    def add(self, folder: Path, record: StageRecord) -> None:
        self._known().setdefault(record.identity, folder)

    def records(self) -> list[tuple[Path, StageRecord]]:
        """Every finished stage folder under the root."""
        return [(folder, read_stage_record(folder)) for folder in self._known().values()]

    def link(self, found: Path, record: StageRecord, node: StageNode) -> StageRecord:
        """`node`'s folder as a copy of `found`, the same model under another name: hard links, no disk."""
        target = self.folder(node)
        with writing(target) as partial:
            copy_folder(found, partial)
            linked = record.model_copy(update={
                "name": node.name, "source": node.source_name, "folder": str(target.relative_to(self.root)),
                "settings": node.settings.model_dump(by_alias=True), "notes": {**record.notes, "reused_from": str(found)},
            })
            # Hard links: writing through them would change the other folder's files.
            for name in (STAGE_FILE, CARD_FILE):
                (partial / name).unlink(missing_ok=True)
            linked.write(partial)
            (partial / CARD_FILE).write_text(
                f"# {node.name}\n\nThe same model as `{found}` (the same stage settings from the same start), "
                "linked in rather than built again; its model card is there.\n"
            )
        self.add(target, linked)
        return linked
