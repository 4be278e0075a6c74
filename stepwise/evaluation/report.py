"""Reports: Markdown and self-contained HTML from tables, plots and sample grids.

Tables are lists of dicts (one row each). Plots use matplotlib's Agg backend and return PNG
bytes, so a report can inline them (HTML: base64 ``data:`` URIs) or write them to files.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stepwise.io import write_bytes_atomic

__all__ = [
    "format_table_markdown", "format_table_html", "sample_grid", "grid_png", "plot_lines",
    "plot_distance_vs_nfe", "plot_pareto", "pareto_front", "markdown_report", "html_report",
    "Figure",
]

# (title, PNG bytes) pairs make up a report's figures.
Figure = tuple[str, bytes]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------- tables
def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return str(v)


def _columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    return cols


def format_table_markdown(rows: Sequence[Mapping[str, Any]],
                          columns: Sequence[str] | None = None) -> str:
    """GitHub-flavoured Markdown table; columns default to the union of keys in order."""
    cols = _columns(rows, columns)
    if not cols:
        return ""
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(_cell(r.get(c))) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def format_table_html(rows: Sequence[Mapping[str, Any]],
                      columns: Sequence[str] | None = None) -> str:
    cols = _columns(rows, columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------------------- grids
def sample_grid(samples: Any, *, image_shape: Sequence[int] | None = None,
                ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile samples in [-1, 1] into one uint8 image (H', W') or (H', W', C).

    ``samples``: (n, H, W), (n, H, W, C) with C in {1, 3, 4}, or flat (n, D) with
    ``image_shape`` of D values. Values are clipped to [-1, 1] and mapped to [0, 255].
    """
    x = np.asarray(samples, np.float32)
    if x.ndim == 2:
        if image_shape is None:
            side = math.isqrt(x.shape[1])
            if side * side != x.shape[1]:
                raise ValueError(f"image_shape: needed for flat samples of {x.shape[1]} values "
                                 "(not a square)")
            image_shape = (side, side)
        if math.prod(image_shape) != x.shape[1]:
            raise ValueError(f"image_shape {tuple(image_shape)} does not hold {x.shape[1]} values")
        x = x.reshape((x.shape[0], *image_shape))
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (3, 4)) or x.shape[0] < 1:
        raise ValueError(f"samples must be (n,H,W), (n,H,W,C) with C in (1,3,4) or flat (n,D), "
                         f"got shape {np.shape(samples)}")
    n, h, w = x.shape[:3]
    cols = ncols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    img = np.clip((x + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, *x.shape[3:]), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h,
            pad + c * (w + pad):pad + c * (w + pad) + w] = img[i]
    return out


def grid_png(samples: Any, *, image_shape: Sequence[int] | None = None,
             ncols: int | None = None, scale: int = 1) -> bytes:
    """PNG bytes of :func:`sample_grid` (nearest-neighbour upscaled by ``scale``)."""
    from PIL import Image

    grid = sample_grid(samples, image_shape=image_shape, ncols=ncols)
    if scale > 1:
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- plots
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def plot_lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
               xlabel: str, ylabel: str, title: str = "", logx: bool = False,
               logy: bool = False, markers: bool = True) -> bytes:
    """Generic line plot, e.g. search progress: ``{label: (xs, ys)}`` -> PNG bytes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"series {label!r}: xs and ys differ in length ({len(xs)}, {len(ys)})")
        ax.plot(xs, ys, marker="o" if markers else None, ms=3, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return _png(fig)


def plot_distance_vs_nfe(rows: Sequence[Mapping[str, Any]], *, distance: str = "fid",
                         solver: str = "solver", nfe: str = "nfe", logy: bool = True,
                         title: str = "") -> bytes:
    """One line per solver of ``distance`` against NFE, from table rows."""
    series: dict[str, tuple[list, list]] = {}
    for r in rows:
        for k in (distance, solver, nfe):
            if k not in r:
                raise ValueError(f"rows: each row needs key {k!r}, got keys {sorted(r)}")
        xs, ys = series.setdefault(str(r[solver]), ([], []))
        xs.append(float(r[nfe]))
        ys.append(float(r[distance]))
    ordered = {k: tuple(map(list, zip(*sorted(zip(*v))))) for k, v in series.items()}
    return plot_lines(ordered, xlabel="NFE", ylabel=distance, title=title, logy=logy)


def pareto_front(costs: Sequence[float], values: Sequence[float]) -> np.ndarray:
    """Indices of points not dominated (lower cost and lower value are better), by cost."""
    c, v = np.asarray(costs, float), np.asarray(values, float)
    if c.shape != v.shape or c.ndim != 1:
        raise ValueError(f"costs and values must be 1-d of equal length, got {c.shape}, {v.shape}")
    order = np.lexsort((v, c))
    front, best = [], np.inf
    for i in order:
        if v[i] < best:
            front.append(i)
            best = v[i]
    return np.asarray(front, dtype=np.int64)


def plot_pareto(rows: Sequence[Mapping[str, Any]], *, cost: str = "nfe", quality: str = "fid",
                label: str | None = "solver", logy: bool = True, title: str = "") -> bytes:
    """Scatter of quality vs cost with the Pareto front (lower is better for both) drawn."""
    plt = _pyplot()
    c = np.array([float(r[cost]) for r in rows])
    q = np.array([float(r[quality]) for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    groups = sorted({str(r.get(label, "")) for r in rows}) if label else [""]
    for g in groups:
        idx = [i for i, r in enumerate(rows) if not label or str(r.get(label, "")) == g]
        ax.scatter(c[idx], q[idx], s=14, label=g or None)
    if len(rows):
        f = pareto_front(c, q)
        ax.step(c[f], q[f], where="post", color="k", lw=1, label="Pareto front")
    ax.set(xlabel=cost, ylabel=quality, title=title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# ----------------------------------------------------------------------------- reports
def markdown_report(title: str, sections: Sequence[tuple[str, Any]], *,
                    image_dir: str | os.PathLike | None = None) -> str:
    """Markdown from ``(heading, content)`` sections; content is text, a table (list of
    dicts) or a figure (PNG bytes). Figures are written to ``image_dir`` (atomically) and
    linked by relative name, or omitted with a note when ``image_dir`` is None."""
    out = [f"# {title}", ""]
    for k, (heading, content) in enumerate(sections):
        out += [f"## {heading}", ""]
        if isinstance(content, (bytes, bytearray)):
            if image_dir is None:
                out.append("_(figure omitted: no image directory)_")
            else:
                name = f"fig{k:02d}.png"
                write_bytes_atomic(os.path.join(os.fspath(image_dir), name), bytes(content))
                out.append(f"![{heading}]({name})")
        elif isinstance(content, str):
            out.append(content)
        else:
            out.append(format_table_markdown(list(content)))
        out.append("")
    return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;}"
        "table{border-collapse:collapse;font-size:90%;}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:right;}img{max-width:100%;image-rendering:pixelated;}")


def html_report(title: str, sections: Sequence[tuple[str, Any]]) -> str:
    """A single self-contained HTML page; figures are inlined as base64 PNG ``data:`` URIs."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for heading, content in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, (bytes, bytearray)):
            b64 = base64.b64encode(bytes(content)).decode("ascii")
            parts.append(f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{b64}'>")
        elif isinstance(content, str):
            parts.append(f"<pre>{html.escape(content)}</pre>")
        else:
            parts.append(format_table_html(list(content)))
    parts.append("</body></html>")
    return "\n".join(parts)
