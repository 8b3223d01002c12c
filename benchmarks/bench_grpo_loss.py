"""Benchmark: the GRPO loss from the completion's hidden states, forward and forward+backward.

Providers, all measured in the same run on the same inputs:
  torch              the TRL way: logits = hidden @ weight.T, float32 log_softmax, gather, then
                     the loss (tempo_fast.ops.grpo_loss with backend="torch", TRL's formula)
  tempo_fast_logits  logits materialised, then tempo_fast selective_logprobs + grpo_loss
  torch_lce          torch.nn.functional.linear_cross_entropy(reduction="none", chunked with
                     LinearCrossEntropyOptions()) = -log-probs, then grpo_loss (torch)
  cce                Apple's cut_cross_entropy.linear_cross_entropy(reduction="none") = -log-probs
                     (impl "torch_compile" on CPU, "cce" on CUDA), then grpo_loss (torch)
  liger_fused        liger_kernel.chunked_loss.LigerFusedLinearGRPOLoss (when installed)
  liger_triton       CUDA only: logits materialised, then liger's Triton GRPO loss
  tempo_fast         tempo_fast.ops.fused_grpo_loss (three matmuls, no [N, V] logits)

Every provider's loss and gradients (hidden, weight) are checked against float64 at the smallest
size before it is timed; one that fails gets a `check_failed` row (its error or exception) and
is not timed. Rows go to benchmarks/results/grpo_loss.csv: time (ms), TFLOP/s counted as 2·H·V
per scored token and matmul (one matmul forward, three with backward, the useful work of every
provider), and memory: on CUDA `peak_memory`, max_memory_allocated above the inputs; on CPU
a fresh process per provider, mode and size: `first_call_maxrss_growth`, ru_maxrss growth over
the process's first call (so it includes one-time costs: code pages, numba JIT, torch.compile),
then `peak_rss_growth`, the high-water growth over the second call (VmHWM, reset just before;
ru_maxrss cannot be reset once a thread has exited), then the time (median of 7 more calls). The rate of a plain matmul in the same dtype (8192³ on CUDA, 2048³ on CPU) is measured
in the same run and written as its own `gemm` row.

    python benchmarks/bench_grpo_loss.py                    # CPU: N=512, 2048, H=256, V=32000 fp32
    python benchmarks/bench_grpo_loss.py --device cuda      # H=3584, V=152064, bf16, N=1k..16k
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402
from tempo_fast import ops  # noqa: E402

CSV = "grpo_loss.csv"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SEQUENCES = 8  # completions per batch; T = N / SEQUENCES


def make_inputs(n_tokens, hidden, vocab, dtype, device, beta):
    batch, length = SEQUENCES, max(1, n_tokens // SEQUENCES)
    h = (torch.randn(batch, length, hidden, device=device, dtype=dtype) / hidden ** 0.25).requires_grad_()
    w = (torch.randn(vocab, hidden, device=device, dtype=dtype) / hidden ** 0.25).requires_grad_()
    ids = torch.randint(0, vocab, (batch, length), device=device)
    lengths = torch.randint(length // 2, length + 1, (batch,), device=device)
    mask = (torch.arange(length, device=device)[None, :] < lengths[:, None]).float()
    # Old and reference log-probs near the current ones, as after a few optimizer steps (in
    # 256-row pieces, so that making the inputs does not raise the process's memory high-water mark).
    with torch.no_grad():
        if n_tokens * vocab <= 2**28:
            flat_h, flat_ids = h.reshape(-1, hidden).float(), ids.reshape(-1, 1)
            base = torch.cat([torch.log_softmax(flat_h[r:r + 256] @ w.float().T, dim=-1).gather(-1, flat_ids[r:r + 256])
                              for r in range(0, flat_h.shape[0], 256)])[:, 0].view(batch, length)
        else:
            base = torch.full((batch, length), -float(torch.log(torch.tensor(vocab))), device=device)
    old = base + 0.1 * torch.randn_like(base)
    ref = base + 0.1 * torch.randn_like(base) if beta > 0 else None
    adv = torch.randn(batch, device=device)
    return dict(hidden=h, weight=w, ids=ids, mask=mask, old=old, ref=ref, adv=adv)


def providers(device: torch.device, cfg: dict, only=None) -> tuple[dict, dict]:
    """(name -> loss function of the inputs, name -> why it could not load), limited to `only`
    when given (a child process imports no other provider's package)."""
    wanted = lambda name: only is None or name in only  # noqa: E731
    kw = dict(beta=cfg["beta"], loss_type=cfg["loss_type"], epsilon_low=0.2, epsilon_high=cfg["epsilon_high"])

    def loss_of(logps, x):
        return ops.grpo_loss(logps, x["old"], x["adv"], x["mask"], ref_logps=x["ref"], backend="torch", **kw)[0]

    def torch_way(x):
        logits = x["hidden"] @ x["weight"].T
        return loss_of(torch.log_softmax(logits.float(), dim=-1).gather(-1, x["ids"][..., None])[..., 0], x)

    def tempo_logits(x):
        logps = ops.selective_logprobs(x["hidden"] @ x["weight"].T, x["ids"])
        return ops.grpo_loss(logps, x["old"], x["adv"], x["mask"], ref_logps=x["ref"], **kw)[0]

    def tempo_fused(x):
        return ops.fused_grpo_loss(x["hidden"], x["weight"], x["ids"], x["old"], x["adv"], x["mask"],
                                   ref_logps=x["ref"], **kw)[0]

    found = {"torch": torch_way, "tempo_fast_logits": tempo_logits}
    skipped = {}
    if not wanted("torch_lce"):
        pass
    elif hasattr(torch.nn.functional, "linear_cross_entropy"):
        chunked = torch.nn.LinearCrossEntropyOptions()

        def torch_lce(x):
            h = x["hidden"]
            nll = torch.nn.functional.linear_cross_entropy(h.reshape(-1, h.shape[-1]), x["weight"], x["ids"].reshape(-1),
                                                           reduction="none", options=chunked)
            return loss_of(-nll.float().view(x["ids"].shape), x)
        found["torch_lce"] = torch_lce
    else:
        skipped["torch_lce"] = f"torch {torch.__version__} has no torch.nn.functional.linear_cross_entropy"
    try:
        if not wanted("cce"):
            raise LookupError("not asked for")
        from cut_cross_entropy import linear_cross_entropy as cce_loss
        impl = "cce" if device.type == "cuda" else "torch_compile"
        found["cce"] = lambda x: loss_of(-cce_loss(x["hidden"], x["weight"], x["ids"], reduction="none",
                                                   impl=impl).float(), x)
    except Exception as exc:  # not installed or incompatible: reported, the others still run
        skipped["cce"] = f"{type(exc).__name__}: {exc}"
    try:
        if not wanted("liger_fused"):
            raise LookupError("not asked for")
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
        liger = LigerFusedLinearGRPOLoss(beta=cfg["beta"], compiled=device.type == "cuda",
                                         use_ref_model=cfg["beta"] > 0, loss_type=cfg["loss_type"],
                                         epsilon_low=0.2, epsilon_high=cfg["epsilon_high"])
        found["liger_fused"] = lambda x: liger(x["hidden"], x["weight"], x["ids"], x["mask"], x["adv"],
                                               ref_per_token_logps=x["ref"], old_per_token_logps=x["old"])[0]
    except Exception as exc:
        skipped["liger_fused"] = f"{type(exc).__name__}: {exc}"
    if device.type == "cuda" and wanted("liger_triton"):
        try:
            from liger_kernel.transformers.grpo_loss import triton_grpo_loss

            def liger_triton(x):
                h = torch.cat([x["hidden"], x["hidden"][:, -1:]], dim=1)  # liger drops the last position
                return triton_grpo_loss(h @ x["weight"].T, x["old"], x["ref"], x["ids"], x["adv"], x["mask"],
                                        temperature=1.0, beta=cfg["beta"], eps_low=0.2, eps_high=cfg["epsilon_high"],
                                        loss_type=cfg["loss_type"], reduce=True)[0]
            found["liger_triton"] = liger_triton
        except Exception as exc:
            skipped["liger_triton"] = f"{type(exc).__name__}: {exc}"
    found["tempo_fast"] = tempo_fused
    skipped = {name: why for name, why in skipped.items() if why != "LookupError: not asked for"}
    return {name: fn for name, fn in found.items() if wanted(name)}, skipped


def reference(x, cfg):
    """float64 loss and its gradients in hidden and weight."""
    h, w = (x[k].detach().double().requires_grad_() for k in ("hidden", "weight"))
    logps = torch.log_softmax(h @ w.T, dim=-1).gather(-1, x["ids"][..., None])[..., 0]
    ref = None if x["ref"] is None else x["ref"].double()
    loss = ops.grpo_loss(logps, x["old"].double(), x["adv"].double(), x["mask"].double(), ref_logps=ref,
                         beta=cfg["beta"], loss_type=cfg["loss_type"], epsilon_high=cfg["epsilon_high"],
                         backend="torch")[0]
    return loss.detach(), torch.autograd.grad(loss, [h, w])


def check(fn, x, expected, dtype) -> str | None:
    """None when fn's loss and gradients match float64, else what went wrong."""
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    try:
        loss = fn(x)
        grads = torch.autograd.grad(loss, [x["hidden"], x["weight"]])
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    want_loss, want_grads = expected
    loss = loss.detach()
    err = abs(float(loss) - float(want_loss)) / max(1.0, abs(float(want_loss)))
    if not err <= tol:
        return f"loss {float(loss):.6g} against float64 {float(want_loss):.6g}"
    for name, got, want in zip(("hidden", "weight"), grads, want_grads):
        rel = float((got.double() - want).norm() / want.norm().clamp(min=1e-30))
        if not rel <= 10 * tol:
            return f"grad {name}: relative error {rel:.3g}"
    return None


def _call_for(fn, x, mode):
    def call():
        loss = fn(x)
        if mode == "fwd+bwd":
            torch.autograd.grad(loss, [x["hidden"], x["weight"]])
    return torch.no_grad()(call) if mode == "fwd" else call


def child(args) -> int:
    """One provider, mode and size in this fresh process: print the first call's ru_maxrss growth,
    a later call's high-water growth and the median time, as JSON."""
    device, dtype, cfg = torch.device("cpu"), DTYPES[args.dtype], _cfg(args)
    torch.manual_seed(0)
    fn = providers(device, cfg, only={args.child})[0][args.child]
    x = make_inputs(args.sizes[0], args.hidden, args.vocab, dtype, device, cfg["beta"])
    call = _call_for(fn, x, args.modes[0])
    first, new_high = common.rss_growth_bytes(call, first_call=True)
    warm, _ = common.rss_growth_bytes(call)
    print(json.dumps(dict(ms=common.time_ms(call, device, warmup=1), first=first, new_high=new_high, warm=warm)))
    return 0


def _in_fresh_process(args, name, n, mode) -> dict:
    argv = [sys.executable, __file__, "--child", name, "--device", "cpu", "--sizes", str(n), "--modes", mode,
            "--hidden", str(args.hidden), "--vocab", str(args.vocab), "--dtype", args.dtype,
            "--loss-type", args.loss_type, "--beta", str(args.beta), "--epsilon-high", str(args.epsilon_high)]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"child exited {out.returncode}: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args) -> list[dict]:
    device, dtype, cfg = torch.device(args.device), DTYPES[args.dtype], _cfg(args)
    torch.manual_seed(0)
    found, skipped = providers(device, cfg, only=set(args.providers) if args.providers else None)
    for name, why in skipped.items():
        print(f"  {name} skipped: {why}")
    dev = common.device_name(device)
    gemm_n = 8192 if device.type == "cuda" else 2048
    rows = [dict(what="gemm", provider="torch.mm", mode="fwd", shape=f"{gemm_n}^3", dtype=args.dtype,
                 metric="tflops", median=common.gemm_tflops(device, dtype, gemm_n), unit="TFLOP/s", device=dev)]
    probe = make_inputs(min(args.sizes), args.hidden, args.vocab, dtype, device, cfg["beta"])
    expected = reference(probe, cfg)
    probe_shape = f"N={min(args.sizes)},H={args.hidden},V={args.vocab}"
    good = {}
    for name, fn in found.items():
        failure = check(fn, probe, expected, dtype)
        if failure is None:
            good[name] = fn
            continue
        print(f"  {name}: check against float64 failed ({failure}): not timed")
        rows.append(dict(what="grpo_loss", provider=name, mode="fwd+bwd", shape=probe_shape, dtype=args.dtype,
                         metric="check_failed", median=float("nan"), unit=failure, device=dev))
    del probe, expected
    for n in args.sizes:
        shape = f"N={n},H={args.hidden},V={args.vocab}"
        for mode in args.modes:
            for name, fn in good.items():
                base = dict(what="grpo_loss", provider=name, mode=mode, shape=shape, dtype=args.dtype, device=dev)
                x = make_inputs(n, args.hidden, args.vocab, dtype, device, cfg["beta"])
                flops = 2 * (3 if mode == "fwd+bwd" else 1) * float(x["mask"].sum()) * args.hidden * args.vocab
                try:
                    if device.type == "cuda":
                        call = _call_for(fn, x, mode)
                        ms = common.time_ms(call, device)
                        memory = dict(metric="peak_memory", median=common.peak_memory_bytes(call, device) / 2**20)
                    else:
                        del x
                        got = _in_fresh_process(args, name, n, mode)
                        ms = got["ms"]
                        memory = dict(metric="peak_rss_growth", median=got["warm"] / 2**20)
                        rows.append(dict(base, metric="first_call_maxrss_growth", median=got["first"] / 2**20,
                                         unit="MiB" if got["new_high"] else "MiB (upper bound)"))
                    rows += [dict(base, metric="time", median=ms, unit="ms"), dict(base, **memory, unit="MiB"),
                             dict(base, metric="tflops", median=flops / (ms * 1e-3) / 1e12, unit="TFLOP/s")]
                except (torch.OutOfMemoryError, RuntimeError) as exc:
                    print(f"  {name} {mode} {shape}: {exc}")
                    rows.append(dict(base, metric="time", median=float("nan"), unit=f"failed: {str(exc)[:120]}"))
                x = None
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def _cfg(args) -> dict:
    return dict(beta=args.beta, loss_type=args.loss_type, epsilon_high=args.epsilon_high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", help="tokens N = 8 sequences x T (default: 1k..16k GPU, 512, 2k CPU)")
    parser.add_argument("--hidden", type=int, help="hidden size (default: 3584 GPU, 256 CPU)")
    parser.add_argument("--vocab", type=int, help="vocabulary (default: 152064 GPU, 32000 CPU)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--loss-type", default="grpo", choices=["grpo", "bnpo", "dr_grpo", "dapo"])
    parser.add_argument("--beta", type=float, default=0.04, help="KL coefficient (reference log-probs given when > 0)")
    parser.add_argument("--epsilon-high", type=float, default=0.28, help="upper clip of the ratio")
    parser.add_argument("--providers", nargs="+", help="run only these providers (default: all that load)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure one provider in this process
    args = parser.parse_args(argv)
    gpu = torch.device(args.device).type == "cuda"
    args.sizes = args.sizes or ([1024, 2048, 4096, 8192, 16384] if gpu else [512, 2048])
    args.hidden = args.hidden or (3584 if gpu else 256)
    args.vocab = args.vocab or (152064 if gpu else 32000)
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    if args.child:
        return child(args)
    rows = run(args)
    common.print_table(rows)
    print(f"appended {len(rows)} rows to {common.append_rows(CSV, rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
