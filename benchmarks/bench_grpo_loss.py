"""Benchmark: the GRPO loss from the completion's hidden states, forward and forward+backward.

Providers, all measured in the same run on the same inputs:
  torch            the TRL way: logits = hidden @ weight.T, float32 log_softmax, gather, then
                   the loss (tempo_fast.ops.grpo_loss with backend="torch", TRL's formula)
  tempo_fast_logits  logits materialised, then tempo_fast selective_logprobs + grpo_loss
  liger_fused      liger_kernel.chunked_loss.LigerFusedLinearGRPOLoss (when installed)
  liger_triton     CUDA only: logits materialised, then liger's Triton GRPO loss
  tempo_fast       tempo_fast.ops.fused_grpo_loss (no [N, V] logits)

Every provider's loss is checked against a float64 evaluation of the same formula before it
is timed. Rows (time in ms, peak memory in MiB above the inputs) go to
benchmarks/results/grpo_loss.csv.

    python benchmarks/bench_grpo_loss.py                    # CPU-size defaults
    python benchmarks/bench_grpo_loss.py --device cuda      # H=3584, V=152064, bf16, N=1k..16k
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
    # Old and reference log-probs near the current ones, as after a few optimizer steps.
    with torch.no_grad():
        base = torch.log_softmax((h.float() @ w.float().T), dim=-1).gather(-1, ids[..., None])[..., 0] \
            if n_tokens * vocab <= 2**28 else torch.full((batch, length), -float(torch.log(torch.tensor(vocab))), device=device)
    old = base + 0.1 * torch.randn_like(base)
    ref = base + 0.1 * torch.randn_like(base) if beta > 0 else None
    adv = torch.randn(batch, device=device)
    return dict(hidden=h, weight=w, ids=ids, mask=mask, old=old, ref=ref, adv=adv)


def providers(device: torch.device, cfg: dict) -> dict:
    kw = dict(beta=cfg["beta"], loss_type=cfg["loss_type"], epsilon_low=0.2, epsilon_high=cfg["epsilon_high"])

    def torch_way(x):
        logits = x["hidden"] @ x["weight"].T
        logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, x["ids"][..., None])[..., 0]
        return ops.grpo_loss(logps, x["old"], x["adv"], x["mask"], ref_logps=x["ref"], backend="torch", **kw)[0]

    def tempo_logits(x):
        logps = ops.selective_logprobs(x["hidden"] @ x["weight"].T, x["ids"])
        return ops.grpo_loss(logps, x["old"], x["adv"], x["mask"], ref_logps=x["ref"], **kw)[0]

    def tempo_fused(x):
        return ops.fused_grpo_loss(x["hidden"], x["weight"], x["ids"], x["old"], x["adv"], x["mask"],
                                   ref_logps=x["ref"], **kw)[0]

    found = {"torch": torch_way, "tempo_fast_logits": tempo_logits, "tempo_fast": tempo_fused}
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
        liger = LigerFusedLinearGRPOLoss(beta=cfg["beta"], compiled=device.type == "cuda",
                                         use_ref_model=cfg["beta"] > 0, loss_type=cfg["loss_type"],
                                         epsilon_low=0.2, epsilon_high=cfg["epsilon_high"])
        found["liger_fused"] = lambda x: liger(x["hidden"], x["weight"], x["ids"], x["mask"], x["adv"],
                                               ref_per_token_logps=x["ref"], old_per_token_logps=x["old"])[0]
    except Exception as exc:  # not installed or incompatible: reported, the others still run
        print(f"  liger_fused skipped: {exc}")
    if device.type == "cuda":
        try:
            from liger_kernel.transformers.grpo_loss import triton_grpo_loss

            def liger_triton(x):
                h = torch.cat([x["hidden"], x["hidden"][:, -1:]], dim=1)  # liger drops the last position
                return triton_grpo_loss(h @ x["weight"].T, x["old"], x["ref"], x["ids"], x["adv"], x["mask"],
                                        temperature=1.0, beta=cfg["beta"], eps_low=0.2, eps_high=cfg["epsilon_high"],
                                        loss_type=cfg["loss_type"], reduce=True)[0]
            found["liger_triton"] = liger_triton
        except Exception as exc:
            print(f"  liger_triton skipped: {exc}")
    return found


def reference_loss(x, cfg) -> float:
    logits = x["hidden"].double() @ x["weight"].double().T
    logps = torch.log_softmax(logits, dim=-1).gather(-1, x["ids"][..., None])[..., 0]
    ref = None if x["ref"] is None else x["ref"].double()
    return ops.grpo_loss(logps, x["old"].double(), x["adv"].double(), x["mask"].double(), ref_logps=ref,
                         beta=cfg["beta"], loss_type=cfg["loss_type"], epsilon_high=cfg["epsilon_high"],
                         backend="torch")[0].item()


def run(device, sizes, hidden, vocab, dtype_name, modes, cfg) -> list[dict]:
    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    found = providers(device, cfg)
    probe = make_inputs(min(sizes), hidden, vocab, dtype, device, cfg["beta"])
    expected = reference_loss(probe, cfg)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    good = {}
    for name, fn in found.items():
        try:
            with torch.no_grad():
                got = float(fn(probe))
        except Exception as exc:
            print(f"  {name}: failed on the check shape ({type(exc).__name__}: {exc}): not timed")
            continue
        if abs(got - expected) <= tol * max(1.0, abs(expected)):
            good[name] = fn
        else:
            print(f"  {name}: loss {got:.6g} against float64 {expected:.6g}: not timed")
    del probe
    rows = []
    for n in sizes:
        shape = f"N={n},H={hidden},V={vocab}"
        for mode in modes:
            for name, fn in good.items():
                x = make_inputs(n, hidden, vocab, dtype, device, cfg["beta"])
                params = [x["hidden"], x["weight"]]

                def call():
                    loss = fn(x)
                    if mode == "fwd+bwd":
                        torch.autograd.grad(loss, params)

                if mode == "fwd":
                    call = torch.no_grad()(call)
                base = dict(what="grpo_loss", provider=name, mode=mode, shape=shape, dtype=dtype_name,
                            device=common.device_name(device))
                try:
                    ms = common.time_ms(call, device)
                    peak = common.peak_memory_bytes(call, device)
                    rows += [dict(base, metric="time", median=ms, unit="ms"),
                             dict(base, metric="peak_memory", median=peak / 2**20, unit="MiB")]
                except torch.OutOfMemoryError:
                    print(f"  {name} {mode} {shape}: out of memory")
                    rows.append(dict(base, metric="time", median=float("nan"), unit="OOM"))
                del x, params
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


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
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    cfg = dict(beta=args.beta, loss_type=args.loss_type, epsilon_high=args.epsilon_high)
    rows = run(device, args.sizes or ([1024, 2048, 4096, 8192, 16384] if gpu else [512, 2048]),
               args.hidden or (3584 if gpu else 256), args.vocab or (152064 if gpu else 32000),
               args.dtype or ("bf16" if gpu else "fp32"), args.modes, cfg)
    common.print_table(rows)
    print(f"appended {len(rows)} rows to {common.append_rows(CSV, rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
