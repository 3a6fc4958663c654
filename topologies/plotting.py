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
    segs = [(xy[a], xy[b]) for a, b in G.edges() if a != b]
    ax.add_collection(LineCollection(segs, colors="0.55", linewidths=0.4 if n > 100 else 0.9))
    ax.scatter(xy[:, 0], xy[:, 1], s=float(np.clip(3000 / n, 4, 220)), c="tab:blue", zorder=2)
    if n <= 32:
        for i, (x, y) in enumerate(xy):
            ax.annotate(str(i), (x, y), ha="center", va="center", fontsize=7, color="white", zorder=3)
    ax.set_title(f"{G.graph.get('name', 'graph')}: n={n}, {G.number_of_edges()} edges")
    ax.set_aspect("equal")
    ax.axis("off")


def _draw_spectrum(ax, W, q: int) -> None:
    vals = np.real(eigenvalues(W))
    gap = spectral_gap(W)
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
