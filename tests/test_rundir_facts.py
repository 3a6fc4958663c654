"""A run directory describes itself: manifest.json records the method's facts (label,
centralized, variant, the optimizer's hyperparameters), readers name runs by them without
importing torch, and run directories written without them read the same (the registries are
asked). Also dfl.files.atomic_write, the one writer of whole files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import dfl
from dfl import methods
from dfl.errors import DflError
from dfl.files import atomic_write
from dfl.rundir.groups import describe_variants, group_runs
from dfl.rundir.read import load_run, load_runs
from tests.conftest import small_config
from tests.fake_runs import edit_config, write_run, write_sweep

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_records_its_methods_facts(tmp_path):
    dfl.run(small_config(**{"algorithm.name": "dfedsam", "engine.threads": 1}), out=tmp_path / "r", quiet=True)
    recorded = json.loads((tmp_path / "r" / "manifest.json").read_text())["method"]
    assert recorded == {"label": "DFedSAM", "optimizer": "sam", "centralized": False, "variant": False,
                        "hyperparameters": ["momentum", "dampening", "nesterov", "weight_decay", "rho"]}
    assert recorded == methods.describe("dfedsam", "sam").to_json()
    assert load_run(tmp_path / "r").facts == methods.describe("dfedsam")  # the algorithm's default optimizer


def _names(path: Path) -> tuple:
    """Everything readers derive from the method's facts, for a sweep directory."""
    runs = load_runs([path])
    groups = group_runs(runs)
    variants = describe_variants(groups)
    return ([(r.label, r.method, r.topology) for r in runs], [g.label for g in groups],
            list(variants.labels.values()), variants.dims, variants.shared)


def test_runs_written_without_facts_read_the_same(tmp_path):
    kw = dict(algos=("dfedsam", "dfedavg", "fedavg"), qs=(1, 4), seeds=(0,), rounds=4)
    with_facts, without = write_sweep(tmp_path / "a", **kw), write_sweep(tmp_path / "b", facts=False, **kw)
    assert "method" not in json.loads(next(without.glob("*/manifest.json")).read_text())
    assert _names(with_facts) == _names(without)
    tram = edit_config(write_run(tmp_path / "t", facts=False), 'optimizer = "sam"', 'optimizer = "tram"')
    assert (load_run(tram).method, load_run(tram).facts.variant) == ("dfedsam+tram", True)  # the registries say so


def test_reading_runs_with_facts_imports_no_torch(tmp_path):
    """`dfl report` and `dfl plot` on runs that record their facts: no torch (~1.4 s saved)."""
    sweep = write_sweep(tmp_path / "sw", algos=("dfedsam", "fedavg"), qs=(1, 4), seeds=(0, 1), rounds=4)
    code = ("import sys; from dfl.cli import main; "
            f"assert main(['report', {str(sweep)!r}, '--markdown']) == 0; "
            f"assert main(['plot', {str(sweep)!r}, '--out', {str(tmp_path / 'f.png')!r}]) == 0; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "f-consensus.png").is_file()


def test_a_malformed_method_entry_is_one_line(tmp_path):
    run = write_run(tmp_path / "r")
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "method": {"label": 3}}))
    with pytest.raises(DflError, match=r"manifest.json: \"method\" must be an object with label, optimizer"):
        load_run(run).facts


def test_labels_leave_out_hyperparameters_the_optimizer_does_not_take(tmp_path):
    """local.rho varies, but SGD (DFedAvg) has no radius: its label has no ρ."""
    a = edit_config(write_run(tmp_path / "a", "dfedavg"), 'optimizer = "sam"', 'optimizer = "sgd"')
    b = edit_config(write_run(tmp_path / "b"), "rho = 0.05", "rho = 0.01")
    c = edit_config(write_run(tmp_path / "c", "dfedavg"), 'optimizer = "sam"', 'optimizer = "sgd"')
    edit_config(c, "rho = 0.05", "rho = 0.2")
    labels = describe_variants(group_runs(load_runs([a, b, c]))).labels
    assert sorted(labels.values()) == ["DFedAvg, ρ=0.05", "DFedAvg, ρ=0.2", "DFedSAM, ρ=0.01"]  # clash: shown
    d = write_run(tmp_path / "d")
    labels = describe_variants(group_runs(load_runs([a, b, d]))).labels
    assert sorted(labels.values()) == ["DFedAvg", "DFedSAM, ρ=0.01", "DFedSAM, ρ=0.05"]


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.json"
    atomic_write(path, lambda fh: fh.write(b"old"))

    def half(fh):
        fh.write(b"ne")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
