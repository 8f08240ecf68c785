"""The folders compress writes: it marks every folder it makes, deletes only what it marked, lets
one process write into a folder at a time, and keeps its temporary files inside that folder.

A user's own files are never removed or overwritten: `--overwrite` (and every other path that
replaces or cleans something) only ever empties or removes a folder holding the marker file that
compress wrote when it made the folder, and only once it holds the folder's lock. Nothing is written
or removed through a symbolic link: a link where compress writes is refused, and a link inside a
folder of ours is removed as a link, never followed. Anything else gets a one-line refusal, nothing touched.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
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
FINAL = "final"
"""The folder of a run (`compress run`, `stage`, `drop`, `optimize`) that holds its final model; a run folder
given where a model is expected stands for it."""
RUN_SUMMARY_FILE = "results.json"
RECIPE_FILE = "recipe.yaml"
"""Beside the stage folders of a run: what it made, and the recipe it ran."""
_KEEP_WHEN_EMPTYING = (MARKER, LOCK)


def model_folder(path: Path) -> Path:
    """The model folder `path` names: itself, or for a run folder (no config.json of its own) its final model."""
    if not (path / "config.json").is_file() and (path / FINAL / "config.json").is_file():
        return path / FINAL
    return path

FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_folder_name(name: str, field: str) -> str:
    """`name` as a plain folder name (no separators, no '..', not hidden, not empty), or a ValueError naming `field`."""
    if not FOLDER_NAME.fullmatch(name) or name.endswith((PARTIAL, CHECKPOINTS)) or len(name) > 128:
        raise ValueError(f"{field}: expected a plain folder name: letters, digits, '_', '.', '-', starting with a letter "
                         f"or digit, not ending in {PARTIAL} or {CHECKPOINTS}, at most 128 characters (got {name[:60]!r})")
    return name


def safe_folder_name(name: str) -> str:
    """Any name (a hub id with '/', a path, a task a data file names) as one plain folder name: nothing it
    maps to climbs out of its parent, hides, or ends in a suffix compress gives its own folders."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip(".-")[:128] or "unnamed"
    return slug + "_" if slug.endswith((PARTIAL, CHECKPOINTS)) else slug


def refuse_link(path: Path, action: str = "write") -> None:
    """A one-line refusal if `path` is a symbolic link: compress never writes or removes through one."""
    if path.is_symlink():
        raise CompressError(f"{path}: is a symbolic link; compress does not {action} through links "
                            "(remove the link, or choose another folder)")


def is_ours(folder: Path) -> bool:
    """A real folder (not a link to one) holding the marker compress writes into every folder it makes."""
    marker = folder / MARKER
    return not folder.is_symlink() and not marker.is_symlink() and marker.is_file()


def _is_empty(folder: Path) -> bool:
    return not any(folder.iterdir())


