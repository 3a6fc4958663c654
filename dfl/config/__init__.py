"""Run configuration: nested frozen dataclasses loaded from TOML, with `--set` overrides.

Every field is validated on construction; a bad key, type or value raises ConfigError with
one line naming the key path, the value and what is allowed, e.g.
``local.lr: must be > 0, got -0.1``. Each field's docstring here is its documentation.

Modules: sections (data, model, local, algorithm, topology: what is computed), runtime (engine,
metrics, faults, logging, system: where and how it runs), loading (dicts, TOML, overrides).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, check
from . import loading
from .loading import build, canonical_key, dumps_toml, fold_sections, parse_value, set_dotted, to_dict
from .runtime import (BACKENDS, PRECISIONS, STRATEGIES, WANDB_MODES, EngineConfig, FaultsConfig, LoggingConfig,
                      MetricsConfig, SystemConfig)
from .sections import (AUGMENTS, COMPRESSIONS, SCHEDULES, AlgorithmConfig, DataConfig, LocalConfig, ModelConfig,
                       TopologyConfig)

__all__ = [
    "AUGMENTS", "BACKENDS", "COMPRESSIONS", "PRECISIONS", "SCHEDULES", "STRATEGIES", "WANDB_MODES",
    "AlgorithmConfig", "Config", "ConfigError", "DataConfig", "EngineConfig", "FaultsConfig", "LocalConfig",
    "LoggingConfig", "MetricsConfig", "ModelConfig", "SystemConfig", "TopologyConfig",
    "dumps_toml", "from_dict", "load_config", "parse_overrides", "parse_value", "read_toml", "to_dict",
]


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
        check("seed", self.seed >= 0, ">= 0", self.seed)
        check("rounds", self.rounds >= 1, ">= 1", self.rounds)
        check("eval_every", self.eval_every >= 1, ">= 1", self.eval_every)

    def replace(self, **changes: Any) -> "Config":
        """Copy with top-level fields or dotted keys changed: cfg.replace(**{"local.lr": 0.05})."""
        changes = {canonical_key(Config, k): v for k, v in changes.items()}
        return from_dict(set_dotted(to_dict(self), changes, "replace"), "replace")

    def label(self) -> str:
        """A short human label, e.g. 'DFedSAM, ring, Q=4' (the algorithm's and optimizer's labels
        come from their registered classes, dfl.methods)."""
        if self.name:
            return self.name
        from .. import methods

        algo = methods.method_label(self.algorithm.name, self.local.optimizer)
        if methods.is_centralized(self.algorithm.name):
            return algo
        label = f"{algo}, {self.topology.name}, Q={self.algorithm.gossip_steps}"
        a = self.algorithm
        if a.compression != "none":  # 'DFedSAM, ring, Q=4, topk 0.01' / ', qsgd s=7'
            param = {"topk": f" {a.compression_ratio:.3g}", "randomk": f" {a.compression_ratio:.3g}",
                     "qsgd": f" s={a.levels}"}.get(a.compression, "")
            label += f", {'naive ' if a.compressed_gossip == 'naive' else ''}{a.compression}{param}"
        return label


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build and validate a Config from a nested dict (as TOML gives)."""
    return build(Config, raw, "", source)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`--set section.key=value` strings -> {dotted key: value}; a parameter that has a flat key
    is set there ("local.params.rho" -> "local.rho"), so it replaces the file's value."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. local.lr=0.05")
        out[canonical_key(Config, key.strip())] = parse_value(text.strip())
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file as a nested dict (a missing or malformed file is a one-line
    ConfigError), each parameter in one home: a params-table entry that has a flat key is moved
    there ([local.params] rho -> [local] rho), so that `--set local.rho=...` replaces it."""
    raw = loading.read_toml(path)
    return fold_sections(Config, raw)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load a TOML config and apply dotted-key overrides (values already parsed)."""
    raw = read_toml(path)
    raw.pop("sweep", None)  # sweep-only table, see dfl.sweep
    if overrides:
        changes = {canonical_key(Config, k): v for k, v in overrides.items()}
        raw = set_dotted(raw, changes, f"{path} (--set)")
    return from_dict(raw, str(path))
