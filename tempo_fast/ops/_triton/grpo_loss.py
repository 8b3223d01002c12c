"""Fused Triton forward (with the gradient) for `tempo_fast.ops.grpo_loss` (semantics there).

Design. One program per sequence (1-D grid over B, so any B), looping over the T tokens in
blocks of BLOCK_T. Every loss type is a per-row weight times the row's masked sum of per-token
losses, sum_b w_b sum_t m_bt ptl_bt, with w_b = 1/(B max(M_b, 1)) for grpo and one global
constant for bnpo, dr_grpo and dapo (M_b = sum_t m_bt). So the kernel writes, per row, the
unweighted partial sums (loss, M_b, clip counts, ratio and kl sums) and, per token, the
gradient of the row's sum d(sum_t m ptl)/d logp_bt; the launcher turns the `[B, 8]` partials
into the loss, the stats and w_b with a few tiny torch ops (deterministic: no atomics), and
the backward is one elementwise scale by w_b * grad_output.

Sequence-level importance sampling needs the row's log-ratio mean before any token's loss:
the program first sweeps the row for M_b and sum_t m (logp - old), computes the one ratio r_b
and its clipped loss g_b, then sweeps again for the kl terms and the gradient
d(M_b g_b)/d logp_bt = M_b g_b'(log w_b) m_bt / max(M_b, 1).
"""
import torch
import triton
import triton.language as tl

from .._backend import next_power_of_2

# Why one program per sequence, up to 1024 tokens a step on 4 warps, for the H200: 8 tokens per
# thread, two 16-byte loads per fp32 input (up to 96 registers, no spill; benchmarks/sm90_compile.py).
# The op reads ~20 bytes a token (160 KB at B=8 x T=1024: a few microseconds, launch-bound), so
# it is laid out for one launch and a deterministic per-row sum rather than for filling 132 SMs;
# a 65,537-token row is one program streaming 1.3 MB, still tens of microseconds.
MAX_BLOCK_T = 1024
NUM_PARTIALS = 8  # per row: loss, mask sum, low, high, region, ratio, kl, (unused)


@triton.jit
def _clipped_term(r, a, lo, hi, delta, HAS_DELTA: tl.constexpr):
    """-min(c1 a, c2 a) and its derivative in log r (torch.minimum splits ties in half)."""
    c2 = tl.minimum(tl.maximum(r, lo), hi)
    dc2 = tl.where((r >= lo) & (r <= hi), r, 0.0)
    if HAS_DELTA:
        c1 = tl.minimum(r, delta)
        dc1 = tl.where(r <= delta, r, 0.0)
    else:
        c1 = r
        dc1 = r
    t1 = c1 * a
    t2 = c2 * a
    w1 = tl.where(t1 < t2, 1.0, tl.where(t1 == t2, 0.5, 0.0))
    loss = -tl.minimum(t1, t2)
    dloss = -(w1 * dc1 + (1.0 - w1) * dc2) * a
    return loss, dloss, c1


