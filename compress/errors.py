"""The one exception type that the CLI turns into a one-line message and exit status 2, and the helpers
that keep such a message one short line whatever the input it quotes."""

import errno
import os
import reprlib

MAX_MESSAGE = 600
"""Characters of an error line; past that it is cut (a message names a file and a field, it does not dump data)."""

_short = reprlib.Repr()  # keyword arguments need Python 3.12
_short.maxlevel, _short.maxstring, _short.maxother, _short.maxlong = 1, 60, 60, 40
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4


class CompressError(Exception):
    """Bad input or a request this machine cannot serve; the message is shown to the user as is.

    Messages name the file (when there is one), the field and what was expected, on one line.
    """


def excerpt(value: object) -> str:
    """A short quotation of a value for an error message: at most about 60 characters of a string and a
    few items of a container, however large (or however deeply aliased, in YAML) the value is."""
    return _short.repr(value)


def one_line(message: str) -> str:
    """`message` as one line of at most MAX_MESSAGE characters."""
    line = " ".join(message.split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 30] + f"… ({len(line):,} characters in all)"


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


DISK_FULL = os.strerror(errno.ENOSPC)  # "No space left on device", as libraries of C, C++ and Rust also word it


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or one it was raised from, is a full disk: libraries that save models (safetensors,
    onnx, OpenVINO) raise their own types, and only their message says so."""
    while error is not None:
        if getattr(error, "errno", None) == errno.ENOSPC or DISK_FULL in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def failure(error: BaseException) -> str:
    """What a failed row or candidate records: the exception's type and the first line of its message."""
    return f"{type(error).__name__}: {first_line(error)}"
