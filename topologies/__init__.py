"""Communication graphs, mixing matrices and their spectra for decentralized learning.

    G = topologies.build("torus", 16)                 # networkx graph on nodes 0..15
    W = topologies.mixing_matrix(G, "metropolis")     # 16 x 16 float64, symmetric, doubly stochastic
    topologies.spectral_gap(W)                        # 1 - max(|lambda_2|, |lambda_n|)
    seq = topologies.sequence_for("one_peer_exponential", 16)   # seq.graph(t), seq.mixing(t)

Modules: generators (static graphs), timevarying (graph sequences), random_neighbors (directed,
random per round), catalog (names, build),
mixing (rules), spectra (eigenvalues, gaps, mixing time), report (describe), plotting.
"""
from __future__ import annotations

from .catalog import build, build_sequence, is_time_varying, names, sequence_for
from .errors import TopologyError, unknown_name
from .generators import check_connected
from .mixing import DENSE_MAX_N, effective_rule, mixing_matrix, mixing_matrix_auto, mixing_matrix_sparse, mixing_rules
from .plotting import plot
from .report import describe, period_gap
from .spectra import (consensus_contraction, contraction_factor, effective_gap, eigenvalues,
                      second_largest_modulus, mixing_time, spectral_gap)
from .timevarying import GraphSequence, constant_sequence

__all__ = [
    "DENSE_MAX_N", "GraphSequence", "TopologyError", "build", "build_sequence", "check_connected",
    "consensus_contraction", "constant_sequence", "contraction_factor", "describe",
    "effective_gap", "effective_rule", "eigenvalues", "is_time_varying", "mixing_matrix",
    "mixing_matrix_auto", "mixing_matrix_sparse", "mixing_rules", "mixing_time", "names", "period_gap", "plot",
    "second_largest_modulus", "sequence_for",
    "spectral_gap", "unknown_name",
]
