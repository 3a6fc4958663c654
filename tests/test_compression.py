"""Compressed gossip against math: exact byte counts, the compressors' definitions, Choco-Gossip
(Koloskova et al. 2019) equal to plain gossip without compression and converging where the naive
compressed average stalls; engines, every DFL algorithm, time-varying graphs and resume
(the Ray engine's compressed gossip: tests/test_ray_compression.py)."""
import numpy as np
import pytest
import torch

import topologies

from dfl import rng
from dfl.choco import CompressedGossip, choco_step, naive_step
from dfl.compression import Compressor, Key, index_bytes, stream_bits
from dfl.errors import ConfigError
from dfl.gossip import mix
from dfl.metrics import consensus_distance
from dfl.simulation import Simulation
from tests.conftest import small_config
from tests.helpers import assert_same_history, training_config

KEY = Key(seed=0, round=0, step=0, clients=np.arange(4))


def ring_W(n):
    return topologies.mixing_matrix(topologies.build("ring", n))


# ---------------------------------------------------------------------------- random streams

def test_stream_bits_are_dfl_rng_keys_bit_for_bit():
    clients = np.array([0, 7, 2**40 + 3], dtype=np.uint64)
    got = stream_bits(3, 5, 2, clients, 50).numpy().view(np.uint64)
    want = rng._key(3, rng.COMPRESS, 5, 2, clients.reshape(-1, 1), np.arange(50, dtype=np.uint64).reshape(1, -1))
    assert np.array_equal(got, want)


def test_a_clients_draws_do_not_depend_on_the_other_rows():
    a = Key(1, 2, 3, np.array([5, 9])).uniforms(20, "cpu")
    b = Key(1, 2, 3, np.array([9])).uniforms(20, "cpu")
    assert torch.equal(a[1], b[0]) and 0 <= float(a.min()) and float(a.max()) < 1


# ---------------------------------------------------------------------------- bytes by hand

@pytest.mark.parametrize("name,params,d,expected", [
    ("none", {}, 10, 40),                               # 10 float32
    ("topk", {"ratio": 0.3}, 10, 3 * (4 + 1)),          # k = 3 values + uint8 indices
    ("randomk", {"ratio": 0.3}, 10, 15),
    ("topk", {"ratio": 0.01}, 300, 3 * (4 + 2)),        # k = 3, indices up to 299: uint16
    ("topk", {"ratio": 0.001}, 70_000, 70 * (4 + 4)),   # indices up to 69,999: uint32
    ("topk", {"ratio": 1e-6}, 10, 5),                   # at least one entry
    ("qsgd", {"levels": 7}, 10, 4 + 5),                 # norm + 10 x (1 sign + 3 level bits) = 40 bits
    ("qsgd", {"levels": 1}, 10, 4 + 3),                 # 10 x 2 bits = 20 bits -> 3 bytes
    ("qsgd", {"levels": 8}, 10, 4 + 7),                 # levels 0..8 need 4 bits: 10 x 5 bits
    ("sign", {}, 10, 4 + 2),                            # scale + 10 bits
])
def test_row_bytes_by_hand(name, params, d, expected):
    assert Compressor(name, **params).row_bytes(d) == expected


def test_index_bytes():
    assert [index_bytes(d) for d in (1, 256, 257, 65536, 65537)] == [1, 1, 2, 2, 4]


# ---------------------------------------------------------------------------- the formats

def test_topk_keeps_the_largest_magnitudes_per_row():
    X = torch.tensor([[1.0, -5.0, 2.0, 0.5], [3.0, 0.1, -0.2, -4.0]])
    out = Compressor("topk", ratio=0.5)(X, KEY)
    assert out.tolist() == [[0.0, -5.0, 2.0, 0.0], [3.0, 0.0, 0.0, -4.0]]
    assert torch.equal(Compressor("topk", ratio=1.0)(X, KEY), X)   # k = d: no compression


def test_randomk_keeps_k_entries_unscaled_and_differs_between_clients():
    X = torch.arange(1.0, 4 * 100 + 1).reshape(4, 100)
    out = Compressor("randomk", ratio=0.1)(X, KEY)
    kept = out != 0
    assert kept.sum(1).tolist() == [10] * 4 and torch.equal(out[kept], X[kept])
    assert not torch.equal(kept[0], kept[1])
    assert torch.equal(out, Compressor("randomk", ratio=0.1)(X, KEY))  # same key, same message


