"""Feature networks and batched / sharded extraction."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise.evaluation import features as ft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toy_images(n=256, size=8, seed=0):
    """Two classes: bright top half vs bright bottom half, plus noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.full((n, size, size), -0.8, np.float32)
    for i in range(n):
        rows = slice(0, size // 2) if y[i] == 0 else slice(size // 2, size)
        x[i, rows] = 0.8
    x += rng.normal(0, 0.3, x.shape).astype(np.float32)
    return np.clip(x, -1, 1), y


def test_cnn_trains_and_checkpoint_round_trips(tmp_path):
    x, y = _toy_images()
    net = ft.train_feature_net(x, y, key=jax.random.key(0), steps=60, batch_size=32,
                               feature_dim=16, widths=(8, 16))
    assert net.losses.shape == (60,)
    assert net.losses[-10:].mean() < 0.5 * net.losses[:5].mean()
    assert ft.classifier_accuracy(net, x, y) > 0.9

    ft.save_feature_net(tmp_path / "net", net)
    back = ft.load_feature_net(tmp_path / "net")
    assert back.image_shape == (8, 8) and back.model == net.model
    for a, b in zip(jax.tree.leaves(net.params), jax.tree.leaves(back.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # Penultimate features: stream in batches (with padding) == one direct call.
    fx = ft.feature_net_extractor(back)
    direct = np.asarray(back.model.apply({"params": back.params}, jnp.asarray(x[:37]),
                                         method=ft.DomainCNN.features))
    got = ft.extract_features(fx, x[:37].reshape(37, 64), batch_size=10)
    assert got.shape == (37, 16)
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)
    stats = ft.feature_stats(fx, x[:37], batch_size=10)
    np.testing.assert_allclose(stats.mu, direct.mean(0), rtol=1e-5, atol=1e-6)
    assert stats.n == 37


def test_identity_extractor_and_errors():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    fx = ft.identity_extractor(12)
    np.testing.assert_array_equal(ft.extract_features(fx, x, batch_size=3), x.reshape(2, 12))
    with pytest.raises(ValueError, match="expect examples of shape"):
        ft.extract_features(fx, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="H in"):
        ft.train_feature_net(np.zeros((4, 9, 9)), np.zeros(4), key=jax.random.key(0), steps=1)
    with pytest.raises(ValueError, match="labels must be"):
        ft.train_feature_net(np.zeros((4, 8, 8)), np.zeros(3), key=jax.random.key(0), steps=1)
    with pytest.raises(ValueError, match="batch_size"):
        list(ft.stream_features(fx, x, batch_size=0))


_SHARDED = textwrap.dedent("""
    import jax, numpy as np
    from stepwise.evaluation import features as ft
    assert len(jax.devices()) == 4, jax.devices()
    model = ft.DomainCNN(num_classes=3, feature_dim=12, widths=(8, 16))
    params = model.init(jax.random.key(0), np.zeros((1, 16, 16)))["params"]
    net = ft.TrainedFeatureNet(model, params, (16, 16))
    fx = ft.feature_net_extractor(net)
    x = np.random.default_rng(0).uniform(-1, 1, (37, 16, 16)).astype(np.float32)
    sharded = ft.extract_features(fx, x, batch_size=10)          # 4 devices, padded batches of 12
    single = ft.extract_features(fx, x, batch_size=7, devices=jax.devices()[:1])
    direct = np.asarray(model.apply({"params": params}, x, method=ft.DomainCNN.features))
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sharded, direct, rtol=1e-5, atol=1e-6)
    # The batch really is split over the mesh.
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    out = fx._jitted(params, jax.device_put(x[:12], sh))
    assert len(out.sharding.device_set) == 4
    print("OK", sharded.shape)
""")


def test_sharded_extraction_equals_unsharded():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _SHARDED], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK (37, 12)" in proc.stdout
