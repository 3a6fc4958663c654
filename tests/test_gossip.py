"""Gossip and consensus against closed forms (ring spectra, Xi after Q steps)."""
import math

import numpy as np
import pytest
import torch

import topologies
from dfl.gossip import as_operator, mix
from dfl.metrics import consensus_distance


def ring_eigvec(n: int, k: int) -> np.ndarray:
    return np.cos(2 * np.pi * k * np.arange(n) / n)


@pytest.mark.parametrize("q", [1, 2, 4, 8])
@pytest.mark.parametrize("sparse", [False, True])
def test_consensus_after_q_steps_on_ring(q, sparse):
    # x0 = the k-th Fourier mode: W x0 = lambda_k x0 with lambda_k = 1/3 + 2/3 cos(2 pi k / n),
    # so after Q steps Xi = lambda_k^(2Q) Xi_0.
    n, k = 80, 3
    W = topologies.mixing_matrix(topologies.build("ring", n))
    x0 = torch.tensor(ring_eigvec(n, k), dtype=torch.float64).unsqueeze(1).repeat(1, 5)
    lam = 1 / 3 + 2 / 3 * np.cos(2 * np.pi * k / n)
    Wt = as_operator(W, dtype=torch.float64, sparse=sparse)
    xq = mix(x0, Wt, steps=q)
    assert consensus_distance(xq) == pytest.approx(lam ** (2 * q) * consensus_distance(x0), rel=1e-9)


def test_mix_preserves_mean_and_reaches_consensus():
    n = 16
    W = topologies.mixing_matrix(topologies.build("ring", n))
    X = torch.randn(n, 7, dtype=torch.float64)
    Y = mix(X, W, steps=2000)
    assert torch.allclose(Y.mean(0), X.mean(0), atol=1e-12)
    assert consensus_distance(Y) < 1e-12


def test_sparse_and_dense_agree():
    n = 200
    W = topologies.mixing_matrix(topologies.build("exponential", n))
    X = torch.randn(n, 33)
    dense = mix(X, as_operator(W, sparse=False), 3)
    sparse = mix(X, as_operator(W, sparse=True), 3)
    assert as_operator(W).layout == torch.sparse_csr  # picked automatically: exponential graph is sparse
    assert torch.allclose(dense, sparse, atol=1e-6)


def test_consensus_distance_definition():
    X = torch.tensor([[1.0, 2.0], [3.0, 6.0], [2.0, 4.0]])
    xbar = X.mean(0)
    expected = float(((X - xbar) ** 2).sum(1).mean())
    assert consensus_distance(X) == pytest.approx(expected)
    assert consensus_distance(X[:1]) == 0.0


def test_complete_graph_averages_in_one_step():
    n = 9
    W = topologies.mixing_matrix(topologies.build("complete", n))
    X = torch.randn(n, 4, dtype=torch.float64)
    assert torch.allclose(mix(X, W), X.mean(0).expand(n, -1), atol=1e-12)


def test_scipy_sparse_w_stays_sparse_and_agrees():
    n = 300
    G = topologies.build("ring", n)
    dense = as_operator(topologies.mixing_matrix(G))
    sparse = as_operator(topologies.mixing_matrix_sparse(G))
    assert sparse.layout == torch.sparse_csr
    X = torch.randn(n, 11)
    assert torch.allclose(mix(X, dense, 2), mix(X, sparse, 2), atol=1e-6)


@pytest.mark.parametrize("graph", ["ring", "exponential"])
def test_sparse_gossip_over_column_blocks_equals_one_product(monkeypatch, graph):
    # 64 rows x 5,000 columns with 4 kB blocks: widths of 1,024 columns, the last block partial
    import dfl.gossip as gossip

    n = 64
    W = topologies.mixing_matrix(topologies.build(graph, n))
    X = torch.randn(n, 5, 1000, dtype=torch.float64)
    S = as_operator(W, dtype=torch.float64, sparse=True)
    whole = (S @ X.reshape(n, -1)).reshape(X.shape)
    monkeypatch.setattr(gossip, "BLOCK_BYTES", 4096)
    blocked = mix(X, S, steps=2)
    assert torch.equal(blocked, (S @ whole.reshape(n, -1)).reshape(X.shape))
    torch.testing.assert_close(blocked, torch.einsum("ij,jk,k...->i...", torch.as_tensor(W), torch.as_tensor(W), X))


def test_consensus_distance_is_exactly_zero_for_equal_rows_and_matches_float64_otherwise():
    row = torch.randn(1, 1000) * 0.1 + 0.3  # values whose float64 mean over 7 rows is inexact
    assert consensus_distance(row.expand(7, -1).clone()) == 0.0
    X = torch.randn(300, 5000)  # 300 rows in blocks of 52: the float64 reference, to rounding
    ref = float(((X.double() - X.double().mean(0)) ** 2).sum(1).mean())
    assert consensus_distance(X) == pytest.approx(ref, rel=1e-12)
    X[3, 7] = float("nan")
    assert math.isnan(consensus_distance(X))


def test_bank_combine_adds_left_to_right_as_written():
    """D-PSGD's W^Q x^b + (x^a - x^b) is combine([(1, a), (-1, b), (1, mixed)]), bit for bit."""
    from dfl.gossip import BankOps

    g = torch.Generator().manual_seed(0)
    a, b, m = (torch.randn(5, 7, generator=g) for _ in range(3))
    assert torch.equal(BankOps().combine([(1.0, a), (-1.0, b), (1.0, m)]), m + (a - b))
    assert torch.equal(BankOps().combine([(2.0, a)]), 2 * a)


def test_mixing_isolates_lost_nodes_and_keeps_one_w():
    """Mixing: W_t on the round's graph; lost nodes are isolated (their row of W is e_i) and the gap
    is that of the survivors' block; a static graph builds W once."""
    from dfl.gossip import Mixing

    seq = topologies.build_sequence("ring", 6)
    mixing = Mixing(seq, "metropolis", varying=False)
    rg = mixing(0)
    assert mixing(5) is rg and rg.degrees.tolist() == [2.0] * 6
    assert rg.gap == pytest.approx(topologies.spectral_gap(topologies.mixing_matrix(seq.graph(0))))
    lost = mixing(3, frozenset({2}))
    assert lost.W[2, 2] == 1.0 and lost.degrees[2] == 0 and lost.graph.number_of_edges() == 4
    path = topologies.mixing_matrix(lost.graph)[np.ix_([0, 1, 3, 4, 5], [0, 1, 3, 4, 5])]
    assert lost.gap == pytest.approx(topologies.spectral_gap(path))


def test_a_block_of_rows_follows_the_rule_of_its_square():
    """as_operator picks CSR by density when W has at least SPARSE_MIN_N ** 2 entries, square or not."""
    from dfl.gossip import SPARSE_MIN_N

    block = np.eye(SPARSE_MIN_N)[: SPARSE_MIN_N // 2]
    assert as_operator(block).layout == torch.strided  # 2048 entries: dense
    assert as_operator(np.eye(SPARSE_MIN_N)).layout == torch.sparse_csr
    assert as_operator(np.eye(2 * SPARSE_MIN_N)[:SPARSE_MIN_N]).layout == torch.sparse_csr
