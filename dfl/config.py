"""Run configuration: nested frozen dataclasses loaded from TOML, with `--set` overrides.

Every field is validated on construction; a bad key, type or value raises ConfigError with
one line naming the key path, the value and what is allowed, e.g.
``local.lr: must be > 0, got -0.1``. Keys follow ../shared/DESIGN.md's config sketch.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError


def _check(path: str, ok: bool, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{path}: must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Dataset, its federated split and where it lives."""

    name: str = "digits"
    """Dataset: digits (embedded), mnist1d (generated offline), synthetic, mnist, fashion_mnist,
    cifar10, cifar100, hf:<id>."""
    root: Optional[str] = None
    """Directory holding the dataset files (MNIST IDX / CIFAR pickle batches)."""
    num_clients: int = 16
    partition: str = "dirichlet"
    """Partitioner: iid, dirichlet (per-class shares over clients, NIID-Bench), dirichlet_prior
    (equal shard sizes, each client's label prior ~ Dir(alpha), as DisPFL / FL-Simulator), shards,
    quantity."""
    alpha: float = 0.3
    """Dirichlet concentration (smaller = more label skew)."""
    min_size: int = 10
    """Minimum number of training samples per client (dirichlet / quantity)."""
    shards_per_client: int = 2
    """Classes per client for the pathological shards partition."""
    quantity_sigma: float = 1.0
    """Log-normal sigma of client sizes for the quantity-skew partition."""
    test_fraction: float = 0.2
    """Fraction of a dataset without a test split held out as the global test set."""
    holdout_fraction: float = 0.1
    """Fraction of each client's shard held out to test its local model."""
    augment: str = "none"
    """Training-batch augmentation: none, or crop_flip (random crop with 4-pixel zero padding and
    a horizontal flip, per sample, drawn from the client's counter stream; image data only)."""
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    synthetic_dim: int = 60
    synthetic_samples: int = 200
    """Mean samples per client of the FedProx synthetic(alpha, beta) data."""

    def __post_init__(self) -> None:
        _check("data.num_clients", self.num_clients >= 1, ">= 1", self.num_clients)
        _check("data.alpha", self.alpha > 0, "> 0", self.alpha)
        _check("data.min_size", self.min_size >= 1, ">= 1", self.min_size)
        _check("data.shards_per_client", self.shards_per_client >= 1, ">= 1", self.shards_per_client)
        _check("data.quantity_sigma", self.quantity_sigma >= 0, ">= 0", self.quantity_sigma)
        _check("data.test_fraction", 0 < self.test_fraction < 1, "in (0, 1)", self.test_fraction)
        _check("data.holdout_fraction", 0 <= self.holdout_fraction < 1, "in [0, 1)", self.holdout_fraction)
        _check("data.augment", self.augment in AUGMENTS, f"one of {', '.join(AUGMENTS)}", self.augment)
        _check("data.synthetic_alpha", self.synthetic_alpha >= 0, ">= 0", self.synthetic_alpha)
        _check("data.synthetic_beta", self.synthetic_beta >= 0, ">= 0", self.synthetic_beta)
        _check("data.synthetic_dim", self.synthetic_dim >= 1, ">= 1", self.synthetic_dim)
        _check("data.synthetic_samples", self.synthetic_samples >= 2, ">= 2", self.synthetic_samples)


AUGMENTS = ("none", "crop_flip")
#: algorithm.compression (the formats of dfl.compression).
COMPRESSIONS = ("none", "topk", "randomk", "qsgd", "sign")


@dataclass(frozen=True)
class ModelConfig:
    """The network every client trains (the same architecture everywhere)."""

    name: str = "cnn"
    """Model: logistic, mlp, cnn, cnn1d (mnist1d's ConvBase), resnet18 / vgg11 (GroupNorm), vit, mixer."""
    hidden: int = 200
    """Hidden width of the MLP."""
    groups: int = 32
    """GroupNorm groups of resnet18 / vgg11 (32 as in the DFedSAM paper)."""

    def __post_init__(self) -> None:
        _check("model.hidden", self.hidden >= 1, ">= 1", self.hidden)
        _check("model.groups", self.groups >= 1, ">= 1", self.groups)


