"""The evaluation command modules (stats, evaluate, train-features, convert-inception)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from stepwise.cli import main


def _cli(argv: list[str]) -> int:
    """The real entry point: errors come back as exit status 2 with one line on stderr."""
    return main(argv)


def _digits_flat():
    return load_digits().images.reshape(-1, 64).astype(np.float32) / 16 * 2 - 1


def test_help_texts_show_examples(capsys):
    for cmd in ("evaluate", "stats", "convert-inception", "train-features"):
        with pytest.raises(SystemExit):
            _cli([cmd, "--help"])
        assert f"stepwise {cmd}" in capsys.readouterr().out


def test_evaluate_exact_moments(tmp_path):
    rng = np.random.default_rng(0)
    d, n = 5, 5000
    a = rng.standard_normal((d, d)) * 0.5
    cov, mean = a @ a.T + 0.1 * np.eye(d), rng.standard_normal(d)
    x = rng.multivariate_normal(mean, cov, size=n) + 0.3  # shifted by 0.3 in every coordinate
    np.savez(tmp_path / "samples.npz", samples=x.astype(np.float32), exact_mean=mean,
             exact_cov=cov)
    assert _cli(["evaluate", "--samples", str(tmp_path / "samples.npz"), "--exact",
                 "--bootstrap", "5"]) == 0
    doc = json.loads((tmp_path / "evaluation.json").read_text())
    m = doc["metrics"][0]
    assert m["name"] == "frechet_exact" and m["n"] == n and "n_ref" not in m
    assert abs(m["value"] - d * 0.09) < 0.05  # |shift|^2 = 0.45, sample noise ~ 0.01
    assert doc["metrics"][1]["name"] == "frechet_exact_bootstrap"
    # errors: no exact moments in the file, or non-identity features
    np.savez(tmp_path / "plain.npz", samples=x.astype(np.float32))
    assert _cli(["evaluate", "--samples", str(tmp_path / "plain.npz"), "--exact"]) == 2
    assert _cli(["evaluate", "--samples", str(tmp_path / "samples.npz"), "--exact",
                 "--features", "digits"]) == 2


def test_stats_then_evaluate_against_data_and_ref(tmp_path, capsys):
    digits = _digits_flat()
    samples = digits[::2] + np.random.default_rng(1).normal(0, 0.05, digits[::2].shape)
    np.savez(tmp_path / "samples.npz", samples=samples.astype(np.float32))
    ref = tmp_path / "digits_ref.npz"
    assert _cli(["stats", "--data", "digits", "--out", str(ref)]) == 0
    with np.load(ref) as f:
        np.testing.assert_allclose(f["mu"], digits.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(f["sigma"], np.cov(digits, rowvar=False), rtol=1e-4, atol=1e-6)
        assert int(f["n"]) == 1797

    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert _cli(["evaluate", "--samples", str(tmp_path / "samples.npz"), "--ref", str(ref),
                 "--out", str(out_a)]) == 0
    assert _cli(["evaluate", "--samples", str(tmp_path / "samples.npz"), "--data", "digits",
                 "--kid-subsets", "5", "--kid-subset-size", "200", "--fid-inf",
                 "--out", str(out_b)]) == 0
    printed = capsys.readouterr().out
    assert "| fid |" in printed and "| kid |" in printed
    a = json.loads((out_a / "evaluation.json").read_text())["metrics"]
    b = {m["name"]: m for m in json.loads((out_b / "evaluation.json").read_text())["metrics"]}
    assert a[0]["value"] == pytest.approx(b["fid"]["value"], rel=1e-5)
    assert (b["fid"]["n"], b["fid"]["n_ref"], b["kid"]["subset_size"]) == (899, 1797, 200)
    assert 0 < b["fid"]["value"] < 5 and "fid_inf" in b
    # a reference of another dimension is refused with a clear message
    np.savez(tmp_path / "wrong.npz", samples=np.zeros((10, 16), np.float32))
    assert _cli(["evaluate", "--samples", str(tmp_path / "wrong.npz"), "--ref", str(ref)]) == 2
    assert "dimension" in capsys.readouterr().err


def test_train_features_then_evaluate_in_feature_space(tmp_path, capsys):
    net_dir = tmp_path / "net"
    assert _cli(["train-features", "--data", "digits", "--out", str(net_dir), "--steps", "40",
                 "--feature-dim", "32"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    np.savez(tmp_path / "samples.npz", samples=_digits_flat()[:300])
    assert _cli(["evaluate", "--samples", str(tmp_path / "samples.npz"), "--data", "digits",
                 "--features", "digits", "--feature-net", str(net_dir),
                 "--kid-subsets", "3", "--kid-subset-size", "100"]) == 0
    doc = json.loads((tmp_path / "evaluation.json").read_text())
    assert doc["features"] == "digits" and doc["metrics"][0]["n"] == 300
    # a missing net is explained, not a traceback
    assert _cli(["stats", "--data", "digits", "--features", "digits", "--feature-net",
                 str(tmp_path / "none"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "train-features" in capsys.readouterr().err


def test_convert_inception_reports_missing_file(tmp_path, capsys):
    assert _cli(["convert-inception", str(tmp_path / "missing.pth"),
                 str(tmp_path / "out.npz")]) == 2
    assert "error" in capsys.readouterr().err


def test_a_second_evaluation_does_not_overwrite_the_first_and_dtypes_are_checked(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 4)).astype(np.float32)
    np.savez(tmp_path / "s.npz", samples=x, exact_mean=np.zeros(4), exact_cov=np.eye(4))
    assert _cli(["evaluate", "--samples", str(tmp_path / "s.npz"), "--exact"]) == 0
    first = json.loads((tmp_path / "evaluation.json").read_text())
    np.savez(tmp_path / "ref.npz", samples=x[:150] + 0.5)
    ref_stats = tmp_path / "ref_stats.npz"
    assert _cli(["stats", "--data", str(tmp_path / "ref.npz"), "--out", str(ref_stats)]) == 0
    assert _cli(["evaluate", "--samples", str(tmp_path / "s.npz"), "--ref", str(ref_stats)]) == 0
    assert json.loads((tmp_path / "evaluation.json").read_text()) == first       # kept
    second = json.loads((tmp_path / "evaluation.1.json").read_text())
    assert second["reference"] != first["reference"]
    assert _cli(["evaluate", "--samples", str(tmp_path / "s.npz"), "--exact"]) == 0   # a rerun replaces its own file
    assert not (tmp_path / "evaluation.2.json").exists()
    np.savez(tmp_path / "ints.npz", samples=np.ones((10, 4), np.int64))
    assert _cli(["evaluate", "--samples", str(tmp_path / "ints.npz"), "--exact"]) == 2
    np.savez(tmp_path / "u8.npz", samples=np.full((10, 4), 255, np.uint8), exact_mean=np.ones(4), exact_cov=np.eye(4))
    assert _cli(["evaluate", "--samples", str(tmp_path / "u8.npz"), "--exact"]) == 0
    u8 = json.loads((tmp_path / "evaluation.2.json").read_text())
    assert u8["samples"].endswith("u8.npz")
    assert u8["metrics"][0]["value"] < 10.0          # scaled to [-1, 1] first: raw 255s would give ~2.6e5
