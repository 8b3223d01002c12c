"""Grounding inference throughput: the rollout engine (one shared prefill for G samples) against
plain transformers `generate(num_return_sequences=G)` (the prompt and its video prefilled G
times), plus `tempo_fast.infer.predict` end to end (decode + SAA + prompt + greedy and G sampled
answers per query, with and without prefetching workers).

    python benchmarks/bench_infer.py                  # CPU, the tiny preset, short synthetic clips
    python benchmarks/bench_infer.py --gpu-7b         # CUDA, bf16, a random model of Qwen2.5-VL-7B's shape

`--gpu-7b` builds Qwen2.5-VL-7B's architecture from its config alone (text: hidden 3584, 28 layers,
28 heads, 4 kv heads, intermediate 18944, vocabulary 152064; vision: depth 32, hidden 1280, 16
heads, intermediate 3420, windowed attention with full attention at blocks 7/15/23/31), randomly
initialised directly on the GPU (no weights are downloaded: speed does not depend on them), with
the tiny preset's tokenizer and its special-token ids; prompts hold 64 frames at 448x448
(32 temporal patches x 256 tokens = 8192 video tokens).

Both providers get the same inputs: Qwen's plain video layout (no timestamp text, uniform frames),
for which transformers' own rotary index equals the prompt's (`after_vision="spatial"`, the rule
of transformers >= 5.3). Sampling: temperature 1, no top-k/top-p, stop at EOS or `</answer>` in
both. Before timing, greedy decoding of both must give the same tokens (exactly on the CPU in
fp32; on CUDA in bf16 the share of equal tokens is printed, as near-ties of a random model may
flip). Each timed call reseeds its generator, so every repetition generates the same tokens.

Rows go to benchmarks/results/infer.csv: metric queries_per_s (prompts with G answers per second),
tokens_per_s (generated tokens per second, all G sequences) and ms per call.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import append_rows, device_name, print_table, time_ms  # noqa: E402

STOP = "</answer>"
QWEN25_VL_7B = {  # the released checkpoint's config.json, sizes only
    "text": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                 intermediate_size=18944, vocab_size=152064, max_position_embeddings=128000, rms_norm_eps=1e-6,
                 rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
    "vision": dict(depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420, out_hidden_size=3584,
                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                   fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
}


def model_7b(device: str):
    """A randomly initialised bf16 model of Qwen2.5-VL-7B's shape on `device`, as a VLModel."""
    import transformers

    from tempo_fast.model import VLModel
    from tempo_fast.model.tiny import ensure_tiny

    tiny = ensure_tiny()
    config = json.loads((tiny / "config.json").read_text())  # the tiny tokenizer's special-token ids
    config["text_config"].update(QWEN25_VL_7B["text"])
    config["text_config"]["layer_types"] = ["full_attention"] * QWEN25_VL_7B["text"]["num_hidden_layers"]
    config["vision_config"].update(QWEN25_VL_7B["vision"])
    config = transformers.Qwen2_5_VLConfig(**{k: v for k, v in config.items() if k not in ("architectures", "dtype")})
    with torch.device(device):
        model = transformers.Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny, local_files_only=True)
    return VLModel(model=model, tokenizer=tokenizer, family="qwen2_5_vl", path=tiny)


def uniform_frames(path: str | None, num_frames: int, size: tuple[int, int], seconds: float):
    """Frames at uniform times: decoded from `path`, or random pixels when there is no clip."""
    from tempo_fast.video import Frames, decode
    from tempo_fast.video.saa import uniform_times

    if path is not None:
        times = uniform_times(seconds, num_frames)
        frames = decode(path, timestamps=times, size=size)
        frames.pts = times
        return frames
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (num_frames, 3, *size), dtype=torch.uint8, generator=gen)
    return Frames(data=data, pts=uniform_times(seconds, num_frames), duration=seconds, fps=num_frames / seconds,
                  path="random")


def plain_prompt(vl, frames, size):
    from tempo_fast.model import build_prompt

    pixels = size[0] * size[1]
    return build_prompt(vl, frames, "the red circle moves", min_pixels=pixels, max_pixels=pixels,
                        timestamps=False, after_vision="spatial")


