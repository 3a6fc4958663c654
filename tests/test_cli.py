"""`dfl run / sweep` end to end: run directories, resume, user errors (one line, exit 2)."""
import json
from pathlib import Path

import pytest

from dfl import results
from dfl.cli import main
from dfl.config import load_config
from dfl.simulation import Simulation
from tests.conftest import small_toml

EXPERIMENTS = sorted(Path(__file__).resolve().parent.parent.joinpath("experiments").rglob("*.toml"))

SMALL = small_toml(rounds=3, **{"algorithm.name": "dfedsam", "local.local_steps": 2})


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "small.toml"
    p.write_text(SMALL)
    return p


def read_metrics(path):
    return [json.loads(line) for line in (Path(path) / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_the_run_directory(config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    rows = read_metrics(out)
    assert [r["round"] for r in rows] == [1, 2, 3]
    for name in ("config.toml", "summary.json", "manifest.json", results.CHECKPOINT):
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

    part = tmp_path / "part"
    cfg = load_config(config).replace(**{"metrics.checkpoint_every": 1})
    sim = Simulation(cfg)
    results.prepare(part)
    writer = results.RunDir(part, sim.cfg)

    class Stop(Exception):
        pass

    def on_round(s, row):
        writer(s, row)
        if s.round == 2:
            raise Stop

    with pytest.raises(Stop):
        sim.run(on_round)
    assert main(["run", "--resume", str(part), "--quiet"]) == 0
    a, b = read_metrics(full), read_metrics(part)
    assert len(b) == 3
    for ra, rb in zip(a, b):
        for k in ("test_acc", "test_loss", "consensus", "train_loss", "local_test_acc"):
            assert ra[k] == pytest.approx(rb[k], abs=1e-6)


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
    assert main(["run", str(config), "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (out / "metrics.jsonl").exists()


def test_existing_output_is_refused_unless_overwrite(config, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").exists()
    assert main(["run", str(config), "--out", str(out), "--quiet", "--overwrite"]) == 0


def test_missing_config_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_sweep_in_two_processes(config, tmp_path):
    out = tmp_path / "sw"
    assert main(["sweep", str(config), "--out", str(out), "--quiet", "--jobs", "2",
                 "--set", "algorithm.gossip_steps=[1, 2]", "--set", "rounds=1"]) == 0
    index = json.loads((out / "sweep.json").read_text())
    assert [r["overrides"]["algorithm.gossip_steps"] for r in index["runs"]] == [1, 2]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])  # experiments/paper/ too
def test_every_experiment_runs_two_rounds(path, tmp_path, monkeypatch):
    from dfl import sweep
    overrides = {"rounds": 2, "eval_every": 1, "data.num_clients": 9, "local.local_steps": 2}
    if "cifar" in path.stem:  # a tiny CIFAR-10/100 in the real pickle format, a short local epoch
        from tests.test_data_loaders import write_cifar_batch
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
        h = sim.run()
        assert len(h) == 2 and 0.0 <= h[-1]["test_acc"] <= 1.0


def test_data_command_takes_list_valued_configs(config, tmp_path, capsys):
    quickstart = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.toml"
    assert main(["data", str(quickstart), "--set", "seed=0", "--plot", str(tmp_path / "labels.png")]) == 0
    assert (tmp_path / "labels.png").is_file()
    capsys.readouterr()
    assert main(["data", str(config), "--set", "seed=[0, 1]"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the data split varies across the sweep" in err and len(err.splitlines()) == 1