@triton.jit
def _grpo_loss_fwd_kernel(
    logp_ptr, old_ptr, ref_ptr, adv_ptr, mask_ptr,  # inputs: [B, T] x4 (old, ref optional), advantages [B]
    dlogp_ptr, part_ptr,  # outputs: fp32 d(row sum)/d logp [B, T] contiguous, fp32 partials [B, NUM_PARTIALS]
    T,  # tokens per row
    s_lp_b, s_lp_t, s_old_b, s_old_t, s_ref_b, s_ref_t, s_adv, s_m_b, s_m_t,  # strides (elements)
    beta, lo, hi, delta,  # kl weight, clip range [1 - eps_low, 1 + eps_high], ratio cap
    HAS_OLD: tl.constexpr, HAS_REF: tl.constexpr, HAS_DELTA: tl.constexpr,  # optional inputs
    SEQUENCE: tl.constexpr, WRITE_GRAD: tl.constexpr,  # IS level, whether to write the gradient
    NUM_PARTIALS: tl.constexpr, BLOCK_T: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    a = tl.load(adv_ptr + row * s_adv).to(tl.float32)
    a_neg = tl.where(a < 0, 1.0, 0.0)  # the clip stats count low clips for A < 0, high ones for A > 0
    a_pos = tl.where(a > 0, 1.0, 0.0)
    lp_row = logp_ptr + row * s_lp_b
    old_row = old_ptr + row * s_old_b
    ref_row = ref_ptr + row * s_ref_b
    m_row = mask_ptr + row * s_m_b
    d_row = dlogp_ptr + row * T

    m_acc = tl.zeros([BLOCK_T], dtype=tl.float32)
    if SEQUENCE:
        # Pass 1: the sequence's mean log-ratio, hence its single ratio and clipped loss.
        lr_acc = tl.zeros([BLOCK_T], dtype=tl.float32)
        for t0 in range(0, T, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)
            inside = t < T
            m = tl.load(m_row + t * s_m_t, mask=inside, other=0).to(tl.float32)
            if HAS_OLD:
                lp = tl.load(lp_row + t * s_lp_t, mask=inside, other=0.0).to(tl.float32)
                old = tl.load(old_row + t * s_old_t, mask=inside, other=0.0).to(tl.float32)
                lr_acc += (lp - old) * m
            m_acc += m
        m_sum = tl.sum(m_acc, axis=0)
        r_seq = tl.exp(tl.sum(lr_acc, axis=0) / tl.maximum(m_sum, 1.0))
        g_seq, dg_seq, c1_seq = _clipped_term(r_seq, a, lo, hi, delta, HAS_DELTA)
        grad_seq = dg_seq * m_sum / tl.maximum(m_sum, 1.0)

    loss_acc = tl.zeros([BLOCK_T], dtype=tl.float32)
    kl_acc = tl.zeros([BLOCK_T], dtype=tl.float32)
    low_acc = tl.zeros([BLOCK_T], dtype=tl.float32)
    high_acc = tl.zeros([BLOCK_T], dtype=tl.float32)
    ratio_acc = tl.zeros([BLOCK_T], dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        inside = t < T
        m = tl.load(m_row + t * s_m_t, mask=inside, other=0).to(tl.float32)
        lp = tl.load(lp_row + t * s_lp_t, mask=inside, other=0.0).to(tl.float32)
        if SEQUENCE:
            ptl = tl.zeros([BLOCK_T], dtype=tl.float32) + g_seq
            grad = m * grad_seq
        else:
            if HAS_OLD:
                old = tl.load(old_row + t * s_old_t, mask=inside, other=0.0).to(tl.float32)
                r = tl.exp(lp - old)
            else:
                r = tl.full([BLOCK_T], 1.0, dtype=tl.float32)
            ptl, dptl, c1 = _clipped_term(r, a, lo, hi, delta, HAS_DELTA)
            grad = m * dptl
            low_acc += tl.where(c1 < lo, m, 0.0) * a_neg
            high_acc += tl.where(c1 > hi, m, 0.0) * a_pos
            ratio_acc += r * m
            m_acc += m
        if HAS_REF:
            ref = tl.load(ref_row + t * s_ref_t, mask=inside, other=0.0).to(tl.float32)
            diff = ref - lp
            e = tl.exp(diff)
            kl = e - diff - 1.0
            ptl += beta * kl
            grad += beta * m * (1.0 - e)
            kl_acc += kl * m
        loss_acc += ptl * m
        if WRITE_GRAD:
            tl.store(d_row + t, grad, mask=inside)

    out = part_ptr + row * NUM_PARTIALS
    tl.store(out + 0, tl.sum(loss_acc, axis=0))
    tl.store(out + 6, tl.sum(kl_acc, axis=0))
    if SEQUENCE:
        low_seq = tl.where(c1_seq < lo, a_neg, 0.0)
        high_seq = tl.where(c1_seq > hi, a_pos, 0.0)
        tl.store(out + 1, m_sum)
        tl.store(out + 2, low_seq)
        tl.store(out + 3, high_seq)
        tl.store(out + 4, tl.maximum(low_seq, high_seq))
        tl.store(out + 5, r_seq)
    else:
        low_sum = tl.sum(low_acc, axis=0)
        high_sum = tl.sum(high_acc, axis=0)
        tl.store(out + 1, tl.sum(m_acc, axis=0))
        tl.store(out + 2, low_sum)
        tl.store(out + 3, high_sum)
        # low and high exclude each other (A < 0 vs A > 0), so "either" is their sum
        tl.store(out + 4, low_sum + high_sum)
        tl.store(out + 5, tl.sum(ratio_acc, axis=0))


def grpo_loss_partials_triton(logps, old_logps, ref_logps, advantages, mask, *, write_grad, beta, epsilon_low,
                              epsilon_high, delta, sequence):
    """Run the kernel on validated, non-empty inputs (ref_logps None when beta == 0).

    Returns (partials, dlogps): fp32 [B, NUM_PARTIALS] per-row sums (loss, mask, low, high,
    region, ratio, kl) and fp32 [B, T] d(row's masked loss sum)/d logps ([1, 1] when not
    write_grad).
    """
    B, T = logps.shape
    device = logps.device
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)
    dlogps = torch.empty((B, T) if write_grad else (1, 1), dtype=torch.float32, device=device)
    partials = torch.empty((B, NUM_PARTIALS), dtype=torch.float32, device=device)
    old = logps if old_logps is None else old_logps
    ref = logps if ref_logps is None else ref_logps
    _grpo_loss_fwd_kernel[(B,)](
        logps, old, ref, advantages, mask,
        dlogps, partials,
        T,
        logps.stride(0), logps.stride(1), old.stride(0), old.stride(1), ref.stride(0), ref.stride(1),
        advantages.stride(0), mask.stride(0), mask.stride(1),
        beta, 1.0 - epsilon_low, 1.0 + epsilon_high, 0.0 if delta is None else delta,
        HAS_OLD=old_logps is not None, HAS_REF=ref_logps is not None, HAS_DELTA=delta is not None,
        SEQUENCE=sequence, WRITE_GRAD=write_grad,
        NUM_PARTIALS=NUM_PARTIALS, BLOCK_T=min(next_power_of_2(T), MAX_BLOCK_T),
        num_warps=4,
    )
    return partials, dlogps