def hf_inputs(prompt) -> dict:
    out = {"input_ids": prompt.input_ids, "attention_mask": prompt.attention_mask,
           "pixel_values_videos": prompt.pixel_values_videos, "video_grid_thw": prompt.video_grid_thw}
    if prompt.second_per_grid_ts is not None:
        out["second_per_grid_ts"] = prompt.second_per_grid_ts
    return out


def hf_generate(vl, prompt, num_samples: int, max_new_tokens: int, greedy: bool = False) -> torch.Tensor:
    """Plain transformers generation: `[G, T]` new token ids (padded with the pad id)."""
    with torch.inference_mode():
        out = vl.model.generate(**hf_inputs(prompt), do_sample=not greedy, num_return_sequences=num_samples,
                                max_new_tokens=max_new_tokens, temperature=1.0,
                                eos_token_id=vl.eos_token_ids, pad_token_id=vl.pad_token_id,
                                stop_strings=[STOP], tokenizer=vl.tokenizer)
    return out[:, prompt.input_ids.shape[1]:]


def generated_tokens(ids: torch.Tensor, vl) -> int:
    """Tokens of each row up to and including its first EOS / the pad run HF leaves after it."""
    total = 0
    eos = set(vl.eos_token_ids)
    for row in ids.tolist():
        n = len(row)
        for i, t in enumerate(row):
            if t in eos:
                n = i + 1
                break
        while n > 0 and row[n - 1] == vl.pad_token_id and vl.pad_token_id not in eos:
            n -= 1
        total += n
    return total


def check_greedy(vl, prompt, max_new_tokens: int, device: str) -> float:
    """Share of equal greedy tokens between the engine and transformers (must be 1 on the CPU)."""
    from tempo_fast.rollout import RolloutEngine, SamplingConfig

    ours = RolloutEngine(vl, SamplingConfig(max_new_tokens=max_new_tokens, greedy=True)).generate(prompt, 1)
    n = int(ours.lengths[0])
    theirs = hf_generate(vl, prompt, 1, max_new_tokens, greedy=True)[0, :n].cpu()
    mine = ours.completion_ids[0, :n].cpu()
    share = float((mine[: len(theirs)] == theirs).float().mean()) if len(theirs) == n else 0.0
    if torch.device(device).type == "cpu" and share < 1.0:
        raise AssertionError(f"greedy tokens differ: engine {mine.tolist()} vs transformers {theirs.tolist()}")
    return share


def make_clips(folder: Path, count: int, size: tuple[int, int], seconds: float) -> list[str]:
    from tempo_fast.video.clips import make_clip

    return [str(make_clip(folder / f"v{i}.mp4", width=size[1], height=size[0], fps=8, seconds=seconds + i))
            for i in range(count)]


