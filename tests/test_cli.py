"""`dfl run / sweep` end to end: run directories, resume, user errors (one line, exit 2)."""
import json
import math
from pathlib import Path

import pytest
import torch

from dfl.cli import main
from dfl.config import load_config
from dfl.rundir.checkpoint import CHECKPOINT
from dfl.simulation import Simulation
from tests.helpers import (assert_same_history, assert_user_error, interrupted_run, read_metrics,
                           write_cifar_batch, write_config)

EXPERIMENTS = sorted(Path(__file__).resolve().parent.parent.joinpath("experiments").rglob("*.toml"))

SMALL = {"rounds": 3, "algorithm.name": "dfedsam", "local.local_steps": 2, "engine.threads": 1}


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "small.toml", **SMALL)


def test_run_writes_the_run_directory(config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    rows = read_metrics(out)
    assert [r["round"] for r in rows] == [1, 2, 3]
    for name in ("config.toml", "summary.json", "manifest.json", CHECKPOINT):
        assert (out / name).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["round"] == 3 and summary["label"] == "DFedSAM, ring, Q=1"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["peak_memory_mb"] > 0 and manifest["seed"] == 0
    # the resolved config (local optimizer filled in by the algorithm) reproduces the run
    cfg = load_config(out / "config.toml")
    assert cfg.local.optimizer == "sam"
    assert "final metrics" in capsys.readouterr().out


def test_list_valued_config_runs_side_by_side(config, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["run", str(config), "--out", str(out), "--quiet",
                 "--set", 'algorithm.name=["dfedsam", "dfedavg"]', "--set", "rounds=2"])
    assert code == 0
    index = json.loads((out / "sweep.json").read_text())
    assert index["axes"] == {"algorithm.name": ["dfedsam", "dfedavg"]}
    assert len(index["runs"]) == 2 and all((out / r["dir"] / "metrics.jsonl").is_file() for r in index["runs"])
    table = capsys.readouterr().out
    assert "DFedSAM" in table and "DFedAvg" in table


def test_resume_continues_to_the_same_result(config, tmp_path):
    full = tmp_path / "full"
    assert main(["run", str(config), "--out", str(full), "--quiet"]) == 0

    part = interrupted_run(load_config(config).replace(**{"metrics.checkpoint_every": 1}), tmp_path / "part")
    assert main(["run", "--resume", str(part), "--quiet"]) == 0
    assert_same_history(read_metrics(full), read_metrics(part), tol=0)


@pytest.mark.parametrize("args,needle", [
    (["--set", "local.lr=-0.1"], "local.lr: must be > 0, got -0.1"),
    (["--set", "local.lrr=0.1"], "unknown key 'local.lrr' (did you mean 'local.lr'"),
    (["--set", "algorithm.name=dfedsma"], "did you mean 'dfedsam'"),
    (["--set", "topology.name=rign"], "did you mean 'ring'"),
    (["--set", "model.name=cnnn"], "did you mean 'cnn'"),
    (["--set", "local.optimizer=sgd"], "algorithm 'dfedsam' trains with"),
    (["--set", "algorithm.participation=1.5"], "algorithm.participation: must be in (0, 1]"),
    (["--set", "rounds=ten"], "rounds: must be an integer, got 'ten'"),
    (["--set", "nonsense"], "expected section.key=value"),
])
def test_user_errors_are_one_line_exit_2(config, tmp_path, capsys, args, needle):
    out = tmp_path / "bad"
    assert_user_error(["run", str(config), "--out", str(out), "--quiet", *args], capsys, needle)
    assert not (out / "metrics.jsonl").exists()


def test_existing_output_is_refused_unless_overwrite(config, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert_user_error(["run", str(config), "--out", str(out), "--quiet"], capsys, "--overwrite")
    assert (out / "keep.txt").exists()
    assert main(["run", str(config), "--out", str(out), "--quiet", "--overwrite"]) == 0


def test_missing_config_file(tmp_path, capsys):
    assert_user_error(["run", str(tmp_path / "nope.toml")], capsys, "config file not found")


def test_sweep_in_two_processes_equals_the_sequential_sweep(config, tmp_path):
    axis = ["--set", "algorithm.gossip_steps=[1, 2]", "--set", "rounds=2", "--set", "engine.threads=1"]
    for jobs in ("2", "1"):
        assert main(["sweep", str(config), "--out", str(tmp_path / jobs), "--quiet", "--jobs", jobs, *axis]) == 0
    index = json.loads((tmp_path / "2" / "sweep.json").read_text())
    assert [r["overrides"]["algorithm.gossip_steps"] for r in index["runs"]] == [1, 2]
    assert index["runs"] == json.loads((tmp_path / "1" / "sweep.json").read_text())["runs"]
    for r in index["runs"]:
        assert_same_history(read_metrics(tmp_path / "1" / r["dir"]), read_metrics(tmp_path / "2" / r["dir"]), tol=0)
    assert read_metrics(tmp_path / "2" / index["runs"][0]["dir"])[-1]["consensus"] != \
        read_metrics(tmp_path / "2" / index["runs"][1]["dir"])[-1]["consensus"]


def test_version(capsys):
    from importlib.metadata import version

    import dfl

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"dfl {dfl.__version__}" == f"dfl {version('dfl')}"


def test_run_and_sweep_write_to_runs_config_name_by_default(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(config), "--quiet", "--set", "rounds=1"]) == 0
    assert [r["round"] for r in read_metrics(tmp_path / "runs" / "small")] == [1]
    sweep_config = tmp_path / "grid.toml"
    sweep_config.write_text(config.read_text())
    assert main(["sweep", str(sweep_config), "--quiet", "--set", "rounds=1", "--set", "seed=[0, 1]"]) == 0
    index = json.loads((tmp_path / "runs" / "grid" / "sweep.json").read_text())
    assert len(index["runs"]) == 2 and all((tmp_path / "runs" / "grid" / r["dir"] / "metrics.jsonl").is_file()
                                           for r in index["runs"])


def test_report_title_and_default_out(config, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["run", str(config), "--out", str(run), "--quiet", "--set", "rounds=1"]) == 0
    assert main(["report", str(run)]) == 0
    assert "<title>dfl report: r</title>" in (run / "report.html").read_text()   # default: <DIR>/report.html
    assert main(["report", str(run), "--title", "Ring & torus", "--out", str(tmp_path / "t.html")]) == 0
    page = (tmp_path / "t.html").read_text()
    assert "<title>Ring &amp; torus</title>" in page and "<h1>Ring &amp; torus</h1>" in page


def test_bench_threads_sets_torch_threads(tmp_path, capsys):
    import torch

    out = tmp_path / "bench.json"
    try:
        assert main(["bench", "--quick", "--rows", "c", "--threads", "2", "--out", str(out)]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    got = json.loads(out.read_text())
    assert got["threads"] == 2 and [r["graph"] for r in got["c"]] == ["ring", "exponential"]
    assert "torch threads: 2" in capsys.readouterr().out


def mean_row(sim):
    """The mean client model, wherever the engine keeps the bank (a Ray engine holds it itself)."""
    return sim.engine.summary(sim.bank)[0].cpu()


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])  # experiments/paper/ too
def test_every_experiment_runs_two_rounds(path, tmp_path, monkeypatch):
    from dfl import sweep
    overrides = {"rounds": 2, "eval_every": 1, "data.num_clients": 9, "local.local_steps": 2}
    if "cifar" in path.stem:  # a tiny CIFAR-10/100 in the real pickle format, a short local epoch
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        for i in range(1, 6):
            write_cifar_batch(folder / f"data_batch_{i}", 40, seed=i)
        write_cifar_batch(folder / "test_batch", 20, seed=9)
        folder = tmp_path / "cifar-100-python"
        folder.mkdir()
        write_cifar_batch(folder / "train", 200, label_key=b"fine_labels", k=100, seed=1)
        write_cifar_batch(folder / "test", 20, label_key=b"fine_labels", k=100, seed=2)
        overrides.update({"data.root": str(tmp_path), "local.local_epochs": 0.05, "data.min_size": 2,
                          "local.batch_size": 4})
        if "paper" in path.parts:  # every variant is built below: the paper's VGG-11 / ResNet-18 (tested in
            overrides["model.name"] = "cnn"  # tests/test_models_paper.py) would hold 0.5 GB per variant
    text = path.read_text()
    if "random_regular" in text:
        overrides["topology.d"] = 4
    if "k = 10" in text:  # random_neighbors with the paper's 10 neighbours
        overrides["data.num_clients"] = 11
    axes, variants = sweep.load(path, overrides)
    sims = [Simulation(v.config) for v in variants]  # every variant is valid and builds
    for sim in {id(s): s for s in (sims[0], sims[-1])}.values():  # the first and last run
        start = mean_row(sim)
        h = sim.run()
        assert [r["round"] for r in h] == [1, 2]
        assert all(math.isfinite(h[-1][k]) for k in ("test_loss", "train_loss", "consensus", "comm_mb"))
        end = mean_row(sim)
        sim.close()
        assert not torch.equal(end, start)  # the models moved
        # test_acc is the accuracy of the mean model, computed here without dfl's evaluate
        model = sim.model
        sim.layout.load_row(model, end.to(sim.device))
        with torch.no_grad():
            pred = torch.cat([model(x).argmax(1) for x in sim.x_test.split(512)])
        assert h[-1]["test_acc"] == pytest.approx(float((pred == sim.y_test).double().mean()), abs=1e-12)


def test_data_command_takes_list_valued_configs(config, tmp_path, capsys):
    quickstart = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.toml"
    assert main(["data", str(quickstart), "--set", "seed=0", "--plot", str(tmp_path / "labels.png")]) == 0
    assert (tmp_path / "labels.png").is_file()
    capsys.readouterr()
    assert_user_error(["data", str(config), "--set", "seed=[0, 1]"], capsys, "the data split varies across the sweep")