@dataclass(frozen=True)
class LocalConfig:
    """The local optimizer and how long each client trains per round."""

    optimizer: str = ""
    """sgd, sam, asam, gsam, saf, mesa; empty = the algorithm's own (SGD for DFedAvg, SAM for DFedSAM)."""
    lr: float = 0.1
    schedule: str = "exponential"
    """Learning-rate schedule over rounds: constant, exponential (lr * lr_decay^round), cosine."""
    lr_decay: float = 0.998
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 5e-4
    local_steps: int = 5
    """K local steps per round (ignored when local_epochs is set)."""
    local_epochs: Optional[float] = None
    """Local epochs per round: steps = ceil(epochs * shard size / batch_size), per client."""
    batch_size: int = 32
    reset_state: bool = True
    """Start every round with a fresh optimizer state (momentum buffers, step counters, SAF/MESA
    memories), as the reference code builds a new optimizer each round; false keeps the state."""
    clip_grad_norm: float = 0.0
    """Clip each step's descent direction to this global L2 norm (DisPFL uses 10); 0 = off."""
    # Method hyperparameters; unset = the method's published default (see dfl.optim).
    rho: Optional[float] = None
    """SAM-family radius (SAM/GSAM 0.05, ASAM 0.5)."""
    eta: Optional[float] = None
    """ASAM's T_w = |w| + eta (0.01)."""
    alpha: Optional[float] = None
    """GSAM's surrogate-gap weight (0.4, the reference's default)."""
    rho_min: Optional[float] = None
    """GSAM: rho follows the learning rate from rho (at local.lr) down to rho_min (at lr 0), as
    the reference's ProportionScheduler; unset = rho (constant)."""
    adaptive_bias: Optional[bool] = None
    """ASAM: apply T_w = |w| + eta to biases and norm parameters too (default false: weight
    tensors only, as SamsungLabs/ASAM)."""
    lam: Optional[float] = None
    """SAF / MESA weight of the trajectory (KL) loss (SAF 0.3, MESA 0.8)."""
    tau: Optional[float] = None
    """SAF / MESA temperature (5)."""
    saf_epochs: Optional[int] = None
    """SAF: outputs are compared with those of this many visits ago (3)."""
    ema_decay: Optional[float] = None
    """MESA's EMA decay of the weights (0.9: a 10-step horizon; the teacher restarts at the
    round-start model every round)."""
    warmup_steps: Optional[int] = None
    """MESA: local steps of each round without the trajectory loss (0; counted from the round's
    start when reset_state is on)."""
    warmup_rounds: Optional[int] = None
    """SAF / MESA: rounds before the trajectory loss starts (the reference's kl_start_epoch; 0)."""

    def __post_init__(self) -> None:
        _check("local.lr", self.lr > 0, "> 0", self.lr)
        _check("local.lr_decay", 0 < self.lr_decay <= 1, "in (0, 1]", self.lr_decay)
        _check("local.momentum", 0 <= self.momentum < 1, "in [0, 1)", self.momentum)
        _check("local.weight_decay", self.weight_decay >= 0, ">= 0", self.weight_decay)
        _check("local.local_steps", self.local_steps >= 1, ">= 1", self.local_steps)
        if self.local_epochs is not None:
            _check("local.local_epochs", self.local_epochs > 0, "> 0", self.local_epochs)
        _check("local.batch_size", self.batch_size >= 1, ">= 1", self.batch_size)
        _check("local.clip_grad_norm", self.clip_grad_norm >= 0, ">= 0 (0 = off)", self.clip_grad_norm)
        for key, ok, allowed in (("rho", lambda v: v >= 0, ">= 0"), ("eta", lambda v: v >= 0, ">= 0"),
                                 ("alpha", lambda v: v >= 0, ">= 0"), ("lam", lambda v: v >= 0, ">= 0"),
                                 ("tau", lambda v: v > 0, "> 0"), ("saf_epochs", lambda v: v >= 1, ">= 1"),
                                 ("ema_decay", lambda v: 0 <= v < 1, "in [0, 1)"),
                                 ("rho_min", lambda v: v >= 0, ">= 0"), ("warmup_rounds", lambda v: v >= 0, ">= 0"),
                                 ("warmup_steps", lambda v: v >= 0, ">= 0")):
            value = getattr(self, key)
            if value is not None:
                _check(f"local.{key}", ok(value), allowed, value)
        _check("local.schedule", self.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}", self.schedule)


