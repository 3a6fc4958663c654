"""Rows a-d of `dfl bench` (speed measured as ratios within one run, on whatever device is present).

Rows:
  a  round time, vectorized engine vs naive per-client loops: the papers' reference-code pattern
     (per round and client: deepcopy the model, load its state_dict, a new torch.optim optimizer, a
     DataLoader over the shard; then state_dict averaging over the neighbours) and dfl's own serial
     engine (a persistent model copy and optimizer per client, clients one after another)
  b  vectorized round vs the compute limit: one pooled model taking the same K steps on all
     clients' samples at once (batch n x B)
  c  gossip X <- W X (sparse CSR vs dense) vs a memory copy of the same bytes (into a new tensor,
     as the gossip writes its output, and into one already mapped)
  d  scale: memory per client and the largest number of clients one round handles in memory
  e  FedAvg end to end: `dfl run` vs Flower's simulation of the same config; Ray vs vectorized
Each row returns plain dicts; the command prints them and writes JSON.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

import topologies

from ..config import Config
from ..engines.serial import closure
from ..gossip import as_operator, mix


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of the benchmark; --quick shrinks them so that CI only checks it works."""

    clients: int = 100
    rounds: int = 3
    gossip_n: int = 1000
    gossip_d: int = 1_000_000
    scale_clients: tuple[int, ...] = (1_000, 10_000, 100_000)
    flower_rounds: int = 5


QUICK = Sizes(clients=10, rounds=1, gossip_n=64, gossip_d=20_000, scale_clients=(1_000, 4_000), flower_rounds=2)


def _timeit(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of fn() over `repeat` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_config(clients: int, model: str, optimizer: str, backend: str) -> Config:
    algo = "dfedsam" if optimizer == "sam" else "dfedavg"
    return Config().replace(**{
        "data.num_clients": clients, "data.partition": "iid", "data.min_size": 1, "model.name": model,
        "local.optimizer": optimizer, "local.local_steps": 5, "local.batch_size": 32,
        "algorithm.name": algo, "engine.backend": backend, "rounds": 1000})


def round_time(cfg: Config, repeat: int) -> float:
    """Median seconds of one training round (local steps + gossip), evaluation excluded."""
    from ..simulation import Simulation

    sim = Simulation(cfg)
    return _timeit(sim.step, repeat)


def pooled_time(cfg: Config, repeat: int) -> float:
    """K steps of one model on n x B samples at once with the same optimizer (the compute limit)."""
    from .. import data, optim
    from ..simulation import build_model

    fed = data.load_federated(cfg.data, cfg.seed)
    model = build_model(cfg, fed.input_shape, fed.num_classes)
    n, b, k = cfg.data.num_clients, cfg.local.batch_size, cfg.local.local_steps
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(fed.y_train), (k, n * b), generator=gen)
    hp = {"lr": cfg.local.lr, "momentum": cfg.local.momentum, "weight_decay": cfg.local.weight_decay}
    opt = (optim.SAM(model.parameters(), **hp) if cfg.local.optimizer == "sam" else optim.SGD(model.parameters(), **hp))

    def one_round() -> None:
        for s in range(k):
            opt.step(closure(model, opt, fed.x_train[idx[s]], fed.y_train[idx[s]]))
    return _timeit(one_round, repeat)


def papers_loop_time(cfg: Config, repeat: int, fed: Any = None) -> float:
    """Median seconds of one round of :func:`papers_loop`."""
    return _timeit(papers_loop(cfg, fed), repeat)


def papers_loop(cfg: Config, fed: Any = None) -> Callable[[], None]:
    """One round written as the papers' reference code does it (DFedSAM and the FedSAM / DisPFL
    code it builds on): for every client, one after another, deepcopy the model, load the client's
    state_dict, build a torch.optim optimizer and iterate a shuffled DataLoader over its shard for
    K steps (each batch moved to the run's device), keep a deepcopy of the state_dict; then every
    client averages its neighbours' state_dicts with W's weights, key by key. ``fed``: the
    federation to use instead of loading cfg.data (dfl bench --paper's synthetic CIFAR)."""
    from torch.utils.data import DataLoader, TensorDataset

    from .. import optim
    from ..simulation import Simulation

    sim = Simulation(cfg, fed=fed)  # the same data, initial model and graph as the engines' rounds
    cfg, fed, model, dev = sim.cfg, sim.fed, sim.model, sim.device  # cfg: with the algorithm's optimizer
    n, k = cfg.data.num_clients, int(sim.steps.max())  # local_steps, or those of local_epochs
    W = topologies.mixing_matrix(sim.graphs.graph(0), rule=cfg.topology.mixing, **cfg.topology.mixing_params)
    neighbours = [np.flatnonzero(W[i]) for i in range(n)]
    loaders = [DataLoader(TensorDataset(fed.x_train[idx], fed.y_train[idx]), batch_size=cfg.local.batch_size,
                          shuffle=True, generator=torch.Generator().manual_seed(i))
               for i, idx in enumerate(fed.client_train)]
    states = [copy.deepcopy(model.state_dict()) for _ in range(n)]
    hp = {"lr": cfg.local.lr, "momentum": cfg.local.momentum, "weight_decay": cfg.local.weight_decay}

    def one_round() -> None:
        trained = []
        for i in range(n):
            local = copy.deepcopy(model)
            local.load_state_dict(states[i])
            opt = (optim.SAM(local.parameters(), rho=cfg.local.rho or 0.05, **hp) if cfg.local.optimizer == "sam"
                   else torch.optim.SGD(local.parameters(), **hp))
            batches = iter(loaders[i])
            for _ in range(k):
                try:
                    x, y = next(batches)
                except StopIteration:
                    batches = iter(loaders[i])
                    x, y = next(batches)
                opt.step(closure(local, opt, x.to(dev), y.to(dev)))
            trained.append(copy.deepcopy(local.state_dict()))
        for i in range(n):
            states[i] = {key: sum(float(W[i, j]) * trained[j][key] for j in neighbours[i]) for key in trained[i]}
    return one_round


