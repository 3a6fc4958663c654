"""The Ray actor of engine.backend = "ray": one block of clients, trained with the vectorized engine.

An actor hosts the contiguous clients lo..hi-1 of the federation. Its models live in named
*slots*, each a (hi - lo, d) tensor: the driver's ``RayBank`` handle is a linear combination
sum_k c_k S_k of slot names, so D-PSGD's ``W^Q x + (after - before)`` (``RayEngine.combine``)
is evaluated row-block-wise inside the actors, never gathered. Slots are immutable: training and
gossip write new ones, and the driver tells the actor which slots are still referenced.

Gossip step (two phases; Ray resolves the arguments, so no actor waits on another inside a call):

    publish:   actor b sends, to each actor a that needs them, its rows j with W_ij != 0, i in a
    mix_step:  actor a computes  x_i <- sum_j W_ij x_j  for its rows i, from its own rows and what
               its neighbours published for it; for Q > 1 it publishes the result for step q + 1.

Compressed gossip (``compressed_publish`` / ``compressed_step``) has the same two phases with
encoded messages; the public copies x_hat of the block's rows are a slot, and its copies of
other actors' rows a *halo* of that slot (dfl.engines.ray_exchange).

This module imports ray only for ``ray.get_gpu_ids`` inside the actor; it is loaded in the
actor processes and by ray_engine.py (never by dfl.engines at import time).
"""
from __future__ import annotations

import functools
import os
import types
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..algorithms import Correction
from ..choco import Spec
from ..faults import finite_rows
from ..gossip import as_operator
from ..metrics import evaluate_clients
from .base import ClientData, pad_indices
from .ray_exchange import Halo, mix_rows, receive, returns, send
from .vectorized import VectorizedEngine

Terms = Sequence[tuple[str, float]]


class NotReady(RuntimeError):
    """The actor holds no clients: Ray restarted it (empty) after it died, and the driver has not
    set it up again yet. The driver treats this as the actor's death (recover and replay)."""