SCHEDULES = ("constant", "exponential", "cosine")


@dataclass(frozen=True)
class AlgorithmConfig:
    """What a round does after local training: gossip (DFL) or server averaging (CFL)."""

    name: str = "dfedsam"
    """dpsgd, dfedavg, dfedavgm, dfedsam, dfedsam_mgs, fedavg, fedsam, mofedsam, pooled."""
    gossip_steps: int = 1
    """Q: gossip steps X <- W X per round (DFedSAM-MGS uses Q > 1)."""
    participation: float = 1.0
    """Fraction of clients active in a round; inactive ones keep their model and still relay."""
    beta: float = 0.9
    """Momentum of DFedAvgM's local SGD."""
    mofedsam_alpha: float = 0.1
    """MoFedSAM: weight of the local SAM gradient in its direction alpha * g + (1 - alpha) * Delta
    (FL-Simulator's default 0.1)."""
    server_lr: float = 1.0
    """Server step size of the centralized baselines (1 = plain averaging)."""
    compression: str = "none"
    """What each client sends in a gossip step (dfl.compression): none (its float32 model), topk,
    randomk (compression_ratio of the entries, with their indices), qsgd (levels), sign. Anything
    but none runs compressed_gossip (decentralized algorithms, vectorized / serial engines)."""
    compression_ratio: float = 0.01
    """topk / randomk: fraction of the entries sent, k = max(1, round(ratio * d))."""
    levels: int = 7
    """qsgd: non-zero quantization levels s; an entry takes 1 + ceil(log2(s + 1)) bits (7 = 4 bits)."""
    consensus_step: Optional[float] = None
    """gamma of compressed gossip, x_i += gamma sum_j W_ij (x_hat_j - x_hat_i), in (0, 1]; required
    with compression (tune it: smaller for stronger compression); unused with compression = none."""
    compressed_gossip: str = "choco"
    """choco (Choco-Gossip, Koloskova et al. 2019: public copies x_hat, the error fed back) or naive
    (x += gamma (W C(x) - C(x)), no memory: the baseline that stalls)."""

    def __post_init__(self) -> None:
        _check("algorithm.compression", self.compression in COMPRESSIONS, f"one of {', '.join(COMPRESSIONS)}",
               self.compression)
        _check("algorithm.compression_ratio", 0 < self.compression_ratio <= 1, "in (0, 1]", self.compression_ratio)
        _check("algorithm.levels", self.levels >= 1, ">= 1", self.levels)
        _check("algorithm.consensus_step", self.consensus_step is None or 0 < self.consensus_step <= 1,
               "in (0, 1]", self.consensus_step)
        _check("algorithm.compressed_gossip", self.compressed_gossip in ("choco", "naive"), "choco or naive",
               self.compressed_gossip)
        if self.compression != "none" and self.consensus_step is None:
            raise ConfigError(f"algorithm.consensus_step: compressed gossip (algorithm.compression = "
                              f"{self.compression!r}) needs its step size gamma in (0, 1], e.g. 0.05 for topk 1%, "
                              "0.1 for qsgd 4 bits (larger diverges, smaller is slow)")
        _check("algorithm.gossip_steps", self.gossip_steps >= 1, ">= 1", self.gossip_steps)
        _check("algorithm.participation", 0 < self.participation <= 1, "in (0, 1]", self.participation)
        _check("algorithm.beta", 0 <= self.beta < 1, "in [0, 1)", self.beta)
        _check("algorithm.server_lr", self.server_lr > 0, "> 0", self.server_lr)
        _check("algorithm.mofedsam_alpha", 0 < self.mofedsam_alpha <= 1, "in (0, 1]", self.mofedsam_alpha)


