"""`dfl bench --quick` runs every row and writes its JSON (a benchmark is not a test: no timing is
asserted, only that each row measured what it says with the numbers consistent with each other)."""
from __future__ import annotations

import json

import pytest

from dfl.bench import QUICK, papers_loop_time, bench_config
from dfl.cli import main
from dfl.simulation import Simulation
from tests.helpers import assert_user_error


def test_quick_bench_rows_a_to_d(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--rows", "abcd", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "a/b  round time" in printed and "gossip" in printed and f"written {out}" in printed
    assert got["device"] in ("cpu", "cuda") and got["sizes"]["clients"] == QUICK.clients
    ab = got["ab"]
    assert [(r["model"], r["optimizer"]) for r in ab] == [(m, o) for m in ("mlp", "cnn") for o in ("sgd", "sam")]
    for r in ab:
        for key in ("vectorized_s", "papers_loop_s", "serial_s", "pooled_s"):
            assert r[key] > 0, (key, r)
        assert r["speedup_vs_papers_loop"] == pytest.approx(r["papers_loop_s"] / r["vectorized_s"])
        assert r["x_of_pooled"] == pytest.approx(r["vectorized_s"] / r["pooled_s"])
    assert [r["graph"] for r in got["c"]] == ["ring", "exponential"]
    for r in got["c"]:
        assert r["n"] == QUICK.gossip_n and r["params"] == QUICK.gossip_d and r["degree"] >= 2
        assert r["sparse_x_copy"] == pytest.approx(r["sparse_s"] / r["copy_s"])
    d = got["d"]
    assert [r["clients"] for r in d] == list(QUICK.scale_clients)
    for r in d:  # the process held at least the bank: clients x params float32 numbers (MiB)
        assert r["peak_mb"] > r["clients"] * r["params"] * 4 / 2 ** 20 and r["round_s"] > 0
    assert d[-1]["peak_mb"] > d[0]["peak_mb"]
    assert d[0]["max_clients_in_memory"] == d[-1]["max_clients_in_memory"]


def test_papers_loop_runs_a_round_for_sam(monkeypatch):
    # the timed loop does the work it stands for: every client, K SAM steps of two passes each,
    # in the warm-up round and the timed one
    from dfl.bench import rounds as bench

    passes = []

    def counting(model, opt, x, y):
        inner = bench_closure(model, opt, x, y)
        return lambda: (passes.append(len(x)), inner())[1]

    bench_closure = bench.closure
    monkeypatch.setattr(bench, "closure", counting)
    cfg = bench_config(3, "mlp", "sam", "vectorized")
    assert papers_loop_time(cfg, 1) > 0
    assert len(passes) == 2 * 3 * cfg.local.local_steps * 2
    assert set(passes) <= {cfg.local.batch_size, *(len(s) % cfg.local.batch_size for s in
                                                  Simulation(cfg).fed.client_train)}


@pytest.mark.parametrize("rows", ["", "abx"])
def test_bad_rows_is_a_user_error(rows, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert_user_error(["bench", "--quick", "--rows", rows, "--out", str(out)], capsys, "--rows: letters from abcde")
    assert not out.exists()


@pytest.mark.slow
def test_quick_bench_row_e(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--rows", "e", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["e"]
    assert [r["what"] for r in rows] == ["dfl run (vectorized)", "dfl run (ray)", "flower simulation"]
    for r in rows:
        assert "error" not in r, r
        assert 0 < r["per_round_s"] < r["end_to_end_s"]
    # the same config on each: the same final accuracy
    assert rows[1]["final_acc"] == pytest.approx(rows[0]["final_acc"], abs=1e-6)
    assert rows[2]["final_acc"] == pytest.approx(rows[0]["final_acc"], abs=1e-6)


def test_paper_quick_times_the_paper_setup_next_to_the_papers_loop(tmp_path, capsys):
    from dfl.bench.paper import PAPER_QUICK

    out = tmp_path / "paper.json"
    assert main(["bench", "--paper", "--quick", "--threads", "1", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "projected hours" in printed and "fastest: " in printed and f"written {out}" in printed
    assert got["model"] == "vgg11" and got["variant"].startswith("DFedSAM")
    assert got["full"] == {"clients": 100, "shard": 500, "batch": 128, "image": 32, "local_epochs": 5.0,
                           "rounds": 1000}
    m = got["measured"]
    assert (m["clients"], m["shard"], m["batch"], m["image"]) == (PAPER_QUICK.clients, PAPER_QUICK.shard,
                                                                  PAPER_QUICK.batch, PAPER_QUICK.image)
    # work = clients x steps x batch x pixels: 100 x 20 x 128 x 32^2 over 3 x 2 x 8 x 16^2
    assert got["work_scale"] == pytest.approx(100 * 20 * 128 * 32 ** 2 / (3 * 2 * 8 * 16 ** 2))
    rows = {r["what"]: r for r in got["rows"]}
    assert list(rows) == ["dfl (vmap)", "dfl (sequential)", "dfl (auto, bf16)", "papers loop"]
    assert [rows[w]["strategy"] for w in list(rows)[:3]] == ["vmap", "sequential", "sequential"]
    loop = rows["papers loop"]["s_per_round"]
    for r in got["rows"]:
        assert r["s_per_round"] > 0
        assert r["x_faster_than_papers_loop"] == pytest.approx(loop / r["s_per_round"])
        assert r["projected_hours"] == pytest.approx(r["s_per_round"] * got["work_scale"] * 1000 / 3600)
    assert got["auto_at_full_size"]["strategy"] == "sequential"
