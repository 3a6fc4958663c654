"""Scaffolding the test modules share (no test module imports another; fixtures are in conftest).

    TRAINS, training_config(...)     the small config in a regime that trains
    assert_same_history(a, b, tol)   two histories equal key by key (timings left out)
    read_metrics(run_dir)            the rows of a run directory's metrics.jsonl
    write_config(path, raw, **ch)    small_config(**ch) written as a TOML file (raw: unchecked keys)
    interrupted_run(cfg, out, ...)   a run directory whose run stopped after some rounds
    free_port()                      a TCP port nobody listens on
    assert_user_error(argv, capsys)  `dfl ARGV` exits 2 with one "dfl: error:" line, no traceback
    client_batches(sim, i, t, K)     the (x, y) batches dfl draws for client i in round t
    write_cifar_batch(path, n)       a CIFAR batch file in the real pickle format
"""
from __future__ import annotations

import json
import math
import pickle
import socket
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pytest

from tests.conftest import small_config

#: Metrics that measure time or memory: they differ between two runs of the same config.
TIMINGS = ("wall_s", "train_s", "exchange_s", "eval_s")

#: A regime that trains: the small config at lr 0.3 with 5 local steps over 3 rounds reaches a
#: test accuracy of ~0.4-0.5 on digits (chance 0.1), so equivalences are checked on moving models.
TRAINS = {"local.lr": 0.3, "local.local_steps": 5, "rounds": 3}


def training_config(**changes):
    """small_config in the TRAINS regime (changes override it)."""
    return small_config(**{**TRAINS, **changes})


def assert_same_history(a: list[dict], b: list[dict], tol: float = 1e-6,
                        keys: Optional[Iterable[str]] = None, abs_tol: Optional[float] = None) -> None:
    """Same number of rows and, row by row, every key of ``keys`` (default: every numeric key of
    a's rows but the timings) equal within ``tol`` relative and ``abs_tol`` (default ``tol``)
    absolute; tol 0 = exactly equal. A key of ``keys`` may be missing from a row of both (a
    metric some rows lack) but must be in some row of ``a``."""
    assert len(a) == len(b), (len(a), len(b))
    if keys is not None:
        keys = list(keys)
        assert all(any(k in r for r in a) for k in keys), [k for k in keys if not any(k in r for r in a)]
    atol = tol if abs_tol is None else abs_tol
    for ra, rb in zip(a, b):
        names = keys if keys is not None else [k for k, v in ra.items()
                                               if k not in TIMINGS and isinstance(v, (int, float))]
        for k in names:
            va, vb = ra.get(k), rb.get(k)
            if tol == 0 or not isinstance(va, float) or not math.isfinite(va):
                assert va == vb or (isinstance(va, float) and math.isnan(va) and math.isnan(vb)), \
                    (ra.get("round"), k, va, vb)
            else:
                assert vb == pytest.approx(va, abs=atol, rel=tol), (ra.get("round"), k, va, vb)


def read_metrics(run_dir) -> list[dict[str, Any]]:
    """The rows of RUN_DIR/metrics.jsonl."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def write_config(path, raw: Optional[dict[str, Any]] = None, **changes) -> Path:
    """Write small_config(**changes) as TOML to ``path`` (a directory: PATH/config.toml); then
    ``raw``'s dotted keys are set in the file as given, unchecked (sweep axes, bad values). Returns
    the file."""
    from dfl.config import dumps_toml, to_dict

    path = Path(path)
    if path.is_dir():
        path = path / "config.toml"
    data = to_dict(small_config(**changes))
    for key, value in (raw or {}).items():
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(dumps_toml(data))
    return path


class Stop(Exception):
    """Raised from a round callback to stop a run as if it had been killed."""


def interrupted_run(cfg, out, stop_after: int = 2, before_checkpoint: bool = False):
    """Run ``cfg`` into the run directory ``out`` (checkpointed as cfg says) and stop it with an
    exception after round ``stop_after`` (before_checkpoint: right after that round's metrics row,
    before its checkpoint step, as a kill there); returns ``out``."""
    from dfl.rundir.write import RunDir, prepare
    from dfl.simulation import Simulation

    out = Path(out)
    sim = Simulation(cfg)
    prepare(out)
    writer = RunDir(out, sim.cfg)

    def on_round(s, row):
        writer.append(row)
        if before_checkpoint and s.round == stop_after:
            raise Stop

    def after_round(s):
        writer.after_round(s.round, s.state_dict)
        if s.round == stop_after:
            raise Stop

    with pytest.raises(Stop):
        sim.run(on_round, after_round)
    sim.close()
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_user_error(argv: list[str], capsys, *fragments: str) -> str:
    """`dfl ARGV` is a user error: exit code 2 (returned, or argparse's exit), one line on stderr
    that starts "dfl: error: " and holds every fragment, no traceback. Returns the line."""
    from dfl.cli import main

    capsys.readouterr()  # what came before is not this command's
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1 and err.startswith("dfl: error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in err, (f, err)
    return err


def client_batches(sim, i: int, round_: int, steps: int) -> list:
    """The (x, y) batches dfl draws for client i's ``steps`` local steps of round ``round_``."""
    _, glob = sim.client_data.batches(np.array([i]), round_, steps)
    return [(sim.client_data.x[glob[0, k]], sim.client_data.y[glob[0, k]]) for k in range(steps)]


def write_cifar_batch(path, n, label_key=b"labels", k=10, seed=0, py2_names=False):
    """A CIFAR-10/100 batch of n random images in the real pickle format; returns its dict."""
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"x", b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
         label_key: [int(v) for v in rng.integers(0, k, n)]}
    raw = pickle.dumps(d, protocol=2)
    if py2_names:  # the official files name numpy's pre-2.0 module
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)
    return d


def quadratic_closure(opt, w, a):
    """torch.optim's closure for the loss 0.5 w^T A w of parameter ``w``: clears grads, computes
    the loss, calls backward and returns it."""
    def closure():
        opt.zero_grad()
        loss = 0.5 * w @ a @ w
        loss.backward()
        return loss
    return closure