@dataclass(frozen=True)
class TopologyConfig:
    """The communication graph and its mixing matrix W (built in topologies/)."""

    name: str = "ring"
    mixing: str = "metropolis"
    p: Optional[float] = None
    """Edge probability (erdos_renyi) or rewiring probability (small_world)."""
    k: Optional[int] = None
    """Neighbours of the small-world ring lattice; models each client pulls per round
    (random_neighbors, default min(10, n - 1))."""
    d: Optional[int] = None
    """Degree of random_regular."""
    path: Optional[str] = None
    """Edge-list file for from_edgelist."""
    allow_disconnected: bool = False

    def params(self) -> dict[str, Any]:
        """Graph parameters that are set, as keyword arguments for topologies.build."""
        out = {k: getattr(self, k) for k in ("p", "k", "d", "path") if getattr(self, k) is not None}
        if self.allow_disconnected:
            out["allow_disconnected"] = True
        return out


@dataclass(frozen=True)
class EngineConfig:
    """Where the clients run."""

    backend: str = "vectorized"
    """vectorized (default), serial (reference loop), ray."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N."""
    chunk_size: int = 0
    """Clients per vmap chunk; 0 picks it from free memory."""
    threads: int = 0
    """torch intra-op threads; 0 = the CPUs this process may use (affinity mask, cgroup quota; dfl.cpus)."""
    strategy: str = "auto"
    """How the vectorized engine runs a chunk of clients: vmap (all at once, torch.func.vmap),
    sequential (one client after another, the same functional step on its rows of the bank), or
    auto (sequential when one client's step is large; dfl/engines/plan.py). Same numbers either
    way (to ~1e-6); the choice is printed and recorded in manifest.json."""
    precision: str = "fp32"
    """fp32; tf32 (CUDA matmuls and convolutions in TF32; no effect on CPU); bf16 (the forward
    under bf16 autocast; weights, optimizer state, descent and gossip stay fp32)."""
    # Ray backend (engine.backend = "ray")
    ray_address: str = ""
    """Address of an existing Ray cluster ("auto", "ray://host:10001", "127.0.0.1:6379"); empty starts a local Ray."""
    clients_per_actor: int = 0
    """Clients hosted by one actor; 0 spreads the clients evenly over the GPUs (or CPUs)."""
    gpus_per_actor: float = 0.0
    """GPUs per actor, fractions allowed (0.25 puts four actors on a GPU); 0 = auto (1 if GPUs exist)."""
    cpus_per_actor: float = 1.0
    """CPUs reserved per actor."""
    ray_num_cpus: int = 0
    """CPUs a local Ray may use (0 = all)."""

    def __post_init__(self) -> None:
        _check("engine.backend", self.backend in BACKENDS, f"one of {', '.join(BACKENDS)}", self.backend)
        dev_ok = self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")
        _check("engine.device", dev_ok, "auto, cpu, cuda, cuda:N or mps", self.device)
        _check("engine.chunk_size", self.chunk_size >= 0, ">= 0", self.chunk_size)
        _check("engine.threads", self.threads >= 0, ">= 0", self.threads)
        _check("engine.strategy", self.strategy in STRATEGIES, f"one of {', '.join(STRATEGIES)}", self.strategy)
        _check("engine.precision", self.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}", self.precision)
        _check("engine.clients_per_actor", self.clients_per_actor >= 0, ">= 0", self.clients_per_actor)
        _check("engine.gpus_per_actor", self.gpus_per_actor >= 0, ">= 0", self.gpus_per_actor)
        _check("engine.cpus_per_actor", self.cpus_per_actor > 0, "> 0", self.cpus_per_actor)
        _check("engine.ray_num_cpus", self.ray_num_cpus >= 0, ">= 0", self.ray_num_cpus)


