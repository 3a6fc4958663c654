"""engine.backend = "ray": blocks of clients on Ray actors, gossip peer to peer through the object store.

Placement: the n clients are split into k contiguous blocks, one per actor (``ray_actor.ClientBlock``),
each trained with the vectorized engine. k = ceil(n / engine.clients_per_actor), or by default
one actor per GPU share (engine.gpus_per_actor; 1 if the cluster has GPUs) or per
engine.cpus_per_actor CPUs. Batches come from per-client random streams keyed by the global client
id, so the run gives the vectorized backend's numbers whatever the placement.

The bank never sits in the driver: ``place`` turns it into a ``RayBank`` (ray_bank.py), a handle
to a linear combination of actor-held slots, and the engine's bank operations (dfl.gossip.BankOps)
work on handles: a round is train (in the actors) then the algorithm's aggregate, whose gossip goes
through ``RayEngine.mix`` (RoundContext.mix): Q two-phase exchanges in which each actor
publishes the rows its graph neighbours need and computes its rows of W x from them
(ray_exchange.py's plan); with algorithm.compression, ``compressed_mix``: the same exchanges
carrying encoded messages, the public copies x_hat kept by the actors (ray_exchange.py); D-PSGD's
W^Q x^before + (x^after - x^before) is ``combine``, a new handle (the actors add the slots when
they read it). Evaluation reduces in the actors: x_bar = (1/n) sum_i x_i and, in float64,
consensus = (1/n) sum_i ||x_i||^2 - ||x_bar||^2 = (1/n) sum_i ||x_i - x_bar||^2.
Centralized algorithms (server averaging, RunSettings.engine_rows False) keep plain tensors in
the driver, and the in-process operations apply to them.

Faults: the actors run with max_restarts; at the start of every round the driver keeps a snapshot
(object refs) of every actor's live slots (with their halos: the copies of x_hat) and optimizer
state, and logs the round's operations. When an actor dies, every actor is restored from the
snapshot and the round's operations are replayed (deterministic), so the run goes on exactly;
``actor_restarts`` in the metrics counts recoveries.
"""
from __future__ import annotations

import copy
import gc
import logging
import math
import time
import weakref
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils._pytree import tree_map

import ray

from ..choco import Spec
from ..errors import DflError
from . import ray_session
from .base import Engine
from .ray_actor import NotReady
from .ray_bank import RayBank, Slots
from .ray_exchange import ExchangePlan

#: Recoveries tried per operation.
MAX_RECOVERIES = 3
#: Seconds to wait for actors to be placed (and restarted) before giving up with a message.
PLACEMENT_TIMEOUT_S = 120.0


def _actor_failure(exc: BaseException) -> bool:
    """An actor died (or came back empty after Ray restarted it: ray_actor.NotReady)."""
    errors = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, NotReady)
    return isinstance(exc, errors) or isinstance(getattr(exc, "cause", None), errors)


