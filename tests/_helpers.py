"""Test helpers shared by several test files."""
import jax


def counting_model(model):
    """The same denoiser with a host callback that counts executed evaluations and their batch rows.

    Only branches that actually run call back, so the count is the true number of model calls.
    Returns (model, calls) where calls = {"n": int, "rows": [batch sizes]}.
    """
    calls = {"n": 0, "rows": []}

    def bump(x):
        calls["n"] += 1
        calls["rows"].append(x.shape[0])
        return x

    class Counted(type(model)):
        def __call__(self, x, t, cond=None):
            out = super().__call__(x, t, cond)
            return jax.pure_callback(bump, jax.ShapeDtypeStruct(out.shape, out.dtype), out)

    counted = object.__new__(Counted)
    for f in model.__dataclass_fields__:
        object.__setattr__(counted, f, getattr(model, f))
    return counted, calls


def require(ok: bool, what: str) -> None:
    """Skip when an optional test reference (a Debian package, a --no-deps wheel) is missing on a
    developer machine; FAIL in CI (``CI`` set), where scripts/test installs every one of them."""
    import os

    import pytest

    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI (scripts/test installs it)")
    pytest.skip(f"{what} is not installed (scripts/test installs it)")


def write_fashion_fixture(directory, n_train: int = 64, n_test: int = 32, seed: int = 0):
    """A tiny Fashion-MNIST in the real idx.gz format (random 28x28 uint8 images, 10 classes), so tests
    that only need SOME Fashion-MNIST files run without Debian's dataset-fashion-mnist."""
    import gzip
    import os

    import numpy as np

    from stepwise.data import FASHION_FILES

    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        img_name, lab_name = FASHION_FILES[split]
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for name, arr in ((img_name, images), (lab_name, labels)):
            header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
            with gzip.open(os.path.join(directory, name), "wb") as f:
                f.write(header + arr.tobytes())
    return str(directory)


TORCHVISION_SHIM = ('import sys, types; sys.modules.setdefault("torchvision._meta_registrations", '
                    'types.ModuleType("torchvision._meta_registrations"))')


def torch_stack():
    """Import torch and diffusers' models in this test environment, where the torchvision wheel
    installed for pytorch-fid does not match torch 2.13 ('operator torchvision::nms does not
    exist' when diffusers imports it): an empty ``torchvision._meta_registrations`` module goes in
    first. A user's ``.[torch]`` install has no torchvision and needs nothing of the kind."""
    exec(TORCHVISION_SHIM)
    import torch
    import diffusers
    return torch, diffusers


def sigkill_at_checkpoint(cmd, checkpoints, lo: int, hi: int | None = None, poll: float = 0.01, **popen):
    """Start ``cmd`` and SIGKILL it as soon as the newest orbax step under ``checkpoints`` is in
    [lo, hi); returns that step, or None if the process ended (or 500 s passed) first."""
    import signal
    import subprocess
    import time
    from pathlib import Path

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)
    ck, deadline = Path(checkpoints), time.time() + 500
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in ck.glob("*") if p.name.isdigit()] if ck.exists() else []
        if steps and lo <= max(steps) and (hi is None or max(steps) < hi):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return max(steps)
        time.sleep(poll)
    proc.kill()
    proc.wait()
    return None


def train_digits_mlp(workdir, split: str, preset: str = "small", steps: int = 30) -> str:
    """A `stepwise train` run directory: a tiny MLP on flat 8x8 digits of ``split`` (all | train),
    eps prediction on VP-linear; its model.json records the split (held-out checks read it)."""
    from stepwise.training import TrainOptions, load_training_data, train

    opts = TrainOptions(dataset="digits", image_size=8, flat=True, arch="mlp", preset=preset, split=split,
                        steps=steps, batch_size=32, measure_cost=False, warmup_steps=3, log_every=10,
                        checkpoint_every=steps, eval_examples=64)
    train(load_training_data(opts)[0], opts, str(workdir))
    return str(workdir)