BACKENDS = ("vectorized", "serial", "ray")
STRATEGIES = ("auto", "vmap", "sequential")
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class MetricsConfig:
    """Optional, costlier metrics."""

    sharpness_every: int = 0
    """Every k rounds: loss increase of the averaged model after one SAM ascent step (0 = off)."""
    checkpoint_every: int = 0
    """Write a checkpoint every N rounds; 0 (default) = by wall time: after the first round, then
    every checkpoint_minutes. Always at the end, and on SIGTERM / SIGINT."""
    checkpoint_minutes: float = 5.0
    """With checkpoint_every = 0: minutes of wall time between checkpoints (a killed run loses at most that)."""
    flatness_every: int = 0
    """Every k rounds: hessian_max_eig, hessian_trace and sharpness of the averaged model (0 = off)."""
    hessian_iters: int = 20
    """Power-iteration / Hutchinson iterations of the flatness metrics."""
    hessian_samples: int = 512
    """Training samples (fixed, seeded) the flatness metrics are computed on."""

    def __post_init__(self) -> None:
        _check("metrics.sharpness_every", self.sharpness_every >= 0, ">= 0", self.sharpness_every)
        _check("metrics.checkpoint_every", self.checkpoint_every >= 0, ">= 0", self.checkpoint_every)
        _check("metrics.checkpoint_minutes", self.checkpoint_minutes > 0, "> 0", self.checkpoint_minutes)
        _check("metrics.flatness_every", self.flatness_every >= 0, ">= 0", self.flatness_every)
        _check("metrics.hessian_iters", self.hessian_iters >= 1, ">= 1", self.hessian_iters)
        _check("metrics.hessian_samples", self.hessian_samples >= 1, ">= 1", self.hessian_samples)


@dataclass(frozen=True)
class FaultsConfig:
    """Faults to simulate (recorded per round in the metrics)."""

    dropout: float = 0.0
    """Probability that a client drops out of a round (does not train; still relays)."""
    link_failure: float = 0.0
    """Probability that an edge is down in a round (W rebuilt on the surviving graph)."""
    straggler: float = 0.0
    """Probability that a client straggles: it does a random fraction of its local steps."""
    on_nan: str = "stop"
    """NaN / Inf in a client's loss or model: "stop" (message, checkpoint kept) or "skip_client"
    (the client restarts from its neighbours' average)."""

    def __post_init__(self) -> None:
        for key in ("dropout", "link_failure", "straggler"):
            v = getattr(self, key)
            _check(f"faults.{key}", 0 <= v < 1, "in [0, 1)", v)
        _check("faults.on_nan", self.on_nan in ("stop", "skip_client"), '"stop" or "skip_client"', self.on_nan)


@dataclass(frozen=True)
class LoggingConfig:
    """Experiment trackers fed with every metrics row (all off by default; any combination).

    They are callbacks beside the run directory's writer (dfl/tracking.py), checked before a run
    starts: a tracker that is not installed or not reachable is a one-line error.
    """

    tensorboard: bool = False
    """TensorBoard event files in <run dir>/tensorboard: every metric as a scalar per round, the
    config as hyperparameters, the figures at the end (`pip install "dfl[tracking]"`)."""
    mlflow: str = ""
    """MLflow tracking URI ("file:///path/mlruns", "http://host:5000"); one MLflow run per dfl run
    (flattened config as params, metrics per round, files and figures as artifacts); empty = off."""
    wandb: str = ""
    """Weights & Biases: "offline" (files under <run dir>/wandb, `wandb sync` uploads them later)
    or "online"; empty = off."""
    wandb_project: str = "dfl"
    """W&B project of the runs."""
    wandb_group: str = ""
    """W&B group; empty = the sweep directory's name for the variants of a sweep, none for a run."""

    def __post_init__(self) -> None:
        _check("logging.wandb", self.wandb in WANDB_MODES, "one of " + ", ".join(map(repr, WANDB_MODES)),
               self.wandb)
        _check("logging.wandb_project", bool(self.wandb_project.strip()), "a non-empty name", self.wandb_project)
        _check("logging.mlflow", self.mlflow == self.mlflow.strip(), "a tracking URI without surrounding spaces",
               self.mlflow)


WANDB_MODES = ("", "offline", "online")


