"""Parity of evaluation/ with pytorch-fid (the reference implementation), on weights made here.

Needs torch, torchvision and pytorch-fid (installed with ``--no-deps``). torchvision's
compiled operators do not register beside this torch, so the helper below puts an empty
``torchvision._meta_registrations`` module in place before importing it; the weight
download of pytorch-fid is patched to return a randomly initialised state dict.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from _helpers import require
from stepwise.evaluation import inception as inc
from stepwise.evaluation import stats


def _require(module: str):
    require(importlib.util.find_spec(module) is not None, f"{module} (test reference dependency)")


def _import_pytorch_fid():
    """Import pytorch_fid.inception and pytorch_fid.fid_score beside an incompatible torchvision."""
    for mod in ("torch", "torchvision", "pytorch_fid"):
        _require(mod)
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    pf_inception = importlib.import_module("pytorch_fid.inception")
    fid_score = importlib.import_module("pytorch_fid.fid_score")
    return pf_inception, fid_score


def _random_inception_state_dict(seed: int) -> dict:
    """A state dict with the standard weight file's keys and random, well-scaled values."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                          init_weights=False)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("conv.weight"):
            fan_in = value[0].numel()
            value = torch.randn(value.shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif key.endswith("bn.weight"):
            value = 0.6 + 0.8 * torch.rand(value.shape, generator=gen)
        elif key.endswith("bn.bias") or key.endswith("running_mean"):
            value = 0.1 * torch.randn(value.shape, generator=gen)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(value.shape, generator=gen)
        state[key] = value
    return state


@pytest.fixture(scope="module")
def reference():
    pf_inception, fid_score = _import_pytorch_fid()
    return pf_inception, fid_score


def test_resize_matches_torch_interpolate(reference):
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    for shape in [(2, 3, 8, 8), (1, 3, 37, 53), (1, 2, 311, 400), (1, 1, 299, 299)]:
        x = rng.standard_normal(shape).astype(np.float32)
        want = F.interpolate(torch.from_numpy(x), size=(299, 299), mode="bilinear",
                             align_corners=False).numpy()
        got = np.asarray(inc.resize_bilinear(jnp.asarray(x.transpose(0, 2, 3, 1))))
        # float32 round-off only (~1e-5 on N(0, 1) pixels, a few 5e-5 where a source index
        # rounds differently); a different rule (align_corners, antialias) errs by ~0.1-1
        np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, atol=1e-4, rtol=0)


def test_inception_features_match_pytorch_fid(reference, tmp_path):
    import torch

    pf_inception, _ = reference
    state = _random_inception_state_dict(seed=1)
    weight_file = tmp_path / "pt_inception-2015-12-05-test.pth"
    torch.save(state, weight_file)

    original = pf_inception.load_state_dict_from_url
    pf_inception.load_state_dict_from_url = lambda *a, **k: torch.load(weight_file)
    try:
        ref_net = pf_inception.InceptionV3([3]).eval()
    finally:
        pf_inception.load_state_dict_from_url = original

    rng = np.random.default_rng(2)
    images = rng.uniform(-1, 1, size=(2, 3, 37, 45)).astype(np.float32)  # NCHW in [-1, 1]
    with torch.no_grad():
        want = ref_net(torch.from_numpy((images + 1) / 2))[0].numpy().reshape(2, -1)
    assert want.shape == (2, 2048) and np.std(want) > 0

    npz = tmp_path / "inception.npz"
    inc.convert_inception(weight_file, npz)
    params_npz = inc.load_inception(npz)
    params_pth = inc.load_inception(weight_file)
    for a, b in zip(jax.tree.leaves(params_npz), jax.tree.leaves(params_pth)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    fn = jax.jit(inc.inception_apply_fn("NCHW"))
    got = np.asarray(fn(params_npz, jnp.asarray(images)))
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    print(f"inception parity: relative error {rel:.2e}")
    assert rel <= 1e-4, rel
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())

    # pytorch-fid's own wrapper state dict (``blocks.i.j`` names) loads to the same params.
    params_wrapper = inc.inception_params_from_state_dict(ref_net.state_dict())
    for a, b in zip(jax.tree.leaves(params_wrapper), jax.tree.leaves(params_npz)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_inception_loader_rejects_wrong_shapes(reference, tmp_path):
    state = {k: v.numpy() for k, v in _random_inception_state_dict(seed=3).items()}
    state["Mixed_6b.branch7x7_2.conv.weight"] = np.zeros((128, 128, 7, 1), np.float32)
    with pytest.raises(ValueError, match="Mixed_6b.branch7x7_2"):
        inc.inception_params_from_state_dict(state)
    del state["Mixed_6b.branch7x7_2.conv.weight"]
    with pytest.raises(ValueError, match="missing"):
        inc.inception_params_from_state_dict(state)


def _random_spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d)


@pytest.mark.parametrize("d,rank", [(16, None), (64, None), (32, 8)])
def test_frechet_distance_matches_pytorch_fid(reference, d, rank):
    _, fid_score = reference
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d, rank), _random_spd(rng, d, rank)
    want = fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
    got = stats.frechet_distance(mu1, s1, mu2, s2)
    assert abs(got - want) <= 1e-6 * abs(want), (got, want)


def test_frechet_distance_of_sample_stats_matches_pytorch_fid(reference):
    _, fid_score = reference
    rng = np.random.default_rng(5)
    a = rng.standard_normal((500, 20))
    b = rng.standard_normal((400, 20)) @ rng.standard_normal((20, 20)) * 0.3 + 0.5
    sa, sb = stats.gaussian_stats(a), stats.gaussian_stats(b)
    want = fid_score.calculate_frechet_distance(np.mean(a, 0), np.cov(a, rowvar=False),
                                                np.mean(b, 0), np.cov(b, rowvar=False))
    got = stats.fid_from_stats(sa, sb)
    assert abs(got.value - want) <= 1e-6 * abs(want)
    assert got.n == 500
