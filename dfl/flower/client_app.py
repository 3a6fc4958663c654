"""The ClientApp: one federation client per SuperNode (Flower's Message API).

Message types it answers:

    train            FedAvg family: train the received global model (Flower's FedAvg / FedAvgM).
                     MoFedSAM's server adds the ArrayRecord "correction" (Delta) and the config key
                     "correction-grad-scale" (alpha): each step descends along alpha g + (1-alpha) Delta.
    evaluate         accuracy / loss of the received global model on this client's held-out split.
    query.identify   reply with this node's client id (a node that connects mid-run, dfl.flower.tolerant).
    query.setup      gossip: store the initial model (a rejoining node: its neighbours' mean) and
                     start with fresh optimizer state; reply with this node's client id.
    train.gossip     gossip: train the node's own model (kept in context.state between rounds).
    query.mix        gossip: one step z_i <- W_ii z_i + sum_j W_ij z_j with the neighbours' z_j;
                     the round's last step also reports the local accuracy on evaluated rounds.

With algorithm.compression the gossip messages are compressed (dfl.flower.choco_node): replies to
train.gossip and to every query.mix but the round's last carry the node's next message
(R.PAYLOAD) instead of z_i, query.mix carries the neighbours' messages, and

    query.encode     gossip, compressed: a node that does not train this round sends its first
                     message (of its model).

Every reply carries the metric "client-weight" = 1: dfl averages clients with equal weights; replies
to train / evaluate also say which client answered ("client_id", for the record of lost nodes).
The optimizer state (momentum, SAF / MESA trajectories) stays on the node, in context.state.
Every message's config carries "num-clients", the client count the ServerApp settled on
(dfl.flower.federation): the node builds its Config with it.

Start-up: on a SuperNode every message starts a fresh ClientApp process (flwr 1.41 has no way
to keep one warm), so the per-message work is kept small: no dataset beyond this client's
shard, and torch.optim's lazy import of torch._dynamo (about 1 s, for an optimizer that is
never compiled) is skipped (``_skip_dynamo_import``).
"""
from __future__ import annotations

import sys

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..algorithms import Correction
from ..config import Config
from ..simulation import resolve_device
from . import choco_node
from . import records as R
from .local import LocalClient, load_shard
from .settings import node_identity, run_config

app = ClientApp()


def _skip_dynamo_import() -> None:
    """Mark torch.optim.Optimizer's dynamo-disabled methods as already wrapped.

    torch wraps them in ``torch._disable_dynamo``, which imports torch._dynamo on the first call
    (about 1 s of a ClientApp process's start) to build the wrapper. A ClientApp never compiles,
    so the plain method is the right "disabled" version. Skipped when torch._dynamo is already
    imported (then the wrapper costs nothing) or when torch's wrapper is not the expected one.
    """
    if "torch._dynamo" in sys.modules:
        return
    try:
        probe = torch._compile._disable_dynamo(lambda: None)
        from torch.optim.optimizer import Optimizer
    except (AttributeError, ImportError):
        return
    for fn in vars(Optimizer).values():
        inner = getattr(fn, "__wrapped__", None)
        if getattr(fn, "__code__", None) is probe.__code__ and inner is not None:
            setattr(inner, "__dynamo_disable", inner)


def _config(msg: Message, context: Context) -> Config:
    """The run's dfl Config, with the client count the ServerApp sent ("num-clients")."""
    n = R.config_of(msg.content).get("num-clients")
    return run_config(context.run_config, None if n is None else int(n))


def _client(context: Context, msg: Message) -> LocalClient:
    cfg = _config(msg, context)
    _skip_dynamo_import()
    if cfg.engine.threads:
        torch.set_num_threads(cfg.engine.threads)
    node = node_identity(context.node_config, cfg)
    client = LocalClient(cfg, load_shard(cfg, node), resolve_device(cfg.engine.device))
    state = context.state.config_records.get(R.STATE)
    if state is not None and "optimizer" in state:
        client.load_state(bytes(state["optimizer"]))
    return client


