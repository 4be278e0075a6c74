"""Reports: tables, sample grids, plots, Markdown and self-contained HTML."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from stepwise.evaluation import report as rp

ROWS = [{"solver": "ddim", "nfe": 5, "fid": 12.5}, {"solver": "ddim", "nfe": 10, "fid": 4.25},
        {"solver": "dpm++2m", "nfe": 5, "fid": 6.0}, {"solver": "dpm++2m", "nfe": 10, "fid": 1.5,
                                                      "note": "a|b"}]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).size


def test_markdown_table():
    md = rp.format_table_markdown(ROWS)
    lines = md.splitlines()
    assert lines[0] == "| solver | nfe | fid | note |"
    assert lines[2] == "| ddim | 5 | 12.5 |  |"
    assert lines[5].endswith("| a\\|b |")


def test_sample_grid_layouts():
    x = np.linspace(-1, 1, 5 * 4 * 4).reshape(5, 4, 4)
    g = rp.sample_grid(x, ncols=3, pad=1)
    assert g.shape == (2 * 5 + 1, 3 * 5 + 1) and g.dtype == np.uint8
    np.testing.assert_array_equal(g[1:5, 1:5], np.round((x[0] + 1) * 127.5).astype(np.uint8))
    assert (g[0] == 255).all()
    flat = rp.sample_grid(x.reshape(5, 16), image_shape=(4, 4), ncols=3)
    np.testing.assert_array_equal(flat, g)
    rgb = rp.sample_grid(np.zeros((3, 4, 4, 3)))
    assert rgb.shape == (11, 11, 3) and rgb[1, 1, 0] == 128
    assert rp.sample_grid(np.full((1, 2, 2), 5.0))[1, 1] == 255  # clipped
    with pytest.raises(ValueError, match="image_shape"):
        rp.sample_grid(np.zeros((2, 10)))
    assert _png_size(rp.grid_png(x, scale=3)) == (3 * 16, 3 * 11)  # 3 columns, 2 rows


def test_pareto_front():
    costs, values = [1, 2, 2, 3, 4, 5], [5.0, 3.0, 4.0, 3.5, 1.0, 1.0]
    np.testing.assert_array_equal(rp.pareto_front(costs, values), [0, 1, 4])


def test_plots_and_reports(tmp_path):
    figs = [("FID vs NFE", rp.plot_distance_vs_nfe(ROWS)),
            ("Pareto", rp.plot_pareto(ROWS)),
            ("Search", rp.plot_lines({"best": ([0, 1, 2], [3.0, 2.0, 1.5])},
                                     xlabel="generation", ylabel="fid"))]
    for _, png in figs:
        w, h = _png_size(png)
        assert w > 100 and h > 100
    sections = [("Results", ROWS), ("Notes", "n = 1000 <samples>")] + figs
    page = rp.html_report("Run <1>", sections)
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(imgs) == 3 and base64.b64decode(imgs[0]) == figs[0][1]
    assert "Run &lt;1&gt;" in page and "&lt;samples&gt;" in page and "<td>dpm++2m</td>" in page
    assert "http" not in page  # self-contained
    md = rp.markdown_report("Run", sections, image_dir=tmp_path)
    assert "![Pareto](fig03.png)" in md and (tmp_path / "fig03.png").read_bytes() == figs[1][1]
    with pytest.raises(ValueError, match="needs key 'fid'"):
        rp.plot_distance_vs_nfe([{"solver": "a", "nfe": 1}])
