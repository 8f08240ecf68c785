"""The folders compress writes: it marks every folder it makes, deletes only what it marked, lets
one process write into a folder at a time, and keeps its temporary files inside that folder.

A user's own files are never removed or overwritten: `--overwrite` (and every other path that
replaces or cleans something) only ever empties or removes a folder holding the marker file that
compress wrote when it made the folder. Anything else gets a one-line refusal, nothing touched.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from compress.errors import CompressError

MARKER = ".made-by-compress"
"""Written into every folder compress makes: the proof that removing or emptying it loses nothing of the user's."""
LOCK = ".compress-lock"
"""Locked (flock) by the one process writing into a run or results folder; the kernel frees it when that process dies."""
SCRATCH = ".scratch"
"""Temporary files of the process writing into a folder (also its child processes'), removed when it ends."""
PARTIAL = ".partial"
"""Suffix of a folder being written; renamed to its final name only when whole."""
CHECKPOINTS = ".checkpoints"
"""Suffix of the folder beside a model being trained where its training checkpoints outlive an interrupted run."""
CHECKPOINTS_IDENTITY = "identity"
_KEEP_WHEN_EMPTYING = (MARKER, LOCK)

FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_folder_name(name: str, field: str) -> str:
    """`name` as a plain folder name (no separators, no '..', not hidden, not empty), or a ValueError naming `field`."""
    if not FOLDER_NAME.fullmatch(name) or name.endswith((PARTIAL, CHECKPOINTS)) or len(name) > 128:
        raise ValueError(f"{field}: expected a plain folder name: letters, digits, '_', '.', '-', starting with a letter "
                         f"or digit, not ending in {PARTIAL} or {CHECKPOINTS}, at most 128 characters (got {name[:60]!r})")
    return name


