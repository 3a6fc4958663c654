"""Flat parameter rows <-> Flower records.

A model travels as an ArrayRecord of named float32 arrays (the model's parameter names, in
dfl.bank.Layout order), so Flower's FedAvg averages it key by key. Message keys used by the
dfl apps are collected here. Compressed gossip (dfl.flower.choco_node / choco_relay) sends
flat rows instead: a message is an ArrayRecord of the arrays of dfl.compression's wire format
(``payload``), a public copy x_hat_j one flat float32 array (``row_record``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from ..bank import Layout

ARRAYS = "arrays"            # the model (FedAvg's arrayrecord_key)
CONFIG = "config"            # per-round settings (FedAvg's configrecord_key)
METRICS = "metrics"          # a reply's MetricRecord
CORRECTION = "correction"    # MoFedSAM: the per-step direction Delta (ArrayRecord)
WEIGHT = "client-weight"     # uniform client weight: dfl averages clients with equal weights
STATE = "dfl"                # the node's context.state record (ConfigRecord) key
MODEL_STATE = "dfl-model"    # the node's current model (ArrayRecord) in context.state
MIX_STATE = "dfl-mix"        # the vector being gossiped this round (ArrayRecord) in context.state
DELTA_STATE = "dfl-delta"    # D-PSGD: the local update added back after mixing (ArrayRecord)
PAYLOAD = "payload"          # compressed gossip: a node's message of one step (ArrayRecord, wire format)
XHAT_STATE = "dfl-xhat"      # compressed gossip: the node's public copies {"self", "<j>": flat row}
SENT_STATE = "dfl-sent"      # compressed gossip: the node's last message, applied at the next mix


def to_record(layout: Layout, row: torch.Tensor) -> ArrayRecord:
    """A flat (d,) row as an ArrayRecord {param name: float32 array}."""
    parts = layout.unflatten(row.detach().reshape(1, -1).cpu().float())
    return ArrayRecord({k: Array(np.ascontiguousarray(v[0].numpy())) for k, v in parts.items()})


def from_record(layout: Layout, rec: ArrayRecord) -> torch.Tensor:
    """An ArrayRecord written by to_record (or averaged by a strategy) back to a flat (d,) row."""
    missing = [n for n in layout.names if n not in rec]
    if missing:
        raise ValueError(f"ArrayRecord lacks parameters {missing[:3]}: model mismatch between nodes")
    return torch.cat([torch.from_numpy(np.asarray(rec[n].numpy(), dtype=np.float32)).reshape(-1)
                      for n in layout.names])


def config_of(content: RecordDict) -> dict[str, Any]:
    """The message's ConfigRecord as a plain dict (empty if absent)."""
    return dict(content.config_records.get(CONFIG, ConfigRecord()))


def payload(m: dict[str, np.ndarray]) -> ArrayRecord:
    """A compressed message (dfl.compression.Compressor.encode's arrays) as an ArrayRecord."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in m.items()})


def unpayload(rec: ArrayRecord) -> dict[str, np.ndarray]:
    """payload()'s arrays back, for Compressor.decode_wire."""
    return {k: rec[k].numpy() for k in rec.keys()}


def nbytes(rec: ArrayRecord) -> int:
    """Bytes of the record's array data (what comm_mb counts; Flower's framing excluded)."""
    return sum(np.dtype(a.dtype).itemsize * math.prod(a.shape) for a in rec.values())


def flat(rec: ArrayRecord) -> torch.Tensor:
    """The record's arrays as one flat float32 (d,) row, in the record's order (to_record's
    layout order: records keep their key order over the wire)."""
    return torch.cat([torch.from_numpy(np.asarray(rec[k].numpy(), dtype=np.float32)).reshape(-1) for k in rec.keys()])


def like(template: ArrayRecord, row: torch.Tensor) -> ArrayRecord:
    """A flat row as an ArrayRecord with the names and shapes of `template` (flat()'s inverse)."""
    out, at = {}, 0
    for k in template.keys():
        shape = tuple(template[k].shape)
        size = math.prod(shape)
        out[k] = Array(np.ascontiguousarray(row[at:at + size].reshape(shape).numpy()))
        at += size
    return ArrayRecord(out)


def row_record(row: torch.Tensor) -> ArrayRecord:
    """A flat row (a public copy x_hat_j) as an ArrayRecord of one float32 array."""
    return ArrayRecord({"row": Array(np.ascontiguousarray(row.detach().cpu().float().numpy()))})
