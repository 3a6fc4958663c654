"""Run and sweep directories as `dfl run` / `dfl sweep` write them, with known, distinct curves
(for the tests of plots, reports and run loading), and edits to them.

    write_run / write_sweep           a run / sweep directory
    write_metrics(run, rows)          RUN/metrics.jsonl holding ``rows``
    edit_metrics(run, **values)       every row of RUN/metrics.jsonl updated (a callable: of the row)
    edit_config(run, old, new)        one piece of RUN/config.toml's text replaced

Their manifest.json records the method's facts as `dfl run` does (dfl.methods.describe of the
config; refreshed by edit_config), unless written with ``facts=False``: a run directory
written by hand or by an older version, which readers name by asking the registries.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dfl import methods
from dfl.config import dumps_toml, read_toml
from tests.helpers import read_metrics

ALGOS = {"dfedsam": "DFedSAM", "dfedavg": "DFedAvg", "fedavg": "FedAvg"}
GAPS = {"ring": 0.05, "torus": 0.2, "complete": 1.0}


def fake_metrics(algo: str, topo: str, q: int, seed: int, rounds: int = 10, extra: tuple[str, ...] = ()) -> list[dict]:
    """Known, distinct curves per (algorithm, topology, Q, seed)."""
    gap = GAPS[topo]
    eff = 1 - (1 - gap) ** q
    central = algo == "fedavg"
    rows = []
    for r in range(1, rounds + 1):
        acc = (0.9 if algo == "dfedsam" else 0.8) * (1 - math.exp(-r * (0.2 + eff))) + 0.01 * seed
        row = {
            "round": r, "test_acc": acc, "test_loss": 1 - acc, "local_test_acc": acc - 0.05,
            "local_test_acc_std": 0.02, "train_loss": 1.2 - acc,
            "consensus": 0.0 if central else (1 + 0.5 * seed) * math.exp(-eff * r) * (2 if algo == "dfedavg" else 1),
            "spectral_gap": None if central else gap, "effective_gap": None if central else eff,
            "comm_mb": r * (0.8 if central else 0.4 * q * 2), "wall_s": 0.5 * r,
        }
        if central:
            row["drift"] = 0.1 / r
        if "hessian_max_eig" in extra:
            row["hessian_max_eig"] = 50.0 / r + seed if r % 2 == 0 else None
        rows.append(row)
    return rows


def write_run(path: Path, algo: str = "dfedsam", topo: str = "ring", q: int = 1, seed: int = 0, rounds: int = 10,
              extra: tuple[str, ...] = (), drop: tuple[str, ...] = (), summary: bool = True,
              facts: bool = True) -> Path:
    """A run directory as `dfl run` writes it; ``facts=False``: its manifest.json without the
    method's facts (as a run directory written by hand or by an older version)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"seed": seed, "rounds": rounds, "eval_every": 1, "name": "",
           "data": {"name": "digits", "num_clients": 8, "partition": "dirichlet", "alpha": 0.3},
           "model": {"name": "cnn"}, "local": {"optimizer": "sam", "lr": 0.1, "rho": 0.05},
           "algorithm": {"name": algo, "gossip_steps": q, "participation": 1.0},
           "topology": {"name": topo, "mixing": "metropolis"}, "engine": {"backend": "vectorized", "device": "cpu"}}
    (path / "config.toml").write_text(dumps_toml(cfg))
    rows = fake_metrics(algo, topo, q, seed, rounds, extra)
    rows = [{k: v for k, v in row.items() if k not in drop} for row in rows]
    write_metrics(path, rows)
    label = ALGOS[algo] if algo == "fedavg" else f"{ALGOS[algo]}, {topo}, Q={q}"
    if summary:
        best = max(rows, key=lambda row: row["test_acc"])
        (path / "summary.json").write_text(json.dumps({"label": label, "final": rows[-1], "rounds": rounds,
                                                       "best": {"test_acc": best["test_acc"], "round": best["round"]}}))
    (path / "manifest.json").write_text(json.dumps({"dfl_version": "0.1.0", "device": "cpu", "seed": seed,
                                                    "peak_memory_mb": 123.0}))
    if facts:
        record_facts(path)
    return path


def write_sweep(path: Path, algos=("dfedsam", "dfedavg"), qs=(1, 4), seeds=(0, 1), topos=("ring",), **kw) -> Path:
    """A sweep directory: sweep.json and one run dir per (algorithm, topology, Q, seed)."""
    runs = []
    for algo in algos:
        for topo in topos:
            for q in qs:
                for seed in seeds:
                    name = f"{algo}-{topo}-q{q}-s{seed}"
                    write_run(path / name, algo, topo, q, seed, **kw)
                    runs.append({"dir": name, "overrides": {"algorithm.name": algo, "topology.name": topo,
                                                            "algorithm.gossip_steps": q, "seed": seed}})
    src = path / "source.toml"
    src.write_text('rounds = 10\n[algorithm]\nname = "dfedsam"\n')
    (path / "sweep.json").write_text(json.dumps({"config": str(src), "runs": runs, "axes": {
        "algorithm.name": list(algos), "topology.name": list(topos), "algorithm.gossip_steps": list(qs),
        "seed": list(seeds)}}))
    return path


def write_metrics(run: Path, rows: list[dict[str, Any]]) -> Path:
    """RUN/metrics.jsonl holding ``rows``, one JSON object a line; returns ``run``."""
    (Path(run) / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run


def edit_metrics(run: Path, **values: Any) -> Path:
    """Set ``values`` in every row of RUN/metrics.jsonl (a callable value: of the row); returns ``run``."""
    rows = read_metrics(run)
    for row in rows:
        row.update({k: (v(row) if callable(v) else v) for k, v in values.items()})
    return write_metrics(run, rows)


def edit_config(run: Path, old: str, new: str) -> Path:
    """Replace ``old`` (which must be there) by ``new`` in RUN/config.toml, and the method's facts
    in manifest.json if it records them; returns ``run``."""
    path = Path(run) / "config.toml"
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new))
    if "method" in json.loads((Path(run) / "manifest.json").read_text()):
        record_facts(run)
    return run


def record_facts(run: Path) -> Path:
    """RUN/manifest.json with the method's facts of RUN/config.toml, as `dfl run` records them."""
    manifest_path = Path(run) / "manifest.json"
    config = read_toml(Path(run) / "config.toml")
    facts = methods.describe(config["algorithm"]["name"], config["local"]["optimizer"])
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "method": facts.to_json()}))
    return run
