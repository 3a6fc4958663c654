"""Row e of `dfl bench`: end-to-end FedAvg, `dfl run` vs Flower's simulation; Ray vs vectorized."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

E_CONFIG = """
seed = 0
rounds = {rounds}
[data]
name = "digits"
num_clients = {clients}
partition = "iid"
min_size = 1
[model]
name = "mlp"
[local]
local_steps = 5
batch_size = 32
[algorithm]
name = "fedavg"
[engine]
backend = "{backend}"
"""


def _dfl_run(cfg_text: str, tmp: Path, name: str) -> dict[str, Any]:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(cfg_text)
    out = tmp / name
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dfl", "run", str(cfg), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # steady state, as for Flower: the mean round after the first (which holds the warm-up)
    walls = [r["wall_s"] for r in rows]
    per_round = (walls[-1] - walls[0]) / (len(walls) - 1) if len(walls) > 1 else walls[0]
    return {"end_to_end_s": total, "per_round_s": per_round, "first_round_s": walls[0],
            "final_acc": rows[-1]["test_acc"]}


def row_e(sizes: Any) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for backend in ("vectorized", "ray"):
            text = E_CONFIG.format(rounds=sizes.flower_rounds, clients=sizes.clients, backend=backend)
            rows.append({"what": f"dfl run ({backend})", **_dfl_run(text, tmp, backend)})
        try:
            from .flower import flower_simulation_time
        except ImportError:
            rows.append({"what": "flower simulation", "error": "dfl.flower not available"})
        else:
            text = E_CONFIG.format(rounds=sizes.flower_rounds, clients=sizes.clients, backend="vectorized")
            rows.append({"what": "flower simulation", **flower_simulation_time(text, tmp)})
    base = rows[0].get("end_to_end_s")
    base_round = rows[0].get("per_round_s")
    for r in rows:
        if base and r.get("end_to_end_s"):
            r["x_of_dfl_end_to_end"] = r["end_to_end_s"] / base
        if base_round and r.get("per_round_s"):
            r["x_of_dfl_per_round"] = r["per_round_s"] / base_round
    return rows
