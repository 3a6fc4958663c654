"""`dfl topo NAME [--n N] [--mixing RULE] [--gossip-steps Q] [--param k=v ...] [--mixing-param k=v ...] [--plot FILE]`:
how well a communication graph mixes (spectral gap, mixing time, messages per round)."""
from __future__ import annotations

import argparse
import math
from typing import Any

EPS_TEXT = "1e-3"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("topo", help="spectral gap, mixing time and cost of a graph + mixing rule",
                              description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", metavar="NAME", help="graph name (see --list)")
    p.add_argument("--n", type=int, default=16, help="number of nodes (default 16)")
    p.add_argument("--mixing", default="metropolis", metavar="RULE", help="mixing rule (default metropolis)")
    p.add_argument("--gossip-steps", type=int, default=1, metavar="Q",
                   help="gossip steps per round (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random graphs (default 0)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="graph parameter, e.g. p=0.2, k=4, d=3, path=edges.txt (repeatable)")
    p.add_argument("--mixing-param", action="append", default=[], metavar="KEY=VALUE",
                   help="mixing-rule parameter, e.g. a=0.2 (laplacian), iters=200 (fastest_mixing)")
    p.add_argument("--plot", metavar="FILE", help="draw the graph and its spectrum (.png, .pdf, .svg)")
    p.add_argument("--list", action="store_true", help="list graph names and mixing rules")
    return p


def parse_params(items: list[str], option: str = "--param") -> dict[str, Any]:
    """['p=0.2', 'k=4', 'path=a.txt'] -> {'p': 0.2, 'k': 4, 'path': 'a.txt'} (numbers parsed).

    >>> parse_params(["k=4", "p=0.5", "path=e.txt"])
    {'k': 4, 'p': 0.5, 'path': 'e.txt'}
    """
    from topologies import TopologyError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise TopologyError(f"{option} {item!r}: use KEY=VALUE, e.g. {'a' if 'mixing' in option else 'p'}=0.2")
        out[key.strip()] = _number(text.strip())
    return out


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:.6g}"
    return str(x)


def list_table():  # -> rich.table.Table
    """Graph names (static / time-varying, parameters) and mixing rules."""
    from rich import box
    from rich.table import Table

    from topologies.generators import GRAPHS
    from topologies.mixing import MIXING, rule_params

    t = Table(title="graphs and mixing rules", box=box.SIMPLE_HEAD, pad_edge=False)
    for head in ("kind", "name", "params", "description"):
        t.add_column(head)
    for name in sorted(GRAPHS):
        spec = GRAPHS[name]
        kind = "time-varying" if spec.time_varying else "graph"
        t.add_row(kind, name, ", ".join(spec.param_names()) or "-", spec.summary)
    for name in sorted(MIXING):
        t.add_row("mixing", name, ", ".join(rule_params(name)) or "-", MIXING[name][1])
    return t


def describe_table(d: dict[str, Any]):  # -> rich.table.Table
    """Two-column table of a `topologies.describe` result."""
    from rich import box
    from rich.table import Table

    q = d["q"]
    t = Table(title=f"{d['name']}: n={d['nodes']}, mixing {d['mixing']}, Q={q}",
              box=box.SIMPLE_HEAD, pad_edge=False, show_header=False)
    t.add_column("figure")
    t.add_column("value", justify="right")
    directed = d.get("directed", False)  # arcs j -> i (i pulls x_j): in-degrees, one message per arc
    rows = [
        ("nodes", d["nodes"]), ("arcs (directed: i pulls j)" if directed else "edges", d["edges"]),
        ("in-degree (min..max)" if directed else "degree (min..max)",
         f"{d['degree_min']}..{d['degree_max']}"),
        ("diameter", d["diameter"]),
        ("spectral gap", d["spectral_gap"]),
        (f"effective gap (Q={q})", d["effective_gap"]),
        (f"consensus distance factor per round (1-gap)^{2 * q}", d["consensus_contraction"]),
        (f"mixing time (steps to shrink error by {EPS_TEXT})", d["mixing_time"]),
        (f"mixing time (rounds of Q={q})", d["mixing_rounds"]),
        ("messages per round (arcs * Q)" if directed else "messages per round (2 * edges * Q)",
         d["messages_per_round"]),
    ]
    if d["time_varying"]:
        rows.append(("period (rounds)", d["period"] or "none (random)"))
        if d["period"] or d.get("expected_gap") is None:
            rows.append(("gap of one period's product", d["period_gap"]))
        else:  # random_neighbors: figures of the random W_t in expectation
            rows.append(("gap of the expected W: 1-|1/(k+1)-k/((k+1)(n-1))|", d["expected_gap"]))
            rows.append(("alpha: consensus distance factor per step, in mean", d["mean_square_factor"]))
            rows.append((f"mean-square gap 1-alpha^(Q/2) (Q={q})", d["period_gap"]))
    for label, value in rows:
        t.add_row(label, _fmt(value))
    return t


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    import topologies

    console = Console()
    if args.list:
        console.print(list_table())
        return 0
    if not args.name:
        raise topologies.TopologyError("topo: give a graph NAME (see `dfl topo --list`)")
    if args.gossip_steps < 1:
        raise topologies.TopologyError(f"--gossip-steps must be >= 1, got {args.gossip_steps}")
    if args.plot:
        ext = args.plot.rsplit(".", 1)[-1].lower() if "." in args.plot else ""
        if ext not in ("png", "pdf", "svg"):
            raise topologies.TopologyError(f"--plot {args.plot!r}: use a .png, .pdf or .svg file name")
    params = parse_params(args.param)
    mixing_params = parse_params(args.mixing_param, "--mixing-param")
    d = topologies.describe(args.name, args.n, rule=args.mixing, q=args.gossip_steps,
                            seed=args.seed, mixing_params=mixing_params, **params)
    console.print(describe_table(d))
    if d["note"]:
        console.print(d["note"], highlight=False)
    if args.plot:
        seq = topologies.sequence_for(args.name, args.n, args.seed, **params)
        G = seq.graph(0)
        topologies.plot(G, topologies.mixing_matrix(G, args.mixing, **mixing_params), args.plot,
                        q=args.gossip_steps)
        console.print(f"wrote {args.plot}", highlight=False)
    return 0
