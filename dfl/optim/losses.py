"""The two losses the optimizers use: the training criterion and SAF/MESA's trajectory loss."""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, targets: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """Mean cross-entropy; with ``weight`` the weighted mean ``sum(w_i ce_i) / sum(w_i)``.

    Weights of 0 drop a sample (padding); all-zero weights give a loss of 0.
    """
    if weight is None:
        return F.cross_entropy(logits, targets)
    per_sample = F.cross_entropy(logits, targets, reduction="none")
    weight = weight.to(per_sample.dtype)
    return (weight * per_sample).sum() / weight.sum().clamp_min(1e-12)


def kl_trajectory_loss(
    logits: Tensor, ref_logits: Tensor, tau: float, mask: Optional[Tensor] = None
) -> Tensor:
    """tau^2 * mean_i KL( softmax(ref_i / tau) || softmax(logits_i / tau) ).

    The trajectory loss of SAF and MESA (Du et al. 2022, "Sharpness-Aware Training for Free",
    eq. 6, and ``F.kl_div(log_softmax(out / T), softmax(ref / T)).sum(-1).mean() * T**2`` in the
    authors' code). ``ref_logits`` is treated as a constant (detached).

    Args:
        logits: current outputs (B, C).
        ref_logits: past outputs (SAF) or outputs of the EMA weights (MESA), (B, C).
        tau: temperature > 0.
        mask: optional (B,) weights; the mean is then ``sum(m_i KL_i) / sum(m_i)`` (0 if all 0).
    """
    ref = ref_logits.detach()
    log_q = F.log_softmax(logits / tau, dim=-1)
    log_p = F.log_softmax(ref / tau, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    if mask is None:
        mean = kl.mean()
    else:
        mask = mask.to(kl.dtype)
        mean = (mask * kl).sum() / mask.sum().clamp_min(1e-12)
    return mean * (tau * tau)


__all__ = ["cross_entropy", "kl_trajectory_loss"]
