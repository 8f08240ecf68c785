"""The CPU work other processes do while something is timed or trained: figures taken on a busy machine are
flagged, not mistaken for the model's. Only psutil: the executor meters its builds with it too."""

from __future__ import annotations

import time

import psutil

CONTENDED_LOAD = 0.5
"""Cores' worth of other work during timing from which figures are flagged as taken on a busy machine."""


def contended(other_cpu_load: float | None) -> bool:
    """Whether a timing was taken on a busy machine (None: too short to tell, taken as quiet)."""
    return other_cpu_load is not None and other_cpu_load >= CONTENDED_LOAD


def busy_seconds_elsewhere() -> float:
    """CPU seconds spent so far by everything but this process: other processes and, on a virtual
    machine, time the hypervisor gave to other guests (steal). Counted as psutil's cpu_percent does."""
    machine = psutil.cpu_times()
    guest = getattr(machine, "guest", 0.0) + getattr(machine, "guest_nice", 0.0)  # already inside user time
    busy = sum(machine) - guest - machine.idle - getattr(machine, "iowait", 0.0)
    own = psutil.Process().cpu_times()
    return busy - own.user - own.system


SHORTEST_LOAD_WINDOW = 0.5
"""Seconds below which the load elsewhere is not told: CPU times come in 10 ms ticks, so over a
window of a few ticks one tick of other work reads as a large fraction of a core."""


class LoadElsewhere:
    """Average CPU cores' worth of work done elsewhere while the `with` block ran (`.cores`, to 0.01; None when
    the block was too short to tell)."""

    def __enter__(self) -> LoadElsewhere:
        self._busy, self._start = busy_seconds_elsewhere(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        window = time.perf_counter() - self._start
        busy = busy_seconds_elsewhere() - self._busy
        # to a hundredth of a core: CPU times come in 10 ms ticks, so finer digits are noise
        self.cores = round(max(0.0, busy / window), 2) if window >= SHORTEST_LOAD_WINDOW else None
