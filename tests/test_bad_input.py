"""Bad input over the whole config and CLI surface: one line on stderr, exit code 2, nothing written.

Every case calls ``dfl.cli.main`` in-process on a small valid config plus the case's overrides
and checks: return value 2, exactly one stderr line containing the expected text, no traceback,
and the output directory not created (so certainly no metrics.jsonl). Cases already in
tests/test_cli.py (lr < 0, unknown key, a few names) are not repeated.
"""
import gzip
import os

import numpy as np
import pytest

from tests.helpers import assert_user_error, write_config

SMALL = {"model.hidden": 16, "local.local_steps": 1}

# (id, --set overrides, text expected on the one stderr line)
CONFIG_CASES = [
    # wrong types
    ("type-float", ["local.lr=fast"], "local.lr: must be a number, got 'fast'"),
    ("type-int", ["model.hidden=1.5"], "model.hidden: must be an integer, got 1.5"),
    ("type-bool", ["local.nesterov=1"], "local.nesterov: must be true or false, got 1"),
    ("type-bool-as-int", ["data.num_clients=true"], "data.num_clients: must be an integer, got True"),
    ("type-str", ["algorithm.name=3"], "algorithm.name: must be a string, got 3"),
    ("type-table", ["local=3"], "local: must be a table"),
    ("type-not-section", ["rounds.x=3"], "is not a section key"),
    ("type-nonfinite", ["local.lr=inf"], "local.lr: must be a number, got inf"),
    ("type-fault", ["faults.dropout=high"], "faults.dropout: must be a number"),
    # out of range
    ("lr-zero", ["local.lr=0"], "local.lr: must be > 0, got 0.0"),
    ("rho-negative", ["local.rho=-0.1"], "local.rho: must be >= 0, got -0.1"),
    ("dirichlet-alpha-zero", ["data.alpha=0"], "data.alpha: must be > 0, got 0.0"),
    ("gsam-alpha-negative", ["local.alpha=-1"], "local.alpha: must be >= 0, got -1.0"),
    ("participation-zero", ["algorithm.participation=0"], "algorithm.participation: must be in (0, 1], got 0.0"),
    ("q-zero", ["algorithm.gossip_steps=0"], "algorithm.gossip_steps: must be >= 1, got 0"),
    ("rounds-zero", ["rounds=0"], "rounds: must be >= 1, got 0"),
    ("seed-negative", ["seed=-1"], "seed: must be >= 0, got -1"),
    ("eval-every-zero", ["eval_every=0"], "eval_every: must be >= 1, got 0"),
    ("batch-zero", ["local.batch_size=0"], "local.batch_size: must be >= 1, got 0"),
    ("steps-zero", ["local.local_steps=0"], "local.local_steps: must be >= 1, got 0"),
    ("epochs-zero", ["local.local_epochs=0"], "local.local_epochs: must be > 0, got 0.0"),
    ("momentum-one", ["local.momentum=1"], "local.momentum: must be in [0, 1), got 1.0"),
    ("lr-decay", ["local.lr_decay=1.5"], "local.lr_decay: must be in (0, 1], got 1.5"),
    ("tau-zero", ["local.tau=0"], "local.tau: must be > 0, got 0.0"),
    ("clients-zero", ["data.num_clients=0"], "data.num_clients: must be >= 1, got 0"),
    ("test-fraction", ["data.test_fraction=1"], "data.test_fraction: must be in (0, 1), got 1.0"),
    ("server-lr", ["algorithm.server_lr=0"], "algorithm.server_lr: must be > 0, got 0.0"),
    ("beta", ["algorithm.beta=1"], "algorithm.beta: must be in [0, 1), got 1.0"),
    ("dropout-one", ["faults.dropout=1"], "faults.dropout: must be in [0, 1), got 1.0"),
    ("link-negative", ["faults.link_failure=-0.1"], "faults.link_failure: must be in [0, 1), got -0.1"),
    ("straggler", ["faults.straggler=2"], "faults.straggler: must be in [0, 1), got 2.0"),
    ("on-nan", ["faults.on_nan=ignore"], "faults.on_nan: must be \"stop\" or \"skip_client\", got 'ignore'"),
    ("checkpoint-every", ["metrics.checkpoint_every=-1"], "metrics.checkpoint_every: must be >= 0, got -1"),
    ("checkpoint-minutes", ["metrics.checkpoint_minutes=0"], "metrics.checkpoint_minutes: must be > 0, got 0.0"),
    ("chunk-size", ["engine.chunk_size=-1"], "engine.chunk_size: must be >= 0, got -1"),
    # unknown names (with the closest valid one)
    ("optimizer", ["local.optimizer=sgdd"], "did you mean 'sgd'"),
    ("optimizer-wrong-family", ["local.optimizer=sam"], "algorithm 'dfedavg' trains with sgd"),
    ("algorithm", ["algorithm.name=fedavgg"], "did you mean 'fedavg'"),
    ("topology", ["topology.name=torrus"], "did you mean 'torus'"),
    ("mixing", ["topology.mixing=metropolis_hastings"], "did you mean 'metropolis'"),
    ("model", ["model.name=mlpp"], "did you mean 'mlp'"),
    ("dataset", ["data.name=mnistt"], "did you mean 'mnist'"),
    ("partition", ["data.partition=dirichlett"], "did you mean 'dirichlet'"),
    ("schedule", ["local.schedule=cosin"], "local.schedule: must be one of constant, exponential, cosine"),
    ("backend", ["engine.backend=gpu"], "engine.backend: must be one of vectorized, serial, ray"),
    ("device", ["engine.device=tpu"], "engine.device: must be auto, cpu, cuda, cuda:N or mps"),
    # topology parameters
    ("topology-param-range", ["topology.name=erdos_renyi", "topology.p=2.0"], "erdos_renyi"),
    ("topology-param-unknown", ["topology.d=3"], "ring takes no params; got d=3"),
    ("topology-too-small", ["data.num_clients=2"], "ring needs n >= 3, got n=2"),
    ("small-world-k", ["topology.name=small_world", "topology.k=3"], "small_world"),
    # data that cannot be split as asked
    ("more-clients-than-samples", ["data.num_clients=5000", "topology.name=complete"],
     "5000 clients but only"),
    ("shards", ["data.partition=shards", "data.shards_per_client=1000"], "shards"),
]


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "small.toml", **SMALL)