@dataclass(frozen=True)
class SystemConfig:
    """Simulated wall-clock time of a round from device speeds and link bandwidths (dfl/system.py;
    off by default). Every client and link draws its figures once from the counter stream
    rng.SYSTEM keyed by (seed, client) or (seed, edge): value = median * exp(spread * z), z ~ N(0, 1).

    Defaults resemble phones on Wi-Fi (docs/system.md): the compute figures are FedScale's
    lognormal device model (SymbioticLab/FedScale, ClientMetadata.get_completion_time_lognormal:
    0.005 s per sample x LogNormal(1, 0.6), median 13.6 ms = 74 samples/s, after PAPAYA, Huba et
    al. MLSys 2022); the link figures are round numbers for a home Wi-Fi uplink (20 Mbit/s, 30 ms),
    not a measurement of this project."""

    enabled: bool = False
    """Record sim_time_s (cumulative), sim_compute_s and sim_comm_s in every metrics row."""
    samples_per_s: float = 74.0
    """Median device's training throughput (forward + backward samples per second) for the run's
    model; set it for your model (FedScale's figure is for its image models)."""
    speed_spread: float = 0.6
    """Lognormal sigma of the clients' speeds (FedScale's tail_skew 0.6); 0 = identical devices."""
    bandwidth_mbps: float = 20.0
    """Median link bandwidth in Mbit/s (each link is dedicated: exchanges do not share it)."""
    bandwidth_spread: float = 0.5
    """Lognormal sigma of the links' bandwidths; 0 = identical links."""
    latency_ms: float = 30.0
    """Median one-way latency of a link in ms (each message pays it once)."""
    latency_spread: float = 0.3
    """Lognormal sigma of the links' latencies; 0 = identical links."""
    server_bandwidth_mbps: float = 0.0
    """Centralized baselines: bandwidth of the server's own link, shared by the clients in each
    direction (0 = unlimited: each client's own link, drawn as above, is the bottleneck)."""
    links_path: str = ""
    """Edge-list file "u v mbps ms" per line (# comments): these links take the given figures,
    the others are drawn."""
    trace_path: str = ""
    """File of per-client speeds (samples/s), one per line (# comments): client i takes line
    i mod (number of lines), as FedScale maps its device traces; replaces the drawn speeds."""

    def __post_init__(self) -> None:
        for key in ("samples_per_s", "bandwidth_mbps"):
            _check(f"system.{key}", getattr(self, key) > 0, "> 0", getattr(self, key))
        for key in ("speed_spread", "bandwidth_spread", "latency_spread", "latency_ms", "server_bandwidth_mbps"):
            _check(f"system.{key}", getattr(self, key) >= 0, ">= 0", getattr(self, key))


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    seed: int = 0
    rounds: int = 50
    eval_every: int = 1
    name: str = ""
    """Optional label of the run (defaults to one built from algorithm, topology and Q)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    system: SystemConfig = field(default_factory=SystemConfig)

    def __post_init__(self) -> None:
        _check("seed", self.seed >= 0, ">= 0", self.seed)
        _check("rounds", self.rounds >= 1, ">= 1", self.rounds)
        _check("eval_every", self.eval_every >= 1, ">= 1", self.eval_every)

    def replace(self, **changes: Any) -> "Config":
        """Copy with top-level fields or dotted keys changed: cfg.replace(**{"local.lr": 0.05})."""
        return from_dict(_set_dotted(to_dict(self), changes, "replace"), "replace")

    def label(self) -> str:
        """A short human label, e.g. 'DFedSAM, ring, Q=4'."""
        if self.name:
            return self.name
        algo = ALGO_LABELS.get(self.algorithm.name, self.algorithm.name)
        opt = self.local.optimizer
        if opt in OPTIMIZER_LABELS and "SAM" in algo:  # DFedSAM + asam = DFedASAM, FedSAM + tram = FedTRAM
            algo = algo.replace("SAM", OPTIMIZER_LABELS[opt], 1)
        elif opt and self.algorithm.name == "pooled":  # the one algorithm that takes any optimizer
            algo = f"{algo} ({opt})"
        if self.algorithm.name in CENTRALIZED:
            return algo
        label = f"{algo}, {self.topology.name}, Q={self.algorithm.gossip_steps}"
        a = self.algorithm
        if a.compression != "none":  # 'DFedSAM, ring, Q=4, topk 0.01' / ', qsgd s=7'
            param = {"topk": f" {a.compression_ratio:.3g}", "randomk": f" {a.compression_ratio:.3g}",
                     "qsgd": f" s={a.levels}"}.get(a.compression, "")
            label += f", {'naive ' if a.compressed_gossip == 'naive' else ''}{a.compression}{param}"
        return label


ALGO_LABELS = {
    "dpsgd": "D-PSGD", "dfedavg": "DFedAvg", "dfedavgm": "DFedAvgM", "dfedsam": "DFedSAM",
    "dfedsam_mgs": "DFedSAM-MGS", "fedavg": "FedAvg", "fedsam": "FedSAM", "mofedsam": "MoFedSAM",
    "pooled": "Pooled",
}
CENTRALIZED = ("fedavg", "fedsam", "mofedsam", "pooled")
#: SAM-family optimizers other than SAM itself, as they appear in labels (DFedSAM + asam = DFedASAM).
OPTIMIZER_LABELS = {"asam": "ASAM", "gsam": "GSAM", "saf": "SAF", "mesa": "MESA", "tram": "TRAM"}


# ---------------------------------------------------------------------------- loading

def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    tp = args[0] if args else tp
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce(path: str, tp: Any, value: Any) -> Any:
    """Check a TOML value against the field's annotated type (ints are accepted as floats)."""
    optional = type(None) in typing.get_args(tp)
    base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
    if value is None and optional:
        return None
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    elif base is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - all fields are scalars
        ok = True
    if not ok:
        raise ConfigError(f"{path}: must be {_type_name(tp)}, got {value!r}")
    return value