def _save(context: Context, client: LocalClient) -> None:
    context.state[R.STATE] = ConfigRecord({"optimizer": client.save_state()})


def _reply(msg: Message, arrays: ArrayRecord | None = None, payload: ArrayRecord | None = None,
           **metrics: float) -> Message:
    content = RecordDict({R.METRICS: MetricRecord({**metrics, R.WEIGHT: 1.0})})
    if arrays is not None:
        content[R.ARRAYS] = arrays
    if payload is not None:
        content[R.PAYLOAD] = payload
    return Message(content=content, reply_to=msg)


def _compressed(cfg: Config) -> bool:
    return cfg.algorithm.compression != "none"


# ------------------------------------------------------------------ centralized (FedAvg family)
@app.train()
def train(msg: Message, context: Context) -> Message:
    """K local steps from the global model; reply with the local model and its training loss."""
    client = _client(context, msg)
    row = R.from_record(client.layout, msg.content[R.ARRAYS])
    conf = R.config_of(msg.content)
    correction = None
    if R.CORRECTION in msg.content.array_records:
        direction = R.from_record(client.layout, msg.content[R.CORRECTION]).to(client.device)
        correction = Correction(grad_scale=float(conf["correction-grad-scale"]), direction=direction)
    new, loss = client.train(row, int(conf["server-round"]) - 1, correction)
    _save(context, client)
    return _reply(msg, R.to_record(client.layout, new), train_loss=loss, client_id=float(client.shard.client_id))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Accuracy and loss of the received model on this client's held-out split."""
    client = _client(context, msg)
    acc, loss = client.evaluate(R.from_record(client.layout, msg.content[R.ARRAYS]))
    return _reply(msg, local_acc=acc, local_loss=loss, client_id=float(client.shard.client_id))


# ------------------------------------------------------------------ decentralized (gossip)
@app.query("identify")
def identify(msg: Message, context: Context) -> Message:
    """Tell the server which client this node is (partition-id)."""
    node = node_identity(context.node_config, _config(msg, context))
    return _reply(msg, client_id=float(node.client_id))


@app.query("setup")
def setup(msg: Message, context: Context) -> Message:
    """Keep the initial model (with compression: as x_hat_i too); tell the server which client this node is."""
    cfg = _config(msg, context)
    node = node_identity(context.node_config, cfg)
    context.state[R.MODEL_STATE] = msg.content[R.ARRAYS]
    context.state[R.STATE] = ConfigRecord({"optimizer": b"", "mix-round": -1})
    if _compressed(cfg):
        choco_node.setup(context.state, msg.content[R.ARRAYS])
    return _reply(msg, client_id=float(node.client_id))


@app.train("gossip")
def train_gossip(msg: Message, context: Context) -> Message:
    """Train the node's own model; reply with the vector this round gossips (z_i).

    z_i is the trained model (DFedAvg / DFedSAM family) or, for D-PSGD ("mix-before"), the
    model before the step, whose update is added back after mixing. With compression the reply
    carries the first message of z_i instead.
    """
    client = _client(context, msg)
    conf = R.config_of(msg.content)
    t = int(conf["round"])
    before = R.from_record(client.layout, context.state[R.MODEL_STATE])
    after, loss = client.train(before, t, None)
    z = before if conf.get("mix-before") else after
    context.state[R.MODEL_STATE] = R.to_record(client.layout, after)
    context.state[R.MIX_STATE] = R.to_record(client.layout, z)
    if conf.get("mix-before"):
        context.state[R.DELTA_STATE] = R.to_record(client.layout, after - before)
    else:
        context.state.pop(R.DELTA_STATE, None)
    _save(context, client)
    context.state[R.STATE]["mix-round"] = t
    if _compressed(client.cfg):
        message = choco_node.send(client.cfg, context.state, z, t, 0, client.shard.client_id)
        return _reply(msg, payload=message, train_loss=loss)
    return _reply(msg, R.to_record(client.layout, z), train_loss=loss)