def row_ab(sizes: Sizes, models_: tuple[str, ...] = ("mlp", "cnn"), opts: tuple[str, ...] = ("sgd", "sam")) -> list[dict]:
    rows = []
    for model in models_:
        for opt in opts:
            vec = round_time(bench_config(sizes.clients, model, opt, "vectorized"), sizes.rounds)
            cfg = bench_config(sizes.clients, model, opt, "vectorized")
            papers = papers_loop_time(cfg, max(1, sizes.rounds // 2))
            serial = round_time(bench_config(sizes.clients, model, opt, "serial"), max(1, sizes.rounds // 2))
            pooled = pooled_time(cfg, sizes.rounds)
            rows.append({"model": model, "optimizer": opt, "clients": sizes.clients,
                         "vectorized_s": vec, "papers_loop_s": papers, "serial_s": serial, "pooled_s": pooled,
                         "speedup_vs_papers_loop": papers / vec, "speedup_vs_serial": serial / vec,
                         "x_of_pooled": vec / pooled})
    return rows


def row_c(sizes: Sizes, graphs: tuple[str, ...] = ("ring", "exponential")) -> list[dict]:
    n, d = sizes.gossip_n, sizes.gossip_d
    X = torch.randn(n, d)
    copy_s = _timeit(lambda: X.clone(), 3)  # a new tensor, as the gossip's output is
    into = torch.empty_like(X)
    copy_into_s = _timeit(lambda: into.copy_(X), 3)  # into memory already mapped: the bandwidth alone
    del into
    rows = []
    for name in graphs:
        W = topologies.mixing_matrix(topologies.build(name, n))
        sparse = as_operator(W, sparse=True)
        t_sparse = _timeit(lambda: mix(X, sparse, 1), 3)
        dense_d = min(d, 50_000)  # dense W @ X costs n^2 d flops: measured on fewer columns, scaled
        dense = as_operator(W, sparse=False)
        Xd = X[:, :dense_d].contiguous()
        t_dense = _timeit(lambda: mix(Xd, dense, 1), 2) * d / dense_d
        rows.append({"graph": name, "n": n, "params": d, "GB": X.numel() * 4 / 1e9, "copy_s": copy_s,
                     "copy_into_s": copy_into_s, "sparse_s": t_sparse, "dense_s": t_dense,
                     "sparse_x_copy": t_sparse / copy_s, "sparse_x_copy_into": t_sparse / copy_into_s,
                     "dense_x_copy": t_dense / copy_s, "degree": int(round((np.count_nonzero(W) - n) / n))})
    del X
    return rows


_SCALE_CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
from dfl.config import Config
from dfl.simulation import Simulation
n = int(sys.argv[1])
cfg = Config().replace(**{"data.name": "synthetic", "data.synthetic_dim": 64, "data.synthetic_samples": 20,
    "data.num_clients": n, "data.holdout_fraction": 0.0, "model.name": "mlp", "model.hidden": 64,
    "algorithm.name": "dfedavg", "local.local_steps": 5, "local.batch_size": 32, "rounds": 1})
t0 = time.perf_counter(); sim = Simulation(cfg); build = time.perf_counter() - t0
t0 = time.perf_counter(); sim.step(); step = time.perf_counter() - t0
try:  # this process's own high-water mark: ru_maxrss would include the parent's when spawned by vfork
    peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"clients": n, "params": sim.layout.size, "build_s": build, "round_s": step,
                  "peak_mb": peak_kb / 1024}))
"""


def row_d(sizes: Sizes) -> list[dict]:
    """Peak memory of one round for growing client counts (each in a fresh process)."""
    rows = []
    for n in sizes.scale_clients:
        proc = subprocess.run([sys.executable, "-c", _SCALE_CHILD, str(n), str(torch.get_num_threads())],
                              capture_output=True, text=True, env={**os.environ})
        if proc.returncode != 0:
            rows.append({"clients": n, "error": proc.stderr.strip().splitlines()[-1:]})
            break
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    ok = [r for r in rows if "peak_mb" in r]
    if len(ok) >= 2:
        per_client = (ok[-1]["peak_mb"] - ok[0]["peak_mb"]) / (ok[-1]["clients"] - ok[0]["clients"])
        total_mb = _total_memory_mb()
        base = ok[0]["peak_mb"] - per_client * ok[0]["clients"]
        for r in rows:
            r["mb_per_client"] = per_client
            r["max_clients_in_memory"] = int((total_mb - base) / per_client) if per_client > 0 else None
    return rows


def _total_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / 2**20
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def run_all(sizes: Sizes, rows: str = "abcde") -> dict[str, Any]:
    out: dict[str, Any] = {"device": "cuda" if torch.cuda.is_available() else "cpu",
                           "threads": torch.get_num_threads(), "torch": torch.__version__, "sizes": sizes.__dict__}
    if "a" in rows or "b" in rows:
        out["ab"] = row_ab(sizes)
    if "c" in rows:
        out["c"] = row_c(sizes)
    if "d" in rows:
        out["d"] = row_d(sizes)
    if "e" in rows:
        from .end_to_end import row_e
        out["e"] = row_e(sizes)
    return out
