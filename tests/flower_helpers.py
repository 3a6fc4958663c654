"""Shared by the Flower tests (test_flower*.py, test_load_runs.py).

In process: the task identity Flower's runtime sets, a Grid whose nodes are ClientApp calls in this
process (messages pushed through Flower's own push, which gives them their ids, and serialized as
Flower's protobuf), the SuperLink's error reply for a lost node, the run against dfl's serial engine.
Processes: SuperLink / SuperNode processes on 127.0.0.1, each in its own session, stopped with
all their descendants; `flwr run` against them.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from dfl.config import load_config, parse_overrides
from dfl.simulation import Simulation
from tests.helpers import assert_same_history, free_port, read_metrics

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = "experiments/flower_quickstart.toml"

__all__ = ["BIN", "CONFIG", "ROOT", "free_port"]  # free_port: re-exported for the runtime tests


# ------------------------------------------------------------------ in process
@contextlib.contextmanager
def task_identity(task_id: int = 1, run_id: int = 1, node_id: int = 1) -> Iterator[None]:
    """Set Flower's TaskIdentity as its runtime does in an app process, through its public
    properties (an unset one reads as an error: it is restored as None)."""
    from flwr.supercore.task_identity import TaskIdentity

    names = ("task_id", "run_id", "node_id")

    def get(name):
        try:
            return getattr(TaskIdentity, name)
        except RuntimeError:  # not set
            return None

    saved = [get(k) for k in names]
    for k, v in zip(names, (task_id, run_id, node_id)):
        setattr(TaskIdentity, k, v)
    try:
        yield
    finally:
        for k, v in zip(names, saved):
            setattr(TaskIdentity, k, v)


def wire(message):
    """``message`` after the trip Flower makes it take between processes: protobuf bytes and back."""
    from flwr.common.serde import message_from_proto, message_to_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage

    return message_from_proto(ProtoMessage.FromString(message_to_proto(message).SerializeToString()))


def run_config(sets: str, out: Path | None = None) -> dict:
    rc = {"config": CONFIG, "set": sets}
    if out is not None:
        rc["out"] = str(out)
    return rc


class _LinkState:
    """What Flower's InMemoryGrid.push_messages needs of its LinkState: a store that takes each
    instruction and answers with its id."""

    def state(self):  # the LinkStateFactory's one method
        return self

    def store_message_ins(self, message) -> str:
        return message.metadata.message_id


class MemoryGrid:
    """A Grid whose nodes are ClientApp calls in this process (one Context per node). Messages are
    pushed through Flower's own InMemoryGrid.push_messages, which checks them and gives each its
    id in place, as a real Grid does; every message and every reply crosses as Flower's protobuf
    bytes (``wire``), as between SuperLink and SuperNode. Subclasses change ``deliver``."""

    def __init__(self, rc: dict, n: int, node_config=None):
        from flwr.app import Context, RecordDict
        from flwr.superlink.grid.inmemory_grid import InMemoryGrid

        self.ids = [1000 + 7 * i for i in range(n)]
        self.ctx = {nid: Context(run_id=1, node_id=nid, state=RecordDict(), run_config=rc,
                                 node_config=(node_config or {}).get(i, {"partition-id": i, "num-partitions": n}))
                    for i, nid in enumerate(self.ids)}
        self.sent: list[str] = []
        self.link = InMemoryGrid(_LinkState())

    def get_node_ids(self):
        return list(self.ids)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.link.push_messages(messages)
        return [reply for m in messages for reply in self.deliver(m)]

    def deliver(self, message) -> list:
        """The replies to one pushed message as the ServerApp receives them (here: its node's)."""
        from dfl.flower import client_app

        self.sent.append(message.metadata.message_type)
        return [wire(client_app.app(wire(message), self.ctx[message.metadata.dst_node_id]))]


def unavailable(message):
    """The error reply Flower's SuperLink sends for ``message`` when its node missed its
    heartbeats ("Node Unavailable", from the SuperLink's node id), as the ServerApp receives it."""
    from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

    return wire(create_message_error_unavailable_res_message(message.metadata, "node_unavail"))


class SimulationGrid(MemoryGrid):
    """A MemoryGrid that says it is the Simulation Runtime's (dfl.flower.federation.in_simulation)."""

    simulation = True


def server_context(rc: dict):
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc)


def run_in_memory(tmp_path: Path, sets: str, n: int) -> list[dict]:
    from dfl.flower import server_app

    rc = run_config(sets, tmp_path / "run")
    server_app.main(MemoryGrid(rc, n), server_context(rc))
    return read_metrics(tmp_path / "run")


