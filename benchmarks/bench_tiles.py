"""The H200 tile choices against their alternatives, timed in one run (what a GPU settles).

The launchers' tiles were chosen from sm_90a compile facts alone (benchmarks/sm90_compile.py);
this times them against the runner-up configurations so that the first GPU run can confirm or
overturn each choice:
- fused_linear_logprobs (bf16, N=8192, H=3584, V=152064): the chosen 128x128x64 tile on 8 warps
  with 4 stages, the same with 3 stages, and the 64x128x64 tile on 4 warps used before (two
  programs per SM). Forward and forward+backward, TFLOP/s counting 2NHV forward, 8NHV both.
- saa_scores (256 x 224 x 224 x 3 uint8): the launcher's TARGET_PROGRAMS 8192 (one frame per
  range at this size, so every frame is read twice) against 2048 (4 frames per range, 1.25x).
Each configuration is first checked against the float64 reference (fused_linear_logprobs on the
first 256 rows; saa_scores exactly). The configurations are swapped in by patching
`tile_config` / `TARGET_PROGRAMS` for the duration of one measurement.

    python benchmarks/bench_tiles.py --device cuda
    TRITON_INTERPRET=1 python benchmarks/bench_tiles.py --device cpu   # correctness only, toy sizes

Rows go to benchmarks/results/tiles.csv (--results DIR elsewhere).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmarks.common as common  # noqa: E402

FLL_CONFIGS = {  # label -> tile_config for bf16
    "128x128x64 w8 s4 (chosen)": dict(BLOCK_N=128, BLOCK_V=128, BLOCK_K=64, num_warps=8, num_stages=4),
    "128x128x64 w8 s3": dict(BLOCK_N=128, BLOCK_V=128, BLOCK_K=64, num_warps=8, num_stages=3),
    "64x128x64 w4 s3 (before)": dict(BLOCK_N=64, BLOCK_V=128, BLOCK_K=64, num_warps=4, num_stages=3),
}
SAA_TARGETS = (8192, 2048)


def fused_rows(device: torch.device, n: int, hidden: int, vocab: int, dtype: torch.dtype) -> list[dict]:
    from tempo_fast.ops import fused_linear_logprobs, fused_linear_logprobs_ref
    from tempo_fast.ops._triton import fused_linear_logprobs as kernels

    gen = torch.Generator(device).manual_seed(0)
    h = (torch.randn(n, hidden, device=device, generator=gen) / hidden ** 0.25).to(dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, device=device, generator=gen) / hidden ** 0.25).to(dtype).requires_grad_()
    ids = torch.randint(0, vocab, (n,), device=device, generator=gen)
    check_rows = min(n, 256)
    ref = fused_linear_logprobs_ref(h[:check_rows].double(), w.double(), ids[:check_rows])
    rows, shape = [], f"N={n} H={hidden} V={vocab}"
    base = dict(what="tiles:fused_linear_logprobs", shape=shape, dtype=str(dtype).removeprefix("torch."),
                device=common.device_name(device))
    for label, config in FLL_CONFIGS.items():
        with mock.patch.object(kernels, "tile_config", lambda *_a, c=config: dict(c)):
            got = fused_linear_logprobs(h[:check_rows].detach(), w.detach(), ids[:check_rows], backend="triton")
            err = ((got.double() - ref).norm() / ref.norm()).item()
            ok = err < 1e-2  # bf16 operands, fp32 accumulation: ~1e-3
            rows.append(dict(base, provider=label, mode="check", metric="rel_error", median=err,
                             unit="vs float64" if ok else "failed"))
            if not ok or device.type != "cuda":  # the interpreter checks, it does not time
                continue
            for mode, flop in (("fwd", 2 * n * hidden * vocab), ("fwd+bwd", 8 * n * hidden * vocab)):
                def call():
                    out = fused_linear_logprobs(h, w, ids, backend="triton")
                    if mode == "fwd+bwd":
                        torch.autograd.grad(out.sum(), (h, w))
                with torch.set_grad_enabled(mode == "fwd+bwd"):
                    ms = common.time_ms(call, device)
                rows += [dict(base, provider=label, mode=mode, metric="time", median=ms, unit="ms"),
                         dict(base, provider=label, mode=mode, metric="rate", median=flop / (ms * 1e-3) / 1e12,
                              unit="TFLOP/s")]
    return rows


def saa_rows(device: torch.device, shape: tuple) -> list[dict]:
    from tempo_fast.ops import saa_scores, saa_scores_ref
    from tempo_fast.ops._triton import saa_scores as kernels

    frames = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    ref = saa_scores_ref(frames)
    rows = []
    base = dict(what="tiles:saa_scores", mode="fwd", shape="x".join(map(str, shape)), dtype="uint8",
                device=common.device_name(device))
    for target in SAA_TARGETS:
        with mock.patch.object(kernels, "TARGET_PROGRAMS", target):
            label = f"target_programs={target}"
            ok = torch.equal(saa_scores(frames, backend="triton"), ref)
            rows.append(dict(base, provider=label, metric="matches_reference", median=int(ok),
                             unit="bool" if ok else "failed"))
            if not ok or device.type != "cuda":
                continue
            ms = common.time_ms(lambda: saa_scores(frames, backend="triton"), device)
            rows += [dict(base, provider=label, metric="time", median=ms, unit="ms"),
                     dict(base, provider=label, metric="throughput", median=frames.numel() / (ms * 1e-3) / 1e9,
                          unit="GB/s")]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--results", default=None, help="folder for tiles.csv (default: benchmarks/results)")
    parser.add_argument("--no-csv", action="store_true", help="print only, append no rows")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":  # the interpreter: correctness of every configuration, toy sizes
        rows = fused_rows(device, 9, 32, 301, torch.float32) + saa_rows(device, (5, 9, 7, 3))
    else:
        rows = fused_rows(device, 8192, 3584, 152064, torch.bfloat16) + saa_rows(device, (256, 224, 224, 3))
    common.print_table(rows)
    failed = [r for r in rows if r["unit"] == "failed"]
    if args.results:
        common.RESULTS = Path(args.results)
    if not args.no_csv:
        common.append_rows("tiles.csv", rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
