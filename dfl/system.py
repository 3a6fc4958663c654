"""The system model ([system] in the config): simulated wall-clock time of every round.

A synchronous round has barriers: every active client trains, then the Q gossip steps run one
after another, each waiting for its slowest exchange. So, for round t::

    compute_t = max_{i active} K_i * B * passes / speed_i            (0 when nobody trains)
    comm_t    = Q * max_{(u, v) in G_t} (latency_uv + message_bits / bandwidth_uv)     (gossip)
              = up + down, each max_{i active} (latency_i + model_bits / bandwidth_i),
                and at least m * model_bits / server_bandwidth when that is set   (centralized)
    sim_time_s = sum over rounds of compute_t + comm_t

K_i is the client's local steps this round (a straggler's fewer ones, faults.straggler), B the
batch, message_bits the bits of one gossip message (the compressed payload with
algorithm.compression: Gossip.message_bytes), G_t the round's graph after link failures. Dropped
and non-participating clients do not compute but still relay (W is applied to every row), so
every live edge carries a message in every gossip step. Links are dedicated (a client's Q x
degree messages do not share bandwidth); the centralized phases (download, train, upload) are
barriers too, an upper bound on a pipelined server.

passes: forward-backward passes per local step, a forward counted as 1/3 of a forward-backward
(the backward costs about two forwards: FedScale's augmentation_factor = 3; Kaplan et al. 2020's
2N / 6N FLOPs per token): SGD 1; SAM, ASAM, GSAM 2 (gradients at w and at w + e); TRAM 2 + 1/3
(SAM plus the reference model's forward for its radius); SAF 1 (the KL target is stored, the
outputs are those of the step's own forward); MESA 1 + 1/3 (the EMA teacher's forward).

Draws: value = median * exp(spread * z), z ~ N(0, 1) by Box-Muller from rng.uniform on stream
rng.SYSTEM, "round" slot CLIENTS (speed of client i, key i), LINKS (link {u, v}, key
min * n + max; both directions of a link share it) or SERVER (client i's link to the server).
The draws depend only on the seed and the id: the same on every engine and after --resume.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import networkx as nx
import numpy as np

from . import rng
from .config import SystemConfig
from .errors import ConfigError

#: Forward-backward passes per local step of each optimizer (see the module docstring).
FORWARD = 1.0 / 3.0
PASSES = {"sgd": 1.0, "sam": 2.0, "asam": 2.0, "gsam": 2.0, "tram": 2.0 + FORWARD, "saf": 1.0,
          "mesa": 1.0 + FORWARD}
#: "round" slots of the rng.SYSTEM stream.
CLIENTS, LINKS, SERVER = 0, 1, 2


def lognormal(seed: int, slot: int, ids: np.ndarray, median: float, spread: float,
              column: int = 0) -> np.ndarray:
    """median * exp(spread * z) per id; z the column-th (0 or 1) normal of the id's Box-Muller pair."""
    ids = np.asarray(ids, dtype=np.uint64).reshape(-1)
    if spread == 0 or ids.size == 0:
        return np.full(ids.size, float(median))
    u = rng.uniform(seed, rng.SYSTEM, slot, ids, 2)
    r = np.sqrt(-2.0 * np.log1p(-u[:, 0]))                    # 1 - u in (0, 1]: finite
    z = r * (np.cos if column == 0 else np.sin)(2 * np.pi * u[:, 1])
    return median * np.exp(spread * z)


def passes_per_step(optimizer: str) -> float:
    """Forward-backward passes of one local step of `optimizer` (unknown names: 1)."""
    return PASSES.get(optimizer, 1.0)


def compute_time(steps: np.ndarray, batch: int, passes: float, speeds: np.ndarray,
                 active: np.ndarray) -> float:
    """max over active clients of steps_i * batch * passes / speed_i (seconds; 0 if none)."""
    active = np.asarray(active, dtype=bool)
    if not active.any():
        return 0.0
    t = np.asarray(steps, dtype=np.float64) * batch * passes / np.asarray(speeds, dtype=np.float64)
    return float(t[active].max())


def gossip_time(gossip_steps: int, message_bytes: float, bandwidth_mbps: np.ndarray,
                latency_ms: np.ndarray) -> float:
    """Q * max over links of (latency + bits / bandwidth) (seconds; 0 without links)."""
    bw = np.asarray(bandwidth_mbps, dtype=np.float64)
    if bw.size == 0:
        return 0.0
    per_link = np.asarray(latency_ms, dtype=np.float64) / 1e3 + 8.0 * message_bytes / (bw * 1e6)
    return float(gossip_steps * per_link.max())


def server_time(model_bytes: float, bandwidth_mbps: np.ndarray, latency_ms: np.ndarray,
                active: np.ndarray, server_bandwidth_mbps: float = 0.0) -> float:
    """Download then upload of the model by every active client: 2 * max_i (latency_i + bits /
    bandwidth_i), each direction at least m * bits / server bandwidth when that is > 0."""
    active = np.asarray(active, dtype=bool)
    m = int(active.sum())
    if m == 0:
        return 0.0
    bits = 8.0 * model_bytes
    one_way = float((np.asarray(latency_ms)[active] / 1e3 + bits / (np.asarray(bandwidth_mbps)[active] * 1e6)).max())
    if server_bandwidth_mbps > 0:
        one_way = max(one_way, m * bits / (server_bandwidth_mbps * 1e6))
    return 2.0 * one_way


# ---------------------------------------------------------------------------- files


