"""Flat parameter rows <-> Flower records.

A model travels as an ArrayRecord of named float32 arrays (the model's parameter names, in
dfl.bank.Layout order), so Flower's FedAvg averages it key by key. Message keys used by the
dfl apps are collected here.
"""
from __future__ import annotations

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