def _mark(folder: Path, what: str) -> None:
    stamp = {"made_by": "compress", "what": what, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_text(folder / MARKER, json.dumps(stamp) + "\n")


def _disk_error(path: Path, error: OSError) -> CompressError:
    if error.errno == errno.ENOSPC:
        return CompressError(f"{path}: the disk is full; what was finished is kept: free space and run the same command again")
    return CompressError(f"{path}: cannot write ({error.strerror})")


def replace_file(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` whole or not at all: `write` fills a new file beside it, which then takes its name, so a
    full disk or a kill leaves the previous file as it was, and a link at `path` is refused, never followed."""
    refuse_link(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)  # our own sibling, named by this process: never the user's file
        if isinstance(error, OSError):
            raise _disk_error(path, error) from None
        raise


def write_text(path: Path, text: str) -> None:
    """`path` replaced whole by `text` (see `replace_file`)."""

    def write(temporary: Path) -> None:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)

    replace_file(path, write)


def append_text(path: Path, text: str) -> None:
    """`text` added at the end of `path` (made if missing), never through a link."""
    try:
        handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            refuse_link(path)
        raise _disk_error(path, error) from None
    try:
        with os.fdopen(handle, "a", encoding="utf-8") as out:
            out.write(text)
    except OSError as error:
        raise _disk_error(path, error) from None


def require_ours(folder: Path, action: str) -> None:
    """A one-line refusal unless compress made `folder`: what it will not `action`."""
    if not is_ours(folder):
        raise CompressError(f"{folder}: not made by compress (no {MARKER} inside), so compress will not {action} it; "
                            "choose another folder, or move it away yourself")


def check_writable(folder: Path) -> None:
    """Refuse, before any work, a `folder` compress may not write into: a link, a file, or a folder of the
    user's that is not empty."""
    refuse_link(folder)
    if folder.exists() and not folder.is_dir():
        raise CompressError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and not _is_empty(folder):
        require_ours(folder, "write into or replace")


def claim(folder: Path, what: str) -> None:
    """Make `folder` ours: create and mark it, or mark an empty one the user made. A folder of the user's
    with anything in it is refused."""
    check_writable(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _disk_error(folder, error) from None
    if not is_ours(folder):
        _mark(folder, what)


@contextmanager
def claimed(folder: Path, what: str, overwrite: bool = False) -> Iterator[Path]:
    """`folder` made ours (`claim`) and held (`holding`) for the block; with `overwrite`, emptied first, only
    once held, so a folder another process is writing is never touched. Its marker and lock stay."""
    claim(folder, what)
    with holding(folder):
        if overwrite:
            empty_ours(folder)
        yield folder


def empty_ours(folder: Path) -> None:
    """Remove everything inside a folder of ours (not the folder itself, its marker or its lock)."""
    require_ours(folder, "empty")
    for child in folder.iterdir():
        if child.name in _KEEP_WHEN_EMPTYING or child.name == SCRATCH:  # scratch: the holder's, emptied when it ends
            continue
        if child.is_dir() and not child.is_symlink():  # a link is removed as a link: what it points to stays
            shutil.rmtree(child)
        else:
            child.unlink()


def remove_ours(folder: Path) -> None:
    """Remove a folder of ours, whole; anything else is refused with one line."""
    require_ours(folder, "remove")
    shutil.rmtree(folder)


def check_replaceable(folder: Path) -> Path:
    """Refuse, before any work, a model folder `writing` could not replace (a link, a folder of the user's,
    at its name or at its `.partial`); returns the `.partial`."""
    partial = folder.with_name(folder.name + PARTIAL)
    check_writable(folder)
    refuse_link(partial, "remove")
    if partial.exists():
        require_ours(partial, "replace")
    return partial


@contextmanager
def writing(folder: Path, what: str = "model") -> Iterator[Path]:
    """A marked `<folder>.partial` to write into, renamed to `folder` only when the block ends without
    error, so an interrupted build never leaves a folder that a later step would take as complete. A
    `.partial` or `folder` left by an earlier run is replaced only if it is ours (checked before the block
    runs, so a refusal costs no work); the caller decides whether replacing `folder` is wanted."""
    partial = check_replaceable(folder)
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
    if is_ours(checkpoints) and not (named.is_file() and not named.is_symlink() and named.read_text() == identity):
        remove_ours(checkpoints)
    claim(checkpoints, what="training checkpoints")
    write_text(named, identity)
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
    lock_path, scratch = folder / LOCK, folder / SCRATCH
    refuse_link(lock_path)
    try:
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise _disk_error(lock_path, error) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(handle, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(handle)
        raise CompressError(f"{folder}: {owner} is writing to this folder; wait for it to end, or use another --out") from None
    except OSError as error:  # a file system without flock (some network mounts)
        os.close(handle)
        raise CompressError(f"{folder}: cannot lock {LOCK} there ({error.strerror}); use a folder on a local disk") from None
    try:
        refuse_link(scratch)
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"process {os.getpid()} on {socket.gethostname()}".encode(), 0)
        shutil.rmtree(scratch, ignore_errors=True)  # left by a killed run: only this process may write here now
        scratch.mkdir()
    except OSError as error:
        os.close(handle)
        raise _disk_error(scratch, error) from None
    except BaseException:
        os.close(handle)
        raise
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
