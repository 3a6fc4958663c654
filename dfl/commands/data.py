"""`dfl data CONFIG [--set k=v ...] [--plot FILE]`: show how the data is split among clients."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import ConfigError

MAX_ROWS = 20
MAX_CLASS_COLUMNS = 10
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="per-client sizes and label counts of a config's data split",
                              description=__doc__.splitlines()[0])
    p.add_argument("config", help="experiment TOML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. data.alpha=0.1 (repeatable)")
    p.add_argument("--plot", metavar="FILE", help="write the clients x classes heatmap (.png, .pdf, .svg)")
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .. import sweep
    from ..config import parse_overrides
    from ..data import load_federated

    if args.plot and Path(args.plot).suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError(f"--plot {args.plot!r}: use a .png, .pdf or .svg file name")
    _, variants = sweep.load(args.config, parse_overrides(args.overrides))
    splits = {(v.config.data, v.config.seed) for v in variants}  # a sweep over algorithms shares one split
    if len(splits) > 1:
        raise ConfigError(f"{args.config}: the data split varies across the sweep ({len(splits)} splits); "
                          "pick one with --set, e.g. --set seed=0")
    cfg = variants[0].config
    fed = load_federated(cfg.data, cfg.seed)
    t = table(fed, cfg.data.partition if cfg.data.name != "synthetic" else "natural")
    console = Console()
    need = Console(width=1000, file=console.file).measure(t).maximum
    if need > console.width:  # never truncate counts: let a narrow terminal wrap instead
        console = Console(width=need)
    console.print(t)
    console.print(summary(fed), highlight=False)
    if args.plot:
        plot_label_heatmap(fed.label_counts(), args.plot, title=f"{fed.name}: labels per client")
        console.print(f"wrote {args.plot}")
    return 0


def table(fed, partition: str):  # -> rich.table.Table
    """Rich table: one row per client (the first MAX_ROWS), then a summary line."""
    from rich import box
    from rich.table import Table

    counts = fed.label_counts()
    sizes = np.asarray(fed.sizes())
    tests = [int(t.numel()) for t in fed.client_test]
    n, k = counts.shape
    t = Table(title=f"{fed.name}: {n} clients, partition {partition}, input {fed.input_shape}, "
                    f"{k} classes, {len(fed.y_train)} train / {len(fed.y_test)} global test samples",
              box=box.SIMPLE_HEAD, pad_edge=False)
    digits = len(str(int(max(sizes.max(), n))))
    for head in ("client", "train", "test", "cls"):  # test = held-out local test; cls = classes present
        t.add_column(head, justify="right", no_wrap=True, min_width=max(len(head), digits))
    per_class = k <= MAX_CLASS_COLUMNS
    if per_class:
        for c in range(k):
            t.add_column(str(c), justify="right", no_wrap=True, min_width=max(digits, len(str(c))))
    else:
        t.add_column("top labels (count)")
    for i in range(min(n, MAX_ROWS)):
        row = [str(i), str(sizes[i]), str(tests[i]), str(int((counts[i] > 0).sum()))]
        if per_class:
            row += [str(v) if v else "." for v in counts[i]]
        else:
            top = np.argsort(-counts[i], kind="stable")[:3]
            row.append(", ".join(f"{c} ({counts[i, c]})" for c in top if counts[i, c]))
        t.add_row(*row)
    return t


def summary(fed) -> str:
    """One line: hidden rows, size and classes-per-client spread, column legend."""
    counts = fed.label_counts()
    sizes = np.asarray(fed.sizes())
    classes = (counts > 0).sum(axis=1)
    n = len(sizes)
    more = f"{n - MAX_ROWS} more clients not shown; " if n > MAX_ROWS else ""
    dealt = int(sizes.sum()) + sum(int(t.numel()) for t in fed.client_test)
    if dealt < len(fed.y_train):  # dirichlet_prior's equal shards leave N mod num_clients out
        more += f"{len(fed.y_train) - dealt} training samples in no client's shard; "
    return (f"{more}train size min {sizes.min()} / median {int(np.median(sizes))} / max {sizes.max()}; "
            f"classes per client min {classes.min()} / mean {classes.mean():.1f} / max {classes.max()} "
            f"(test = held-out local test, cls = classes present)")


def plot_label_heatmap(counts: np.ndarray, path: str | Path, title: str = "") -> None:
    """Clients x classes heatmap of label counts, saved to png / pdf / svg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, k = counts.shape
    fig, ax = plt.subplots(figsize=(min(2 + 0.35 * k, 14), min(1.5 + 0.25 * n, 12)))
    im = ax.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="training samples")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