def reference(sets: str) -> list[dict]:
    cfg = load_config(ROOT / CONFIG, parse_overrides(sets.split()))
    return Simulation(cfg.replace(**{"engine.backend": "serial"})).run()


ROW_KEYS = ("round", "test_acc", "test_loss", "local_test_acc", "train_loss", "comm_mb", "spectral_gap",
            "active_clients", "lr", "consensus")


def assert_rows_match(rows: list[dict], ref: list[dict]) -> None:
    """A Flower run's rows equal dfl's (``reference``) within float rounding (1e-6; the consensus
    distance, often small, within 1e-9 absolute), and the drift where the algorithm has one."""
    keys = ROW_KEYS + (("drift",) if "drift" in ref[0] else ())
    assert_same_history(ref, rows, tol=1e-6, keys=keys, abs_tol=1e-9)


def assert_copies_agree(states: dict) -> int:
    """Compressed gossip: every copy x_hat_j a node holds equals node j's own x_hat_j (the public
    copies are consistent). ``states``: client id -> that node's context.state. Returns the number
    of copies checked."""
    from dfl.flower import records as R

    checked = 0
    for i, state in states.items():
        for key, copy in state[R.XHAT_STATE].items():
            if key != "self":
                own = states[int(key)][R.XHAT_STATE]["self"].numpy()
                assert (copy.numpy() == own).all(), f"node {i}'s copy of x_hat_{key} differs from node {key}'s own"
                checked += 1
    return checked


# ------------------------------------------------------------------ processes
def env_for(home: Path) -> dict[str, str]:
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", PYTHONPATH=str(ROOT),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0")
    return env


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(d.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += tree.get(p, [])
    return out


class Processes:
    """Long-running Flower processes of one test, each in its own session; stop() ends them all."""

    def __init__(self, logs: Path):
        self.logs, self.procs = logs, []

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        pids = [p for proc in self.procs for p in _descendants(proc.pid)]
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            for proc in self.procs:  # its session's group: children whose parent already exited
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            for proc in self.procs:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
            if not pids:
                return

    def tail(self) -> str:
        return "\n".join(f"--- {f.name}\n" + f.read_text()[-3000:] for f in sorted(self.logs.glob("*.log")))


def _zombie(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "Z"
    except OSError:
        return True


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "process exited early"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {port}")


def write_flwr_config(home: Path, port: int, ca: Path | None = None) -> None:
    """The Flower configuration (FLWR_HOME/config.toml) with one SuperLink connection 'dfl'."""
    home.mkdir(parents=True, exist_ok=True)
    tls = f'root-certificates = "{ca}"' if ca else "insecure = true"
    (home / "config.toml").write_text(f'[superlink]\ndefault = "dfl"\n\n[superlink.dfl]\n'
                                      f'address = "127.0.0.1:{port}"\n{tls}\n')


def flwr_run(home: Path, sets: str, out: Path, extra: list[str] = (), timeout: float = 420) -> None:
    """`flwr run . dfl --stream` from the project root; returns once the run directory is complete."""
    run_config = f'config="{CONFIG}" set="{sets}" out="{out}"'
    res = subprocess.run([str(BIN / "flwr"), "run", ".", "dfl", "--run-config", run_config, *extra, "--stream"],
                         cwd=ROOT, env=env_for(home), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    deadline = time.monotonic() + 60
    while not (out / "manifest.json").exists():
        assert time.monotonic() < deadline, f"run did not finish:\n{res.stdout[-3000:]}"
        time.sleep(0.5)


def start_federation(procs: Processes, tmp: Path, port: int, link_tls: list[str],
                     node_tls: list[str], keys: list[Path] | None = None) -> None:
    link = procs.start("superlink", [str(BIN / "flower-superlink"), *link_tls,
                                     "--disable-runtime-dependency-installation",
                                     "--host", "127.0.0.1", "--port", str(port)], env_for(tmp / "home"), tmp)
    wait_port(port, link)
    if keys:
        for key in keys:
            res = subprocess.run([str(BIN / "flwr"), "supernode", "register", f"{key}.pub", "dfl"], cwd=tmp,
                                 env=env_for(tmp / "home"), capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stdout + res.stderr
    for i in range(3):
        node_home = tmp / f"node{i}"
        node_home.mkdir()
        auth = ["--auth-supernode-private-key", str(keys[i])] if keys else []
        procs.start(f"supernode{i}", [str(BIN / "flower-supernode"), *node_tls, *auth,
                                      "--superlink", f"127.0.0.1:{port}", "--port", str(free_port()),
                                      "--node-config", f"partition-id={i} num-partitions=3"],
                    env_for(node_home), node_home)
