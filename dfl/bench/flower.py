"""Row e of `dfl bench`: one dfl config as a Flower simulation, timed end to end and per round.

Runs, from the project root (the Flower app of pyproject.toml) in a subprocess,

    flwr run . local --stream --run-config 'config="<cfg>" out="<tmp>/run"' \\
        --federation-config "num-supernodes=<data.num_clients> client-resources-num-cpus=1"

with a private FLWR_HOME and private local-SuperLink ports (FLWR_LOCAL_SUPERLINK_HTTP_API_PORT,
FLWR_LOCAL_CONTROL_API_PORT: free ones), so it never meets another local SuperLink. `flwr run .
local` starts a simulation SuperLink in the background and leaves it running; afterwards every
process of the benchmark (that SuperLink, its ServerApp / simulation subprocesses and Ray) is
stopped: found by the private FLWR_HOME in its environment, SIGTERM, then SIGKILL.

Numbers (metrics.jsonl of the run directory the ServerApp writes):

    end_to_end_s   wall time from `flwr run` until the run directory is complete (SuperLink and
                   Ray start-up, FAB build, every round, the final evaluation)
    first_round_s  wall_s of round 1 (includes the simulation's start: Ray actors, imports)
    per_round_s    steady state: mean wall_s difference between consecutive evaluated rounds
                   (rounds 2..R; with one round, round 1's wall_s)
    final_acc      test accuracy of the global model after the last round
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..config import load_config
from ..flower.settings import APP_ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_USAGE_STATS_ENABLED": "0",
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
            "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
            "PYTHONPATH": os.pathsep.join(p for p in (str(APP_ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def processes_of(home: Path) -> list[int]:
    """PIDs (other than this process) whose environment has FLWR_HOME=<home>: the benchmark's own."""
    marker = f"FLWR_HOME={home}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if marker in (d / "environ").read_bytes().split(b"\0"):
                pids.append(int(d.name))
        except OSError:  # gone, or not ours
            continue
    return pids


def stop_processes(home: Path, grace: float = 10.0) -> int:
    """Stop every process started with FLWR_HOME=<home> (SIGTERM, then SIGKILL); returns how many."""
    found = pids = processes_of(home)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_running(p) for p in pids):
            time.sleep(0.2)
        pids = [p for p in pids if _running(p)]
        if not pids:
            break
    return len(found)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def _numbers(rows: list[dict[str, Any]], total: float) -> dict[str, Any]:
    walls = [float(r["wall_s"]) for r in rows]
    steady = [(b - a) / (rb["round"] - ra["round"])
              for a, b, ra, rb in zip(walls, walls[1:], rows, rows[1:])]
    return {"end_to_end_s": total, "first_round_s": walls[0],
            "per_round_s": sum(steady) / len(steady) if steady else walls[0] / rows[0]["round"],
            "final_acc": rows[-1]["test_acc"], "rounds": rows[-1]["round"]}


def flower_simulation_time(config_text: str, tmp_dir: Path | str, timeout: float = 1800.0) -> dict[str, Any]:
    """Run the dfl config `config_text` as a Flower simulation; timings or {"error": one line}."""
    if not (APP_ROOT / "pyproject.toml").is_file():
        return {"error": f"no Flower app (pyproject.toml) in {APP_ROOT}: run from a dfl checkout"}
    tmp = Path(tmp_dir) / "flower-bench"
    tmp.mkdir(parents=True, exist_ok=True)
    cfg_path, home, out = tmp / "config.toml", tmp / "flwr-home", tmp / "run"
    cfg_path.write_text(config_text)
    cfg = load_config(cfg_path)
    cmd = [str(Path(sys.executable).parent / "flwr"), "run", ".", "local", "--stream",
           "--run-config", f'config="{cfg_path}" out="{out}" overwrite=true',
           "--federation-config", f"num-supernodes={cfg.data.num_clients} client-resources-num-cpus=1"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=APP_ROOT, env=_env(home), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            return {"error": _last_line(proc.stdout + proc.stderr)}
        ended = time.perf_counter()
        while not (out / "manifest.json").is_file():  # --stream may end before the ServerApp's last write
            if time.perf_counter() - ended > 60:
                return {"error": f"the Flower run did not finish: {_last_line(proc.stdout + proc.stderr)}"}
            time.sleep(0.1)
        total = time.perf_counter() - t0
        return _numbers(_rows(out), total)
    except subprocess.TimeoutExpired:
        return {"error": f"flwr run took more than {timeout:.0f} s"}
    finally:
        stop_processes(home)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return ((errors or lines or ["flwr run failed"])[-1])[:300]
