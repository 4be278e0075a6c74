"""`stepwise report` gathers runs into a self-contained HTML page that renders in headless Chromium."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from _helpers import require


def _stepwise(*args, timeout=600):
    out = subprocess.run([sys.executable, "-m", "stepwise", *args], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    require(exe is not None, "Debian's chromium")
    return exe


def test_report_renders_in_headless_chromium(tmp_path):
    runs = []
    for nfe in (4, 6):
        d = tmp_path / f"s{nfe}"
        _stepwise("sample", "--workdir", str(d), f"--config.nfe={nfe}", "--config.num_samples=300",
                  "--config.reference_samples=0", "--config.model.components=3")
        runs.append(str(d))
    out = tmp_path / "report"
    text = _stepwise("report", *runs, "--out", str(out))
    assert "frechet_exact" in text
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3  # NFE plot + two sample grids, inlined
    assert not re.search(r'src="(?!data:)', html), "the page must be self-contained"
    assert (out / "report.md").exists()

    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1000,1400", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image
    img = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert img.shape == (1400, 1000)
    # a rendered page: a real share of non-white pixels (text, plot, digit grids)
    assert (img < 200).mean() > 0.03
