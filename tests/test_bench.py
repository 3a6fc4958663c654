"""`dfl bench --quick` runs every row and writes its JSON (a benchmark is not a test: no timing is
asserted, only that each row measured what it says with the numbers consistent with each other)."""
from __future__ import annotations

import json

import pytest

from dfl.bench import QUICK, papers_loop_time, bench_config
from dfl.cli import main


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
    assert all(r["peak_mb"] > 0 and r["round_s"] > 0 for r in d)
    assert d[0]["max_clients_in_memory"] == d[-1]["max_clients_in_memory"]


def test_papers_loop_runs_a_round_for_sam(tmp_path):
    assert papers_loop_time(bench_config(3, "mlp", "sam", "vectorized"), 1) > 0


@pytest.mark.parametrize("rows", ["", "abx"])
def test_bad_rows_is_a_user_error(rows, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--rows", rows, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--rows: letters from abcde" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_quick_bench_row_e(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--rows", "e", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["e"]
    assert [r["what"] for r in rows] == ["dfl run (vectorized)", "dfl run (ray)", "flower simulation"]
    for r in rows:
        assert "error" not in r, r
        assert 0 < r["per_round_s"] < r["end_to_end_s"] and 0 <= r["final_acc"] <= 1
    assert rows[0]["final_acc"] == pytest.approx(rows[1]["final_acc"])