def is_ours(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _is_empty(folder: Path) -> bool:
    return not any(folder.iterdir())


def _mark(folder: Path, what: str) -> None:
    stamp = {"made_by": "compress", "what": what, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (folder / MARKER).write_text(json.dumps(stamp) + "\n")


def require_ours(folder: Path, action: str) -> None:
    """A one-line refusal unless compress made `folder`: what it will not `action`."""
    if not is_ours(folder):
        raise CompressError(f"{folder}: not made by compress (no {MARKER} inside), so compress will not {action} it; "
                            "choose another folder, or move it away yourself")


def check_writable(folder: Path) -> None:
    """Refuse, before any work, a `folder` compress may not write into: a file, or a folder of the
    user's that is not empty."""
    if folder.exists() and not folder.is_dir():
        raise CompressError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and not _is_empty(folder):
        require_ours(folder, "write into or replace")


def claim(folder: Path, overwrite: bool, what: str) -> None:
    """Make `folder` ours to write into: create and mark it, or mark an empty one the user made; with
    `overwrite`, empty a folder of ours first (its marker and lock stay). A folder of the user's with
    anything in it is refused, whatever `overwrite` says."""
    check_writable(folder)
    if folder.is_dir() and is_ours(folder) and overwrite:
        empty_ours(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not is_ours(folder):
        _mark(folder, what)


def empty_ours(folder: Path) -> None:
    """Remove everything inside a folder of ours (not the folder itself, its marker or its lock)."""
    require_ours(folder, "empty")
    for child in folder.iterdir():
        if child.name in _KEEP_WHEN_EMPTYING:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def remove_ours(folder: Path) -> None:
    """Remove a folder of ours, whole; anything else is refused with one line."""
    require_ours(folder, "remove")
    shutil.rmtree(folder)


@contextmanager
def writing(folder: Path, what: str = "model") -> Iterator[Path]:
    """A marked `<folder>.partial` to write into, renamed to `folder` only when the block ends without
    error, so an interrupted build never leaves a folder that a later step would take as complete. A
    `.partial` or `folder` left by an earlier run is replaced only if it is ours (checked before the block
    runs, so a refusal costs no work); the caller decides whether replacing `folder` is wanted."""
    partial = folder.with_name(folder.name + PARTIAL)
    check_writable(folder)
    if partial.exists():
        remove_ours(partial)
    partial.mkdir(parents=True)
    _mark(partial, what)
    yield partial
    if folder.exists():
        if _is_empty(folder):
            folder.rmdir()
        else:
            remove_ours(folder)
    partial.rename(folder)


@contextmanager
def checkpoints_for(folder: Path, identity: str) -> Iterator[Path]:
    """`<folder>.checkpoints`: where a stage training the model of `folder` keeps its checkpoints. It outlives
    an interrupted build, so the next build of the same identity resumes from it; one left by other
    settings (a recipe edited between runs) is replaced; it is removed once the block ends without error.
    Enter it before `writing(folder)`, so it goes only after the model's folder is whole."""
    checkpoints = folder.with_name(folder.name + CHECKPOINTS)
    named = checkpoints / CHECKPOINTS_IDENTITY
    if is_ours(checkpoints) and not (named.is_file() and named.read_text() == identity):
        remove_ours(checkpoints)
    claim(checkpoints, overwrite=False, what="training checkpoints")
    named.write_text(identity)
    yield checkpoints
    remove_ours(checkpoints)


def remove_finished_checkpoints(folder: Path) -> None:
    """Remove the checkpoints of `folder`, a model that is whole: a kill between the folder's rename and their
    removal (`checkpoints_for`) leaves them, and nothing will resume from them. A folder of that name that
    compress did not make is left alone."""
    checkpoints = folder.with_name(folder.name + CHECKPOINTS)
    if is_ours(checkpoints):
        remove_ours(checkpoints)


def copy_folder(source: Path, target: Path) -> None:
    """A copy of a model folder's files (not its marker, lock or scratch) that costs no disk where hard
    links are allowed (`final/`, a reused stage); files must then be replaced, not written through, or
    the source would change too."""
    ignore = shutil.ignore_patterns(MARKER, LOCK, SCRATCH)
    try:
        shutil.copytree(source, target, copy_function=os.link, dirs_exist_ok=True, ignore=ignore)
    except OSError:  # no hard links here (another file system): the first link fails, so nothing is linked yet
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=ignore)


@contextmanager
def holding(folder: Path) -> Iterator[None]:
    """Write into `folder`, a folder of ours, as its only writer, with temporary files inside it.

    The claim is an exclusive flock on `folder/.compress-lock`, taken atomically, so two processes
    started together cannot both pass, and freed by the kernel when the holder dies (kill -9 included),
    so no stale claim outlives it. While held, Python's and child processes' temporary files go to
    `folder/.scratch/`, which is removed at the end and, if a killed run left it, at the next start."""
    require_ours(folder, "write into")  # its .scratch is removed below: only in a folder compress made
    lock_path = folder / LOCK
    handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(handle, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(handle)
        raise CompressError(f"{folder}: {owner} is writing to this folder; wait for it to end, or use another --out") from None
    except OSError as error:  # a file system without flock (some network mounts)
        os.close(handle)
        raise CompressError(f"{folder}: cannot lock {LOCK} there ({error.strerror}); use a folder on a local disk") from None
    os.ftruncate(handle, 0)
    os.pwrite(handle, f"process {os.getpid()} on {socket.gethostname()}".encode(), 0)
    scratch = folder / SCRATCH
    shutil.rmtree(scratch, ignore_errors=True)  # left by a killed run: only this process may write here now
    scratch.mkdir()
    before = tempfile.tempdir, os.environ.get("TMPDIR")
    # Absolute: a library that changes the working directory (onnxruntime's calibration does) still finds it.
    tempfile.tempdir = os.environ["TMPDIR"] = str(scratch.resolve())
    try:
        yield
    finally:
        tempfile.tempdir = before[0]
        if before[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before[1]
        shutil.rmtree(scratch, ignore_errors=True)
        os.ftruncate(handle, 0)
        os.close(handle)  # closing frees the flock