def test_qsgd_is_on_its_grid_and_unbiased_up_to_tau():
    torch.manual_seed(0)
    x = torch.randn(1, 50, dtype=torch.float64)
    c, s, d = Compressor("qsgd", levels=4), 4, 50
    tau = 1 + min(d / s**2, d**0.5 / s)
    norm = float(x.norm())
    draws = torch.cat([c(x, Key(0, t, 0, np.array([0]))) for t in range(4000)])
    levels = draws.abs() * s * tau / norm
    assert torch.allclose(levels, levels.round(), atol=1e-9) and float(levels.max()) <= s
    assert torch.all((torch.sign(draws) == torch.sign(x)) | (draws == 0))
    assert torch.allclose(draws.mean(0) * tau, x[0], atol=0.05 * norm)


def test_sign_is_the_scaled_sign():
    X = torch.tensor([[1.0, -3.0, 0.0, 4.0]])
    assert Compressor("sign")(X, KEY).tolist() == [[2.0, -2.0, 2.0, 2.0]]


# ---------------------------------------------------------------------------- gossip math

def test_choco_without_compression_is_plain_gossip():
    torch.manual_seed(0)
    X, W = torch.randn(8, 5, dtype=torch.float64), ring_W(8)
    X1, X_hat = choco_step(X, torch.zeros_like(X), W, 1.0, Compressor("none"), KEY)
    assert torch.allclose(X1, mix(X, W)) and torch.equal(X_hat, X)
    g = CompressedGossip(Compressor("topk", ratio=1.0), gamma=1.0)  # top-k with k = d
    g.init(torch.zeros_like(X))
    assert torch.allclose(g(X, W, 3, round_=0), mix(X, W, 3), atol=1e-12)
    naive = CompressedGossip(Compressor("none"), gamma=1.0, mode="naive")
    assert torch.allclose(naive(X, W, 3, round_=0), mix(X, W, 3), atol=1e-12)


def averaging(name, params, gamma, steps, mode):
    """The averaging problem alone (the paper's Fig. 2 setup): a ring of 16, a random start, no
    training. Returns the start, and the consensus distance after steps // 2 and after steps."""
    torch.manual_seed(0)
    n, d = 16, 200
    X0, W, c = torch.randn(n, d, dtype=torch.float64), ring_W(n), Compressor(name, **params)
    X, X_hat, xis = X0.clone(), torch.zeros_like(X0), []
    for t in range(steps):
        key = Key(0, t, 0, np.arange(n))
        if mode == "choco":
            X, X_hat = choco_step(X, X_hat, W, gamma, c, key)
        else:
            X = naive_step(X, W, gamma, c, key)
        if t + 1 in (steps // 2, steps):
            xis.append(consensus_distance(X))
    assert torch.allclose(X.mean(0), X0.mean(0), atol=1e-9)   # both keep the average
    return consensus_distance(X0), *xis


@pytest.mark.parametrize("name,params,gamma", [("topk", {"ratio": 0.05}, 0.1), ("qsgd", {"levels": 7}, 0.3),
                                               ("sign", {}, 0.1)])
def test_choco_reaches_consensus_where_naive_compressed_averaging_stalls(name, params, gamma):
    xi0, _, choco = averaging(name, params, gamma, 1500, "choco")
    assert choco < 1e-5 * xi0                              # Choco: linear convergence to the average
    _, half, naive = averaging(name, params, gamma, 1500, "naive")
    assert naive > 1e-4 * xi0 and naive > 0.5 * half        # naive: stuck, no progress in the last 750 steps


def test_choco_with_randomk_converges():
    xi0, half, xi = averaging("randomk", {"ratio": 0.05}, 0.05, 3000, "choco")
    assert xi < 1e-5 * xi0 and xi < 1e-3 * half


# ---------------------------------------------------------------------------- config

def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="algorithm.consensus_step"):
        small_config(**{"algorithm.compression": "topk"})
    with pytest.raises(ConfigError, match="algorithm.compression: must be one of"):
        small_config(**{"algorithm.compression": "zip", "algorithm.consensus_step": 0.1})
    with pytest.raises(ConfigError, match="algorithm.compression_ratio"):
        small_config(**{"algorithm.compression_ratio": 0.0})
    with pytest.raises(ConfigError, match="algorithm.compressed_gossip"):
        small_config(**{"algorithm.compressed_gossip": "exact"})
    with pytest.raises(ConfigError, match="centralized"):
        Simulation(small_config(**{"algorithm.name": "fedavg", "algorithm.compression": "qsgd",
                                   "algorithm.consensus_step": 0.1}))


