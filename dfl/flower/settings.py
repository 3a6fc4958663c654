"""One config, two ways to run it: the dfl Config of a Flower run and the node's identity.

The Flower run config (``[tool.flwr.app.config]`` in pyproject.toml, overridden with
``flwr run . --run-config 'config="experiments/flower_quickstart.toml" set="rounds=3"'``) holds:

    config     path of a dfl TOML config (the one `dfl run` takes)
    set        space-separated dotted overrides, as `dfl run --set` (e.g. "rounds=3 local.lr=0.05")
    out        run directory the ServerApp writes (metrics.jsonl, summary.json, ...)
    overwrite  replace an existing, non-empty run directory
    timeout    seconds the ServerApp waits for the nodes' replies in one exchange
    min-nodes  fewest nodes the run goes on with when nodes are lost (0: a majority;
               dfl.flower.tolerant)

Both the ServerApp and the ClientApp build the same Config from these keys with
dfl.config.load_config (via dfl.sweep.load, to reject list-valued sweep configs clearly); the
ClientApp also applies the client count the ServerApp settled on (dfl.flower.federation: a
simulation federation's size, when the run config leaves data.num_clients open).
A relative config path is looked up in the working directory, then in the app's directory.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from ..config import Config, parse_overrides
from ..errors import ConfigError

#: The app's root: the repository checkout, or the installed FAB holding dfl/ and experiments/.
APP_ROOT = Path(__file__).resolve().parents[2]

#: Algorithms whose server side is Flower's FedAvg / FedAvgM strategy.
STRATEGY_ALGORITHMS = ("fedavg", "fedsam", "mofedsam")


def _find(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return APP_ROOT / p


@lru_cache(maxsize=8)
def _load(path: str, overrides: str) -> Config:
    from .. import sweep

    items = shlex.split(overrides)
    axes, variants = sweep.load(_find(path), parse_overrides(items))
    if axes:
        keys = ", ".join(axes)
        first = next(iter(axes))
        raise ConfigError(f"{path}: list-valued keys ({keys}) describe a sweep; a Flower run is one "
                          f"experiment, pick one with set=\"{first}={axes[first][0]!r}\"")
    return check_supported(variants[0].config)


def run_config(raw: Mapping[str, Any], num_clients: int | None = None) -> Config:
    """The dfl Config of a Flower run from its run config (keys: config, set).

    Args:
        raw: the run config.
        num_clients: data.num_clients decided by the ServerApp (dfl.flower.federation: the size
            of a simulation federation, when the run config leaves it open); None: the config's.
    """
    path = str(raw.get("config", "") or "")
    if not path:
        raise ConfigError('run config: key "config" (path of a dfl TOML config) is empty; '
                          "pass --run-config 'config=\"experiments/flower_quickstart.toml\"'")
    overrides = str(raw.get("set", "") or "")
    if num_clients is not None and num_clients != _load(path, overrides).data.num_clients:
        overrides = f"{overrides} data.num_clients={int(num_clients)}"
    return _load(path, overrides)


@lru_cache(maxsize=1)
def default_run_config() -> dict[str, Any]:
    """[tool.flwr.app.config] of the app's pyproject.toml (empty if it cannot be read)."""
    import tomllib

    try:
        raw = tomllib.loads((APP_ROOT / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return dict(raw.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {}))


def leaves_num_clients_open(raw: Mapping[str, Any]) -> bool:
    """True when the user chose no client count: the run config names the app's default dfl
    config and its `set` does not override data.num_clients."""
    default = default_run_config().get("config")
    items = shlex.split(str(raw.get("set", "") or ""))
    return bool(default) and str(raw.get("config", "")) == default and \
        not any(item.split("=", 1)[0].strip() == "data.num_clients" for item in items)


def check_supported(cfg: Config) -> Config:
    """Reject what the Flower runtime does not do (yet), with a one-line reason."""
    from ..algorithms import ALGORITHMS
    from ..simulation import resolve

    cfg = resolve(cfg)
    name = cfg.algorithm.name
    if ALGORITHMS[name].centralized and name not in STRATEGY_ALGORITHMS:
        raise ConfigError(f"algorithm.name: {name!r} is not available through Flower "
                          f"(centralized ones are {', '.join(STRATEGY_ALGORITHMS)}); use `dfl run`")
    faults = cfg.faults
    if faults.dropout or faults.link_failure or faults.straggler:
        raise ConfigError("faults: simulated faults are a `dfl run` feature; on Flower, real nodes fail "
                          "for real (set faults.dropout, link_failure and straggler to 0)")
    return cfg


@dataclass(frozen=True)
class Node:
    """Which client of the federation a SuperNode is, and where its data lives."""

    client_id: int
    data_dir: str = ""
    """Directory holding this client's exported shard (`python -m dfl.flower.shards`)."""
    data_root: str = ""
    """Overrides data.root: where the full dataset's files are on this device."""


def node_identity(node_config: Mapping[str, Any], cfg: Config) -> Node:
    """partition-id / num-partitions (simulation or --node-config) and the data location keys."""
    n = cfg.data.num_clients
    if "partition-id" not in node_config:
        raise ConfigError("node config: no partition-id; start the SuperNode with "
                          f"--node-config 'partition-id=<0..{n - 1}> num-partitions={n}'")
    pid = int(node_config["partition-id"])
    parts = int(node_config.get("num-partitions", n))
    if parts != n:
        raise ConfigError(f"node config: num-partitions={parts} but data.num_clients={n}; "
                          "run one SuperNode per client (or set data.num_clients)")
    if not 0 <= pid < n:
        raise ConfigError(f"node config: partition-id must be in [0, {n - 1}], got {pid}")
    return Node(pid, str(node_config.get("data-dir", "") or ""), str(node_config.get("data-root", "") or ""))