def needs_setup(method: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse the call on an actor that is not set up (NotReady), instead of failing on the
    missing state or, worse, answering from an empty one."""
    @functools.wraps(method)
    def guarded(self: "ClientBlock", *args: Any, **kwargs: Any) -> Any:
        if not self.ready:
            raise NotReady(f"ClientBlock.{method.__name__}: the actor restarted and has no clients")
        return method(self, *args, **kwargs)
    return guarded


def subset_pool(x: torch.Tensor, y: torch.Tensor,
                parts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Keep only the samples that some part indexes: (x[keep], y[keep], parts re-indexed into keep)."""
    parts = [torch.as_tensor(p, dtype=torch.int64) for p in parts]
    keep = torch.unique(torch.cat(parts)) if parts else torch.zeros(0, dtype=torch.int64)
    return x[keep], y[keep], [torch.searchsorted(keep, p) for p in parts]


def pick_device(name: str) -> torch.device:
    """The actor's device: CUDA only if this process sees a GPU (Ray sets CUDA_VISIBLE_DEVICES)."""
    if name != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class ClientBlock:
    """Clients lo..hi-1 of a run: their data, optimizer state (a VectorizedEngine) and model slots."""

    def __init__(self) -> None:
        self.ready = False  # an actor starts empty (and restarts empty): ``setup`` gives it clients
        self.slots: dict[str, torch.Tensor] = {}

    def setup(self, spec_ref: list[Any], lo: int, hi: int) -> bool:
        """Host clients lo..hi-1 of the run in spec (a nested ref, kept alive by the driver)."""
        import ray
        spec = ray.get(spec_ref[0])
        self.lo, self.hi = lo, hi
        self.device = pick_device(spec["device"])
        torch.set_num_threads(max(1, int(spec["threads"])))
        x, y, parts = subset_pool(spec["x"], spec["y"], spec["train_parts"][lo:hi])
        fed = types.SimpleNamespace(x_train=x, y_train=y, client_train=parts, num_classes=spec["num_classes"])
        data = ClientData(fed, self.device, spec["seed"], spec["batch_size"], client_ids=np.arange(lo, hi),
                          augment=spec["augment"])
        self.model = spec["model"].to(self.device)
        self.layout = spec["layout"]
        self.engine = VectorizedEngine(self.model, self.layout, data, spec["optimizer"], spec["hparams"],
                                         self.device, spec["chunk_size"], local=spec["local"])
        self.eval: Optional[tuple[torch.Tensor, ...]] = None
        if spec["eval"] is not None:
            ex, ey, eparts = spec["eval"]
            ex, ey, eparts = subset_pool(ex, ey, eparts[lo:hi])
            idx, mask = pad_indices(eparts, self.device)
            self.eval = (ex.to(self.device), ey.to(self.device), idx, mask)
        self.slots = {}
        self.halos: dict[str, Halo] = {}      # x_hat slot -> copies of other actors' rows (ray_exchange)
        self.pending: dict[str, torch.Tensor] = {}  # a compressed step's own rows, between its phases
        self.plans: dict[int, tuple[torch.Tensor, list[np.ndarray], np.ndarray]] = {}
        self.ready = True
        return True

    def clear(self) -> bool:
        """Drop the run (data, models, state): the actor goes back to its session's idle pool."""
        self.__dict__.clear()
        self.ready = False
        self.slots = {}
        return True

    # ------------------------------------------------------------------ bookkeeping
    def info(self) -> dict[str, Any]:
        """Where this actor runs (for placement tests and the run log)."""
        import ray
        if not self.ready:
            return {"pid": os.getpid(), "ready": False}
        return {"pid": os.getpid(), "ready": True, "clients": (self.lo, self.hi), "device": str(self.device),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "node_id": ray.get_runtime_context().get_node_id(),
                "threads": torch.get_num_threads()}

    def rows(self, terms: Terms) -> torch.Tensor:
        """sum_k c_k S_k over this actor's rows (the slot itself for a single unit term)."""
        if len(terms) == 1 and terms[0][1] == 1.0:
            return self.slots[terms[0][0]]
        out = torch.zeros_like(self.slots[terms[0][0]])
        for name, coef in terms:
            out.add_(self.slots[name], alpha=coef)
        return out

    @needs_setup
    def load(self, slots: dict[str, torch.Tensor]) -> bool:
        self.slots.update({k: v.to(self.device) for k, v in slots.items()})
        return True

    @needs_setup
    def snapshot(self, live: Sequence[str]) -> tuple[bool, dict[str, Any]]:
        """Drop unreferenced slots (and halos); return (ok, state) with the live slots, their
        halos and the optimizer state."""
        self.slots = {k: v for k, v in self.slots.items() if k in set(live)}
        self.halos = {k: v for k, v in self.halos.items() if k in set(live)}
        return True, {"slots": {k: v.cpu() for k, v in self.slots.items()},
                      "halos": {k: (ids, v.cpu()) for k, (ids, v) in self.halos.items()}, "opt": self.opt_state()}

    @needs_setup
    def restore(self, state: Optional[dict[str, Any]]) -> bool:
        if state is not None:
            self.slots = {k: v.to(self.device) for k, v in state["slots"].items()}
            self.halos = {k: (ids, v.to(self.device)) for k, (ids, v) in state["halos"].items()}
            self.pending = {}
            self.load_opt(state["opt"])
        return True

    @needs_setup
    def opt_state(self) -> dict[str, Any]:
        return torch.utils._pytree.tree_map(lambda t: t.cpu(), self.engine.state_dict())

    @needs_setup
    def load_opt(self, state: dict[str, Any]) -> bool:
        self.engine.load_state_dict(state)
        return True

    @needs_setup
    def gather(self, terms: Terms) -> torch.Tensor:
        return self.rows(terms).cpu()

    @needs_setup
    def take(self, terms: Terms, local: np.ndarray) -> torch.Tensor:
        """Some rows (indices local to this block) of sum_k c_k S_k, on the CPU."""
        return self.rows(terms)[torch.as_tensor(local, dtype=torch.int64, device=self.device)].cpu()

    @needs_setup
    def patch(self, out: str, terms: Terms, local: np.ndarray, rows: torch.Tensor) -> bool:
        """Slot ``out`` = sum_k c_k S_k with the rows ``local`` replaced (faults.on_nan = "skip_client")."""
        x = self.rows(terms).clone()
        if len(local):
            x[torch.as_tensor(local, dtype=torch.int64, device=self.device)] = rows.to(self.device, x.dtype)
        self.slots[out] = x
        return True

    @needs_setup
    def reset_clients(self, local: np.ndarray) -> bool:
        """Clear the optimizer state of diverged clients (indices local to this block)."""
        self.engine.reset_clients(np.asarray(local, dtype=np.int64))
        return True

    # ------------------------------------------------------------------ a round
    @needs_setup
    def train(self, out: str, terms: Terms, active: np.ndarray, steps: np.ndarray, lr: float, round_: int,
              correction: Optional[Correction]) -> np.ndarray:
        """Local training of this block (the vectorized engine); writes slot `out`, returns losses.

        A row that is not finite afterwards reports a nan loss (the driver never sees the row).
        """
        sl = slice(self.lo, self.hi)
        if correction is not None:
            d = correction.direction
            correction = Correction(correction.grad_scale, d if d.dim() == 1 else d[sl])
        rows = self.rows(terms).clone()
        rows, losses = self.engine.train(rows, active[sl], steps[sl], lr, round_, correction)
        losses[~finite_rows(rows).cpu().numpy()] = np.nan
        self.slots[out] = rows
        return losses

    @needs_setup
    def set_plan(self, key: int, block: np.ndarray, dests: list[np.ndarray], incoming: np.ndarray) -> bool:
        """Store W's rows of this block (columns: own rows, then what each source sends, in order),
        the local rows published for each destination and the global ids of the rows received."""
        self.plans = {k: v for k, v in self.plans.items() if k > key - 2}
        self.plans[key] = (as_operator(block, self.device), [np.asarray(d) for d in dests], np.asarray(incoming))
        return True

    def _publish(self, x: torch.Tensor, key: int) -> Any:
        dests = self.plans[key][1]
        return returns([x[torch.as_tensor(d, device=x.device)].cpu() for d in dests])

    @needs_setup
    def publish(self, terms: Terms, key: int) -> Any:
        """Phase 1: the rows each neighbouring actor needs (one object per destination)."""
        return self._publish(self.rows(terms), key)

    @needs_setup
    def mix_step(self, out: str, terms: Optional[Terms], key: int, publish_next: bool,
                 *incoming: torch.Tensor) -> Any:
        """Phase 2: x_i <- sum_j W_ij x_j for this block's rows; writes slot `out`."""
        x = self.rows(terms) if terms is not None else self.slots[out]
        cols = torch.cat([x, *[t.to(x.device) for t in incoming]]) if incoming else x
        W = self.plans[key][0]
        self.slots[out] = W @ cols
        return self._publish(self.slots[out], key) if publish_next else True

    # ------------------------------------------------------------------ compressed gossip (ray_exchange)
    def _send(self, out: str, x: torch.Tensor, x_hat: Optional[torch.Tensor], key: int, spec: Spec, round_: int,
              step: int, stale: Optional[list[np.ndarray]]) -> Any:
        own, messages = send(spec, x, x_hat, spec.key(round_, step, np.arange(self.lo, self.hi)),
                             self.plans[key][1], stale)
        self.pending[out] = own
        return returns(messages)

    @needs_setup
    def compressed_publish(self, out: str, terms: Terms, hat: Optional[str], key: int, spec: Spec, round_: int,
                           stale: Optional[list[np.ndarray]]) -> Any:
        """Phase 1 of the first step: the messages of this block's rows x = sum_k c_k S_k for each
        neighbouring actor, from the public copies in slot `hat` (None: naive), with the dense
        rows flagged in `stale` (ray_exchange.ExchangePlan.stale)."""
        return self._send(out, self.rows(terms), self.slots[hat] if hat else None, key, spec, round_, 0, stale)

    @needs_setup
    def compressed_step(self, out: str, hat: Optional[str], out_hat: Optional[str], terms: Optional[Terms],
                        key: int, spec: Spec, round_: int, step: int, publish_next: bool,
                        *incoming: dict[str, Any]) -> Any:
        """Phase 2: this block's rows after the step (slot `out`; its x_hat in slot `out_hat` with
        the halo of copies, from the halo of slot `hat`); then phase 1 of the next step."""
        x = self.rows(terms) if terms is not None else self.slots[out]
        own = self.pending.pop(out)
        W, _, ids = self.plans[key]
        copies = receive(spec, incoming, ids, self.halos.get(hat) if hat else None, x.shape[1], x.device)
        self.slots[out] = mix_rows(spec, W, x, own, copies)
        if out_hat is not None:
            self.slots[out_hat], self.halos[out_hat] = own, (ids, copies)
        if not publish_next:
            return True
        x_hat = self.slots[out_hat] if out_hat is not None else None
        return self._send(out, self.slots[out], x_hat, key, spec, round_, step + 1, None)

    # ------------------------------------------------------------------ evaluation
    @needs_setup
    def summary(self, terms: Terms, chunk: int) -> tuple[torch.Tensor, float, np.ndarray]:
        """(sum of rows, sum of squared row norms) in float64, and each client's local accuracy."""
        x = self.rows(terms)
        x64 = x.double()
        total, sumsq = x64.sum(0).cpu(), float((x64 ** 2).sum())
        if self.eval is None:
            return total, sumsq, np.full(len(x), np.nan)
        ex, ey, idx, mask = self.eval
        acc = evaluate_clients(self.model, self.layout, x, ex, ey, idx, mask, max(1, chunk))
        return total, sumsq, acc