@pytest.mark.parametrize("overrides,needle", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_value(config, tmp_path, capsys, overrides, needle):
    out = tmp_path / "out"
    sets = [a for o in overrides for a in ("--set", o)]
    assert_user_error(["run", str(config), "--out", str(out), "--quiet", *sets], capsys, needle)
    assert not out.exists()


IN_FILE = [c for c in CONFIG_CASES if c[0] in (
    "type-int", "type-bool", "type-table", "lr-zero", "participation-zero", "q-zero", "on-nan", "mixing",
    "dataset", "topology-param-unknown", "more-clients-than-samples")]


@pytest.mark.parametrize("overrides,needle", [c[1:] for c in IN_FILE], ids=[c[0] for c in IN_FILE])
def test_bad_config_value_in_a_toml_file(tmp_path, capsys, overrides, needle):
    """The same checks when the bad value sits in the file rather than in --set."""
    from dfl.config import parse_overrides

    p = write_config(tmp_path / "bad.toml", parse_overrides(overrides), **SMALL)
    out = tmp_path / "out"
    assert_user_error(["run", str(p), "--out", str(out), "--quiet"], capsys, needle)
    assert not out.exists()


# ---------------------------------------------------------------- edge lists


def write_edges(tmp_path, text):
    p = tmp_path / "edges.txt"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,needle", [
    ("0 1\n1 2\n2 3\n3 0\n", "has 4 nodes but n=6"),
    ("0 1\n1 2\n2 0\n3 4\n4 5\n5 3\n", "graph is disconnected: 2 components"),
    ("0 1\n1 x\n", "from_edgelist: cannot read"),
    ("0 1\n1 2\n2 3\n3 4\n4 5\n5 9\n", "has 7 nodes but n=6"),
], ids=["node-count", "two-components", "garbage", "node-ids"])
def test_bad_edge_list(config, tmp_path, capsys, text, needle):
    edges = write_edges(tmp_path, text)
    out = tmp_path / "out"
    assert_user_error(["run", str(config), "--out", str(out), "--quiet", "--set", "topology.name=from_edgelist",
                       "--set", f"topology.path={edges}"], capsys, needle)
    assert not out.exists()