# ---------------------------------------------------------------------------- runs

TOPK = {"algorithm.compression": "topk", "algorithm.compression_ratio": 0.05, "algorithm.consensus_step": 0.2}
KEYS = ("test_acc", "test_loss", "local_test_acc", "train_loss", "consensus", "comm_mb", "compression_ratio")


@pytest.mark.parametrize("changes", [TOPK, {**TOPK, "algorithm.compression": "qsgd", "algorithm.gossip_steps": 2}])
def test_vectorized_equals_serial(changes):
    common = {**changes, "algorithm.name": "dfedsam", "local.optimizer": "sam"}
    v = Simulation(training_config(**common, **{"engine.backend": "vectorized"})).run()
    s = Simulation(training_config(**common, **{"engine.backend": "serial"})).run()
    assert_same_history(v, s, tol=1e-6, keys=KEYS)  # measured: <= 1e-7


def test_comm_mb_counts_the_compressed_bytes():
    sim = Simulation(small_config(**TOPK, **{"algorithm.gossip_steps": 3}))
    h = sim.run()
    d = sim.layout.size
    k = round(0.05 * d)
    row = k * (4 + index_bytes(d))
    # ring of 6: every client sends Q = 3 messages to 2 neighbours a round, 2 rounds
    assert h[-1]["comm_mb"] == pytest.approx(2 * 3 * 6 * 2 * row / 1e6)
    assert h[-1]["compression_ratio"] == pytest.approx(row / (4 * d))
    plain = Simulation(small_config(**{"algorithm.gossip_steps": 3})).run()
    assert plain[-1]["compression_ratio"] == 1.0
    assert plain[-1]["comm_mb"] == pytest.approx(2 * 3 * 6 * 2 * 4 * d / 1e6)


def test_topk_with_k_equal_d_and_gamma_one_is_the_uncompressed_run():
    full = {"algorithm.compression": "topk", "algorithm.compression_ratio": 1.0, "algorithm.consensus_step": 1.0}
    a = Simulation(training_config(**full)).run()
    b = Simulation(training_config()).run()
    assert_same_history(a, b, tol=1e-6, keys=("test_acc", "test_loss", "train_loss", "consensus"))  # measured: <= 1e-8


@pytest.mark.parametrize("algo,opt", [("dpsgd", "sgd"), ("dfedavg", "sgd"), ("dfedavgm", "sgd"),
                                      ("dfedsam", "sam"), ("dfedsam_mgs", "sam")])
def test_every_decentralized_algorithm_and_a_time_varying_graph(algo, opt):
    cfg = small_config(**TOPK, **{"algorithm.name": algo, "local.optimizer": opt, "algorithm.gossip_steps": 2,
                                  "topology.name": "random_matching"})
    sim = Simulation(cfg)
    h = sim.run()
    d = sim.layout.size
    row = round(0.05 * d) * (4 + index_bytes(d))
    assert h[-1]["compression_ratio"] == pytest.approx(row / (4 * d))
    # 6 clients, a perfect matching every round: each sends Q = 2 messages to its one partner
    assert [r["comm_mb"] for r in h] == pytest.approx([t * 6 * 2 * row / 1e6 for t in (1, 2)])
    assert_same_history(h, Simulation(cfg.replace(**{"engine.backend": "serial"})).run(), tol=1e-6, keys=KEYS)


def test_resume_from_a_checkpoint_holding_x_hat():
    cfg = small_config(**{**TOPK, "algorithm.compression": "randomk"}, rounds=4)
    whole = Simulation(cfg).run()
    first = Simulation(cfg)
    while first.round < 2:
        first.step()
    state = first.state_dict()
    assert state["algorithm"]["exchange"]["x_hat"].shape == first.bank.shape
    second = Simulation(cfg)
    second.load_state_dict(state)
    rest = second.run()
    assert_same_history(whole[2:], rest, tol=0, keys=KEYS)


