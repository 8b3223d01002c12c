"""The public-op calls whose Triton launches benchmarks/sm90_compile.py compiles for the H200.

Each case calls one op of `tempo_fast.ops` with backend="triton" on meta tensors (shapes and
dtypes only, no memory), forward and, where the op is differentiable, backward, so every launch
the launchers would make on an H200 at that shape is recorded: the benchmark shapes
(fused_linear_logprobs / fused_grpo_loss at N=8192, H=3584, V=152064; selective_logprobs
N=8192, V=152064; grpo_loss B=8 x T=1024; group_advantages; saa_scores 256x224x224x3), every
dtype and dot precision (bf16, fp16, fp32 with TF32, fp32 IEEE), the optional inputs that change a
kernel's constexprs, and awkward sizes (V = 151936, 129920 and 151665, N = 1 and 65,537, strided
views, and a small V where selective_logprobs picks 4 warps). A new Triton kernel behind one of these ops is picked up with no change here; a new op
needs one case function.

Labels read "<op> <config>"; the first word is the op.
"""
from __future__ import annotations

import contextlib

import torch

from benchmarks import sm90_compile

H, V, N = 3584, 152064, 8192  # Qwen2.5-VL-7B's LM head at 8192 completion tokens
PRECISIONS = {  # label -> (dtype, torch.backends.cuda.matmul.allow_tf32)
    "bf16": (torch.bfloat16, False), "fp16": (torch.float16, False),
    "fp32-tf32": (torch.float32, True), "fp32-ieee": (torch.float32, False),
}


def meta(*shape, dtype=torch.float32, grad=False) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta", requires_grad=grad)


@contextlib.contextmanager
def tf32(allow: bool):
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _backward(out) -> None:
    out.sum().backward()


def fused_linear_logprobs_cases():
    from tempo_fast.ops import fused_linear_logprobs

    def run(n, vocab, precision, bias):
        dtype, allow = PRECISIONS[precision]
        h, w = meta(n, H, dtype=dtype, grad=True), meta(vocab, H, dtype=dtype, grad=True)
        b = meta(vocab, dtype=dtype, grad=True) if bias else None
        with tf32(allow):
            _backward(fused_linear_logprobs(h, w, meta(n, dtype=torch.int64), bias=b, temperature=0.7,
                                            backend="triton"))

    for precision in PRECISIONS:
        for bias in (False, True):
            yield f"fused_linear_logprobs {precision}{' bias' if bias else ''}", f"N={N} H={H} V={V}", \
                lambda p=precision, b=bias: run(N, V, p, b)
    for n, vocab in ((N, 151936), (N, 129920), (7, 151665), (1, V), (65537, V)):
        for precision in ("bf16", "fp32-ieee"):
            yield f"fused_linear_logprobs {precision} awkward", f"N={n} H={H} V={vocab}", \
                lambda n=n, v=vocab, p=precision: run(n, v, p, False)


def fused_grpo_loss_cases():
    from tempo_fast.ops import fused_grpo_loss

    def run(batch, length, precision, grad=True, **kw):
        dtype, allow = PRECISIONS[precision]
        h, w = meta(batch, length, H, dtype=dtype, grad=grad), meta(V, H, dtype=dtype, grad=grad)
        ref = meta(batch, length) if kw.get("beta") else None
        with tf32(allow):
            loss, _ = fused_grpo_loss(h, w, meta(batch, length, dtype=torch.int64), meta(batch, length), meta(batch),
                                      meta(batch, length, dtype=torch.bool), ref_logps=ref, backend="triton", **kw)
            if grad:
                loss.backward()

    for precision in PRECISIONS:
        yield f"fused_grpo_loss {precision} grpo", "B=8 T=1024", lambda p=precision: run(8, 1024, p)
    variants = {  # sequence level with gradients plans its chunks from the mask on the host (.tolist()),
        # which meta tensors cannot answer: it runs the same kernels as the token level
        "dapo kl": dict(loss_type="dapo", beta=0.04), "dr_grpo delta": dict(loss_type="dr_grpo", delta=1.5),
        "bnpo seq no-grad": dict(loss_type="bnpo", importance_sampling_level="sequence", grad=False),
    }
    for name, kw in variants.items():
        yield f"fused_grpo_loss bf16 {name}", "B=8 T=1024", lambda kw=kw: run(8, 1024, "bf16", **kw)
    for batch, length in ((1, 1), (1, 65537)):
        yield "fused_grpo_loss bf16 awkward", f"B={batch} T={length}", lambda b=batch, t=length: run(b, t, "bf16")


