"""The sections of a run config that say where and how a run executes and what it records:
engine, metrics, faults, logging and the simulated system. Frozen dataclasses validated on
construction (dfl.errors.check), like dfl.config.sections.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import check, require_in

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
        require_in("engine.backend", self.backend, BACKENDS)
        dev_ok = self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")
        check("engine.device", dev_ok, "auto, cpu, cuda, cuda:N or mps", self.device)
        check("engine.chunk_size", self.chunk_size >= 0, ">= 0", self.chunk_size)
        check("engine.threads", self.threads >= 0, ">= 0", self.threads)
        require_in("engine.strategy", self.strategy, STRATEGIES)
        require_in("engine.precision", self.precision, PRECISIONS)
        check("engine.clients_per_actor", self.clients_per_actor >= 0, ">= 0", self.clients_per_actor)
        check("engine.gpus_per_actor", self.gpus_per_actor >= 0, ">= 0", self.gpus_per_actor)
        check("engine.cpus_per_actor", self.cpus_per_actor > 0, "> 0", self.cpus_per_actor)
        check("engine.ray_num_cpus", self.ray_num_cpus >= 0, ">= 0", self.ray_num_cpus)


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
        check("metrics.sharpness_every", self.sharpness_every >= 0, ">= 0", self.sharpness_every)
        check("metrics.checkpoint_every", self.checkpoint_every >= 0, ">= 0", self.checkpoint_every)
        check("metrics.checkpoint_minutes", self.checkpoint_minutes > 0, "> 0", self.checkpoint_minutes)
        check("metrics.flatness_every", self.flatness_every >= 0, ">= 0", self.flatness_every)
        check("metrics.hessian_iters", self.hessian_iters >= 1, ">= 1", self.hessian_iters)
        check("metrics.hessian_samples", self.hessian_samples >= 1, ">= 1", self.hessian_samples)


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
            check(f"faults.{key}", 0 <= v < 1, "in [0, 1)", v)
        require_in("faults.on_nan", self.on_nan, ("stop", "skip_client"), '"stop" or "skip_client"')


@dataclass(frozen=True)
class LoggingConfig:
    """Experiment trackers fed with every metrics row (all off by default; any combination).

    They are callbacks beside the run directory's writer (dfl.tracking), checked before a run
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
        require_in("logging.wandb", self.wandb, WANDB_MODES, "one of " + ", ".join(map(repr, WANDB_MODES)))
        check("logging.wandb_project", bool(self.wandb_project.strip()), "a non-empty name", self.wandb_project)
        check("logging.mlflow", self.mlflow == self.mlflow.strip(), "a tracking URI without surrounding spaces",
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
            check(f"system.{key}", getattr(self, key) > 0, "> 0", getattr(self, key))
        for key in ("speed_spread", "bandwidth_spread", "latency_spread", "latency_ms", "server_bandwidth_mbps"):
            check(f"system.{key}", getattr(self, key) >= 0, ">= 0", getattr(self, key))
