"""A run: data, model, topology, algorithm and engine wired from a Config, and the round loop.

``Simulation(cfg).run(on_round)`` returns the history (one dict per evaluated round with the
metrics of ../shared/DESIGN.md); saving, logging and plotting live outside, in the callback.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

import numpy as np
import torch

import topologies
from topologies.errors import did_you_mean

from . import data as data_mod
from . import faults as faults_mod
from . import models, optim, rng
from . import system as system_mod
from .algorithms import ALGORITHMS, RoundContext
from .bank import Layout
from .config import Config
from .engines import ENGINES, ClientData, LocalOptions, pad_indices
from .errors import ConfigError
from .gossip import DENSE_MAX_N, as_operator
from .metrics import consensus_distance, evaluate, evaluate_clients, sharpness

OnRound = Callable[["Simulation", dict[str, Any]], None]

#: Local models are tested on at most this many global test samples when there is no held-out split.
LOCAL_EVAL_MAX = 512
#: Inputs gathered per chunk of the batched local evaluation (floats; 2^26 = 256 MB).
EVAL_FLOATS = 2 ** 26


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available, else cpu; an unavailable device is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"engine.device: {name!r} asked for but CUDA is not available; use 'auto' or 'cpu'")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("engine.device: 'mps' asked for but it is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def optimizer_hparams(cfg: Config, overrides: dict[str, Any]) -> dict[str, Any]:
    """The local optimizer's hyperparameters: the flat keys of [local] that it accepts, then
    [local.params] (each name must be one of its own), then the algorithm's `overrides`.

    The optimizer is built once here, so that a bad name or value is a one-line ConfigError
    naming its key before the run starts ("local.params.dampening: must be ...").
    """
    loc = cfg.local
    accepted = optim.hyperparameters(loc.optimizer)
    for key, value in loc.params.items():
        if key not in accepted:
            raise ConfigError(f"local.params.{key}: optimizer {loc.optimizer!r} takes {', '.join(accepted)}; "
                              f"got {key} = {value!r}{did_you_mean(key, accepted)}")
    flat = {k: getattr(loc, k) for k in loc.flat_params}
    hp = {k: v for k, v in {**flat, **loc.params, **overrides}.items() if k in accepted and v is not None}
    try:
        optim.make(loc.optimizer, **hp)
    except ConfigError as exc:
        key = str(exc).partition(":")[0]
        raise ConfigError(f"local.params.{exc}" if key in loc.params else f"local.{exc}") from None
    return hp


def local_options(cfg: Config) -> LocalOptions:
    """The engines' view of [local] beyond the optimizer's hyperparameters."""
    return LocalOptions(lr_max=cfg.local.lr, reset_state=cfg.local.reset_state,
                        clip_grad_norm=cfg.local.clip_grad_norm, strategy=cfg.engine.strategy,
                        precision=cfg.engine.precision)


def pool(fed: data_mod.FederatedData) -> data_mod.FederatedData:
    """The federation as one client holding the union of all shards (pooled-data training)."""
    return dataclasses.replace(fed, client_train=[torch.cat(list(fed.client_train))],
                               client_test=[torch.cat(list(fed.client_test))])


def resolve(cfg: Config) -> Config:
    """Fill what the config leaves to the algorithm (the local optimizer) and check names early."""
    algo_cls = ALGORITHMS[cfg.algorithm.name]
    if not cfg.local.optimizer:
        cfg = cfg.replace(**{"local.optimizer": algo_cls.default_optimizer()})
    optim.OPTIMIZERS[cfg.local.optimizer]
    models.MODELS[cfg.model.name]
    saf_epochs = cfg.local.saf_epochs or optim.hyperparameters("saf")["saf_epochs"]
    if (cfg.local.optimizer == "saf" and cfg.local.reset_state
            and (cfg.local.local_epochs is None or cfg.local.local_epochs <= saf_epochs)):
        raise ConfigError(f"local.reset_state: SAF compares each sample's outputs with those of saf_epochs = "
                          f"{saf_epochs} epochs ago, a memory that the per-round reset erases before it is used "
                          f"(SAF would be plain SGD); set local.reset_state = false (the memory then lasts "
                          f"the run, as in the reference) or local.local_epochs > {saf_epochs}")
    return cfg


def batch_size(cfg: Config, fed: data_mod.FederatedData, pooled: bool = False) -> int:
    """Samples per local step: local.batch_size, but at most the largest client shard.

    A PyTorch DataLoader never yields a batch larger than its dataset; here every client's batch
    has one width (one vmap), so the cap is the largest shard: with equal shards (iid,
    dirichlet_prior) a client's batch is at most its shard, exactly as the reference code's
    DataLoader; a smaller shard continues into its next epoch (dfl.rng.batch_indices). Without the
    cap, local.batch_size = 100000 on shards of 90 samples would draw 100,000 samples per client
    and step. Pooled training draws num_clients such batches at once, at most the whole union.
    """
    sizes = [len(t) for t in fed.client_train]
    batch = max(1, min(cfg.local.batch_size, max(sizes, default=1)))
    return max(1, min(batch * len(sizes), sum(sizes))) if pooled else batch


def build_model(cfg: Config, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    """The run's initial model, the same for every client: seeded by cfg.seed on a forked RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return models.build(cfg.model.name, input_shape, num_classes, hidden=cfg.model.hidden,
                            groups=cfg.model.groups)


