"""Static communication graphs: small generators returning networkx graphs on nodes 0..n-1.

Each generator is `fn(n, seed, **params) -> nx.Graph`, registered in `GRAPHS` with the smallest
n it accepts. `build` validates n and the parameters, and rejects disconnected graphs (a
disconnected graph never reaches consensus) unless `allow_disconnected=True`.

>>> sorted(d for _, d in ring(5).degree())
[2, 2, 2, 2, 2]
>>> exponential(8).number_of_edges()   # i ~ i +- 1, 2, 4: degree 2 log2(8) - 1 = 5
20
"""
from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import networkx as nx

from .errors import TopologyError

MAX_TRIES = 1000
"""Redraws of a random graph before giving up on finding a connected one."""


@dataclass(frozen=True)
class GraphSpec:
    """A registered graph family: its generator, the smallest n it accepts and a summary."""

    fn: Callable[..., Any]
    min_n: int
    summary: str
    time_varying: bool = False

    def param_names(self) -> list[str]:
        """Keyword parameters of the generator, beyond n and seed."""
        return [p for p in inspect.signature(self.fn).parameters if p not in ("n", "seed")]


GRAPHS: dict[str, GraphSpec] = {}


def register(name: str, min_n: int, summary: str, time_varying: bool = False):
    """Decorator adding a generator to `GRAPHS` under `name`."""

    def deco(fn):
        assert name not in GRAPHS, f"graph {name!r} registered twice"
        GRAPHS[name] = GraphSpec(fn, min_n, summary, time_varying)
        return fn

    return deco


# ---------------------------------------------------------------- parameter checks


def _fail(graph: str, param: str, value: Any, allowed: str) -> TopologyError:
    return TopologyError(f"{graph}: {param} must be {allowed}, got {value!r}")


def int_param(graph: str, param: str, value: Any, lo: int, hi: int | None = None) -> int:
    """`value` as an int in [lo, hi] (floats like 4.0 from the CLI are accepted)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    if ok and lo <= value and (hi is None or value <= hi):
        return int(value)
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    raise _fail(graph, param, value, allowed)


def prob_param(graph: str, param: str, value: Any, zero_ok: bool = False) -> float:
    """`value` as a probability in (0, 1] (or [0, 1] when `zero_ok`)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and (0 <= value if zero_ok else 0 < value) and value <= 1:
        return float(value)
    raise _fail(graph, param, value, "in [0, 1]" if zero_ok else "in (0, 1]")


def _labelled(G: nx.Graph, name: str, layout: str = "spring", **attrs: Any) -> nx.Graph:
    """Nodes relabelled 0..n-1 (sorted order) and graph attributes set."""
    G = nx.convert_node_labels_to_integers(G, ordering="sorted")
    G.graph.update(name=name, layout=layout, **attrs)
    return G


def _redraw_connected(graph: str, draw: Callable[[], nx.Graph], hint: str) -> nx.Graph:
    """Draw until connected (at most MAX_TRIES times); the draws share one seeded stream."""
    for _ in range(MAX_TRIES):
        G = draw()
        if nx.is_connected(G):
            return G
    raise TopologyError(f"{graph}: no connected graph in {MAX_TRIES} draws; {hint}")


def square_factors(n: int, least: int = 1) -> tuple[int, int] | None:
    """The most square factorisation rows x cols = n with least <= rows <= cols, or None.

    >>> square_factors(12), square_factors(13, least=3)
    ((3, 4), None)
    """
    for rows in range(math.isqrt(n), least - 1, -1):
        if rows >= 1 and n % rows == 0:
            return rows, n // rows
    return None


def _grid_shape(graph: str, n: int, rows: Any, cols: Any, least: int) -> tuple[int, int]:
    """rows x cols = n from the given ones, or the most square factorisation."""
    if rows is None and cols is None:
        shape = square_factors(n, least)
        if shape is None:
            ok = [m for m in range(max(2, n - 8), n + 9) if square_factors(m, least)]
            near = sorted(ok, key=lambda m: abs(m - n))[:2]
            raise TopologyError(
                f"{graph}: n={n} has no factorisation rows x cols with rows, cols >= {least}; "
                f"use e.g. n={' or n='.join(map(str, sorted(near)))}")
        return shape
    r = int_param(graph, "rows", rows, least) if rows is not None else None
    c = int_param(graph, "cols", cols, least) if cols is not None else None
    r = r if r is not None else n // c
    c = c if c is not None else n // r
    if r * c != n or r < least or c < least:
        raise TopologyError(f"{graph}: rows x cols must equal n={n} with both >= {least}, "
                            f"got rows={rows}, cols={cols}")
    return r, c


