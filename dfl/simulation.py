"""A run: data, model, topology, algorithm and engine wired from a Config, and the round loop.

``build(cfg)`` returns the run's parts (data, model, layout, algorithm, graphs and W_t, schedule,
test sets), which the Flower server apps use as they are. ``Simulation(cfg)`` adds an engine and
where the run stands (``RunState``); ``advance(state)`` plays one round and returns the next
state, and ``run(on_round)`` returns the history (one dict per evaluated round: the metrics keys
README lists); saving, logging and plotting live outside, in the callbacks.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

import topologies
from topologies.errors import did_you_mean

from . import data as data_mod
from . import faults as faults_mod
from . import models, optim, rng
from . import system as system_mod
from .algorithms import ALGORITHMS, Algorithm, RoundContext
from .bank import Layout
from .config import Config
from .data.augment import check_augment
from .engines import ENGINES, ClientData, LocalEval, LocalOptions, RunSettings, Engine, pad_indices
from .errors import ConfigError
from .gossip import Mixing
from .metrics import evaluate, evaluated_row, round_row, sharpness

OnRound = Callable[["Simulation", dict[str, Any]], None]

#: Local models are tested on at most this many global test samples when there is no held-out split.
LOCAL_EVAL_MAX = 512


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


@dataclass(frozen=True)
class Parts:
    """A run's parts, built from a Config by ``build``: what every runtime of the run shares.

    Nothing here changes as the rounds go but the algorithm's own state (Choco's public copies,
    the server's global model). ``graphs`` and ``mixing`` are None for centralized algorithms.
    """

    cfg: Config
    device: torch.device
    fed: data_mod.FederatedData        # the federation as loaded
    train_fed: data_mod.FederatedData  # what the clients train on (pooled: one client, the union)
    pooled: bool
    batch: int                         # samples per local step, after the cap (``batch_size``)
    model: torch.nn.Module
    layout: Layout
    algo: Algorithm
    graphs: Optional[topologies.GraphSequence]
    mixing: Optional[Mixing]
    period_gap: Optional[float]        # the gap of one period's product (time-varying graphs)
    faults: faults_mod.FaultModel
    steps: np.ndarray                  # each client's local steps per round
    schedule: Callable[[int], float]   # round -> learning rate
    x_test: torch.Tensor
    y_test: torch.Tensor
    local_eval: Optional[LocalEval]    # the clients' local test sets (None: pooled training)

    @property
    def model_bytes(self) -> int:
        return self.layout.size * 4

    def initial_row(self) -> torch.Tensor:
        """The model's initial parameters as one flat row (d,): every client starts from it."""
        return self.layout.row(self.model).to(self.device)

    def initial_bank(self) -> torch.Tensor:
        """(n, d): the initial row for every client."""
        return self.initial_row().expand(len(self.steps), -1).clone()


def build(cfg: Config, fed: Optional[data_mod.FederatedData] = None) -> Parts:
    """The parts of the run of ``cfg`` (data loaded unless ``fed`` is given); user errors (names,
    a bad mixing rule, a device that is not there) are raised here, before any round."""
    cfg = resolve(cfg)
    device = resolve_device(cfg.engine.device)
    algo_cls = ALGORITHMS[cfg.algorithm.name]
    fed = fed if fed is not None else data_mod.load_federated(cfg.data, cfg.seed)
    check_augment(cfg.data.augment, tuple(fed.x_train.shape[1:]))  # also where nothing trains (Flower server)
    pooled = getattr(algo_cls, "pooled", False)
    train_fed = pool(fed) if pooled else fed
    n = len(train_fed.client_train)
    batch = batch_size(cfg, fed, pooled)  # at most the largest shard (or the union)
    model = build_model(cfg, fed.input_shape, fed.num_classes).to(device)
    layout = Layout.of(dict(model.named_parameters()))
    algo = algo_cls(cfg, n, layout.size)
    faults = faults_mod.FaultModel(cfg.faults, cfg.seed)
    graphs = mixing = period_gap = None
    if not algo.centralized:
        graphs = topologies.build_sequence(cfg.topology.name, n, seed=cfg.seed, **cfg.topology.graph_params())
        varying = topologies.is_time_varying(cfg.topology.name) or cfg.faults.link_failure > 0
        mixing = Mixing(graphs, cfg.topology.mixing, varying=varying, device=device, surviving=faults.surviving,
                        params=cfg.topology.mixing_params)
        mixing(0)  # a bad mixing rule is a user error now, not in round 1
        # a time-varying graph's own round has gap 0 (one matching): the run also records the gap
        # of one period's product, the figure that bounds its consensus error
        if graphs.time_varying:
            period_gap = topologies.period_gap(graphs, cfg.topology.mixing, cfg.algorithm.gossip_steps,
                                            **cfg.topology.mixing_params)
    sizes = np.array([len(p) for p in train_fed.client_train], dtype=np.int64)
    schedule = optim.schedule(cfg.local.schedule, cfg.local.lr, decay=cfg.local.lr_decay, total_rounds=cfg.rounds)
    parts = Parts(cfg, device, fed, train_fed, pooled, batch, model, layout, algo, graphs, mixing, period_gap,
                  faults, client_steps(cfg, algo, sizes, batch), schedule, fed.x_test.to(device),
                  fed.y_test.to(device), None if pooled else local_eval(fed, cfg.seed, device))
    algo.init(parts.initial_bank())
    return parts


