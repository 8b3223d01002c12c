"""Benchmark: per-token log-probs of chosen ids, from logits and from hidden states.

What is measured (median time, peak memory; GB/s for the logits-reading op):
  selective_logprobs     logits [N, V] -> log_softmax(logits)[ids]
  fused_linear_logprobs  hidden [N, H] x weight [V, H] -> log_softmax(hidden @ weight.T)[ids]

Providers, all measured in the same run:
  torch       the TRL way: logits in float32, log_softmax, gather (and the matmul for the fused op)
  trl         trl.trainer.utils.selective_log_softmax (when trl is installed; selective only)
  liger       CUDA only: liger's fused_selective_log_softmax (forward only) for selective;
              LigerFusedLinearCrossEntropyLoss(reduction="none"), which returns -logp, for fused linear
  torch_lce   fused linear only: -torch.nn.functional.linear_cross_entropy(reduction="none"),
              chunked (options=LinearCrossEntropyOptions()); new in torch 2.13
  cce         fused linear only: -cut_cross_entropy.linear_cross_entropy(reduction="none"), impl
              "torch_compile" on CPU, "cce" (its Triton kernels) on CUDA
  tempo_fast  tempo_fast.ops with the default backend for the device

Each provider is checked against a float64 reference on the first shape before it is timed; one
that disagrees or raises is reported, gets a `check_failed` row and is not timed. The machine's copy bandwidth is measured in the same
run and written as its own row, so GB/s figures can be read as a fraction of it.

    python benchmarks/bench_logprobs.py                     # CPU-size defaults
    python benchmarks/bench_logprobs.py --device cuda       # Qwen2.5-7B head: H=3584, V=152064, bf16
"""
from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402
from tempo_fast import ops  # noqa: E402

CSV = "logprobs.csv"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _torch_selective(logits, ids):
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _torch_fused(hidden, weight, ids):
    return _torch_selective(hidden @ weight.T, ids)


def selective_providers(device: torch.device) -> dict:
    providers = {"torch": _torch_selective, "tempo_fast": ops.selective_logprobs}
    try:
        from trl.trainer.utils import selective_log_softmax
        providers["trl"] = selective_log_softmax
    except Exception as exc:  # trl missing or broken: say so, measure the others
        print(f"  trl provider skipped: {exc}")
    if device.type == "cuda":
        try:
            from liger_kernel.ops.grpo_loss import fused_selective_log_softmax

            def liger(logits, ids):
                # liger takes [B, L+1, V] logits and drops the last position; feed one batch row.
                padded = torch.cat([logits, logits[-1:]], dim=0).unsqueeze(0)
                return fused_selective_log_softmax(padded, ids.unsqueeze(0), temperature=1.0)[0]
            providers["liger"] = liger
        except Exception as exc:
            print(f"  liger provider skipped: {exc}")
    return providers


def fused_providers(device: torch.device) -> dict:
    providers = {"torch": _torch_fused, "tempo_fast": ops.fused_linear_logprobs}
    if hasattr(torch.nn.functional, "linear_cross_entropy"):
        chunked = torch.nn.LinearCrossEntropyOptions()
        providers["torch_lce"] = lambda hidden, weight, ids: -torch.nn.functional.linear_cross_entropy(
            hidden, weight, ids, reduction="none", options=chunked).float()
    else:
        print(f"  torch_lce provider skipped: torch {torch.__version__} has no linear_cross_entropy")
    try:
        from cut_cross_entropy import linear_cross_entropy as cce_loss
        impl = "cce" if device.type == "cuda" else "torch_compile"
        providers["cce"] = lambda hidden, weight, ids: -cce_loss(hidden, weight, ids, reduction="none",
                                                                 impl=impl).float()
    except Exception as exc:
        print(f"  cce provider skipped: {exc}")
    if device.type == "cuda":
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
            loss = LigerFusedLinearCrossEntropyLoss(reduction="none")
            providers["liger"] = lambda hidden, weight, ids: -loss(weight, hidden, ids)
        except Exception as exc:
            print(f"  liger provider skipped: {exc}")
    return providers


def _reference(ref_fn, inputs):
    """float64 output of ref_fn and the gradients of its sum in the float inputs."""
    leaves = [t.detach().double().requires_grad_() if t.is_floating_point() else t for t in inputs]
    out = ref_fn(leaves)
    grads = torch.autograd.grad(out.sum(), [t for t in leaves if t.is_floating_point()])
    return out.detach(), grads


def _check(name, fn, inputs, reference, dtype, with_grad=True) -> str | None:
    """None when fn's output (and, with_grad, its gradients) match float64, else what went wrong."""
    tol = 1e-3 if dtype == torch.float32 else 6e-2
    want, want_grads = reference
    try:
        with torch.set_grad_enabled(with_grad):
            out = fn(*inputs)
            grads = torch.autograd.grad(out.sum(), [t for t in inputs if t.is_floating_point()]) if with_grad else ()
    except Exception as exc:
        failure = f"{type(exc).__name__}: {str(exc)[:200]}"
    else:
        err = (out.double() - want).abs().max().item()
        rel = [float((g.double() - w).norm() / w.norm().clamp(min=1e-30)) for g, w in zip(grads, want_grads)]
        if not err <= tol * max(1.0, want.abs().max().item()):
            failure = f"max error {err:.3g} against float64 exceeds {tol}"
        elif not all(r <= 10 * tol for r in rel):
            failure = f"gradient relative errors {', '.join(f'{r:.3g}' for r in rel)} exceed {10 * tol}"
        else:
            return None
    print(f"  {name}: {failure}: not timed")
    return failure


