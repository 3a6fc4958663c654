"""Compressors of gossip messages: what a client sends instead of its full float32 row.

A compressor maps every row of an (n, d) tensor (one message per client) to the values the
receivers decode, batched over the rows (no loop over clients), and says exactly how many bytes
one compressed row takes on the wire (``row_bytes(d)``; every format here has a fixed size):

    none      x                                                          4 d
    topk      the k = max(1, round(ratio d)) entries of largest |x_j|    k (4 + b_idx)
    randomk   k entries drawn uniformly without replacement              k (4 + b_idx)
    qsgd      ||x|| sign(x_j) l_j / (s tau),  l_j in {0..s}              4 + ceil(d (1 + ceil(log2(s + 1))) / 8)
    sign      (||x||_1 / d) sign(x_j)                                    4 + ceil(d / 8)

b_idx: bytes of the smallest unsigned integer that holds d - 1 (1, 2, 4 or 8); values are float32.
QSGD (Alistarh et al., NeurIPS 2017) rounds s |x_j| / ||x|| up or down at random (unbiased) and
is scaled by 1 / tau, tau = 1 + min(d / s^2, sqrt(d) / s), to be a contraction as Choco-Gossip
needs (Koloskova et al., ICML 2019, arXiv 1902.00340, Sec. 5, "qsgd_s"); on the wire: the norm
and per entry a sign bit and the level in ceil(log2(s + 1)) bits. Random-k keeps the k entries
as they are (no d / k rescaling: the contraction of Choco's assumption); its indices are counted
as sent. Sign is the scaled sign of Karimireddy et al. (ICML 2019): the 1-norm and one bit per
entry (x_j >= 0 is +).

Randomness (random-k, QSGD) comes from counter streams keyed by (seed, round, gossip step,
client id, entry), the splitmix64 hash of dfl.rng computed in torch on the bank's device: a
client's message depends only on its row and its key, whichever engine, device or row order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import rng
from .config import COMPRESSIONS
from .errors import ConfigError

#: Bytes of one float32 value on the wire.
VALUE_BYTES = 4


# ---------------------------------------------------------------------------- random streams

def _signed(c: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _M1, _M2 = (_signed(int(c)) for c in (rng._GOLDEN, rng._M1, rng._M2))


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix_t(z: torch.Tensor) -> torch.Tensor:
    """dfl.rng._mix (splitmix64's finalizer) on int64 tensors; products wrap modulo 2^64."""
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def stream_bits(seed: int, round_: int, step: int, clients: np.ndarray, d: int,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """(len(clients), d) int64: the 64 random bits of entry j of client c's message at gossip step
    ``step`` of round ``round_``, dfl.rng._key(seed, COMPRESS, round_, step, c, j) bit for bit."""
    head = rng._key(seed, rng.COMPRESS, round_, step, np.asarray(clients, dtype=np.uint64))
    h = torch.from_numpy(np.ascontiguousarray(head, dtype=np.uint64).view(np.int64)).to(device)
    j = torch.arange(d, dtype=torch.int64, device=device)
    return _mix_t(h.view(-1, 1) + _GOLDEN + j.view(1, -1))


@dataclass(frozen=True)
class Key:
    """Where a batch of messages sits in the run: their random streams are (seed, round, step, client)."""

    seed: int
    round: int
    step: int
    clients: np.ndarray           # (n,) global client ids of the rows

    def bits(self, d: int, device: torch.device | str) -> torch.Tensor:
        return stream_bits(self.seed, self.round, self.step, self.clients, d, device)

    def uniforms(self, d: int, device: torch.device | str) -> torch.Tensor:
        """(n, d) float32 uniforms in [0, 1): the top 24 random bits, exact in float32."""
        return _srl(self.bits(d, device), 40).to(torch.float32) * (1.0 / (1 << 24))


# ---------------------------------------------------------------------------- compressors

def index_bytes(d: int) -> int:
    """Bytes of the smallest unsigned integer type that holds every index 0..d-1."""
    for b in (1, 2, 4):
        if d - 1 < 1 << (8 * b):
            return b
    return 8


@dataclass(frozen=True)
class Compressor:
    """One compression format (see the module docstring) with its parameter.

    Attributes:
        name: none, topk, randomk, qsgd, sign.
        ratio: fraction of the entries kept by topk / randomk, in (0, 1].
        levels: QSGD's s, the number of non-zero levels (>= 1).
    """

    name: str = "none"
    ratio: float = 0.01
    levels: int = 7

    def __post_init__(self) -> None:
        if self.name not in COMPRESSIONS:
            raise ConfigError(f"algorithm.compression: must be one of {', '.join(COMPRESSIONS)}, got {self.name!r}")

    def k(self, d: int) -> int:
        """Entries a sparse message keeps: max(1, round(ratio d)), at most d."""
        return min(d, max(1, int(round(self.ratio * d))))

    def level_bits(self) -> int:
        """Bits of one QSGD entry: a sign bit and the level 0..s."""
        return 1 + max(1, math.ceil(math.log2(self.levels + 1)))

    def row_bytes(self, d: int) -> int:
        """Exact bytes of one client's compressed message of d entries."""
        if self.name == "none":
            return VALUE_BYTES * d
        if self.name in ("topk", "randomk"):
            return self.k(d) * (VALUE_BYTES + index_bytes(d))
        if self.name == "qsgd":
            return VALUE_BYTES + math.ceil(d * self.level_bits() / 8)
        return VALUE_BYTES + math.ceil(d / 8)  # sign

    def ratio_achieved(self, d: int) -> float:
        """Bytes sent / bytes of the dense float32 row."""
        return self.row_bytes(d) / (VALUE_BYTES * d)

    def __call__(self, X: torch.Tensor, key: Key) -> torch.Tensor:
        """The decoded messages of the rows of X (n, d): what every receiver adds."""
        if self.name == "none":
            return X
        return self.decode(self.fields(X, key), X.shape[1])

    def fields(self, X: torch.Tensor, key: Key) -> dict[str, torch.Tensor]:
        """The content of the rows' messages, batched: topk / randomk {values, indices} (n, k);
        qsgd {norm (n, 1), negative (n, d) bool, level (n, d)}; sign {scale (n, 1), negative}."""
        if self.name == "none":
            return {"values": X}
        return _FIELDS[self.name](self, X, key)

    def decode(self, f: dict[str, torch.Tensor], d: int) -> torch.Tensor:
        """Rows (n, d) from their messages' fields."""
        if self.name in ("none",):
            return f["values"]
        if self.name in ("topk", "randomk"):
            v = f["values"]
            return torch.zeros(v.shape[0], d, dtype=v.dtype, device=v.device).scatter_(1, f["indices"], v)
        if self.name == "qsgd":
            s = self.levels
            tau = 1.0 + min(d / s ** 2, math.sqrt(d) / s)
            step = f["norm"] / (s * tau)
            return torch.where(f["negative"], -step, step) * f["level"]
        return torch.where(f["negative"], -f["scale"], f["scale"])

    # --- the wire format: numpy arrays whose bytes per row are row_bytes(d) ---------------------
    def encode(self, X: torch.Tensor, key: Key) -> dict[str, np.ndarray]:
        """The rows' messages as they travel (float32 values, uint indices, packed bits).

        >>> c = Compressor("topk", ratio=0.5); m = c.encode(torch.tensor([[1.0, -3.0, 0.5, 2.0]]), KEY0)
        >>> sum(a.nbytes for a in m.values()) == c.row_bytes(4)
        True
        """
        f = {k: v.detach().cpu() for k, v in self.fields(X, key).items()}
        d, n = X.shape[1], X.shape[0]
        if self.name in ("none", "topk", "randomk"):
            out = {"values": f["values"].to(torch.float32).numpy()}
            if self.name != "none":
                out["indices"] = f["indices"].numpy().astype(f"uint{8 * index_bytes(d)}")
            return out
        if self.name == "sign":
            return {"scale": f["scale"].to(torch.float32).numpy().reshape(n),
                    "bits": np.packbits(f["negative"].numpy(), axis=1)}
        width = self.level_bits() - 1
        level = f["level"].to(torch.int64).numpy()
        shifts = np.arange(width - 1, -1, -1)
        bits = np.concatenate([f["negative"].numpy()[:, :, None], (level[:, :, None] >> shifts) & 1], axis=2)
        return {"norm": f["norm"].to(torch.float32).numpy().reshape(n),
                "bits": np.packbits(bits.reshape(n, -1).astype(bool), axis=1)}

    def decode_wire(self, m: dict[str, np.ndarray], d: int) -> torch.Tensor:
        """Rows (n, d) float32 from encode()'s arrays: what a receiver reconstructs."""
        if self.name == "none":
            return torch.from_numpy(m["values"])
        if self.name in ("topk", "randomk"):
            f = {"values": torch.from_numpy(m["values"]), "indices": torch.from_numpy(m["indices"].astype(np.int64))}
        elif self.name == "sign":
            f = {"scale": torch.from_numpy(m["scale"]).view(-1, 1),
                 "negative": torch.from_numpy(np.unpackbits(m["bits"], axis=1, count=d).astype(bool))}
        else:
            b = self.level_bits()
            bits = np.unpackbits(m["bits"], axis=1, count=d * b).reshape(-1, d, b).astype(np.int64)
            level = (bits[:, :, 1:] << np.arange(b - 2, -1, -1)).sum(axis=2)
            f = {"norm": torch.from_numpy(m["norm"]).view(-1, 1), "negative": torch.from_numpy(bits[:, :, 0] == 1),
                 "level": torch.from_numpy(level).to(torch.float32)}
        return self.decode(f, d)


KEY0 = Key(0, 0, 0, np.zeros(1, dtype=np.int64))


def _topk(c: Compressor, X: torch.Tensor, key: Key) -> dict[str, torch.Tensor]:
    idx = torch.topk(X.abs(), c.k(X.shape[1]), dim=1, sorted=False).indices
    return {"values": X.gather(1, idx), "indices": idx}


def _randomk(c: Compressor, X: torch.Tensor, key: Key) -> dict[str, torch.Tensor]:
    # the k entries with the largest random keys: a uniform k-subset, independent per client
    idx = torch.topk(_srl(key.bits(X.shape[1], X.device), 1), c.k(X.shape[1]), dim=1, sorted=False).indices
    return {"values": X.gather(1, idx), "indices": idx}


def _qsgd(c: Compressor, X: torch.Tensor, key: Key) -> dict[str, torch.Tensor]:
    norm = torch.linalg.vector_norm(X, dim=1, keepdim=True)
    scaled = c.levels * X.abs() / norm.clamp_min(torch.finfo(X.dtype).tiny)
    low = scaled.floor()
    level = low + (key.uniforms(X.shape[1], X.device) < scaled - low).to(X.dtype)   # unbiased rounding
    level = level.clamp_(max=c.levels)   # s |x_j| / ||x|| may round above s
    return {"norm": norm, "negative": X < 0, "level": level}


def _sign(c: Compressor, X: torch.Tensor, key: Key) -> dict[str, torch.Tensor]:
    return {"scale": X.abs().mean(dim=1, keepdim=True), "negative": X < 0}


_FIELDS = {"topk": _topk, "randomk": _randomk, "qsgd": _qsgd, "sign": _sign}