def selective_logprobs_cases():
    from tempo_fast.ops import selective_logprobs

    def run(logits):
        _backward(selective_logprobs(logits, meta(*logits.shape[:-1], dtype=torch.int64), backend="triton"))

    for precision in ("bf16", "fp16", "fp32-ieee"):
        dtype = PRECISIONS[precision][0]
        yield f"selective_logprobs {precision.removesuffix('-ieee')}", f"N={N} V={V}", \
            lambda d=dtype: run(meta(N, V, dtype=d, grad=True))
    for n, vocab in ((N, 151936), (N, 129920), (7, 151665), (1, V), (65537, V), (64, 1000)):  # V < 2048: 4 warps
        yield "selective_logprobs bf16 awkward", f"N={n} V={vocab}", \
            lambda n=n, v=vocab: run(meta(n, v, dtype=torch.bfloat16, grad=True))

    def shifted():  # TRL's logits[:, :-1]: a strided view of [B, T + 1, V]
        full = meta(8, 1025, V, dtype=torch.bfloat16, grad=True)
        run(full[:, :-1])
    yield "selective_logprobs bf16 view", f"[8, 1025, {V}][:, :-1]", shifted


def grpo_loss_cases():
    from tempo_fast.ops import grpo_loss

    def run(batch, length, dtype=torch.float32, old=True, beta=0.0, grad=True, mask=torch.bool, view=False, **kw):
        logps = meta(batch, length + view, dtype=dtype, grad=grad)
        logps = logps[:, :length] if view else logps
        loss, _ = grpo_loss(logps, meta(batch, length, dtype=dtype) if old else None, meta(batch),
                            meta(batch, length, dtype=mask),
                            ref_logps=meta(batch, length, dtype=dtype) if beta else None,
                            beta=beta, backend="triton", **kw)
        if grad:
            loss.backward()

    variants = {
        "token": {}, "on-policy": dict(old=False), "kl delta": dict(beta=0.04, delta=1.5),
        "sequence kl": dict(importance_sampling_level="sequence", beta=0.04), "no-grad": dict(grad=False),
        "bf16 float-mask": dict(dtype=torch.bfloat16, mask=torch.float32), "view": dict(view=True),
    }
    for name, kw in variants.items():
        yield f"grpo_loss {name}", "B=8 T=1024", lambda kw=kw: run(8, 1024, **kw)
    for batch, length in ((1, 1), (1, 65537), (64, 7)):
        yield "grpo_loss awkward", f"B={batch} T={length}", lambda b=batch, t=length: run(b, t)


def group_advantages_cases():
    from tempo_fast.ops import group_advantages

    def run(n, group, scale="group", dtype=torch.float32, stride=1):
        rewards = meta(n * stride, dtype=dtype)[::stride]
        group_advantages(rewards, group, scale=scale, backend="triton")

    for scale in ("group", "batch", "none"):
        yield f"group_advantages {scale}", "N=8192 G=8", lambda s=scale: run(8192, 8, s)
    for n, group, kw in ((8192, 1, {}), (8192, 2048, {}), (65537, 65537, {}), (8192, 16, dict(dtype=torch.bfloat16)),
                         (8192, 8, dict(stride=3))):
        yield "group_advantages awkward", f"N={n} G={group}{' strided' if kw.get('stride') else ''}", \
            lambda n=n, g=group, kw=kw: run(n, g, **kw)


def saa_scores_cases():
    from tempo_fast.ops import saa_scores

    frames = (256, 224, 224, 3)
    yield "saa_scores contiguous", "256x224x224x3", lambda: saa_scores(
        meta(*frames, dtype=torch.uint8), backend="triton")
    yield "saa_scores channels-first", "256x3x224x224 view", lambda: saa_scores(
        meta(*frames, dtype=torch.uint8).permute(0, 3, 1, 2), channels_last=False, backend="triton")
    yield "saa_scores crop", "256x224x224x3[:, 7:201, 3:220]", lambda: saa_scores(
        meta(*frames, dtype=torch.uint8)[:, 7:201, 3:220], backend="triton")
    yield "saa_scores awkward", "2x33x17x3", lambda: saa_scores(meta(2, 33, 17, 3, dtype=torch.uint8), backend="triton")


CASES = (fused_linear_logprobs_cases, fused_grpo_loss_cases, selective_logprobs_cases, grpo_loss_cases,
         group_advantages_cases, saa_scores_cases)


def record_all(only: str = "") -> tuple[list, list[str]]:
    """(launches, problems) of every case whose "<label> | <shape>" contains `only`. A case that
    raises (e.g. a data-dependent read, which meta tensors cannot answer) or launches nothing
    is a problem; the other cases are still recorded."""
    problems = []
    with sm90_compile.recording() as launches:
        for cases in CASES:
            for label, shape, call in cases():
                tag = f"{label} | {shape}"
                if only not in tag:
                    continue
                before = len(launches)
                try:
                    with sm90_compile.case(tag):
                        call()
                except Exception as exc:  # reported, and the other cases go on
                    del launches[before:]
                    problems.append(f"case {tag!r} could not be recorded: {type(exc).__name__}: {str(exc)[:300]}")
                    continue
                if len(launches) == before:
                    problems.append(f"case {tag!r} launched no Triton kernel")
    return launches, problems