# ---------------------------------------------------------------- generators


@register("ring", 3, "cycle: i ~ i +- 1 (degree 2)")
def ring(n: int, seed: int = 0) -> nx.Graph:
    """Cycle C_n: node i linked to i - 1 and i + 1 (mod n)."""
    return _labelled(nx.cycle_graph(n), "ring", "circular")


@register("torus", 9, "2-D wrap-around grid rows x cols (degree 4); params rows, cols")
def torus(n: int, seed: int = 0, rows: int | None = None, cols: int | None = None) -> nx.Graph:
    """rows x cols grid with wrap-around, node (r, c) -> r * cols + c; rows, cols >= 3 so that
    every node has degree 4. Default shape: the most square factorisation of n."""
    r, c = _grid_shape("torus", n, rows, cols, least=3)
    return _labelled(nx.grid_2d_graph(r, c, periodic=True), "torus", rows=r, cols=c)


@register("grid", 2, "2-D grid rows x cols without wrap-around; params rows, cols")
def grid(n: int, seed: int = 0, rows: int | None = None, cols: int | None = None) -> nx.Graph:
    """rows x cols grid, node (r, c) -> r * cols + c. Default shape: the most square
    factorisation of n (a path when n is prime)."""
    r, c = _grid_shape("grid", n, rows, cols, least=1)
    return _labelled(nx.grid_2d_graph(r, c), "grid", rows=r, cols=c)


@register("exponential", 2, "i ~ i +- 2^k for 2^k < n (degree 2 log2 n - 1 for n = 2^m)")
def exponential(n: int, seed: int = 0) -> nx.Graph:
    """Static exponential graph (Ying et al., NeurIPS 2021), undirected: node i linked to
    i +- 2^k (mod n) for k = 0 .. ceil(log2 n) - 1."""
    offsets = [2**k for k in range(max(1, (n - 1).bit_length()))]
    return _labelled(nx.circulant_graph(n, offsets), "exponential", "circular")


@register("complete", 2, "every pair linked (Metropolis W = J/n, gap 1)")
def complete(n: int, seed: int = 0) -> nx.Graph:
    """Complete graph K_n."""
    return _labelled(nx.complete_graph(n), "complete", "circular")


@register("star", 2, "node 0 linked to all others")
def star(n: int, seed: int = 0) -> nx.Graph:
    """Star: hub 0 and leaves 1..n-1."""
    return _labelled(nx.star_graph(n - 1), "star")


@register("erdos_renyi", 2, "G(n, p), redrawn until connected; param p (default 2 ln(n)/n)")
def erdos_renyi(n: int, seed: int = 0, p: float | None = None) -> nx.Graph:
    """Each pair linked with probability p, redrawn (same seeded stream) until connected.
    Connectivity needs p above about ln(n)/n; default p = min(1, 2 ln(n) / n)."""
    p = min(1.0, 2 * math.log(n) / n) if p is None else prob_param("erdos_renyi", "p", p)
    rng = random.Random(seed)
    hint = f"increase p={p:g} (connectivity threshold ln(n)/n = {math.log(n) / n:.3g})"
    G = _redraw_connected("erdos_renyi", lambda: nx.fast_gnp_random_graph(n, p, seed=rng), hint)
    return _labelled(G, "erdos_renyi", p=p)


@register("small_world", 3, "Watts-Strogatz ring lattice (k neighbours) rewired with prob. p; "
          "params k (default 4), p (default 0.1)")