def _unknown_key(path: str, key: str, valid: list[str], source: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=2, cutoff=0.5)
    full = (lambda k: f"{path}.{k}") if path else (lambda k: k)
    hint = f" (did you mean {' or '.join(repr(full(c)) for c in close)}?)" if close else ""
    where = full(key)
    return ConfigError(f"{source}: unknown key {where!r}{hint}; valid keys: {', '.join(valid)}")


def _build(cls: type, raw: dict[str, Any], path: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise _unknown_key(path, key, list(fields), source)
        tp = hints[key]
        sub = f"{path}.{key}" if path else key
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{sub}: must be a table [{sub}], got {value!r}")
            kwargs[key] = _build(tp, value, sub, source)
        else:
            kwargs[key] = _coerce(sub, tp, value)
    return cls(**kwargs)


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build and validate a Config from a nested dict (as TOML gives)."""
    return _build(Config, raw, "", source)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested dict of a config; None values are dropped (TOML has no null)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        elif v is not None:
            out[f.name] = v
    return out


def parse_value(text: str) -> Any:
    """Parse an override's value as a TOML value; bare words are strings (ring, sam)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_dotted(raw: dict[str, Any], changes: dict[str, Any], source: str) -> dict[str, Any]:
    for key, value in changes.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: {key!r} is not a section key")
            node = child
        node[parts[-1]] = value
    return raw


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`--set section.key=value` strings -> {dotted key: value}."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. local.lr=0.05")
        out[key.strip()] = parse_value(text.strip())
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load a TOML config and apply dotted-key overrides (values already parsed)."""
    raw = read_toml(path)
    raw.pop("sweep", None)  # sweep-only table, see dfl.sweep
    if overrides:
        raw = _set_dotted(raw, dict(overrides), f"{path} (--set)")
    return from_dict(raw, str(path))


def dumps_toml(data: dict[str, Any]) -> str:
    """Write a nested dict of scalars / lists / tables as TOML (enough for configs)."""
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {fmt(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {fmt(vv)}" for kk, vv in v.items() if not isinstance(vv, dict)]
    return "\n".join(lines) + "\n"
