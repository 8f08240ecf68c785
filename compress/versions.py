"""Versioned records: files written by older releases still read. Each change to a record's fields is one
step from its version to the next; a record read is brought from the version it names to the current one
by those steps in order, so stage records and benchmark records share one way of being migrated."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Self

from pydantic import BaseModel

Migration = Callable[[dict], dict]
"""One version's fields as the next version's (the version is stamped by `migrate`)."""


def migrate(data: dict, steps: tuple[Migration, ...]) -> dict:
    """`data` as the version after the last of `steps` (the step from version 1 to 2 first): from the
    version it names, 1 when it names none (records from before the version was written). A version this
    code cannot read is left for validation to refuse."""
    version = data.get("schema_version", 1)
    if type(version) is not int or version < 1:
        return data
    for number, step in enumerate(steps[version - 1:], start=version):
        data = {**step(data), "schema_version": number + 1}
    return data


class VersionedRecord(BaseModel):
    """A record that names its `schema_version` and reads every older one through its `MIGRATIONS`. Only a record
    read back (`read`) is migrated: one made in code is current, though it names no version (a migration run on it
    would take it for version 1, as one that found a bf16 training's score marked it scored in autocast)."""

    MIGRATIONS: ClassVar[tuple[Migration, ...]] = ()
    """The step from version 1 to 2, from 2 to 3, ...: the current version is one past the last."""

    @classmethod
    def read(cls, stored: object) -> Self:
        """A record as a file held it (parsed JSON), brought to the current version and checked."""
        return cls.model_validate(migrate(stored, cls.MIGRATIONS) if isinstance(stored, dict) else stored)