def small_world(n: int, seed: int = 0, k: int = 4, p: float = 0.1) -> nx.Graph:
    """Watts-Strogatz: ring lattice, each node linked to its k nearest (k/2 per side), each
    edge rewired with probability p; redrawn until connected. k even, 2 <= k < n."""
    k = int_param("small_world", "k", k, 2, n - 1)
    if k % 2:
        raise _fail("small_world", "k", k, f"even (k/2 neighbours per side), in [2, {n - 1}]")
    p = prob_param("small_world", "p", p, zero_ok=True)
    try:
        G = nx.connected_watts_strogatz_graph(n, k, p, tries=MAX_TRIES, seed=random.Random(seed))
    except nx.NetworkXError:
        raise TopologyError(f"small_world: no connected graph in {MAX_TRIES} draws "
                            f"with k={k}, p={p:g}; lower p or raise k") from None
    return _labelled(G, "small_world", "circular", k=k, p=p)


@register("random_regular", 3, "uniform random d-regular graph, connected; param d (default 4)")
def random_regular(n: int, seed: int = 0, d: int = 4) -> nx.Graph:
    """Uniform random d-regular graph, redrawn until connected. Needs 2 <= d < n, d * n even."""
    d = int_param("random_regular", "d", d, 2)
    if d >= n:
        raise _fail("random_regular", "d", d, f"< n={n} (in [2, {n - 1}])")
    if (d * n) % 2:
        raise _fail("random_regular", "d", d, f"such that d * n is even (n={n} is odd: d even)")
    rng = random.Random(seed)
    hint = f"raise d={d} (d >= 3 is connected with high probability)"
    G = _redraw_connected("random_regular", lambda: nx.random_regular_graph(d, n, seed=rng), hint)
    return _labelled(G, "random_regular", d=d)


@register("from_edgelist", 2, "edges read from a file 'u v' per line, nodes 0..n-1; param path")
def from_edgelist(n: int, seed: int = 0, path: str | None = None) -> nx.Graph:
    """Graph from an edge-list file: one `u v` pair per line, `#` comments; the nodes must be
    exactly 0..n-1. Self-loops are dropped (the mixing rule sets the diagonal)."""
    if path is None:
        raise TopologyError("from_edgelist: param path is required (a file of 'u v' lines)")
    path = str(path)  # the CLI parses numbers: a file named "12" arrives as an int
    if not Path(path).is_file():
        raise TopologyError(f"from_edgelist: no such file {path}")
    try:
        G = nx.read_edgelist(path, nodetype=int, data=False, comments="#")
    except (TypeError, ValueError, IndexError) as exc:
        raise TopologyError(f"from_edgelist: cannot read {path}: lines must be 'u v' with "
                            f"integer nodes ({exc})") from None
    G.remove_edges_from(list(nx.selfloop_edges(G)))
    if G.number_of_nodes() != n:
        raise TopologyError(f"from_edgelist: {path} has {G.number_of_nodes()} nodes but n={n}; "
                            f"set n to {G.number_of_nodes()} or fix the file")
    if set(G.nodes) != set(range(n)):
        bad = sorted(set(G.nodes) - set(range(n)))[:5]
        raise TopologyError(f"from_edgelist: {path}: nodes must be 0..{n - 1}, found {bad}")
    return _labelled(G, "from_edgelist", path=str(path))


# ---------------------------------------------------------------- connectivity


def _fmt_nodes(nodes: set, show: int = 8) -> str:
    s = sorted(nodes)
    more = f", ... (+{len(s) - show})" if len(s) > show else ""
    return "{" + ", ".join(map(str, s[:show])) + more + "}"


def check_connected(G: nx.Graph, show: int = 4) -> None:
    """Raise TopologyError naming the components if G is disconnected.

    >>> check_connected(nx.Graph([(0, 1), (1, 2), (3, 4)]))
    Traceback (most recent call last):
    ...
    topologies.errors.TopologyError: graph is disconnected: 2 components ({0, 1, 2}, {3, 4}); \
gossip cannot reach consensus (pass allow_disconnected=True to build it anyway)
    """
    if G.number_of_nodes() == 0 or nx.is_connected(G):
        return
    comps = sorted(nx.connected_components(G), key=lambda c: (-len(c), min(c)))
    shown = ", ".join(_fmt_nodes(c) for c in comps[:show])
    more = f", ... and {len(comps) - show} more" if len(comps) > show else ""
    raise TopologyError(
        f"graph is disconnected: {len(comps)} components ({shown}{more}); gossip cannot "
        f"reach consensus (pass allow_disconnected=True to build it anyway)")