def client_steps(cfg: Config, algo: Any, sizes: np.ndarray, batch: int) -> np.ndarray:
    """Local steps of each client per round: local_steps, or ceil(local_epochs * shard / batch),
    capped by the algorithm (D-PSGD takes one)."""
    if cfg.local.local_epochs is not None:
        steps = np.ceil(cfg.local.local_epochs * np.asarray(sizes) / batch).astype(np.int64)
    else:
        steps = np.full(len(sizes), cfg.local.local_steps, dtype=np.int64)
    return np.maximum(1, np.minimum(steps, algo.local_steps(int(steps.max()))))


class Simulation:
    """Everything one run needs, built from a validated Config."""

    def __init__(self, cfg: Config, fed: Optional[data_mod.FederatedData] = None):
        self.cfg = cfg = resolve(cfg)
        if cfg.engine.threads:
            torch.set_num_threads(cfg.engine.threads)
        self.device = resolve_device(cfg.engine.device)
        algo_cls = ALGORITHMS[cfg.algorithm.name]
        self.fed = fed if fed is not None else data_mod.load_federated(cfg.data, cfg.seed)
        self.pooled = getattr(algo_cls, "pooled", False)
        train_fed = pool(self.fed) if self.pooled else self.fed
        n = len(train_fed.client_train)
        batch = batch_size(cfg, self.fed, self.pooled)  # at most the largest shard (or the union)

        self.model = build_model(cfg, self.fed.input_shape, self.fed.num_classes).to(self.device)
        self.layout = Layout.of(dict(self.model.named_parameters()))
        self.algo = algo_cls(cfg, n, self.layout.size)
        self.model_bytes = self.layout.size * 4

        self.faults = faults_mod.FaultModel(cfg.faults, cfg.seed)
        self._W_cache: dict[int, tuple[Any, np.ndarray, float, Any]] = {}
        self.round_graph = None
        if not self.algo.centralized:
            self.graphs = topologies.build_sequence(cfg.topology.name, n, seed=cfg.seed,
                                                    **cfg.topology.graph_params())
            self.mixing(0)  # a bad mixing rule is a user error now, not in round 1
        # a time-varying graph's own round has gap 0 (one matching): the run also records the gap
        # of one period's product, the figure that bounds its consensus error
        self.period_gap = (topologies.period_gap(self.graphs, cfg.topology.mixing, cfg.algorithm.gossip_steps,
                                                 **cfg.topology.mixing_params)
                           if not self.algo.centralized and self.graphs.time_varying else None)

        self.client_data = ClientData(train_fed, self.device, cfg.seed, batch, augment=cfg.data.augment)
        self.steps = client_steps(cfg, self.algo, self.client_data.sizes, batch)

        hp = optimizer_hparams(cfg, self.algo.optimizer_overrides())
        trainer_cls = ENGINES[cfg.engine.backend]
        self.trainer = trainer_cls(self.model, self.layout, self.client_data, cfg.local.optimizer, hp,
                                   self.device, cfg.engine.chunk_size, local=local_options(cfg))
        self.schedule = optim.schedule(cfg.local.schedule, cfg.local.lr, decay=cfg.local.lr_decay,
                                       total_rounds=cfg.rounds)
        row = self.layout.row(self.model).to(self.device)
        self.bank = row.expand(n, -1).clone()
        self.algo.init(self.bank)
        self.round = 0
        self.comm_mb = 0.0
        self.elapsed = 0.0
        self.history: list[dict[str, Any]] = []
        self.system = system_mod.from_simulation(cfg, self)  # None unless [system] enabled
        self._eval_sets()
        if self.trainer.owns_bank:  # the engine holds the clients' rows (Ray actors)
            self.bank = self.trainer.adopt(self.bank, self)

    # ------------------------------------------------------------------ topology
    def mixing(self, round_: int) -> tuple[Any, np.ndarray, float]:
        """(torch operator W_t, degrees, spectral gap) for round t; cached for static graphs.

        With link failures, W_t is built on the round's surviving graph (self.round_graph).
        Degrees are in-degrees on a directed graph, so gossip bytes = Q * models received.
        """
        varying = topologies.is_time_varying(self.cfg.topology.name) or self.cfg.faults.link_failure > 0
        key = round_ if varying else 0
        if key not in self._W_cache:
            G = self.faults.surviving(self.graphs.graph(round_), round_)
            build = topologies.mixing_matrix if G.number_of_nodes() <= DENSE_MAX_N else topologies.mixing_matrix_sparse
            W = build(G, rule=self.cfg.topology.mixing, **self.cfg.topology.mixing_params)
            # a directed graph (random_neighbors, arc j -> i: i pulls x_j): the models i receives
            deg = np.array([d for _, d in sorted(G.in_degree() if G.is_directed() else G.degree())],
                           dtype=np.float64)
            self._W_cache = {key: (as_operator(W, self.device), deg, topologies.spectral_gap(W), G)}
        W, deg, gap, self.round_graph = self._W_cache[key]
        return W, deg, gap

    # ------------------------------------------------------------------ evaluation sets
    def _eval_sets(self) -> None:
        fed = self.fed
        self.x_test = fed.x_test.to(self.device)
        self.y_test = fed.y_test.to(self.device)
        if sum(len(t) for t in fed.client_test) > 0:
            self.local_x, self.local_y = fed.x_train.to(self.device), fed.y_train.to(self.device)
            self.local_idx, self.local_mask = pad_indices(fed.client_test, self.device)
        else:  # no held-out split: every local model on the same (seeded) sample of the test set
            m = len(fed.y_test)
            gen = torch.Generator().manual_seed(self.cfg.seed)
            pick = torch.randperm(m, generator=gen)[:LOCAL_EVAL_MAX].sort().values.to(self.device)
            self.local_x, self.local_y = self.x_test, self.y_test
            n = fed.num_clients  # shared rows: expand, so 1e5 clients cost no (n, m) tables
            self.local_idx = pick.expand(n, -1)
            self.local_mask = torch.ones(1, len(pick), dtype=torch.bool, device=self.device).expand(n, -1)

    def evaluate(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Metrics of the current bank (DESIGN.md's keys)."""
        if not isinstance(self.bank, torch.Tensor):  # held by the engine: reduced there
            mean_row, local, consensus = self.trainer.summary(self.bank)
        else:
            mean_row, consensus = self.bank.mean(0), consensus_distance(self.bank)
        acc, loss = evaluate(self.model, self.layout, mean_row, self.x_test, self.y_test)
        if self.pooled:
            local = np.array([acc])
        elif isinstance(self.bank, torch.Tensor):
            chunk = max(1, min(len(self.bank), getattr(self.trainer, "chunk_size", 0) or 64,
                               EVAL_FLOATS // max(1, self.local_idx.shape[1] * self.local_x[0].numel())))
            local = evaluate_clients(self.model, self.layout, self.bank, self.local_x, self.local_y,
                                     self.local_idx, self.local_mask, chunk)
        row = {"round": self.round, "test_acc": acc, "test_loss": loss,
               "local_test_acc": float(np.nanmean(local)), "local_test_acc_std": float(np.nanstd(local)),
               **extra, "consensus": consensus}
        every = self.cfg.metrics.sharpness_every
        if every and self.round % every == 0:
            row["sharpness"] = sharpness(self.model, self.layout, mean_row, self.x_test, self.y_test,
                                         self.cfg.local.rho if self.cfg.local.rho is not None else 0.05)
        if self.cfg.metrics.flatness_every and self.round % self.cfg.metrics.flatness_every == 0:
            from .flatness import round_metrics  # Hessian max eigenvalue and trace, sharpness
            row.update(round_metrics(self.model, self.layout, mean_row, self.fed, self.cfg, self.round))
        return row

    # ------------------------------------------------------------------ the round loop
    def step(self) -> dict[str, Any]:
        """Run one round; returns the round's raw numbers (not yet evaluated)."""
        cfg, t = self.cfg, self.round
        n = self.bank.shape[0]
        active = rng.participation(cfg.seed, t, n, cfg.algorithm.participation) & ~self.faults.dropped(t, n)
        if self.algo.centralized:
            W, deg, gap = None, np.zeros(n), 1.0
        else:
            W, deg, gap = self.mixing(t)
        lr = self.schedule(t)
        q = cfg.algorithm.gossip_steps
        ctx = RoundContext(round=t, active=torch.as_tensor(active, device=self.device), W=W, degrees=deg,
                           gossip_steps=q, lr=lr, local_steps=int(self.steps.max()),
                           mixer=self.trainer.mix if self.trainer.owns_bank else None)
        self.bank = self.algo.start(self.bank, ctx)
        # the start-of-round bank, copied only when the algorithm or NaN recovery will read it
        keep = self.algo.needs_before or (cfg.faults.on_nan == "skip_client") or self.algo.centralized
        before = self.bank.clone() if keep else None
        steps = self.faults.local_steps(t, self.steps)
        t0 = time.perf_counter()
        self.bank, losses = self.trainer.train(self.bank, active, steps, lr, t, self.algo.correction(ctx))
        t1 = time.perf_counter()
        sim_row = self.system.round(active, steps, self.round_graph) if self.system else {}
        bad = faults_mod.diverged(self.bank, losses, active)
        if bad.any():  # faults.on_nan: stop (DivergedError) or restart the client from its neighbours
            active, before = faults_mod.handle_divergence(self, bad, losses, before, active)
            ctx.active = torch.as_tensor(active, device=self.device)
        if self.algo.centralized and not active.any():
            self.bank, extra = before, {}  # nobody to average: the global model stays
        else:
            self.bank, extra = self.algo.aggregate(before, self.bank, ctx)
        t2 = time.perf_counter()
        self.comm_mb += self.algo.comm_mb(ctx, self.model_bytes)
        self.round += 1
        return {"train_loss": faults_mod.mean_loss(losses), "spectral_gap": gap,
                "effective_gap": 1.0 - (1.0 - gap) ** q, "comm_mb": self.comm_mb,
                "active_clients": int(active.sum()), "lr": lr, **extra,
                **({"period_gap": self.period_gap} if self.period_gap is not None else {}),
                **faults_mod.round_metrics(self, active, steps, bad),
                "train_s": t1 - t0, "exchange_s": t2 - t1, **sim_row, **self.trainer.metrics()}

    def run(self, on_round: Optional[OnRound] = None,
            after_round: Optional[Callable[["Simulation"], None]] = None) -> list[dict[str, Any]]:
        """Run the remaining rounds; calls on_round(sim, metrics) after every evaluated round and
        after_round(sim) after every round (checkpoints, stop requests): the state is whole then."""
        while self.round < self.cfg.rounds:
            t0 = time.perf_counter()
            raw = self.step()
            self.elapsed += time.perf_counter() - t0
            if self.round % self.cfg.eval_every == 0 or self.round == self.cfg.rounds:
                t1 = time.perf_counter()
                row = self.evaluate(raw)
                row["eval_s"] = time.perf_counter() - t1
                self.elapsed += row["eval_s"]  # wall_s: training and evaluation, not the writing
                row["wall_s"] = self.elapsed
                self.history.append(row)
                if on_round:
                    on_round(self, row)
            if after_round:
                after_round(self)
        return self.history

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round, "bank": self.bank.cpu(), "trainer": self.trainer.state_dict(),
                "algorithm": self.algo.state_dict(), "comm_mb": self.comm_mb, "elapsed": self.elapsed,
                "history": list(self.history),
                **({"system": self.system.state_dict()} if self.system else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round = int(state["round"])
        self.bank = state["bank"].to(self.device)
        self.trainer.load_state_dict(state["trainer"])
        self.algo.load_state_dict(state["algorithm"])
        self.comm_mb = float(state["comm_mb"])
        self.elapsed = float(state["elapsed"])
        self.history = list(state["history"])
        if self.system:
            self.system.load_state_dict(state.get("system"))
        if self.trainer.owns_bank:
            self.bank = self.trainer.adopt(self.bank, self)

    def close(self) -> None:
        """Release the engine's resources (Ray actors, a local Ray); the run cannot step after it."""
        self.trainer.close()