def local_eval(fed: data_mod.FederatedData, seed: int, device: torch.device) -> LocalEval:
    """Each client's local test set: its held-out split, or (none held out) the same seeded
    sample of LOCAL_EVAL_MAX global test samples for every client."""
    if sum(len(t) for t in fed.client_test) > 0:
        return LocalEval(fed.x_train.to(device), fed.y_train.to(device), *pad_indices(fed.client_test, device))
    m = len(fed.y_test)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(m, generator=gen)[:LOCAL_EVAL_MAX].sort().values.to(device)
    n = fed.num_clients  # shared rows: expand, so 1e5 clients cost no (n, m) tables
    mask = torch.ones(1, len(pick), dtype=torch.bool, device=device).expand(n, -1)
    return LocalEval(fed.x_test.to(device), fed.y_test.to(device), pick.expand(n, -1), mask)


def make_engine(parts: Parts, client_data: ClientData) -> Engine:
    """The engine of cfg.engine.backend, told what it needs about the run."""
    cfg = parts.cfg
    settings = RunSettings(engine_config=cfg.engine, evaluation=parts.local_eval, engine_rows=parts.algo.mixes is not None)
    hp = optimizer_hparams(cfg, parts.algo.optimizer_overrides())
    return ENGINES[cfg.engine.backend](parts.model, parts.layout, client_data, cfg.local.optimizer, hp, parts.device,
                                       cfg.engine.chunk_size, local=local_options(cfg), settings=settings)


@dataclass
class RunState:
    """Where a run stands: what a checkpoint holds besides the engine's and the algorithm's state."""

    round: int
    bank: Any                          # the engine's bank (``Engine.place``)
    comm_mb: float = 0.0
    elapsed: float = 0.0               # seconds of training and evaluation so far
    history: list[dict[str, Any]] = field(default_factory=list)