def bench_predict(vl, folder: Path, clips: list[str], args, workers: int) -> tuple[float, dict]:
    """Seconds and summary of `predict` over two queries per clip (a fresh output file)."""
    from tempo_fast.infer import InferConfig, predict

    ann = folder / "ann.jsonl"
    with open(ann, "w") as f:
        for i, clip in enumerate(clips * 2):
            f.write(json.dumps({"qid": i, "query": f"the red circle moves {i}", "duration": 1.0,
                                "vid": Path(clip).stem, "relevant_windows": [[0.0, 1.0]]}) + "\n")
    out = folder / f"preds_w{workers}.jsonl"
    out.unlink(missing_ok=True)
    pixels = args.size[0] * args.size[1]
    config = InferConfig(num_frames=args.frames, min_pixels=pixels, max_pixels=pixels, num_samples=args.num_samples,
                         max_new_tokens=args.max_new_tokens, workers=workers, prefetch=max(2, 2 * workers))
    start = time.perf_counter()
    summary = predict(ann, folder, model=vl, out=out, config=config, progress=False)
    return time.perf_counter() - start, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--gpu-7b", action="store_true", help="CUDA, bf16, random Qwen2.5-VL-7B-shaped model")
    parser.add_argument("--num-samples", type=int, default=8, help="G, samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: 32 (CPU), 64 (GPU)")
    parser.add_argument("--frames", type=int, default=None, help="frames per video; default: 16 (CPU), 64 (GPU)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="frame size; default: 112 112 (CPU), 448 448 (GPU)")
    parser.add_argument("--clips", type=int, default=4, help="videos for the predict rows (two queries each)")
    parser.add_argument("--no-csv", action="store_true", help="print only, append no rows")
    args = parser.parse_args(argv)
    gpu = args.gpu_7b
    if gpu and not torch.cuda.is_available():
        raise SystemExit("bench_infer: --gpu-7b needs a CUDA device")
    device = "cuda" if gpu else "cpu"
    args.max_new_tokens = args.max_new_tokens or (64 if gpu else 32)
    args.frames = args.frames or (64 if gpu else 16)
    args.size = tuple(args.size or ((448, 448) if gpu else (112, 112)))
    G = args.num_samples

    from tempo_fast.model import load_model
    from tempo_fast.rollout import RolloutEngine, SamplingConfig

    vl = model_7b(device) if gpu else load_model("tiny", device=device)
    have_ffmpeg = shutil.which("ffmpeg") is not None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips = make_clips(folder, args.clips, args.size, 8.0) if have_ffmpeg else []
        frames = uniform_frames(clips[0] if clips else None, args.frames, args.size, 8.0)
        prompt = plain_prompt(vl, frames, args.size)
        match = check_greedy(vl, prompt, args.max_new_tokens, device)
        print(f"greedy tokens equal to transformers': {match:.0%}")

        engine = RolloutEngine(vl, SamplingConfig(max_new_tokens=args.max_new_tokens))
        gen_device = vl.device

        def run_engine():
            return engine.generate(prompt, G, generator=torch.Generator(gen_device).manual_seed(0))

        def run_hf():
            torch.manual_seed(0)
            return hf_generate(vl, prompt, G, args.max_new_tokens)

        tokens = {"rollout_engine": int(run_engine().lengths.sum()),
                  "hf_generate": generated_tokens(run_hf(), vl)}
        ms = {"rollout_engine": time_ms(run_engine, device, warmup=1, reps=5),
              "hf_generate": time_ms(run_hf, device, warmup=1, reps=5)}
        shape = (f"G={G} prompt={prompt.length} new<={args.max_new_tokens} "
                 f"frames={args.frames}@{args.size[0]}x{args.size[1]}")
        dtype = str(vl.dtype).removeprefix("torch.")
        rows = []
        for provider in ("rollout_engine", "hf_generate"):
            t = ms[provider]
            for metric, value, unit in (("queries_per_s", 1e3 / t, "1/s"),
                                        ("tokens_per_s", tokens[provider] * 1e3 / t, "tokens/s"),
                                        ("ms", t, "ms")):
                rows.append(dict(what="infer", provider=provider, mode="sample", shape=shape, dtype=dtype,
                                 metric=metric, median=value, unit=unit, device=device_name(device)))
        if clips:
            for workers in (0, 2):
                bench_predict(vl, folder, clips, args, workers)  # warm-up: decoders, caches
                seconds, summary = bench_predict(vl, folder, clips, args, workers)
                if summary["errors"]:
                    raise RuntimeError(f"bench_infer: predict wrote error records: {summary}")
                q = summary["queries"]
                pshape = f"G={G}+greedy queries={q} " + shape.split(" ", 2)[2]
                for metric, value, unit in (("queries_per_s", q / seconds, "1/s"),
                                            ("tokens_per_s", summary["tokens"] / seconds, "tokens/s")):
                    rows.append(dict(what="infer", provider=f"predict_workers{workers}", mode="end_to_end",
                                     shape=pshape, dtype=dtype, metric=metric, median=value, unit=unit,
                                     device=device_name(device)))
        else:
            print("ffmpeg not found: no clips, the predict rows are skipped")
    print_table(rows)
    speedup = ms["hf_generate"] / ms["rollout_engine"]
    print(f"rollout engine vs transformers generate at G={G}: {speedup:.2f}x queries/s; tokens "
          f"{tokens['rollout_engine']} vs {tokens['hf_generate']}")
    if not args.no_csv:
        print(f"appended {len(rows)} rows to {append_rows('infer.csv', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
