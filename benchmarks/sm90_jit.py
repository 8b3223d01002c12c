"""On the GPU: the resource facts of the kernels Triton really compiled, beside the AOT ones.

benchmarks/sm90_compile.py compiles for sm_90a ahead of time with this machine's Triton (3.9);
the H200 machine runs another Triton (3.6) with its own ptxas. This runs the public ops at the
benchmark shapes on CUDA, then reads every compiled kernel in the JIT caches of the
`tempo_fast.ops._triton` kernels: registers, spills, shared memory, and wgmma in the PTX, so the
two can be compared row by row (what="sm90_jit:<kernel>", same metrics as sm90_compile.csv).

    python -m benchmarks.sm90_jit --device cuda        # rows to benchmarks/results/sm90_jit.csv
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmarks.common as common  # noqa: E402


def run_ops(device: str) -> None:
    """One forward+backward of each op at its benchmark shape (bf16 where it applies)."""
    from tempo_fast import ops

    n, hidden, vocab = 8192, 3584, 152064
    h = torch.randn(n, hidden, device=device, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(vocab, hidden, device=device, dtype=torch.bfloat16, requires_grad=True)
    ids = torch.randint(0, vocab, (n,), device=device)
    ops.fused_linear_logprobs(h, w, ids, backend="triton").sum().backward()
    mask = torch.ones(8, 1024, device=device, dtype=torch.bool)
    old = torch.randn(8, 1024, device=device) - 12.0
    loss, _ = ops.fused_grpo_loss(h.view(8, 1024, hidden), w, ids.view(8, 1024), old, torch.randn(8, device=device),
                                  mask, backend="triton")
    loss.backward()
    del h, w
    logits = torch.randn(n, vocab, device=device, dtype=torch.bfloat16, requires_grad=True)
    ops.selective_logprobs(logits, ids, backend="triton").sum().backward()
    del logits
    logps = torch.randn(8, 1024, device=device, requires_grad=True)
    loss, _ = ops.grpo_loss(logps, logps.detach() + 0.01, torch.randn(8, device=device), mask, backend="triton")
    loss.backward()
    ops.group_advantages(torch.randn(8192, device=device), 8, backend="triton")
    ops.saa_scores(torch.randint(0, 256, (256, 224, 224, 3), dtype=torch.uint8, device=device), backend="triton")
    torch.cuda.synchronize()


def compiled_kernels():
    """(kernel name, CompiledKernel) for every kernel in the JIT caches of tempo_fast.ops._triton."""
    import tempo_fast.ops._triton as package

    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, fn in vars(module).items():
            caches = getattr(fn, "device_caches", None)
            if not name.endswith("_kernel") or caches is None:
                continue
            for cache in caches.values():
                for kernel in cache[0].values():
                    yield name, kernel


def rows(device: str) -> list[dict]:
    out = []
    for i, (name, kernel) in enumerate(compiled_kernels()):
        kernel._init_handles()  # loads the binary; fills n_regs and n_spills
        facts = {"registers": kernel.n_regs, "spill_bytes": kernel.n_spills, "shared_bytes": kernel.metadata.shared,
                 "wgmma": int("wgmma.mma_async" in kernel.asm.get("ptx", "")),
                 "num_warps": kernel.metadata.num_warps, "num_stages": kernel.metadata.num_stages}
        mode = f"{kernel.metadata.num_warps} warps {kernel.metadata.num_stages} stages #{i}"
        base = dict(what=f"sm90_jit:{name}", provider="triton-jit", mode=mode, shape="benchmark shapes",
                    dtype="", device=common.device_name(device))
        out += [dict(base, metric=k, median=v, unit="") for k, v in facts.items()]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-csv", action="store_true")
    args = parser.parse_args(argv)
    if not torch.device(args.device).type == "cuda":
        raise SystemExit("sm90_jit: needs a CUDA device (the JIT compiles only there)")
    run_ops(args.device)
    found = rows(args.device)
    common.print_table(found)
    if not args.no_csv:
        common.append_rows("sm90_jit.csv", found)
    spills = [r for r in found if r["metric"] == "spill_bytes" and r["median"]]
    return 1 if spills else 0


if __name__ == "__main__":
    sys.exit(main())
