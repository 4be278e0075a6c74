"""Reference-statistics files (``.npz``) in the layouts other FID tools read and write.

* ``pytorch-fid``: ``np.savez_compressed(mu=..., sigma=...)`` (``--save-stats``);
* ``edm``: ``np.savez(mu=..., sigma=...)`` (EDM's ``fid.py ref``; its reference files are
  pickle-free npz with exactly these keys);
* ``adm``: guided-diffusion's evaluator batches: ``arr_0`` (uint8 NHWC reference images)
  and, when precomputed, ``mu``/``sigma`` (pool3) plus ``mu_s``/``sigma_s`` (spatial
  ``mixed_6/conv`` features).

All layouts store ``mu`` (d,) and ``sigma`` (d, d). This module also writes ``n`` (the sample
count) and ``feature`` (the extractor name) as extra keys, which the other tools ignore.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from stepwise.io import savez_atomic

from stepwise.evaluation.stats import GaussianStats

__all__ = ["STAT_FORMATS", "save_stats", "load_stats", "load_adm_reference", "stats_file_info"]

STAT_FORMATS = ("pytorch-fid", "edm", "adm")


def _atomic_savez(path: str, compressed: bool, arrays: dict[str, np.ndarray]) -> str:
    path = os.path.abspath(os.fspath(path))
    if not path.endswith(".npz"):
        raise ValueError(f"path: statistics files must end in .npz, got {path!r}")
    return savez_atomic(path, compressed=compressed, **arrays)


def save_stats(path: str | os.PathLike, stats: GaussianStats, *, format: str = "pytorch-fid",
               spatial: GaussianStats | None = None, feature: str | None = None) -> str:
    """Write ``stats`` to ``path`` (.npz) atomically in ``format`` (one of STAT_FORMATS).

    ``spatial`` (ADM only) adds ``mu_s``/``sigma_s``; ADM's evaluator needs them whenever
    ``mu`` is present. Returns the absolute path.
    """
    if format not in STAT_FORMATS:
        raise ValueError(f"format must be one of {STAT_FORMATS}, got {format!r}")
    if not isinstance(stats, GaussianStats):
        raise ValueError(f"stats must be a GaussianStats, got {type(stats).__name__}")
    arrays: dict[str, np.ndarray] = {"mu": stats.mu, "sigma": stats.sigma}
    if spatial is not None:
        if format != "adm":
            raise ValueError(f"spatial statistics are only stored in format 'adm', not {format!r}")
        arrays.update(mu_s=spatial.mu, sigma_s=spatial.sigma)
    if stats.n is not None:
        arrays["n"] = np.asarray(stats.n, np.int64)
    if feature is not None:
        arrays["feature"] = np.asarray(str(feature))
    return _atomic_savez(os.fspath(path), format == "pytorch-fid", arrays)


def _stats_from(data: Any, path: str, mu_key: str, sigma_key: str) -> GaussianStats:
    for key in (mu_key, sigma_key):
        if key not in data.files:
            raise ValueError(f"{path!r}: missing key {key!r} (keys: {sorted(data.files)})")
    mu, sigma = np.asarray(data[mu_key]), np.asarray(data[sigma_key])
    if mu.ndim != 1:
        raise ValueError(f"{path!r}: {mu_key!r} must be 1-d (d,), got shape {mu.shape}")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path!r}: {sigma_key!r} must be ({mu.shape[0]}, {mu.shape[0]}) to "
                         f"match {mu_key!r}, got shape {sigma.shape}")
    n = int(data["n"]) if "n" in data.files else None
    return GaussianStats(mu, sigma, n)


def load_stats(path: str | os.PathLike) -> GaussianStats:
    """Read ``mu``/``sigma`` (and ``n`` when present) from any of the STAT_FORMATS files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"statistics file not found: {path!r}")
    with np.load(path, allow_pickle=False) as data:
        if "mu" not in data.files and "arr_0" in data.files:
            raise ValueError(f"{path!r} is an ADM reference batch of images without "
                             "precomputed mu/sigma; compute them with `stepwise stats --data "
                             f"{path}`")
        return _stats_from(data, path, "mu", "sigma")


def load_adm_reference(path: str | os.PathLike) -> tuple[GaussianStats | None,
                                                         GaussianStats | None,
                                                         np.ndarray | None]:
    """(pool3 stats, spatial stats, images) of a guided-diffusion reference batch.

    Each is None when the file lacks it; images are ``arr_0`` as stored (uint8 NHWC).
    """
    path = os.fspath(path)
    with np.load(path, allow_pickle=False) as data:
        pool = _stats_from(data, path, "mu", "sigma") if "mu" in data.files else None
        spatial = _stats_from(data, path, "mu_s", "sigma_s") if "mu_s" in data.files else None
        images = np.asarray(data["arr_0"]) if "arr_0" in data.files else None
    if images is not None and (images.ndim != 4 or images.shape[-1] not in (1, 3)):
        raise ValueError(f"{path!r}: 'arr_0' must be NHWC images, got shape {images.shape}")
    return pool, spatial, images


def stats_file_info(path: str | os.PathLike) -> dict[str, Any]:
    """Keys, dimension, n and feature name of a statistics file (for printing)."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
        info: dict[str, Any] = {"keys": sorted(data.files)}
        if "mu" in data.files:
            info["dim"] = int(np.asarray(data["mu"]).shape[0])
        if "n" in data.files:
            info["n"] = int(data["n"])
        if "feature" in data.files:
            info["feature"] = str(data["feature"])
    return info
