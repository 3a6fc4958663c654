"""`dfl bench --paper`: the DFedSAM paper's CIFAR-10 setup, timed on the present device.

A few rounds of experiments/paper/cifar10_algorithms.toml's DFedSAM variant (VGG-11 with
GroupNorm, 100 clients all active, 5 local epochs of batch 128, SAM, crop + flip) on synthetic
CIFAR-shaped data (seeded tensors: nothing is downloaded), with each engine strategy and
precision, next to the papers' loop measured in the same run (dfl.bench.rounds.papers_loop_time).
Seconds per round are medians after one warm-up round, evaluation excluded; the projection is
seconds per round x the config's rounds, scaled by the ratio of the full setup's work (clients x
local steps x batch x pixels) to the measured one when the sizes are reduced (--quick, CPU).
"""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..errors import DflError

#: The paper config timed (first variant whose algorithm is dfedsam).
PAPER_CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "paper" / "cifar10_algorithms.toml"
CIFAR10_TRAIN = 50_000
#: (label, engine.strategy, engine.precision) of the engine rows.
VARIANTS = (("vmap", "vmap", "fp32"), ("sequential", "sequential", "fp32"), ("auto, bf16", "auto", "bf16"))


@dataclass(frozen=True)
class PaperSizes:
    """What is measured; 0 = the config's value (clients, batch, epochs) or CIFAR's (32 x 32)."""

    clients: int = 0
    shard: int = 0  # 0: CIFAR-10's 50,000 training images over the clients
    batch: int = 0
    epochs: float = 0.0
    image: int = 0
    rounds: int = 2  # timed rounds per row (after one warm-up round)
    model: str = ""  # "": the config's (vgg11); e.g. resnet18


PAPER_QUICK = PaperSizes(clients=3, shard=16, batch=8, epochs=1.0, image=16, rounds=1)


def cifar_shaped(clients: int, shard: int, image: int = 32, num_classes: int = 10, seed: int = 0,
                 test: int = 256) -> Any:
    """FederatedData of CIFAR's shape (3 x image x image, float32, num_classes labels) from a
    seeded generator: ``clients`` equal shards of ``shard`` samples (as dirichlet_prior's equal
    shard sizes). Labels are the argmax of a fixed random projection, so a model can learn them."""
    from ..data import FederatedData

    gen = torch.Generator().manual_seed(seed)
    n = clients * shard
    x = torch.randn(n + test, 3, image, image, generator=gen)
    proj = torch.randn(3 * image * image, num_classes, generator=gen)
    y = (x.flatten(1) @ proj).argmax(1)
    empty = torch.empty(0, dtype=torch.int64)
    return FederatedData("cifar-shaped", x[:n], y[:n], x[n:], y[n:],
                         [torch.arange(i * shard, (i + 1) * shard) for i in range(clients)],
                         [empty] * clients, (3, image, image), num_classes)


def paper_config(sizes: PaperSizes, path: Path = PAPER_CONFIG) -> tuple[Config, Config]:
    """(the full config, the measured one): the config's DFedSAM variant, and it at ``sizes``."""
    from .. import sweep

    if not Path(path).is_file():
        raise DflError(f"--paper: {path} not found (it ships with dfl's source checkout, experiments/paper/)")
    _, variants = sweep.load(path)
    full = next((v.config for v in variants if v.config.algorithm.name == "dfedsam"), variants[0].config)
    n = sizes.clients or full.data.num_clients
    if sizes.model:
        full = full.replace(**{"model.name": sizes.model})
    changes: dict[str, Any] = {"data.num_clients": n}
    if sizes.batch:
        changes["local.batch_size"] = sizes.batch
    if sizes.epochs:
        changes["local.local_epochs"] = sizes.epochs
    if full.topology.k is not None:
        changes["topology.k"] = min(full.topology.k, n - 1)
    return full, full.replace(**changes)


