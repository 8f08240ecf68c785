"""One type for every table of named entries (strategies, stages, quantization methods, runtimes, executors,
data sources, architectures): an entry is added where it is defined, a name taken twice fails at import,
and an unknown name is refused with the names there are."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from compress.errors import CompressError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries by name, in the order they were added. A read-only mapping to its readers: `registry[name]`,
    `name in registry`, iteration, `.items()`."""

    def __init__(self, what: str) -> None:
        self.what = what
        """What an entry is, singular ('strategy'): how messages name it."""
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.what} registry: {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that adds what it decorates under `name`."""
        return lambda entry: self.add(name, entry)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise CompressError(f"unknown {self.what} {name!r}; expected one of {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:  # Mapping's would ask __getitem__, which raises CompressError
        return name in self._entries

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"
