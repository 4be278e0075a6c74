"""Wall time this process spends in JAX's compile path (tracing, lowering, XLA compilation).

A sampler compiles once per plan length (and a gradient run once per loss); on a CPU that can be a
large share of a short search. The clock listens to the time spans JAX itself records for its three
compile-path events and reports the length of their union: a jit traced inside another's trace, or
lowering inside a compile request, counts once.
"""
from __future__ import annotations

import threading
import time
from typing import Iterable

from jax import monitoring

#: JAX's compile-path events: tracing to a jaxpr, lowering it to MLIR, and XLA's backend compile.
COMPILE_EVENTS = frozenset({"/jax/core/compile/jaxpr_trace_duration",
                            "/jax/core/compile/jaxpr_to_mlir_module_duration",
                            "/jax/core/compile/backend_compile_duration"})


def union_length(spans: Iterable[tuple[float, float]]) -> float:
    """Total length of the union of the intervals [start, end] (nested or overlapping ones count once)."""
    total, lo, hi = 0.0, None, None
    for start, end in sorted(spans):
        if hi is None or start > hi:
            total += 0.0 if hi is None else hi - lo
            lo, hi = start, end
        else:
            hi = max(hi, end)
    return total + (0.0 if hi is None else hi - lo)


class CompileClock:
    """``with CompileClock() as clock: ...`` then ``clock.wall``: the block's wall time, and
    ``clock.seconds``: the part of it spent in JAX's compile path (any thread of this process;
    executables already compiled cost nothing)."""

    def __init__(self):
        self._spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._start = self._end = None

    def _listen(self, event: str, start_time: float, end_time: float, **_) -> None:
        if event in COMPILE_EVENTS:
            with self._lock:
                self._spans.append((start_time, end_time))

    def __enter__(self) -> "CompileClock":
        monitoring.register_event_time_span_listener(self._listen)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._end = time.perf_counter()
        monitoring.unregister_event_time_span_listener(self._listen)

    @property
    def wall(self) -> float:
        """Seconds from entering the block to leaving it (to now, while inside)."""
        return (time.perf_counter() if self._end is None else self._end) - self._start

    @property
    def seconds(self) -> float:
        with self._lock:
            return union_length(self._spans)
