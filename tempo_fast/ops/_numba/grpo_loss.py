"""numba CPU kernel for `tempo_fast.ops.grpo_loss` (semantics and measured speed there).

The same design as the Triton kernel (`_triton/grpo_loss.py`): one loop per sequence that
writes the row's partial sums (loss, mask, low, high, region, ratio, kl) and the gradient of
the row's masked loss sum; sequence-level IS sweeps the row once more first for its mean
log-ratio. fp32 loads, fp64 accumulators.
"""
import math

import numba
import numpy as np
import torch

NUM_PARTIALS = 8


@numba.njit(cache=True, nogil=True, inline="always")
def _clipped_term(r, a, lo, hi, delta, has_delta):
    """-min(c1 a, c2 a), its derivative in log r (ties split in half, as torch.minimum), and c1."""
    c2 = min(max(r, lo), hi)
    dc2 = r if lo <= r <= hi else 0.0
    c1, dc1 = r, r
    if has_delta:
        c1 = min(r, delta)
        dc1 = r if r <= delta else 0.0
    t1, t2 = c1 * a, c2 * a
    w1 = 1.0 if t1 < t2 else (0.5 if t1 == t2 else 0.0)
    return -min(t1, t2), -(w1 * dc1 + (1.0 - w1) * dc2) * a, c1


@numba.njit(cache=True, nogil=True)
def _grpo_loss_kernel(lp, old, ref, adv, mask, has_old, has_ref, has_delta, sequence, write_grad,
                      beta, lo, hi, delta, dlogp, partials):
    B, T = lp.shape
    for b in range(B):
        a = np.float64(adv[b])
        a_neg = 1.0 if a < 0 else 0.0
        a_pos = 1.0 if a > 0 else 0.0
        m_sum = 0.0
        g_seq, grad_seq, c1_seq, r_seq = 0.0, 0.0, 0.0, 0.0
        if sequence:
            lr_sum = 0.0
            for t in range(T):
                m = np.float64(mask[b, t])
                m_sum += m
                if has_old:
                    lr_sum += (np.float64(lp[b, t]) - old[b, t]) * m
            r_seq = math.exp(lr_sum / max(m_sum, 1.0))
            g_seq, dg, c1_seq = _clipped_term(r_seq, a, lo, hi, delta, has_delta)
            grad_seq = dg * m_sum / max(m_sum, 1.0)
        loss_sum, kl_sum, low_sum, high_sum, ratio_sum = 0.0, 0.0, 0.0, 0.0, 0.0
        for t in range(T):
            m = np.float64(mask[b, t])
            x = np.float64(lp[b, t])
            if sequence:
                ptl = g_seq
                grad = m * grad_seq
            else:
                r = math.exp(x - old[b, t]) if has_old else 1.0
                ptl, dptl, c1 = _clipped_term(r, a, lo, hi, delta, has_delta)
                grad = m * dptl
                low_sum += m * a_neg if c1 < lo else 0.0
                high_sum += m * a_pos if c1 > hi else 0.0
                ratio_sum += r * m
                m_sum += m
            if has_ref:
                diff = ref[b, t] - x
                e = math.exp(diff)
                kl = e - diff - 1.0
                ptl += beta * kl
                grad += beta * m * (1.0 - e)
                kl_sum += kl * m
            loss_sum += ptl * m
            if write_grad:
                dlogp[b, t] = grad
        partials[b, 0] = loss_sum
        partials[b, 1] = m_sum
        partials[b, 6] = kl_sum
        if sequence:
            low = a_neg if c1_seq < lo else 0.0
            high = a_pos if c1_seq > hi else 0.0
            partials[b, 2], partials[b, 3], partials[b, 4], partials[b, 5] = low, high, max(low, high), r_seq
        else:
            partials[b, 2], partials[b, 3] = low_sum, high_sum
            partials[b, 4], partials[b, 5] = low_sum + high_sum, ratio_sum


def grpo_loss_partials_numba(logps, old_logps, ref_logps, advantages, mask, *, write_grad, beta, epsilon_low,
                             epsilon_high, delta, sequence):
    """Run the kernel on validated, non-empty CPU inputs; returns (partials, dlogps) as the Triton launcher."""
    B, T = logps.shape
    lp = logps.detach().float()
    old = lp if old_logps is None else old_logps.detach().float()
    ref = lp if ref_logps is None else ref_logps.detach().float()
    dlogps = torch.empty((B, T) if write_grad else (1, 1), dtype=torch.float32)
    partials = torch.zeros((B, NUM_PARTIALS), dtype=torch.float32)
    _grpo_loss_kernel(lp.numpy(), old.numpy(), ref.numpy(), advantages.detach().float().numpy(),
                      mask.detach().float().numpy(), old_logps is not None, ref_logps is not None, delta is not None,
                      sequence, write_grad, beta, 1.0 - epsilon_low, 1.0 + epsilon_high,
                      0.0 if delta is None else delta, dlogps.numpy(), partials.numpy())
    return partials, dlogps