@app.query("encode")
def encode(msg: Message, context: Context) -> Message:
    """Compressed gossip, a node that does not train this round: the first message of its model."""
    cfg = _config(msg, context)
    t = int(R.config_of(msg.content)["round"])
    z_rec, _ = _mix_state(context, t)
    client = node_identity(context.node_config, cfg).client_id
    return _reply(msg, payload=choco_node.send(cfg, context.state, R.flat(z_rec), t, 0, client))


def _mix_state(context: Context, t: int) -> tuple[ArrayRecord, ArrayRecord | None]:
    """(z_i, update to add after mixing) of round t; a node that did not train mixes its model."""
    state = context.state[R.STATE]
    if int(state.get("mix-round", -1)) != t:
        state["mix-round"] = t
        context.state[R.MIX_STATE] = context.state[R.MODEL_STATE]
        context.state.pop(R.DELTA_STATE, None)
    return context.state[R.MIX_STATE], context.state.array_records.get(R.DELTA_STATE)


@app.query("mix")
def mix(msg: Message, context: Context) -> Message:
    """One gossip step z_i <- W_ii z_i + sum_j W_ij z_j (compressed: dfl.flower.choco_node's);
    after the last, x_i = z_i + update."""
    conf = R.config_of(msg.content)
    z_rec, delta = _mix_state(context, int(conf["round"]))
    cfg = _config(msg, context)
    if _compressed(cfg):
        return _mix_compressed(msg, context, cfg, z_rec, delta)
    names = list(z_rec.keys())
    z = {k: z_rec[k].numpy() * float(conf["self-weight"]) for k in names}
    for j, w in zip(conf.get("neighbours", []), conf.get("weights", [])):
        if int(j) < 0:  # placeholder of an isolated node (ConfigRecord lists are never empty)
            continue
        nbr = msg.content[f"nbr-{int(j)}"]
        for k in names:
            z[k] = z[k] + float(w) * nbr[k].numpy()
    new = ArrayRecord({k: Array(v.astype("float32")) for k, v in z.items()})
    context.state[R.MIX_STATE] = new
    if not conf.get("last"):
        return _reply(msg, new)
    if delta is not None:
        new = ArrayRecord({k: Array((new[k].numpy() + delta[k].numpy()).astype("float32")) for k in names})
    return _mixed(msg, context, new)


def _mix_compressed(msg: Message, context: Context, cfg: Config, z_rec: ArrayRecord,
                    delta: ArrayRecord | None) -> Message:
    """One compressed gossip step (dfl.flower.choco_node); reply with the next step's message,
    or after the last step with the model."""
    conf = R.config_of(msg.content)
    z = choco_node.mix(cfg, context.state, msg.content, conf, R.flat(z_rec))
    if not conf.get("last"):
        context.state[R.MIX_STATE] = R.like(z_rec, z)
        client = node_identity(context.node_config, cfg).client_id
        message = choco_node.send(cfg, context.state, z, int(conf["round"]), int(conf["step"]) + 1, client)
        return _reply(msg, payload=message)
    return _mixed(msg, context, R.like(z_rec, z if delta is None else z + R.flat(delta)))


def _mixed(msg: Message, context: Context, model: ArrayRecord) -> Message:
    """After the round's last gossip step: keep the model, reply with it (and, on evaluated
    rounds, its local accuracy)."""
    context.state[R.MODEL_STATE] = model
    if not R.config_of(msg.content).get("evaluate"):
        return _reply(msg, model)
    acc, loss = _own_accuracy(context, msg)
    return _reply(msg, model, local_acc=acc, local_loss=loss)


def _own_accuracy(context: Context, msg: Message) -> tuple[float, float]:
    client = _client(context, msg)
    return client.evaluate(R.from_record(client.layout, context.state[R.MODEL_STATE]))
