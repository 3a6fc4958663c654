"""Export each client's data shard for real devices: ``python -m dfl.flower.shards CONFIG --out DIR``.

Writes DIR/client-<i>.pt for every client i of the config's federation: its training samples and
held-out local test split, exactly the samples `dfl run` gives client i (dfl.data.load_federated
with the config's seed). Copy client-<i>.pt to device i and start its SuperNode with
``--node-config "partition-id=<i> num-partitions=<n> data-dir='<dir>'"``: the device then never
needs the rest of the dataset.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

from ..config import Config, load_config, parse_overrides
from ..data import load_federated
from ..errors import USER_ERRORS
from ..rundir.checkpoint import plain
from .local import shard_of


def export(cfg: Config, out: Path) -> list[Path]:
    """Write one file per client; returns their paths."""
    fed = load_federated(cfg.data, cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(fed.num_clients):
        shard = shard_of(fed, i)
        path = out / f"client-{i}.pt"
        # tensors and plain values only: devices read it with torch.load(weights_only=True)
        torch.save(plain({**{k: getattr(shard, k) for k in shard.__dataclass_fields__}, "seed": cfg.seed,
                          "dataset": cfg.data.name, "num_clients": fed.num_clients}), path)
        paths.append(path)
    return paths


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfl.flower.shards", description=__doc__.splitlines()[0])
    p.add_argument("config", help="dfl TOML config")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--out", required=True, metavar="DIR")
    args = p.parse_args(argv)
    try:
        paths = export(load_config(args.config, parse_overrides(args.set)), Path(args.out))
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} shards to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