def _rows(path: str, key: str, width: int) -> list[tuple[int, list[float]]]:
    """(line number, numbers) of a whitespace- or comma-separated file, # comments skipped."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"system.{key}: file not found: {p}")
    out = []
    for no, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
        text = line.split("#", 1)[0].replace(",", " ").split()
        if not text:
            continue
        try:
            nums = [float(x) for x in text]
        except ValueError:
            nums = []
        if len(nums) != width or not all(math.isfinite(v) for v in nums):
            raise ConfigError(f"system.{key}: {p} line {no}: expected {width} number(s), got {line.strip()!r}")
        out.append((no, nums))
    if not out:
        raise ConfigError(f"system.{key}: {p} holds no entries")
    return out


def read_trace(path: str, n: int) -> np.ndarray:
    """(n,) speeds from a trace file: client i takes entry i mod len (all > 0)."""
    rows = _rows(path, "trace_path", 1)
    for no, (v,) in rows:
        if v <= 0:
            raise ConfigError(f"system.trace_path: {path} line {no}: a speed must be > 0 samples/s, got {v:g}")
    speeds = np.array([r[1][0] for r in rows])
    return speeds[np.arange(n) % len(speeds)]


def read_links(path: str, n: int) -> dict[int, tuple[float, float]]:
    """{min * n + max: (Mbit/s, ms)} from an edge-list file "u v mbps ms"."""
    out = {}
    for no, (u, v, mbps, ms) in _rows(path, "links_path", 4):
        if not (u.is_integer() and v.is_integer() and 0 <= u < n and 0 <= v < n and u != v):
            raise ConfigError(f"system.links_path: {path} line {no}: nodes must be two different "
                              f"integers in [0, {n}), got {u:g} {v:g}")
        if mbps <= 0 or ms < 0:
            raise ConfigError(f"system.links_path: {path} line {no}: need Mbit/s > 0 and ms >= 0, "
                              f"got {mbps:g} {ms:g}")
        a, b = sorted((int(u), int(v)))
        out[a * n + b] = (mbps, ms)
    return out


# ---------------------------------------------------------------------------- the model of a run


class SystemModel:
    """Per-client speeds and per-link figures of a run; `round` gives a round's simulated times."""

    def __init__(self, cfg: SystemConfig, seed: int, n: int, batch: int, optimizer: str,
                 centralized: bool, model_bytes: int, message_bytes: int, gossip_steps: int):
        self.cfg, self.seed, self.n, self.batch = cfg, seed, n, batch
        self.passes = passes_per_step(optimizer)
        self.centralized, self.gossip_steps = centralized, gossip_steps
        self.model_bytes, self.message_bytes = model_bytes, message_bytes
        ids = np.arange(n)
        self.speeds = (read_trace(cfg.trace_path, n) if cfg.trace_path
                       else lognormal(seed, CLIENTS, ids, cfg.samples_per_s, cfg.speed_spread))
        self.links = read_links(cfg.links_path, n) if cfg.links_path else {}
        if centralized:
            self.up_mbps = lognormal(seed, SERVER, ids, cfg.bandwidth_mbps, cfg.bandwidth_spread, 0)
            self.up_ms = lognormal(seed, SERVER, ids, cfg.latency_ms, cfg.latency_spread, 1)
        self.elapsed = 0.0
        self._comm: tuple[Any, float] = (None, 0.0)   # (graph, its gossip time): static graphs

    def link_figures(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Mbit/s, ms) of the links keyed min * n + max: from links_path, else drawn."""
        keys = np.asarray(keys, dtype=np.int64)
        mbps = lognormal(self.seed, LINKS, keys, self.cfg.bandwidth_mbps, self.cfg.bandwidth_spread, 0)
        ms = lognormal(self.seed, LINKS, keys, self.cfg.latency_ms, self.cfg.latency_spread, 1)
        for j, k in enumerate(keys.tolist() if self.links else ()):
            if k in self.links:
                mbps[j], ms[j] = self.links[k]
        return mbps, ms

    def edge_keys(self, G: nx.Graph) -> np.ndarray:
        e = np.array([(a, b) for a, b in G.edges() if a != b], dtype=np.int64).reshape(-1, 2)
        return np.unique(e.min(1) * self.n + e.max(1))

    def comm_time(self, G: Optional[nx.Graph], active: np.ndarray) -> float:
        """Seconds of the round's exchange (see the module docstring)."""
        if self.centralized:
            return server_time(self.model_bytes, self.up_mbps, self.up_ms, active, self.cfg.server_bandwidth_mbps)
        if G is None:
            return 0.0
        if self._comm[0] is not G:
            self._comm = (G, gossip_time(self.gossip_steps, self.message_bytes, *self.link_figures(self.edge_keys(G))))
        return self._comm[1]

    def round(self, active: np.ndarray, steps: np.ndarray, G: Optional[nx.Graph]) -> dict[str, float]:
        """Advance the clock by one round; the metrics row's sim_time_s, sim_compute_s, sim_comm_s."""
        comp = compute_time(steps, self.batch, self.passes, self.speeds, active)
        comm = self.comm_time(G, active)
        self.elapsed += comp + comm
        return {"sim_time_s": self.elapsed, "sim_compute_s": comp, "sim_comm_s": comm}

    def state_dict(self) -> dict[str, float]:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state: Optional[dict[str, float]]) -> None:
        self.elapsed = float((state or {}).get("elapsed", 0.0))


def from_parts(parts: Any) -> Optional[SystemModel]:
    """The run's SystemModel (dfl.simulation.Parts) when [system] is enabled, else None."""
    cfg, algo = parts.cfg, parts.algo
    if not cfg.system.enabled:
        return None
    return SystemModel(cfg.system, cfg.seed, algo.n, parts.batch, cfg.local.optimizer, algo.centralized,
                       parts.model_bytes, algo.message_bytes(parts.model_bytes), cfg.algorithm.gossip_steps)