def bench_one(what, provider, fn, make_inputs, mode, device, shape, dtype_name, bytes_read):
    inputs = make_inputs()
    grads = [t for t in inputs if t.is_floating_point()]

    def call():
        out = fn(*inputs)
        if mode == "fwd+bwd":
            torch.autograd.grad(out.sum(), grads)
        return out

    if mode == "fwd":
        call = torch.no_grad()(call)
    try:
        ms = common.time_ms(call, device)
        peak = common.peak_memory_bytes(call, device)
    except torch.OutOfMemoryError:
        print(f"  {provider} {mode} {shape}: out of memory")
        return []
    finally:
        del inputs, grads
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = dict(what=what, provider=provider, mode=mode, shape=shape, dtype=dtype_name,
                device=common.device_name(device))
    rows = [dict(base, metric="time", median=ms, unit="ms"),
            dict(base, metric="peak_memory", median=peak / 2**20, unit="MiB")]
    if bytes_read:
        moved = bytes_read * (1 if mode == "fwd" else 3)  # bwd reads the logits again and writes their grad
        rows.append(dict(base, metric="bandwidth", median=moved / (ms * 1e-3) / 1e9, unit="GB/s"))
    return rows


def run(device: torch.device, sizes: list[int], hidden: int, vocab: int, dtype_name: str, modes: list[str]) -> list[dict]:
    dtype = DTYPES[dtype_name]
    rows = [dict(what="memory_copy", provider="device", mode="fwd", shape="256MiB", dtype="uint8",
                 metric="bandwidth", median=common.memory_bandwidth_gbs(device), unit="GB/s",
                 device=common.device_name(device))]
    torch.manual_seed(0)
    kw = dict(device=device, dtype=dtype)

    def logits_inputs(n):
        def make():
            logits = (torch.randn(n, vocab, **kw) * 2).requires_grad_()
            return logits, torch.randint(0, vocab, (n,), device=device)
        return make

    def fused_inputs(n):
        def make():
            h = (torch.randn(n, hidden, **kw) / hidden ** 0.25).requires_grad_()
            w = (torch.randn(vocab, hidden, **kw) / hidden ** 0.25).requires_grad_()
            return h, w, torch.randint(0, vocab, (n,), device=device)
        return make

    for what, providers, inputs_for, ref in (
        ("selective_logprobs", selective_providers(device), logits_inputs,
         lambda x: _torch_selective(x[0].double(), x[1])),
        ("fused_linear_logprobs", fused_providers(device), fused_inputs,
         lambda x: _torch_fused(x[0].double(), x[1].double(), x[2])),
    ):
        probe = inputs_for(min(sizes))()
        reference = _reference(ref, probe)
        good = {}
        for name, fn in providers.items():
            # liger's selective kernel has no backward: its forward only is checked (and timed)
            failure = _check(name, fn, probe, reference, dtype,
                             with_grad=not (name == "liger" and what == "selective_logprobs"))
            if failure is None:
                good[name] = fn
            else:
                rows.append(dict(what=what, provider=name, mode="fwd+bwd", shape=f"N={min(sizes)}", dtype=dtype_name,
                                 metric="check_failed", median=float("nan"), unit=failure,
                                 device=common.device_name(device)))
        del probe, reference
        for n in sizes:
            shape = f"N={n},V={vocab}" if what == "selective_logprobs" else f"N={n},H={hidden},V={vocab}"
            bytes_read = n * vocab * torch.finfo(dtype).bits // 8 if what == "selective_logprobs" else 0
            for mode in modes:
                for name, fn in good.items():
                    if name == "liger" and what == "selective_logprobs" and mode != "fwd":
                        continue  # liger's selective kernel has no backward
                    rows += bench_one(what, name, fn, inputs_for(n), mode, device, shape, dtype_name, bytes_read)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", help="token counts N (default: 1k..16k on GPU, 256..2k on CPU)")
    parser.add_argument("--hidden", type=int, help="hidden size H (default: 3584 on GPU, 256 on CPU)")
    parser.add_argument("--vocab", type=int, help="vocabulary V (default: 152064 on GPU, 32000 on CPU)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    rows = run(device,
               args.sizes or ([1024, 2048, 4096, 8192, 16384] if gpu else [256, 2048]),
               args.hidden or (3584 if gpu else 256),
               args.vocab or (152064 if gpu else 32000),
               args.dtype or ("bf16" if gpu else "fp32"),
               args.modes)
    common.print_table(rows)
    print(f"appended {len(rows)} rows to {common.append_rows(CSV, rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
