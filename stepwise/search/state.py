"""Saving and restoring a search with orbax (absolute paths, one checkpoint per generation).

Arrays (the PRNG key, the predictor's parameters) go through ``StandardSave``; the population,
the evaluation archive (= the cache), the history and the counters through ``JsonSave`` (Python's
JSON writes floats with repr, so scores and node increments round-trip exactly).
"""
from __future__ import annotations

import os

import numpy as np

from stepwise.search.space import Genome
from stepwise.search.strategies import SearchState

FORMAT = 1


def _manager(directory: str):
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def _meta(st: SearchState, extra: dict) -> dict:
    return {
        "format": FORMAT,
        "generation": st.generation,
        "population": [[g.to_dict(), float(s)] for g, s in st.population],
        "archive": [[h, g.to_dict(), float(s)] for h, (g, s) in st.archive.items()],
        "history": st.history,
        "rank_correlations": st.rank_correlations,
        "has_predictor": st.predictor_params is not None,
        "extra": extra,
    }


def save_state(directory: str, st: SearchState, extra: dict | None = None) -> None:
    """Write generation ``st.generation`` (blocking until it is on disk)."""
    import orbax.checkpoint as ocp

    arrays = {"key": np.asarray(st.key)}
    if st.predictor_params is not None:
        arrays["predictor"] = st.predictor_params
    mgr = _manager(directory)
    mgr.save(st.generation, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                      meta=ocp.args.JsonSave(_meta(st, extra or {}))))
    mgr.wait_until_finished()
    mgr.close()


def latest_generation(directory: str) -> int | None:
    if not os.path.isdir(directory):
        return None
    mgr = _manager(directory)
    step = mgr.latest_step()
    mgr.close()
    return step


def restore_state(directory: str, template: SearchState) -> tuple[SearchState, dict] | None:
    """The latest saved state (shapes taken from ``template``), or None when there is none."""
    import jax
    import orbax.checkpoint as ocp

    mgr = _manager(directory)
    step = mgr.latest_step()
    if step is None:
        mgr.close()
        return None
    arrays = {"key": np.asarray(template.key)}
    if template.predictor_params is not None:
        arrays["predictor"] = template.predictor_params
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, arrays)
    out = mgr.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract),
                                                     meta=ocp.args.JsonRestore()))
    mgr.close()
    meta = out["meta"]
    if meta.get("format") != FORMAT:
        raise ValueError(f"search checkpoint {directory}: format {meta.get('format')} != {FORMAT}")
    arr = out["arrays"]
    st = SearchState(
        generation=int(meta["generation"]),
        key=np.asarray(arr["key"], np.uint32),
        population=tuple((Genome.from_dict(g), float(s)) for g, s in meta["population"]),
        archive={h: (Genome.from_dict(g), float(s)) for h, g, s in meta["archive"]},
        history=tuple(meta["history"]),
        predictor_params=(jax.tree.map(np.asarray, arr["predictor"]) if meta["has_predictor"] else None),
        rank_correlations=tuple(meta["rank_correlations"]),
    )
    return st, meta.get("extra", {})