class RayEngine(Engine):
    """The clients' local training and gossip on Ray actors (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.n = self.data.n
        self.restarts = 0
        self.engine_config = self.settings.engine_config
        self.actors: list[Any] = []
        self.blocks: list[tuple[int, int]] = []
        self.slots = Slots()
        self._snap: Optional[list[Any]] = None
        self._log: list[tuple[str, tuple[Any, ...]]] = []  # method names: no cycle through self
        self._plan: Optional[ExchangePlan] = None  # of the last W mixed
        self._finalizer: Optional[weakref.finalize] = None
        self._restarted: set[int] = set()  # indices of actors that died and were restarted

    # ------------------------------------------------------------------ the bank's place
    def place(self, bank: torch.Tensor) -> Any:
        """The actors' handle of the rows (they go to the actors when these start); the tensor
        itself when the driver's algorithm reads the rows (server averaging: the actors only train)."""
        return self._scatter(bank) if self.settings.engine_rows else bank

    def metrics(self) -> dict[str, Any]:
        return {"actor_restarts": self.restarts}

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    # ------------------------------------------------------------------ slots
    def _scatter(self, bank: torch.Tensor) -> RayBank:
        name = self.slots.new()
        if not self.actors:
            self.slots.pending[name] = bank.detach().cpu().clone()
        else:
            self._op("_load", {name: bank.detach().cpu()})
        return self.slots.handle(name)

    def _load(self, slots: dict[str, torch.Tensor]) -> None:
        ray.get([a.load.remote({k: v[lo:hi].clone() for k, v in slots.items()})
                 for a, (lo, hi) in zip(self.actors, self.blocks)])

    # ------------------------------------------------------------------ actors
    def _start(self) -> None:
        gc.collect()  # a finished run's actors, if only a reference cycle still held them
        owned = ray_session.connect(self.engine_config)
        try:
            k, cpus, gpus = ray_session.placement(self.n, self.engine_config, ray_session.free_resources())
            self._spec_ref = ray.put(self._spec(cpus))  # kept: restarted actors rebuild from it
            bounds = np.linspace(0, self.n, k + 1).round().astype(int)
            self.blocks = [(int(bounds[i]), int(bounds[i + 1])) for i in range(k)]
            actors = ray_session.acquire(k, cpus, gpus)
            self._finalizer = weakref.finalize(self, ray_session.release, actors, cpus, gpus, owned,
                                               self._restarted)
            try:
                ray.get([a.setup.remote([self._spec_ref], lo, hi)
                         for a, (lo, hi) in zip(actors, self.blocks)], timeout=PLACEMENT_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                raise DflError(f"Ray could not start {k} actors ({cpus:g} CPU, {gpus:g} GPU each) within "
                               f"{PLACEMENT_TIMEOUT_S:.0f} s; is the cluster busy?") from None
            self.actors = actors
            self.placement_info = ray.get([a.info.remote() for a in actors])
        except BaseException:
            if self._finalizer is not None:
                self.close()
            elif owned:
                ray_session.disconnect()
            raise
        pending, self.slots.pending = self.slots.pending, {}
        self._op("_load", {k: v for k, v in pending.items() if k in self.slots.live})
        self._checkpoint()

    def actor_info(self) -> list[dict[str, Any]]:
        """Where each actor runs: pid, clients, device, GPU ids, CUDA_VISIBLE_DEVICES, node."""
        return self._op(lambda: ray.get([a.info.remote() for a in self.actors]), mutating=False)

    def _spec(self, cpus: float) -> dict[str, Any]:
        d = self.data
        parts = [d.shards[i, :int(d.sizes[i])].cpu() for i in range(d.n)]
        return {"model": copy.deepcopy(self.model).cpu(),
                "layout": self.layout, "optimizer": self.optimizer, "hparams": self.hparams, "local": self.local,
                "chunk_size": self.chunk_size, "seed": d.seed, "batch_size": d.batch_size, "augment": d.augment,
                "num_classes": d.num_classes, "x": d.x.cpu(), "y": d.y.cpu(), "train_parts": parts,
                "eval": self._eval_spec(), "device": self.engine_config.device,
                "threads": self.engine_config.threads or max(1, math.ceil(cpus))}

    def _eval_spec(self) -> Optional[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]:
        """The local test sets the actors evaluate their rows on (None: the driver evaluates)."""
        ev = self.settings.evaluation
        if ev is None or not self.settings.engine_rows:
            return None
        return ev.x.cpu(), ev.y.cpu(), ev.parts()

    def _op(self, fn: str | Callable[..., Any], *args: Any, mutating: bool = True) -> Any:
        """Run fn(*args) (remote calls + ray.get; fn a method name when mutating, for the replay log);
        after an actor died, recover and retry."""
        if not self.actors:
            self._start()
        call = getattr(self, fn) if isinstance(fn, str) else fn
        for attempt in range(MAX_RECOVERIES + 1):
            try:
                if attempt:  # inside the loop: a death during the replay is one more failed attempt
                    self._recover()
                out = call(*args)
                break
            except Exception as exc:  # noqa: BLE001 - only actor deaths are retried
                if not _actor_failure(exc):
                    raise
                if attempt == MAX_RECOVERIES:
                    raise DflError(f"Ray actors kept dying: {MAX_RECOVERIES} recoveries of one operation failed "
                                   f"({type(exc).__name__}; Ray restarts an actor at most "
                                   f"{ray_session.MAX_RESTARTS} times); continue the run from its last "
                                   "checkpoint with `dfl run --resume DIR`") from exc
        if mutating:
            self._log.append((fn, args))
        return out

    def _recover(self) -> None:
        """An actor died: wait for its restart, restore every actor from the round's snapshot, replay."""
        self.restarts += 1
        logging.getLogger("dfl").warning("a Ray actor died; restarting it and replaying the round")
        infos = [_wait_alive(a) for a in self.actors]
        # a restarted actor has used some of its restarts: it is not handed to the next run (close)
        self._restarted.update(i for i, info in enumerate(infos) if not info["ready"])
        ray.get([a.setup.remote([self._spec_ref], lo, hi)
                 for a, (lo, hi), info in zip(self.actors, self.blocks, infos) if not info["ready"]])
        snap = self._snap or [None] * len(self.actors)
        ray.get([a.restore.remote(s) for a, s in zip(self.actors, snap)])
        if self._plan is not None:
            self._send_plan()
        for name, args in self._log:
            getattr(self, name)(*args)

    def _checkpoint(self) -> None:
        """Snapshot every actor's live slots and optimizer state (refs kept by the driver)."""
        def snap() -> list[Any]:
            live = sorted(self.slots.live)
            pairs = [a.snapshot.options(num_returns=2).remote(live) for a in self.actors]
            ray.get([p[0] for p in pairs])
            return [p[1] for p in pairs]
        self._snap = self._op(snap, mutating=False)
        self._log = []

    # ------------------------------------------------------------------ Engine interface
    def train(self, bank, active, steps, lr, round_, correction):
        handle = bank if isinstance(bank, RayBank) else self._scatter(bank)
        if self.actors:
            self._checkpoint()  # the last completed round: what a restarted actor goes on from
        out = self.slots.new()
        losses = self._op("_train", out, handle.terms, active, steps, lr, round_, correction)
        result = self.slots.handle(out)
        return (result if isinstance(bank, RayBank) else self.gather(result).to(bank.device)), losses

    def _train(self, out, terms, active, steps, lr, round_, correction) -> np.ndarray:
        corr = correction and type(correction)(correction.grad_scale, correction.direction.cpu())
        refs = [a.train.remote(out, terms, active, steps, lr, round_, corr) for a in self.actors]
        return np.concatenate(ray.get(refs))

    def mix(self, X: Any, W: Any, steps: int = 1) -> RayBank:
        """W^steps X between the actors (the algorithms' RoundContext.mix)."""
        handle = self._handle(X)
        key = self._use_plan(W)
        out = self.slots.new()
        self._op("_mix", out, handle.terms, key, steps)
        return self.slots.handle(out)

    def compressed_mix(self, X: Any, x_hat: Any, W: Any, steps: int, round_: int,
                       spec: Spec) -> tuple[RayBank, Optional[RayBank]]:
        """(X, x_hat) after `steps` compressed gossip steps between the actors (ray_exchange):
        encoded messages travel, every actor keeps x_hat of its rows and copies of its sources'."""
        handle = self._handle(X)
        hat = self._handle(x_hat) if x_hat is not None else None
        key = self._use_plan(W)
        (hat_name, coef), = hat.terms if hat is not None else ((None, 1.0),)
        assert coef == 1.0, "x_hat is a slot"
        stale = self._plan.stale(self.slots.halos.get(hat_name)) if hat is not None else [None] * len(self.actors)
        out, out_hat = self.slots.new(), (self.slots.new() if hat is not None else None)
        self._op("_compressed_mix", out, out_hat, handle.terms, hat_name, key, steps, round_, spec, stale)
        if out_hat is not None:
            self.slots.halos[out_hat] = self._plan.incoming
        return self.slots.handle(out), (self.slots.handle(out_hat) if out_hat is not None else None)

    def _handle(self, X: Any) -> RayBank:
        """X as the actors' handle (a tensor goes to the actors); the actors started."""
        handle = X if isinstance(X, RayBank) else self._scatter(X)
        if not self.actors:
            self._start()
        return handle

    def _use_plan(self, W: Any) -> int:
        """The key of W's exchange plan, built and sent to the actors when W is new."""
        if self._plan is None or self._plan.W is not W:
            self._plan = ExchangePlan.build(W, self._plan.key + 1 if self._plan else 0, self.blocks)
            self._op("_send_plan")
        return self._plan.key

    def _send_plan(self) -> None:
        p = self._plan
        ray.get([a.set_plan.remote(p.key, block, dests, ids)
                 for a, (block, dests), ids in zip(self.actors, p.per_actor, p.incoming)])

    def _mix(self, out: str, terms, key: int, steps: int) -> None:
        self._exchange(steps, [(a.publish, (terms, key)) for a in self.actors], "mix_step",
                       lambda q: (out, terms if q == 0 else None, key, q < steps - 1))

    def _compressed_mix(self, out: str, out_hat: Optional[str], terms, hat: Optional[str], key: int, steps: int,
                        round_: int, spec: Spec, stale: list[Optional[list[np.ndarray]]]) -> None:
        first = [(a.compressed_publish, (out, terms, hat, key, spec, round_, st)) for a, st in zip(self.actors, stale)]
        self._exchange(steps, first, "compressed_step", lambda q: (
            out, hat if q == 0 else out_hat, out_hat, terms if q == 0 else None, key, spec, round_, q, q < steps - 1))

    def _exchange(self, steps: int, first: list[tuple[Any, tuple[Any, ...]]], step: str,
                  step_args: Callable[[int], tuple[Any, ...]]) -> None:
        """`steps` two-phase exchanges over the plan: ``first`` is every actor's first publishing
        call (remote method, args), then each actor's method ``step`` with step_args(q) and what
        its sources published for it; it publishes for step q + 1 unless q is the last."""
        plan = self._plan
        pubs = [_as_list(method.options(num_returns=plan.nret(b)).remote(*args))
                for b, (method, args) in enumerate(first)]
        for q in range(steps):
            nrets = [1 if q == steps - 1 else plan.nret(a) for a in range(len(self.actors))]
            pubs = [_as_list(getattr(actor, step).options(num_returns=nret).remote(
                *step_args(q), *[pubs[b][slot] for b, slot in plan.sources[a]]))
                for a, (actor, nret) in enumerate(zip(self.actors, nrets))]
        ray.get([p[0] for p in pubs])

    def combine(self, terms: list[tuple[float, Any]]) -> RayBank:
        """sum_k c_k X_k as one handle: no rows move (the actors add the slots when they read it)."""
        coefs: dict[str, float] = {}
        for c, X in terms:
            for name, v in X.terms:
                coefs[name] = coefs.get(name, 0.0) + c * v
        return RayBank(self.slots, tuple((k, v) for k, v in coefs.items() if v != 0.0) or terms[0][1].terms[:1])

    def copy(self, X: Any) -> Any:
        """Slots are immutable: a handle is its own copy."""
        return RayBank(self.slots, X.terms) if isinstance(X, RayBank) else super().copy(X)

    def finite(self, bank: Any) -> np.ndarray:
        """The actors report a non-finite row as a nan loss (``ClientBlock.train``)."""
        return np.ones(self.n, dtype=bool) if isinstance(bank, RayBank) else super().finite(bank)

    def summary(self, bank: Any) -> tuple[torch.Tensor, np.ndarray, float]:
        """(x_bar, local accuracies, consensus distance), reduced from the actors in float64."""
        if not isinstance(bank, RayBank):
            return super().summary(bank)
        chunk = self.chunk_size or 64
        parts = self._op(lambda: ray.get([a.summary.remote(bank.terms, chunk) for a in self.actors]),
                         mutating=False)
        mean = sum(p[0] for p in parts) / self.n
        sumsq = sum(p[1] for p in parts) / self.n
        consensus = max(0.0, sumsq - float((mean ** 2).sum()))
        local = np.concatenate([p[2] for p in parts])
        return mean.float().to(self.device), local, consensus

    def gather(self, bank: Any) -> torch.Tensor:
        if not isinstance(bank, RayBank):
            return super().gather(bank)
        rows = self._op(lambda: ray.get([a.gather.remote(bank.terms) for a in self.actors]), mutating=False)
        return torch.cat(rows)

    # ------------------------------------------------------------------ faults.on_nan = "skip_client"
    def _split(self, rows: np.ndarray) -> list[np.ndarray]:
        """Global row indices -> per actor, the indices local to its block."""
        rows = np.asarray(rows, dtype=np.int64)
        return [rows[(rows >= lo) & (rows < hi)] - lo for lo, hi in self.blocks]

    def take(self, bank: Any, rows: list[int]) -> dict[int, torch.Tensor]:
        """{global index: row} of some rows of a bank; only those rows travel to the driver."""
        if not isinstance(bank, RayBank):
            return super().take(bank, rows)
        parts = self._split(np.array(sorted(rows), dtype=np.int64))
        got = self._op(lambda: ray.get([a.take.remote(bank.terms, p) for a, p in zip(self.actors, parts)]),
                       mutating=False)
        return {lo + int(i): r for (lo, _), p, rs in zip(self.blocks, parts, got) for i, r in zip(p, rs)}

    def patched(self, bank: Any, new_rows: dict[int, torch.Tensor]) -> Any:
        """A new bank: ``bank`` with the given global rows replaced."""
        if not isinstance(bank, RayBank):
            return super().patched(bank, new_rows)
        out = self.slots.new()
        idx = np.array(sorted(new_rows), dtype=np.int64)
        vals = torch.stack([new_rows[int(i)].cpu() for i in idx]) if len(idx) else torch.zeros(0)
        self._op("_patch", out, bank.terms, idx, vals)
        return self.slots.handle(out)

    def _patch(self, out: str, terms, idx: np.ndarray, vals: torch.Tensor) -> None:
        refs = []
        for a, (lo, hi), local in zip(self.actors, self.blocks, self._split(idx)):
            sel = (idx >= lo) & (idx < hi)
            refs.append(a.patch.remote(out, terms, local, vals[torch.as_tensor(sel)] if len(idx) else vals))
        ray.get(refs)

    def reset_clients(self, idx: np.ndarray) -> None:
        """Clear the optimizer state of the given clients, on their actors."""
        self._op("_reset_clients", np.asarray(idx, dtype=np.int64))

    def _reset_clients(self, idx: np.ndarray) -> None:
        ray.get([a.reset_clients.remote(p) for a, p in zip(self.actors, self._split(idx))])

    def state_dict(self):
        if self.local.reset_state:  # nothing carries over between rounds
            return {}
        states = self._op(lambda: ray.get([a.opt_state.remote() for a in self.actors]), mutating=False)
        return {"opt_state": tree_map(lambda *xs: torch.cat(xs), *[s["opt_state"] for s in states])}

    def load_state_dict(self, state):
        if "opt_state" in state and not self.local.reset_state:
            self._op("_load_opt", state["opt_state"])

    def _load_opt(self, opt_state) -> None:
        ray.get([a.load_opt.remote({"opt_state": tree_map(lambda t: t[lo:hi].clone(), opt_state)})
                 for a, (lo, hi) in zip(self.actors, self.blocks)])


def _wait_alive(actor: Any) -> dict[str, Any]:
    """The actor's info once it answers (Ray restarts a dead actor; meanwhile it is unavailable)."""
    deadline = time.monotonic() + PLACEMENT_TIMEOUT_S
    while True:
        try:
            return ray.get(actor.info.remote(), timeout=PLACEMENT_TIMEOUT_S)
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _as_list(refs: Any) -> list[Any]:
    return list(refs) if isinstance(refs, (list, tuple)) else [refs]