class Simulation:
    """A run of ``build(cfg)``'s parts on an engine, round by round (``state`` says where it stands).

    The parts read through the Simulation (``sim.model``, ``sim.algo``, ``sim.steps``, ...), as do
    ``round``, ``bank`` and ``history`` of its state."""

    def __init__(self, cfg: Config, fed: Optional[data_mod.FederatedData] = None):
        if cfg.engine.threads:
            torch.set_num_threads(cfg.engine.threads)
        self.parts = parts = build(cfg, fed)
        self.client_data = ClientData(parts.train_fed, parts.device, parts.cfg.seed, parts.batch,
                                      augment=parts.cfg.data.augment)
        self.engine = make_engine(parts, self.client_data)
        self.system = system_mod.from_parts(parts)  # None unless [system] enabled
        self.state = RunState(round=0, bank=self.engine.place(parts.initial_bank()))

    def __getattr__(self, name: str) -> Any:
        """The run's parts (cfg, model, layout, algo, graphs, steps, x_test, ...) read through the Simulation."""
        parts = self.__dict__.get("parts")
        if parts is None:
            raise AttributeError(name)
        return getattr(parts, name)

    @property
    def round(self) -> int:
        return self.state.round

    @property
    def bank(self) -> Any:
        return self.state.bank

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, state: RunState, training: dict[str, Any]) -> dict[str, Any]:
        """The metrics row of ``state``'s bank (README's metrics keys), with the round's ``training`` columns."""
        p, t = self.parts, state.round
        mean_row, local, consensus = self.engine.summary(state.bank)
        acc, loss = evaluate(p.model, p.layout, mean_row, p.x_test, p.y_test)
        row = evaluated_row(t, (acc, loss), [acc] if p.pooled else local, consensus, training)
        every = p.cfg.metrics.sharpness_every
        if every and t % every == 0:
            row["sharpness"] = sharpness(p.model, p.layout, mean_row, p.x_test, p.y_test,
                                         p.cfg.local.rho if p.cfg.local.rho is not None else 0.05)
        if p.cfg.metrics.flatness_every and t % p.cfg.metrics.flatness_every == 0:
            from .flatness import round_metrics  # Hessian max eigenvalue and trace, sharpness
            row.update(round_metrics(p.model, p.layout, mean_row, p.fed, p.cfg, t))
        return row

    # ------------------------------------------------------------------ the round loop
    def advance(self, state: RunState) -> tuple[RunState, dict[str, Any]]:
        """Play round ``state.round``: returns the state after it and the round's training columns."""
        p, t, engine = self.parts, state.round, self.engine
        cfg, n = p.cfg, len(p.steps)
        active = rng.participation(cfg.seed, t, n, cfg.algorithm.participation) & ~p.faults.dropped(t, n)
        rg = p.mixing(t) if p.mixing is not None else None
        ctx = RoundContext(round=t, active=torch.as_tensor(active, device=p.device), W=rg.operator if rg else None,
                           degrees=rg.degrees if rg else np.zeros(n), gossip_steps=cfg.algorithm.gossip_steps,
                           lr=p.schedule(t), local_steps=int(p.steps.max()), ops=engine)
        bank = p.algo.start(state.bank, ctx)
        # the start-of-round bank, copied only when the algorithm or NaN recovery will read it
        keep = p.algo.needs_before or (cfg.faults.on_nan == "skip_client") or p.algo.centralized
        before = engine.copy(bank) if keep else None
        steps = p.faults.local_steps(t, p.steps)
        t0 = time.perf_counter()
        bank, losses = engine.train(bank, active, steps, ctx.lr, t, p.algo.correction(ctx))
        t1 = time.perf_counter()
        graph = rg.graph if rg else None
        sim_row = self.system.round(active, steps, graph) if self.system else {}
        bad = faults_mod.diverged(engine.finite(bank), losses, active)
        if bad.any():  # faults.on_nan: stop (DivergedError) or restart the client from its neighbours
            bank, before = faults_mod.handle_divergence(cfg.faults.on_nan, engine, bad, losses, t, graph, bank, before)
            active = active & ~bad
            ctx.active = torch.as_tensor(active, device=p.device)
        if p.algo.centralized and not active.any():
            bank, extra = before, {}  # nobody to average: the global model stays
        else:
            bank, extra = p.algo.aggregate(before, bank, ctx)
        t2 = time.perf_counter()
        comm_mb = state.comm_mb + p.algo.comm_mb(ctx, p.model_bytes)
        training = round_row(train_loss=faults_mod.mean_loss(losses), gap=rg.gap if rg else 1.0,
                             gossip_steps=ctx.gossip_steps, comm_mb=comm_mb, active_clients=int(active.sum()),
                             lr=ctx.lr, **extra, **({"period_gap": p.period_gap} if p.period_gap is not None else {}),
                             **faults_mod.round_metrics(cfg.faults, graph, active, steps, p.steps, bad),
                             train_s=t1 - t0, exchange_s=t2 - t1, **sim_row, **engine.metrics())
        return dataclasses.replace(state, round=t + 1, bank=bank, comm_mb=comm_mb), training

    def step(self) -> dict[str, Any]:
        """Run one round; returns the round's training columns (not yet evaluated)."""
        self.state, training = self.advance(self.state)
        return training

    def run(self, on_round: Optional[OnRound] = None,
            after_round: Optional[Callable[["Simulation"], None]] = None) -> list[dict[str, Any]]:
        """Run the remaining rounds; calls on_round(sim, metrics) after every evaluated round and
        after_round(sim) after every round (checkpoints, stop requests): the state is whole then."""
        while self.state.round < self.parts.cfg.rounds:
            t0 = time.perf_counter()
            state, training = self.advance(self.state)
            state.elapsed += time.perf_counter() - t0
            row = None
            if state.round % self.parts.cfg.eval_every == 0 or state.round == self.parts.cfg.rounds:
                t1 = time.perf_counter()
                row = self.evaluate(state, training)
                row["eval_s"] = time.perf_counter() - t1
                state.elapsed += row["eval_s"]  # wall_s: training and evaluation, not the writing
                row["wall_s"] = state.elapsed
                state.history.append(row)
            self.state = state
            if row is not None and on_round:
                on_round(self, row)
            if after_round:
                after_round(self)
        return self.state.history

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        s = self.state
        return {"round": s.round, "bank": self.engine.gather(s.bank), "engine": self.engine.state_dict(),
                "algorithm": self.parts.algo.state_dict(), "comm_mb": s.comm_mb, "elapsed": s.elapsed,
                "history": list(s.history), **({"system": self.system.state_dict()} if self.system else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state["engine"])
        self.parts.algo.load_state_dict(state["algorithm"])
        if self.system:
            self.system.load_state_dict(state.get("system"))
        self.state = RunState(round=int(state["round"]), bank=self.engine.place(state["bank"].to(self.parts.device)),
                              comm_mb=float(state["comm_mb"]), elapsed=float(state["elapsed"]),
                              history=list(state["history"]))

    def describe(self) -> dict[str, Any]:
        """The run's facts for manifest.json: device, sizes, the batch after its cap, the engine's choices."""
        engine = self.engine.describe()
        return {"device": str(self.parts.device), "num_params": self.parts.layout.size,
                "num_clients": len(self.parts.steps), "batch_size": self.client_data.batch_size,
                **({"engine": engine} if engine else {})}

    def close(self) -> None:
        """Release the engine's resources (Ray actors, a local Ray); the run cannot step after it."""
        self.engine.close()
