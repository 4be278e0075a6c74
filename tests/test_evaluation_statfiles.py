"""Reference-statistics files: round trips and the key layouts of pytorch-fid, EDM and ADM."""
from __future__ import annotations

import os

import numpy as np
import pytest

from stepwise.evaluation import statfiles as sf
from stepwise.evaluation.stats import GaussianStats


def _stats(d=5, n=123, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    return GaussianStats(rng.standard_normal(d), a @ a.T, n)


@pytest.mark.parametrize("fmt", sf.STAT_FORMATS)
def test_round_trip(tmp_path, fmt):
    s = _stats()
    path = sf.save_stats(tmp_path / f"ref_{fmt}.npz", s, format=fmt, feature="identity")
    back = sf.load_stats(path)
    np.testing.assert_array_equal(back.mu, s.mu)
    np.testing.assert_array_equal(back.sigma, s.sigma)
    assert back.n == 123
    assert sf.stats_file_info(path) == {"keys": ["feature", "mu", "n", "sigma"], "dim": 5,
                                        "n": 123, "feature": "identity"}
    # Readable by a plain np.load as the other tools do it: data["mu"], data["sigma"].
    with np.load(path) as data:
        assert data["mu"].shape == (5,) and data["sigma"].shape == (5, 5)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_reads_foreign_files_without_n(tmp_path):
    s = _stats()
    np.savez_compressed(tmp_path / "pf.npz", mu=s.mu.astype(np.float32), sigma=s.sigma)
    back = sf.load_stats(tmp_path / "pf.npz")
    assert back.n is None and back.mu.dtype == np.float64


def test_adm_reference_batch(tmp_path):
    s, sp = _stats(), _stats(d=3, seed=1)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "VIRTUAL_test.npz"
    np.savez(path, arr_0=images, mu=s.mu, sigma=s.sigma, mu_s=sp.mu, sigma_s=sp.sigma)
    pool, spatial, imgs = sf.load_adm_reference(path)
    np.testing.assert_array_equal(pool.sigma, s.sigma)
    np.testing.assert_array_equal(spatial.mu, sp.mu)
    np.testing.assert_array_equal(imgs, images)
    np.testing.assert_array_equal(sf.load_stats(path).mu, s.mu)
    # images only: load_stats explains how to get statistics
    np.savez(tmp_path / "imgs.npz", arr_0=images)
    with pytest.raises(ValueError, match="without precomputed mu/sigma"):
        sf.load_stats(tmp_path / "imgs.npz")
    assert sf.load_adm_reference(tmp_path / "imgs.npz")[0] is None
    # written ADM files carry the spatial statistics too
    out = sf.save_stats(tmp_path / "adm.npz", s, format="adm", spatial=sp)
    assert sf.load_adm_reference(out)[1].dim == 3


def test_shape_and_argument_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", mu=np.zeros(4), sigma=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="'sigma' must be \\(4, 4\\)"):
        sf.load_stats(tmp_path / "bad.npz")
    np.savez(tmp_path / "nokey.npz", mean=np.zeros(4))
    with pytest.raises(ValueError, match="missing key 'mu'"):
        sf.load_stats(tmp_path / "nokey.npz")
    with pytest.raises(ValueError, match="format must be one of"):
        sf.save_stats(tmp_path / "x.npz", _stats(), format="tf")
    with pytest.raises(ValueError, match="must end in .npz"):
        sf.save_stats(tmp_path / "x.npy", _stats())
    with pytest.raises(ValueError, match="only stored in format 'adm'"):
        sf.save_stats(tmp_path / "x.npz", _stats(), spatial=_stats())
    with pytest.raises(FileNotFoundError):
        sf.load_stats(tmp_path / "missing.npz")