def test_consensus_distance_leaves_a_float64_bank_unchanged():
    X = torch.tensor([[1.0, 2.0], [3.0, 5.0]], dtype=torch.float64)
    assert consensus_distance(X) == pytest.approx(3.25) and X.tolist() == [[1.0, 2.0], [3.0, 5.0]]


# ---------------------------------------------------------------------------- the wire format

@pytest.mark.parametrize("name,params", [("none", {}), ("topk", {"ratio": 0.1}), ("randomk", {"ratio": 0.1}),
                                         ("qsgd", {"levels": 7}), ("qsgd", {"levels": 1}), ("qsgd", {"levels": 20}),
                                         ("sign", {})])
def test_what_travels_is_what_comm_mb_counts_and_decodes_to_the_simulated_message(name, params):
    torch.manual_seed(0)
    n, d = 5, 300
    X, c = torch.randn(n, d), Compressor(name, **params)
    key = Key(0, 3, 1, np.arange(n))
    wire = c.encode(X, key)
    assert sum(a.nbytes for a in wire.values()) == n * c.row_bytes(d)
    assert torch.equal(c.decode_wire(wire, d), c(X, key))


def test_doctests():
    import doctest

    import dfl.compression
    result = doctest.testmod(dfl.compression)
    assert result.failed == 0 and result.attempted > 0


def test_choco_with_a_sparse_W_equals_dense():
    from dfl.gossip import as_operator
    torch.manual_seed(0)
    n = 80
    X, W = torch.randn(n, 30), ring_W(n)
    Wd, Ws = as_operator(W, sparse=False), as_operator(W, sparse=True)
    assert Ws.layout == torch.sparse_csr
    c, key = Compressor("topk", ratio=0.2), Key(0, 0, 0, np.arange(n))
    a, b = choco_step(X, torch.zeros_like(X), Wd, 0.3, c, key), choco_step(X, torch.zeros_like(X), Ws, 0.3, c, key)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("mode", ["choco", "naive"])
def test_the_ray_actors_blockwise_exchange_equals_the_whole_bank_step(mode):
    """dfl.engines.ray_exchange without Ray: three blocks of a ring of 8 send their messages and
    mix their rows; two steps (the first with every copy sent dense, the second from the halos)
    equal choco_step / naive_step on the whole bank, and the copies equal their owners' x_hat."""
    from dfl.choco import Spec
    from dfl.engines.ray_exchange import ExchangePlan, mix_rows, receive, send
    from dfl.gossip import as_operator

    torch.manual_seed(0)
    n, d, blocks = 8, 40, [(0, 3), (3, 5), (5, 8)]
    W, spec = ring_W(n), Spec(Compressor("qsgd", levels=3), gamma=0.4, mode=mode, seed=1)
    X, X_hat = torch.randn(n, d), torch.randn(n, d)
    plan = ExchangePlan.build(W, 0, blocks)
    x_hat, halos, stale = (X_hat if mode == "choco" else None), [None] * 3, plan.stale(None)
    for q in range(2):
        key = Key(1, 5, q, np.arange(n))
        want = choco_step(X, X_hat, W, 0.4, spec.compress, key) if mode == "choco" else \
            (naive_step(X, W, 0.4, spec.compress, key), None)
        sent = [send(spec, X[lo:hi], None if x_hat is None else x_hat[lo:hi], spec.key(5, q, np.arange(lo, hi)),
                     plan.per_actor[b][1], stale[b]) for b, (lo, hi) in enumerate(blocks)]
        rows, hats = [], []
        for a, (lo, hi) in enumerate(blocks):
            incoming = tuple(sent[b][1][slot] for b, slot in plan.sources[a])
            copies = receive(spec, incoming, plan.incoming[a], halos[a], d, torch.device("cpu"))
            rows.append(mix_rows(spec, as_operator(plan.per_actor[a][0]), X[lo:hi], sent[a][0], copies))
            hats.append(sent[a][0])
            halos[a] = (plan.incoming[a], copies)
        X, X_hat = want
        assert torch.allclose(torch.cat(rows), X, atol=1e-6)
        if mode == "choco":
            x_hat = torch.cat(hats)
            assert torch.equal(x_hat, X_hat)
            assert all(torch.equal(c, x_hat[torch.tensor(ids)]) for ids, c in halos)
        X = torch.cat(rows)
        stale = [[np.zeros(len(r), dtype=bool) for r in plan.per_actor[b][1]] for b in range(3)]