def _work(cfg: Config, shard: int, image: int) -> float:
    """Samples x pixels one round processes: clients x local steps x batch x image^2."""
    loc = cfg.local
    steps = math.ceil(loc.local_epochs * shard / loc.batch_size) if loc.local_epochs is not None else loc.local_steps
    return cfg.data.num_clients * steps * loc.batch_size * image * image


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _engine_row(cfg: Config, fed: Any, repeat: int) -> dict[str, Any]:
    from .rounds import _timeit
    from ..simulation import Simulation

    sim = Simulation(cfg, fed=fed)
    try:
        info = sim.engine.describe()
        return {"s_per_round": _timeit(sim.step, repeat), "strategy": info.get("strategy"),
                "chunk_size": info.get("chunk_size"), "memory_estimate_mb": info.get("memory_estimate_mb")}
    finally:
        del sim
        _release()


def paper_rows(sizes: PaperSizes = PaperSizes(), path: Path = PAPER_CONFIG,
               variants: tuple[tuple[str, str, str], ...] = VARIANTS, papers_loop: bool = True) -> dict[str, Any]:
    """The engine rows and the papers' loop on the config's DFedSAM setup at ``sizes``."""
    from .. import models
    from .rounds import papers_loop_time
    from ..engines.plan import pick_strategy
    from ..engines.vectorized import activation_numel
    from ..simulation import resolve_device

    full, cfg = paper_config(sizes, path)
    n = cfg.data.num_clients
    full_shard = CIFAR10_TRAIN // full.data.num_clients
    shard, image = sizes.shard or CIFAR10_TRAIN // n, sizes.image or 32
    fed = cifar_shaped(n, shard, image)
    scale = _work(full, full_shard, 32) / _work(cfg, shard, image)
    rows: list[dict[str, Any]] = []
    for label, strategy, precision in variants:
        run = cfg.replace(**{"engine.strategy": strategy, "engine.precision": precision})
        rows.append({"what": f"dfl ({label})", "precision": precision, **_engine_row(run, fed, sizes.rounds)})
    if papers_loop:
        rows.append({"what": "papers loop", "precision": "fp32", "strategy": "per-client torch.optim",
                     "s_per_round": papers_loop_time(cfg, max(1, sizes.rounds // 2), fed=fed)})
        _release()
    loop = rows[-1]["s_per_round"] if papers_loop else None
    for r in rows:
        r["x_faster_than_papers_loop"] = loop / r["s_per_round"] if loop else None
        r["projected_round_s"] = r["s_per_round"] * scale
        r["projected_hours"] = r["projected_round_s"] * full.rounds / 3600
    device = resolve_device(cfg.engine.device)
    model = models.build(full.model.name, (3, 32, 32), 10, groups=full.model.groups)
    dim = sum(p.numel() for p in model.parameters())
    auto_full = pick_strategy("auto", device, dim, full.local.batch_size, activation_numel(model, torch.zeros(1, 3, 32, 32)))
    return {"config": str(path), "variant": full.label(), "model": full.model.name, "device": str(device),
            "measured": {"clients": n, "shard": shard, "batch": cfg.local.batch_size, "image": image,
                         "local_epochs": cfg.local.local_epochs, "rounds_timed": sizes.rounds},
            "full": {"clients": full.data.num_clients, "shard": full_shard, "batch": full.local.batch_size,
                     "image": 32, "local_epochs": full.local.local_epochs, "rounds": full.rounds},
            "work_scale": scale, "auto_at_full_size": {"strategy": auto_full[0], "why": auto_full[1]},
            "rows": rows}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What the table's numbers mean, in a few lines under it."""
    m, f = result["measured"], result["full"]
    best = min(result["rows"], key=lambda r: r["projected_hours"])
    lines = [f"{result['variant']} ({result['model']}) on {result['device']}: measured {m['clients']} clients x "
             f"{m['shard']} samples, batch {m['batch']}, {m['image']}x{m['image']}, {m['local_epochs']} local epochs; "
             f"full run {f['clients']} clients x {f['shard']}, batch {f['batch']}, 32x32, {f['local_epochs']} epochs, "
             f"{f['rounds']} rounds"]
    if abs(result["work_scale"] - 1) > 1e-9:
        lines.append(f"projection scaled x{result['work_scale']:,.0f} from the measured sizes (work = clients x steps x "
                     "batch x pixels; rough: reduced sizes underuse the device)")
    lines.append(f"fastest: {best['what']}, {best['projected_hours']:.2f} h projected for the full run "
                 f"(evaluation excluded); auto at full size: {result['auto_at_full_size']['strategy']} "
                 f"({result['auto_at_full_size']['why']})")
    return lines
