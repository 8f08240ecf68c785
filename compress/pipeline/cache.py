"""The stage cache: finished stage folders under one root, found by the identity of the node that made them.

A folder is a finished build when its `stage.json` (a `StageRecord`, written last, inside the
folder's `.partial`) names the identity and its files are the ones the record lists (size and sha256):
a file cut short, replaced or removed since makes the stage build again rather than hand on a broken model. Where a node's folder lies is the cache's layout: a run
folder names stage folders after the recipe's stages; a benchmark's `work/` after model, task,
stage and identity, so every node of many recipes has one folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError

from compress.folders import LOCK, MARKER, PARTIAL, SCRATCH, copy_folder, write_text, writing
from compress.pipeline.model_card import CARD_FILE
from compress.versions import VersionedRecord

if TYPE_CHECKING:  # the graph reads stage records (a folder compress made, given as a model): only the cache's types point back
    from compress.pipeline.graph import StageNode

STAGE_FILE = "stage.json"


def version_1_to_2(record: dict) -> dict:
    """Version 1, written before the version was, lacks only `other_cpu_load`: not measured, None by default."""
    return record


def version_2_to_3(record: dict) -> dict:
    """Version 2 lacks `files`: None by default, so the folder's files are taken on trust."""
    return record


def version_3_to_4(record: dict) -> dict:
    """Version 3 scored a model trained in bf16 with the Trainer's autocast still wrapped around it, not as its folder
    holds it: such a record is marked, and the executor scores its folder again when it next finds it."""
    trained_in_bf16 = (record.get("notes") or {}).get("precision") == "bf16"
    return {**record, "scored_in_autocast": bool(trained_in_bf16 and record.get("metrics"))}


MIGRATIONS = (version_1_to_2, version_2_to_3, version_3_to_4)
RECORD_VERSION = len(MIGRATIONS) + 1
"""4: a score taken in bf16 autocast is marked to be taken again."""
UNLISTED = {STAGE_FILE, CARD_FILE, MARKER, LOCK}
"""Files of a stage folder its record does not list: the record itself, and what a linked copy writes anew."""


class FileFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int
    sha256: str


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def listed_files(folder: Path) -> dict[str, Path]:
    """The files of a stage folder its record lists, by path relative to the folder."""
    return {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*"))
            if path.is_file() and not path.is_symlink() and path.name not in UNLISTED and SCRATCH not in path.relative_to(folder).parts}


def file_facts(folder: Path) -> dict[str, FileFacts]:
    """Size and sha256 of every file of a finished stage folder, for its record."""
    return {name: FileFacts(size=path.stat().st_size, sha256=_sha256(path)) for name, path in listed_files(folder).items()}


class StageRecord(VersionedRecord):
    """What a finished stage folder's stage.json says about its model."""

    model_config = ConfigDict(extra="ignore")
    MIGRATIONS = MIGRATIONS

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
    files: dict[str, FileFacts] | None = None
    """Every file the stage left, as it left it (None: recorded before files were listed, and taken on trust)."""
    max_length: int | None = None
    """Tokens per input the recipe trained, scored and timed with: what running the folder truncates at (None: not recorded)."""
    trained: bool | None = None
    """Whether the model's task head has been trained (None: recorded before this was; its dev scores tell)."""
    scored_in_autocast: bool = False
    """Its metrics are those of the model in bf16 autocast, as it left training (version 3): not yet of the saved model."""

    def write(self, folder: Path) -> None:
        # whole or not at all: a finished folder's record is rewritten when its model is scored again
        write_text(folder / STAGE_FILE, self.model_dump_json(indent=2) + "\n")

    def files_problem(self, folder: Path) -> str | None:
        """How `folder`'s files differ from those this record lists (None: they are the same, or none are listed)."""
        if self.files is None:
            return None
        found = listed_files(folder)
        for name, facts in self.files.items():
            path = found.get(name)
            if path is None:
                return f"{name} is missing"
            if path.stat().st_size != facts.size:
                return f"{name} has {path.stat().st_size:,} bytes, {facts.size:,} when it was made"
            if _sha256(path) != facts.sha256:
                return f"{name} has changed since it was made"
        extra = sorted(set(found) - set(self.files))
        return f"{extra[0]} was added after it was made" if extra else None


def read_stage_record(folder: Path) -> StageRecord | None:
    """The record of a finished stage folder; None for a folder without a whole one."""
    try:
        return StageRecord.read(json.loads((folder / STAGE_FILE).read_text()))
    except (OSError, ValueError, ValidationError):
        return None


class StageCache:
    def __init__(self, root: Path, folder_name: Callable[[StageNode], str]):
        self.root = root
        self.folder_name = folder_name
        self._index: dict[str, Path] | None = None
        self._checked: dict[Path, tuple] = {}
        """Folders whose files matched their record, by what their files' sizes and times were then."""
        self.notes: list[str] = []
        """Finished folders found not whole (their files changed), for the executor to tell the user."""

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
        """A finished, whole folder of `node`'s model: its own folder first, else any other the cache holds."""
        for folder in dict.fromkeys((self.folder(node), self._known().get(node.identity))):
            record = folder and read_stage_record(folder)
            if record is not None and record.identity == node.identity and self._whole(folder, record):
                return folder, record
        return None

    def _whole(self, folder: Path, record: StageRecord) -> bool:
        """Whether `folder` holds the files its record lists; checked once per process unless they change."""
        state = tuple((name, path.stat().st_size, path.stat().st_mtime_ns) for name, path in listed_files(folder).items())
        if self._checked.get(folder) == state:
            return True
        problem = record.files_problem(folder)
        if problem:
            note = f"{folder}: {problem}; that stage is built again"
            if note not in self.notes:
                self.notes.append(note)
            return False
        self._checked[folder] = state
        return True

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
