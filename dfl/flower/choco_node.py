"""Compressed gossip on a node: its messages and public copies (dfl.choco, one client).

Node i keeps, in context.state, its public copy x_hat_i and a copy x_hat_j of each graph
neighbour of its last gossip step (R.XHAT_STATE), and the message it sent last (R.SENT_STATE).
Gossip step q of round t, for the vector z_i being gossiped (dfl.flower.client_app):

    send   q_i = C(z_i - x_hat_i)   (naive: C(z_i)), the random streams of randomk / qsgd keyed
           (seed, t, q, i) as `dfl run` keys them; the reply carries its wire format (R.PAYLOAD)
    mix    x_hat_i += q_i, and for every neighbour j of W_t's row: x_hat_j += q_j with the
           message the server relays ("nbr-<j>"), or x_hat_j = the server's copy ("copy-<j>",
           sent when the node holds no up-to-date copy of j: dfl.flower.choco_relay); then
           z_i <- z_i + gamma (W_ii x_hat_i + sum_j W_ij x_hat_j - x_hat_i)      (dfl.choco.consensus)
           naive: the decoded messages in place of the copies, nothing kept

Right after setup every copy equals the node's x_hat_i (the initial model, or a rejoined node's
new model, whose copies the server always sends): a copy the node does not hold and the server did
not send is x_hat_i before the step.
"""
from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict

from .. import choco
from ..compression import Key
from ..config import Config
from . import records as R


def setup(state: RecordDict, model: ArrayRecord) -> None:
    """Start from `model` (the setup message's): x_hat_i = model, no copies, nothing sent."""
    state[R.XHAT_STATE] = ArrayRecord({"self": Array(R.flat(model).numpy())})
    state.pop(R.SENT_STATE, None)


def send(cfg: Config, state: RecordDict, z: torch.Tensor, round_: int, step: int, client: int) -> ArrayRecord:
    """Node `client`'s message of gossip step `step` of round `round_` for the vector z (d,)."""
    z = z.detach().cpu().float()
    x = z if cfg.algorithm.compressed_gossip == "naive" else z - _row(state[R.XHAT_STATE]["self"])
    message = choco.compressor(cfg).encode(x.view(1, -1), Key(cfg.seed, round_, step, np.array([client])))
    state[R.SENT_STATE] = R.payload(message)
    return state[R.SENT_STATE]


def mix(cfg: Config, state: RecordDict, content: RecordDict, conf: dict, z: torch.Tensor) -> torch.Tensor:
    """z (d,) after one compressed gossip step with the neighbours' messages in `content`."""
    compress, d = choco.compressor(cfg), z.numel()

    def decoded(rec: ArrayRecord) -> torch.Tensor:
        return compress.decode_wire(R.unpayload(rec), d)[0]

    nbrs = [int(j) for j in conf["neighbours"] if int(j) >= 0]  # [-1] / [0.0]: an isolated node's placeholders
    weights = torch.tensor([float(conf["self-weight"])] + [float(w) for w in conf["weights"]][:len(nbrs)])
    own = decoded(state[R.SENT_STATE])
    if cfg.algorithm.compressed_gossip == "naive":
        rows = [own] + [decoded(content[f"nbr-{j}"]) for j in nbrs]
        return choco.consensus(z, weights @ torch.stack(rows), own, cfg.algorithm.consensus_step)
    held = state[R.XHAT_STATE]
    before = _row(held["self"])
    rows = [before + own]
    for j in nbrs:
        if f"copy-{j}" in content:
            rows.append(_row(content[f"copy-{j}"]["row"]))
        else:
            rows.append((_row(held[str(j)]) if str(j) in held else before) + decoded(content[f"nbr-{j}"]))
    state[R.XHAT_STATE] = ArrayRecord({"self": Array(rows[0].numpy()),
                                       **{str(j): Array(r.numpy()) for j, r in zip(nbrs, rows[1:])}})
    return choco.consensus(z, weights @ torch.stack(rows), rows[0], cfg.algorithm.consensus_step)


def _row(a: Array) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a.numpy(), dtype=np.float32))
