"""The sections of a run config that say what is computed: data, model, local training, the
algorithm and the topology. Each is a frozen dataclass validated on construction (dfl.errors.check).

Method and graph parameters have tables of their own, checked by the registry that owns the
name: [local.params] (the local optimizer's hyperparameters, dfl.optim), [topology.params] (the
graph family's, topologies) and [topology.mixing_params] (the mixing rule's). The parameters
that also have a flat key ([local] rho, [topology] k, ...) are kept there: a run's config.toml
names each parameter once, as before the tables existed.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from ..errors import ConfigError, check, require_in
from .loading import ParamTable

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
        check("data.num_clients", self.num_clients >= 1, ">= 1", self.num_clients)
        check("data.alpha", self.alpha > 0, "> 0", self.alpha)
        check("data.min_size", self.min_size >= 1, ">= 1", self.min_size)
        check("data.shards_per_client", self.shards_per_client >= 1, ">= 1", self.shards_per_client)
        check("data.quantity_sigma", self.quantity_sigma >= 0, ">= 0", self.quantity_sigma)
        check("data.test_fraction", 0 < self.test_fraction < 1, "in (0, 1)", self.test_fraction)
        check("data.holdout_fraction", 0 <= self.holdout_fraction < 1, "in [0, 1)", self.holdout_fraction)
        require_in("data.augment", self.augment, AUGMENTS)
        check("data.synthetic_alpha", self.synthetic_alpha >= 0, ">= 0", self.synthetic_alpha)
        check("data.synthetic_beta", self.synthetic_beta >= 0, ">= 0", self.synthetic_beta)
        check("data.synthetic_dim", self.synthetic_dim >= 1, ">= 1", self.synthetic_dim)
        check("data.synthetic_samples", self.synthetic_samples >= 2, ">= 2", self.synthetic_samples)


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
        check("model.hidden", self.hidden >= 1, ">= 1", self.hidden)
        check("model.groups", self.groups >= 1, ">= 1", self.groups)


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
    # The built-in methods' hyperparameters as flat keys; unset = the method's published default.
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
    params: Mapping[str, Any] = field(default_factory=ParamTable)
    """[local.params]: any hyperparameter of the local optimizer by its name in dfl.optim
    (`dfl.optim.hyperparameters(name)`: dampening, or those of a method added later); the names
    are checked against the optimizer the run trains with when the run is built."""

    #: Hyperparameters with a flat key above; [local.params] entries of these names move there.
    flat_params: ClassVar[tuple[str, ...]] = (
        "momentum", "nesterov", "weight_decay", "rho", "eta", "alpha", "rho_min", "adaptive_bias", "lam", "tau",
        "saf_epochs", "ema_decay", "warmup_steps", "warmup_rounds")

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", ParamTable(self.params))  # a dict given in Python, too
        check("local.lr", self.lr > 0, "> 0", self.lr)
        check("local.lr_decay", 0 < self.lr_decay <= 1, "in (0, 1]", self.lr_decay)
        check("local.momentum", 0 <= self.momentum < 1, "in [0, 1)", self.momentum)
        check("local.weight_decay", self.weight_decay >= 0, ">= 0", self.weight_decay)
        check("local.local_steps", self.local_steps >= 1, ">= 1", self.local_steps)
        if self.local_epochs is not None:
            check("local.local_epochs", self.local_epochs > 0, "> 0", self.local_epochs)
        check("local.batch_size", self.batch_size >= 1, ">= 1", self.batch_size)
        check("local.clip_grad_norm", self.clip_grad_norm >= 0, ">= 0 (0 = off)", self.clip_grad_norm)
        for key, ok, allowed in (("rho", lambda v: v >= 0, ">= 0"), ("eta", lambda v: v >= 0, ">= 0"),
                                 ("alpha", lambda v: v >= 0, ">= 0"), ("lam", lambda v: v >= 0, ">= 0"),
                                 ("tau", lambda v: v > 0, "> 0"), ("saf_epochs", lambda v: v >= 1, ">= 1"),
                                 ("ema_decay", lambda v: 0 <= v < 1, "in [0, 1)"),
                                 ("rho_min", lambda v: v >= 0, ">= 0"), ("warmup_rounds", lambda v: v >= 0, ">= 0"),
                                 ("warmup_steps", lambda v: v >= 0, ">= 0")):
            value = getattr(self, key)
            if value is not None:
                check(f"local.{key}", ok(value), allowed, value)
        require_in("local.schedule", self.schedule, SCHEDULES)


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
        require_in("algorithm.compression", self.compression, COMPRESSIONS)
        check("algorithm.compression_ratio", 0 < self.compression_ratio <= 1, "in (0, 1]", self.compression_ratio)
        check("algorithm.levels", self.levels >= 1, ">= 1", self.levels)
        check("algorithm.consensus_step", self.consensus_step is None or 0 < self.consensus_step <= 1,
               "in (0, 1]", self.consensus_step)
        require_in("algorithm.compressed_gossip", self.compressed_gossip, ("choco", "naive"), "choco or naive")
        if self.compression != "none" and self.consensus_step is None:
            raise ConfigError(f"algorithm.consensus_step: compressed gossip (algorithm.compression = "
                              f"{self.compression!r}) needs its step size gamma in (0, 1], e.g. 0.05 for topk 1%, "
                              "0.1 for qsgd 4 bits (larger diverges, smaller is slow)")
        check("algorithm.gossip_steps", self.gossip_steps >= 1, ">= 1", self.gossip_steps)
        check("algorithm.participation", 0 < self.participation <= 1, "in (0, 1]", self.participation)
        check("algorithm.beta", 0 <= self.beta < 1, "in [0, 1)", self.beta)
        check("algorithm.server_lr", self.server_lr > 0, "> 0", self.server_lr)
        check("algorithm.mofedsam_alpha", 0 < self.mofedsam_alpha <= 1, "in (0, 1]", self.mofedsam_alpha)


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
    params: Mapping[str, Any] = field(default_factory=ParamTable)
    """[topology.params]: the graph family's parameters by name (torus / grid rows, cols; ring
    lattice k, p; ...: `dfl topo --list`), checked by topologies.build; p, k, d, path above are
    the same parameters given flat."""
    mixing_params: Mapping[str, Any] = field(default_factory=ParamTable)
    """[topology.mixing_params]: the mixing rule's parameters (laplacian a, fastest_mixing iters),
    checked by topologies.mixing_matrix."""

    #: Graph parameters with a flat key above; [topology.params] entries of these names move there.
    flat_params: ClassVar[tuple[str, ...]] = ("p", "k", "d", "path")

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", ParamTable(self.params))  # dicts given in Python, too
        object.__setattr__(self, "mixing_params", ParamTable(self.mixing_params))

    def graph_params(self) -> dict[str, Any]:
        """Graph parameters that are set (flat keys and [topology.params]), as keyword arguments
        for topologies.build / build_sequence."""
        out = {k: getattr(self, k) for k in self.flat_params if getattr(self, k) is not None}
        out.update(self.params)
        if self.allow_disconnected:
            out["allow_disconnected"] = True
        return out


