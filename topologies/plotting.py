"""`plot`: the graph and the spectrum of its mixing matrix, side by side, into a file.

matplotlib is imported inside the function and drawn on a bare `Figure` with the Agg canvas:
no pyplot state, no backend switch in the caller's session.
"""
from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np

from .errors import TopologyError
from .spectra import effective_gap, eigenvalues, spectral_gap

FORMATS = ("png", "pdf", "svg")
PLOT_MAX_N = 2000
ARROWS_MAX_N = 32
"""Directed graphs up to this n are drawn with arrows (j -> i: i pulls j), above with lines."""


def _positions(G: nx.Graph) -> np.ndarray:
    """Circular layout for ring-like graphs (G.graph['layout'] == 'circular'), spring else."""
    if G.graph.get("layout") == "circular":
        pos = nx.circular_layout(G)
    else:
        pos = nx.spring_layout(G, seed=0)
    return np.array([pos[i] for i in range(G.number_of_nodes())])


def _draw_graph(ax, G: nx.Graph) -> None:
    from matplotlib.collections import LineCollection

    xy = _positions(G)
    n = len(xy)
    arcs = [(a, b) for a, b in G.edges() if a != b]
    if G.is_directed() and n <= ARROWS_MAX_N:  # arc j -> i: i pulls x_j, arrow head at i
        for a, b in arcs:
            ax.annotate("", xy=xy[b], xytext=xy[a], zorder=1, arrowprops=dict(
                arrowstyle="-|>", color="0.55", lw=0.6, mutation_scale=7, shrinkA=6, shrinkB=7))
    else:
        segs = [(xy[a], xy[b]) for a, b in arcs]
        ax.add_collection(LineCollection(segs, colors="0.55", linewidths=0.4 if n > 100 else 0.9))
    ax.scatter(xy[:, 0], xy[:, 1], s=float(np.clip(3000 / n, 4, 220)), c="tab:blue", zorder=2)
    if n <= 32:
        for i, (x, y) in enumerate(xy):
            ax.annotate(str(i), (x, y), ha="center", va="center", fontsize=7, color="white", zorder=3)
    links = "arcs (j -> i: i pulls j)" if G.is_directed() else "edges"
    ax.set_title(f"{G.graph.get('name', 'graph')}: n={n}, {G.number_of_edges()} {links}")
    ax.set_aspect("equal")
    ax.axis("off")


def _draw_complex_spectrum(ax, vals: np.ndarray, gap: float, q: int) -> None:
    """Eigenvalues of a non-symmetric W in the complex plane, the disk |z| <= 1 - gap shaded."""
    t = np.linspace(0.0, 2.0 * np.pi, 361)
    slem = 1.0 - gap
    ax.plot(np.cos(t), np.sin(t), color="0.7", lw=0.6)
    ax.fill(slem * np.cos(t), slem * np.sin(t), color="tab:green", alpha=0.2,
            label=f"|lambda| <= 1 - gap, spectral gap = {gap:.4g}")
    ax.plot(vals.real, vals.imag, "o", ms=3 if len(vals) > 64 else 5)
    ax.axhline(0.0, color="0.7", lw=0.5)
    ax.axvline(0.0, color="0.7", lw=0.5)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.set_xlabel("Re lambda")
    ax.set_ylabel("Im lambda")
    ax.set_title(f"spectrum of W (complex); effective gap (Q={q}) = {effective_gap(gap, q):.4g}")
    ax.legend(loc="lower left", fontsize=8)


def _draw_spectrum(ax, W, q: int) -> None:
    vals = eigenvalues(W)
    gap = spectral_gap(W)
    if np.iscomplexobj(vals):  # directed graph (random_neighbors): gap = 1 - |lambda_2|
        _draw_complex_spectrum(ax, vals, gap, q)
        return
    slem = 1.0 - gap
    ax.plot(np.arange(1, len(vals) + 1), vals, "o", ms=3 if len(vals) > 64 else 5)
    ax.axhspan(slem, 1.0, color="tab:green", alpha=0.2, label=f"spectral gap = {gap:.4g}")
    for y in (slem, -slem):
        ax.axhline(y, color="tab:green", ls="--", lw=0.8)
    ax.axhline(0.0, color="0.7", lw=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("index k (descending)")
    ax.set_ylabel("eigenvalue lambda_k of W")
    ax.set_title(f"spectrum; effective gap (Q={q}) = {effective_gap(gap, q):.4g}")
    ax.legend(loc="lower left", fontsize=8)


def plot(G: nx.Graph, W, path, q: int = 1) -> Path:
    """Draw G and the eigenvalues of W (gap 1 - max(|lambda_2|, |lambda_n|) shaded) to `path`.

    A directed G (random_neighbors) is drawn with arrows, and a complex spectrum in the complex
    plane with the disk |lambda| <= 1 - gap shaded.

    The format follows the extension: .png, .pdf or .svg. Returns the path written.
    """
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise TopologyError(f"plot file must end in .png, .pdf or .svg, got {str(path)!r}")
    n = G.number_of_nodes()
    if n > PLOT_MAX_N:
        raise TopologyError(f"plot draws graphs up to n={PLOT_MAX_N} nodes, got n={n}")
    if W.shape != (n, n):
        raise TopologyError(f"W has shape {W.shape}, expected ({n}, {n}) for this graph")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_graph, ax_spec = fig.subplots(1, 2)
    _draw_graph(ax_graph, G)
    _draw_spectrum(ax_spec, W, q)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=ext, dpi=120)
    return path
