"""Saving and restoring a search with orbax (absolute paths, one checkpoint per generation).

Arrays (the PRNG key, the predictor's parameters) go through ``StandardSave``; the population,
the evaluation archive (= the cache), the history and the counters through ``JsonSave`` (Python's
JSON writes floats with repr, so scores and node increments round-trip exactly).
"""
from __future__ import annotations

import numpy as np

from stepwise.io import restore_step, save_step
from stepwise.search.space import Genome
from stepwise.search.strategies import SearchState

FORMAT = 1


def _meta(st: SearchState, extra: dict) -> dict:
    return {
        "format": FORMAT,
        "generation": st.generation,
        "population": [[g.to_dict(), float(s)] for g, s in st.population],
        "archive": [[h, g.to_dict(), float(s)] for h, (g, s) in st.archive.items()],
        "history": st.history,
        "rank_correlations": st.rank_correlations,
        "has_predictor": st.predictor_params is not None,
        "refined": list(st.refined),
        "extra": extra,
    }


def save_state(directory: str, st: SearchState, extra: dict | None = None) -> None:
    """Write generation ``st.generation`` (blocking until it is on disk)."""
    save_step(directory, st.generation, _arrays(st), _meta(st, extra or {}))


def _arrays(st: SearchState) -> dict:
    arrays = {"key": np.asarray(st.key)}
    if st.predictor_params is not None:
        arrays["predictor"] = st.predictor_params
    return arrays


def restore_state(directory: str, template: SearchState) -> tuple[SearchState, dict] | None:
    """The latest saved state (shapes taken from ``template``), or None when there is none."""
    import jax

    out = restore_step(directory, _arrays(template))
    if out is None:
        return None
    _, arr, meta = out
    if meta.get("format") != FORMAT:
        raise ValueError(f"search checkpoint {directory}: format {meta.get('format')} != {FORMAT}")
    st = SearchState(
        generation=int(meta["generation"]),
        key=np.asarray(arr["key"], np.uint32),
        population=tuple((Genome.from_dict(g), float(s)) for g, s in meta["population"]),
        archive={h: (Genome.from_dict(g), float(s)) for h, g, s in meta["archive"]},
        history=tuple(meta["history"]),
        predictor_params=(jax.tree.map(np.asarray, arr["predictor"]) if meta["has_predictor"] else None),
        rank_correlations=tuple(meta["rank_correlations"]),
        refined=tuple(meta.get("refined", ())),
    )
    return st, meta.get("extra", {})