def test_missing_edge_list(config, tmp_path, capsys):
    out = tmp_path / "out"
    assert_user_error(["run", str(config), "--out", str(out), "--set", "topology.name=from_edgelist",
                       "--set", f"topology.path={tmp_path / 'none.txt'}"], capsys, "no such file")
    assert not out.exists()


# ---------------------------------------------------------------- data files


def test_mnist_root_is_an_empty_directory(config, tmp_path, capsys):
    root = tmp_path / "mnist"
    root.mkdir()
    out = tmp_path / "out"
    assert_user_error(["run", str(config), "--out", str(out), "--set", "data.name=mnist",
                       "--set", f"data.root={root}"], capsys, "not found in")
    assert not out.exists()


def test_mnist_root_not_set(config, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DFL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert_user_error(["run", str(config), "--out", str(out), "--set", "data.name=mnist"], capsys, "mnist")
    assert not out.exists()


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_files_are_garbage(config, tmp_path, capsys, gz):
    root = tmp_path / "mnist"
    root.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        data = os.urandom(64)
        if gz:
            (root / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (root / stem).write_bytes(data)
    out = tmp_path / "out"
    assert_user_error(["run", str(config), "--out", str(out), "--set", "data.name=mnist",
                       "--set", f"data.root={root}"], capsys, "not a valid IDX file")
    assert not out.exists()


def test_data_root_is_a_file(config, tmp_path, capsys):
    f = tmp_path / "file.bin"
    f.write_bytes(b"\x00" * 10)
    out = tmp_path / "out"
    assert_user_error(["run", str(config), "--out", str(out), "--set", "data.name=cifar10",
                       "--set", f"data.root={f}"], capsys, "is not a directory")
    assert not out.exists()


def test_cifar_batches_are_garbage(config, tmp_path, capsys):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"garbage, not a pickle")
    out = tmp_path / "out"
    assert_user_error(["run", str(config), "--out", str(out), "--set", "data.name=cifar10",
                       "--set", f"data.root={tmp_path / 'cifar'}"], capsys, "not a valid CIFAR python batch")
    assert not out.exists()


# ---------------------------------------------------------------- config files and the CLI


@pytest.mark.parametrize("text,needle", [
    ("rounds = [\n", "not valid TOML"),
    ("[local]\nlr = 0.1\nlrr = 2\n", "unknown key 'local.lrr'"),
    ("[locall]\nlr = 0.1\n", "unknown key 'locall'"),
    ("rounds = []\n", "a sweep axis needs at least one value"),
], ids=["toml-syntax", "unknown-key", "unknown-section", "empty-axis"])
def test_bad_config_file(tmp_path, capsys, text, needle):
    p = tmp_path / "c.toml"
    p.write_text(text)
    out = tmp_path / "out"
    assert_user_error(["run", str(p), "--out", str(out)], capsys, needle)
    assert not out.exists()


def test_binary_config_file(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    assert_user_error(["run", str(p), "--out", str(tmp_path / "out")], capsys, "not valid TOML")


def test_output_under_a_regular_file(config, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert_user_error(["run", str(config), "--out", str(f / "run"), "--quiet"], capsys, "cannot write there")
    assert f.read_text() == "x"


def test_output_is_a_regular_file(config, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert_user_error(["run", str(config), "--out", str(f), "--quiet"], capsys, "exists and is not a directory")
    assert f.read_text() == "x"


def test_existing_output_is_untouched_by_a_bad_config(config, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert_user_error(["run", str(config), "--out", str(out), "--overwrite",
                       "--set", "model.name=mlpp"], capsys, "did you mean 'mlp'")
    assert (out / "keep.txt").read_text() == "x"


def test_a_bad_variant_of_a_sweep_writes_nothing(config, tmp_path, capsys):
    """The third variant's graph is invalid: found before the sweep directory is created."""
    out = tmp_path / "sweep"
    assert_user_error(["run", str(config), "--out", str(out), "--quiet",
                       "--set", "data.num_clients=[6, 4, 2]"], capsys, "ring needs n >= 3, got n=2")
    assert not out.exists()


def test_a_bad_variant_of_dfl_sweep_writes_nothing(config, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert_user_error(["sweep", str(config), "--out", str(out), "--quiet",
                       "--set", 'topology.mixing=["metropolis", "metropoliss"]'], capsys, "did you mean 'metropolis'")
    assert not out.exists()


@pytest.mark.parametrize("argv,needle", [
    (["run"], "give a CONFIG file"),
    (["run", "--resume", "{tmp}/none"], "no checkpoint.pt there"),
    (["run", "CONFIG", "--resume", "{tmp}/none"], "no checkpoint.pt there"),
    (["sweep", "CONFIG", "--jobs", "0"], "--jobs: must be >= 1, got 0"),
    (["run", "CONFIG", "--bogus"], "unrecognized arguments: --bogus"),
    (["nosuchcommand"], "invalid choice"),
])
def test_bad_command_line(config, tmp_path, capsys, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)).replace("CONFIG", str(config)) for a in argv]
    assert_user_error(argv, capsys, needle)


@pytest.mark.parametrize("sets,needle", [
    ([], "engine: one client needs about"),
    (["engine.chunk_size=6"], "engine.chunk_size: 6 clients at once need about"),
], ids=["one-client", "chunk"])
def test_a_run_that_cannot_fit_stops_before_allocating(config, tmp_path, capsys, monkeypatch, sets, needle):
    """The engine's memory estimate against what the device holds (mocked: 1 client's worth)."""
    from dfl.engines import vectorized

    monkeypatch.setattr(vectorized, "capacity", lambda device: 300_000 if sets else 1_000)  # one client: ~0.1 MB
    out = tmp_path / "out"
    args = [a for o in sets for a in ("--set", o)]
    err = assert_user_error(["run", str(config), "--out", str(out), "--quiet", *args], capsys, needle)
    assert ("local.batch_size" in err and "model.name" in err) or "lower engine.chunk_size" in err
    assert not out.exists()


@pytest.mark.parametrize("algo", ["dfedavg", "pooled"])
def test_a_batch_larger_than_every_shard_is_capped_not_run_away(algo):
    """local.batch_size = 100000 with 16 digits clients: a batch is at most the largest shard (as
    a DataLoader's is at most its dataset), so the round is the round of batch_size = that shard
    (pooled: num_clients such batches, at most the union), not 100,000 draws per client and step;
    a Flower node caps its batch the same way."""
    import time

    from dfl.data import load_federated
    from dfl.flower.local import LocalClient, shard_of
    from dfl.simulation import Simulation
    from tests.conftest import small_config

    cfg = small_config(**{"data.num_clients": 16, "local.local_steps": 2, "algorithm.name": algo})
    fed = load_federated(cfg.data, cfg.seed)
    sizes = [len(t) for t in fed.client_train]
    t0 = time.perf_counter()
    big = Simulation(cfg.replace(**{"local.batch_size": 100000}))
    want = max(sizes) if algo != "pooled" else min(16 * max(sizes), sum(sizes))
    assert big.client_data.batch_size == want < 100000  # before running: a regression fails fast
    got = big.run()
    assert time.perf_counter() - t0 < 60
    ref = Simulation(cfg.replace(**{"local.batch_size": max(sizes)})).run()
    assert [r["test_acc"] for r in got] == [r["test_acc"] for r in ref]
    if algo != "pooled":
        node = LocalClient(big.cfg, shard_of(fed, int(np.argmin(sizes))))  # the smallest shard
        assert node.data.batch_size == max(sizes)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA is available here")
def test_cuda_asked_for_without_cuda(config, tmp_path, capsys):
    out = tmp_path / "out"
    assert_user_error(["run", str(config), "--out", str(out), "--set", "engine.device=cuda"], capsys,
                    "engine.device: 'cuda' asked for but CUDA is not available")
    assert not out.exists()
