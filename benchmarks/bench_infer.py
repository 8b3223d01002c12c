"""Grounding inference throughput: the batched rollout engine (B prompts x G samples per forward)
against the one-prompt engine (one shared prefill for G samples, a prompt at a time) and plain
transformers `generate(num_return_sequences=G)` (the prompt and its video prefilled G times, a
prompt at a time), on the same Q prompts; then `tempo_fast.infer.predict` end to end (decode +
SAA + prompt + greedy and G sampled answers per query) at `--batch-size` 1 and B, each with and
without prefetching workers, with its time breakdown.

    python benchmarks/bench_infer.py                  # CPU, the tiny preset, short synthetic clips
    python benchmarks/bench_infer.py --device cuda    # CUDA, bf16, a random model of Qwen2.5-VL-7B's shape

`--device cuda` builds Qwen2.5-VL-7B's architecture from its config alone (text: hidden 3584, 28
layers, 28 heads, 4 kv heads, intermediate 18944, vocabulary 152064; vision: depth 32, hidden 1280,
16 heads, intermediate 3420, windowed attention with full attention at blocks 7/15/23/31),
randomly initialised directly on the GPU (no weights are downloaded: speed does not depend on
them), with the tiny preset's tokenizer and its special-token ids; prompts hold 64 frames at
448x448 (32 temporal patches x 256 tokens = 8192 video tokens), G=8.

Engine rows: Q prompts over Q different videos (random pixels) and queries of different lengths,
in Qwen's plain video layout (no timestamp text, uniform frames), for which transformers' own
rotary index equals the prompt's (`after_vision="spatial"`). Sampling: temperature 1, no
top-k/top-p, stop at EOS or `</answer>` in all three. Before timing: greedy decoding of the
one-prompt engine equals the argmax of a teacher-forced full forward on the first prompt (on the
CPU; the share of those tokens transformers' `generate` gives is printed), and the batched engine's tokens equal the
one-prompt engine's on every prompt, greedy and sampled (each prompt has its own seeded
generator; checked on the CPU, the share printed on CUDA). Each timed call reseeds.

Predict rows: `--queries` queries (several per clip: 48 queries over 8 clips) over synthetic
clips; the same predictions at every batch size and worker count, with and without the frame
cache (checked: the files are equal). Rows per provider `predict_b{B}_w{workers}` (frame cache
on, the default: each clip decoded once) and `predict_b{B}_w{workers}_nocache` (every query
decodes its clip): queries_per_s, tokens_per_s, the stage seconds of the summary (decode_s and
preprocess_s in the workers, prefill_s and generate_s in the model, wait_s the model blocked on
the workers, seconds the wall time) and videos_decoded. `--threads N` sets torch's intra-op
threads for the whole run (recorded in the shape; on a machine whose cores other jobs keep busy,
2 OpenMP threads can make each small op wait for a descheduled thread: use 1 there).

Rows go to benchmarks/results/infer.csv.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import append_rows, device_name, print_table, time_ms  # noqa: E402

STOP = "</answer>"
QUERIES = ("the red circle moves", "a small blue square slowly turns into a large red one",
           "the green triangle", "a yellow star appears then shrinks and moves to the left side")

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


def uniform_frames(path: str | None, num_frames: int, size: tuple[int, int], seconds: float, seed: int = 0):
    """Frames at uniform times: decoded from `path`, or random pixels (from `seed`) when there is no clip."""
    from tempo_fast.video import Frames, decode
    from tempo_fast.video.saa import uniform_times

    if path is not None:
        times = uniform_times(seconds, num_frames)
        frames = decode(path, timestamps=times, size=size)
        frames.pts = times
        return frames
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (num_frames, 3, *size), dtype=torch.uint8, generator=gen)
    return Frames(data=data, pts=uniform_times(seconds, num_frames), duration=seconds, fps=num_frames / seconds,
                  path="random")


def plain_prompt(vl, frames, size, query: str = "the red circle moves"):
    from tempo_fast.model import build_prompt

    pixels = size[0] * size[1]
    return build_prompt(vl, frames, query, min_pixels=pixels, max_pixels=pixels,
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


def teacher_forced_argmax(vl, prompt, ids: torch.Tensor) -> torch.Tensor:
    """Argmax after prompt + ids[:t] for every t, from one full forward (no cache): the reference
    for greedy decoding."""
    n = ids.numel()
    full = torch.cat([prompt.input_ids[0], ids.to(prompt.input_ids.device)])[None]
    tail = (prompt.next_position + torch.arange(n, device=full.device)).view(1, 1, -1).expand(3, 1, -1)
    kwargs = {**hf_inputs(prompt), "input_ids": full, "attention_mask": torch.ones_like(full),
              "position_ids": torch.cat([prompt.position_ids, tail], -1)}
    with torch.inference_mode():
        logits = vl.model(**kwargs).logits[0, prompt.length - 1:prompt.length - 1 + n]
    return logits.argmax(-1).cpu()


def check_greedy(vl, prompt, max_new_tokens: int, device: str) -> float:
    """The engine's greedy tokens must be the teacher-forced argmax at every step (on the CPU);
    returns the share of them transformers' `generate` reproduces (1.0 for the random tiny preset;
    it can part at a near-tie, where its own incremental decode leaves its full forward)."""
    from tempo_fast.rollout import RolloutEngine, SamplingConfig

    ours = RolloutEngine(vl, SamplingConfig(max_new_tokens=max_new_tokens, greedy=True)).generate(prompt, 1)
    n = int(ours.lengths[0])
    mine = ours.completion_ids[0, :n].cpu()
    if torch.device(device).type == "cpu":
        want = teacher_forced_argmax(vl, prompt, mine)
        if not torch.equal(want, mine):
            raise AssertionError(f"greedy tokens differ from the teacher-forced argmax: {mine.tolist()} vs "
                                 f"{want.tolist()}")
    theirs = hf_generate(vl, prompt, 1, max_new_tokens, greedy=True)[0, :n].cpu()
    return float((mine[: len(theirs)] == theirs).float().mean()) if len(theirs) == n else 0.0


def make_prompts(vl, count: int, frames: int, size: tuple[int, int]) -> list:
    """`count` plain-layout prompts over different random videos and queries (lengths differ)."""
    return [plain_prompt(vl, uniform_frames(None, frames, size, 8.0, seed=i), size,
                         f"{QUERIES[i % len(QUERIES)]} {i}") for i in range(count)]


def check_batched(vl, prompts, args, device: str) -> float:
    """Share of rows whose tokens the batched engine and the one-prompt engine agree on, greedy and
    sampled (must be 1 on the CPU)."""
    from tempo_fast.rollout import RolloutEngine, SamplingConfig

    total = equal = 0
    for sampling in (SamplingConfig(max_new_tokens=args.max_new_tokens, greedy=True),
                     SamplingConfig(max_new_tokens=args.max_new_tokens)):
        engine = RolloutEngine(vl, sampling, batch_size=args.batch_size)
        gens = [torch.Generator(vl.device).manual_seed(i) for i in range(len(prompts))]
        batched = engine.generate_many(prompts, args.num_samples, generator=gens)
        gens = [torch.Generator(vl.device).manual_seed(i) for i in range(len(prompts))]
        alone = [engine.generate(p, args.num_samples, generator=g) for p, g in zip(prompts, gens)]
        for a, b in zip(batched, alone):
            for g in range(args.num_samples):
                total += 1
                equal += a.completion_ids[g, :int(a.lengths[g])].tolist() == b.completion_ids[g, :int(b.lengths[g])].tolist()
    share = equal / total
    if torch.device(device).type == "cpu" and share < 1.0:
        raise AssertionError(f"bench_infer: the batched engine changed {total - equal} of {total} completions")
    return share


def bench_engines(vl, prompts, args, device: str) -> tuple[list, dict, dict]:
    """Rows of the three providers over `prompts`, their queries/s and generated tokens."""
    from tempo_fast.rollout import RolloutEngine, SamplingConfig

    G, Q = args.num_samples, len(prompts)
    engine = RolloutEngine(vl, SamplingConfig(max_new_tokens=args.max_new_tokens), batch_size=args.batch_size)

    def gens():
        return [torch.Generator(vl.device).manual_seed(i) for i in range(Q)]

    def run_batched():
        return engine.generate_many(prompts, G, generator=gens())

    def run_one():
        return [engine.generate(p, G, generator=g) for p, g in zip(prompts, gens())]

    def run_hf():
        torch.manual_seed(0)
        return [hf_generate(vl, p, G, args.max_new_tokens) for p in prompts]

    runs = {f"batched_engine_b{args.batch_size}": run_batched, "one_prompt_engine": run_one, "hf_generate": run_hf}
    tokens = {"hf_generate": sum(generated_tokens(ids, vl) for ids in run_hf())}
    for name in list(runs)[:2]:
        tokens[name] = sum(int(r.lengths.sum()) for r in runs[name]())
    ms = {name: time_ms(fn, device, warmup=1, reps=args.reps) for name, fn in runs.items()}
    lengths = sorted(p.length for p in prompts)
    shape = (f"Q={Q} G={G} prompt={lengths[0]}-{lengths[-1]} new<={args.max_new_tokens} "
             f"frames={args.frames}@{args.size[0]}x{args.size[1]}")
    rows = []
    for name, t in ms.items():
        for metric, value, unit in (("queries_per_s", Q * 1e3 / t, "1/s"), ("tokens_per_s", tokens[name] * 1e3 / t,
                                                                             "tokens/s"), ("ms", t, "ms")):
            rows.append(dict(what="infer", provider=name, mode="sample", shape=shape, dtype=str(vl.dtype)[6:],
                             metric=metric, median=value, unit=unit, device=device_name(device)))
    return rows, {name: Q * 1e3 / t for name, t in ms.items()}, tokens


def make_clips(folder: Path, count: int, size: tuple[int, int], seconds: float) -> list[str]:
    from tempo_fast.video.clips import make_clip

    return [str(make_clip(folder / f"v{i}.mp4", width=size[1], height=size[0], fps=8, seconds=seconds + i % 4))
            for i in range(count)]


def write_annotations(folder: Path, clips: list[str], queries: int) -> Path:
    ann = folder / f"ann{queries}.jsonl"
    with open(ann, "w") as f:
        for i in range(queries):
            clip = clips[i % len(clips)]
            f.write(json.dumps({"qid": i, "query": f"{QUERIES[i % len(QUERIES)]} {i}", "duration": 1.0,
                                "vid": Path(clip).stem, "relevant_windows": [[0.0, 1.0]]}) + "\n")
    return ann


def bench_predict(vl, folder: Path, ann: Path, args, batch_size: int, workers: int,
                  cache: bool = True) -> tuple[dict, str]:
    """`predict`'s summary over the annotations (a fresh output file) and the file's text."""
    from tempo_fast.infer import InferConfig, predict

    out = folder / f"preds_b{batch_size}_w{workers}_c{int(cache)}.jsonl"
    out.unlink(missing_ok=True)
    pixels = args.size[0] * args.size[1]
    config = InferConfig(num_frames=args.frames, min_pixels=pixels, max_pixels=pixels, num_samples=args.num_samples,
                         max_new_tokens=args.max_new_tokens, workers=workers, batch_size=batch_size,
                         prefetch=max(4, batch_size), **({} if cache else {"frame_cache_mb": 0}))
    summary = predict(ann, folder, model=vl, out=out, config=config, progress=False)
    if summary["errors"]:
        raise RuntimeError(f"bench_infer: predict wrote error records: {summary}")
    return summary, out.read_text()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cpu: the tiny preset; cuda: bf16, a random Qwen2.5-VL-7B-shaped model")
    parser.add_argument("--model", default="tiny", help="the CPU model (a load_model name)")
    parser.add_argument("--num-samples", type=int, default=8, help="G, samples per prompt")
    parser.add_argument("--batch-size", type=int, default=8, help="B, prompts per forward of the batched engine")
    parser.add_argument("--prompts", type=int, default=None, help="Q for the engine rows; default: 16 (CPU), 8 (GPU)")
    parser.add_argument("--queries", type=int, default=None, help="predict queries; default: 48 (CPU), 16 (GPU)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: 32 (CPU), 64 (GPU)")
    parser.add_argument("--frames", type=int, default=None, help="frames per video; default: 16 (CPU), 64 (GPU)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="frame size; default: 112 112 (CPU), 448 448 (GPU)")
    parser.add_argument("--clips", type=int, default=8, help="videos for the predict rows")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions of the engine rows")
    parser.add_argument("--no-predict", action="store_true", help="skip the predict rows")
    parser.add_argument("--no-engines", action="store_true", help="skip the engine rows (predict rows only)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--no-csv", action="store_true", help="print only, append no rows")
    args = parser.parse_args(argv)
    device = args.device
    gpu = device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("bench_infer: --device cuda needs a CUDA device")
    args.max_new_tokens = args.max_new_tokens or (64 if gpu else 32)
    args.frames = args.frames or (64 if gpu else 16)
    args.size = tuple(args.size or ((448, 448) if gpu else (112, 112)))
    args.prompts = args.prompts or (8 if gpu else 16)
    args.queries = args.queries or (16 if gpu else 48)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = f"threads={torch.get_num_threads()}"

    from tempo_fast.model import load_model

    vl = model_7b(device) if gpu else load_model(args.model, device=device)
    rows, qps, tokens = [], {}, {}
    if not args.no_engines:
        prompts = make_prompts(vl, args.prompts, args.frames, args.size)
        match = check_greedy(vl, prompts[0], args.max_new_tokens, device)
        print(f"greedy tokens equal the teacher-forced argmax; transformers' generate gives {match:.0%} of them")
        same = check_batched(vl, prompts, args, device)
        print(f"completions equal between the batched and the one-prompt engine: {same:.0%}")
        rows, qps, tokens = bench_engines(vl, prompts, args, device)
        for row in rows:
            row["shape"] += f" {threads}"
    dtype = str(vl.dtype)[6:]
    speedups = {}
    if args.no_predict:
        print("--no-predict: the predict rows are skipped")
    elif shutil.which("ffmpeg") is None:
        print("ffmpeg not found: no clips, the predict rows are skipped")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            clips = make_clips(folder, args.clips, args.size, 8.0)
            warm = write_annotations(folder, clips, min(args.queries, 2 * args.batch_size))
            bench_predict(vl, folder, warm, args, args.batch_size, 2)  # warm-up: decoders, caches, threads
            ann = write_annotations(folder, clips, args.queries)
            texts, rates = {}, {}
            B = args.batch_size
            for batch_size, workers, cache in ((1, 0, True), (1, 2, True), (B, 0, True), (B, 2, True),
                                               (1, 2, False), (B, 2, False)):
                key = (batch_size, workers, cache)
                summary, texts[key] = bench_predict(vl, folder, ann, args, batch_size, workers, cache)
                rates[key] = summary["queries"] / summary["seconds"]
                shape = (f"G={args.num_samples}+greedy queries={summary['queries']} clips={args.clips} "
                         f"new<={args.max_new_tokens} frames={args.frames}@{args.size[0]}x{args.size[1]} {threads}")
                provider = f"predict_b{batch_size}_w{workers}" + ("" if cache else "_nocache")
                stats = [("queries_per_s", rates[key], "1/s"),
                         ("tokens_per_s", summary["tokens"] / summary["seconds"], "tokens/s")]
                stats += [(k, summary[k], "s") for k in ("seconds", "decode_s", "preprocess_s", "prefill_s",
                                                         "generate_s", "wait_s")]
                stats.append(("videos_decoded", summary["videos_decoded"], "videos"))
                print(f"{provider}: {rates[key]:.1f} queries/s, " + ", ".join(
                    f"{k} {summary[k]:.3f}" for k in ("seconds", "decode_s", "preprocess_s", "prefill_s",
                                                      "generate_s", "wait_s")), flush=True)
                for metric, value, unit in stats:
                    rows.append(dict(what="infer", provider=provider, mode="end_to_end", shape=shape, dtype=dtype,
                                     metric=metric, median=value, unit=unit, device=device_name(device)))
            if len(set(texts.values())) != 1:
                raise AssertionError("bench_infer: predict wrote different predictions at different batch sizes, "
                                     "worker counts or with and without the frame cache")
            print("predictions equal at every batch size and worker count, with and without the frame cache")
            for workers in (0, 2):
                speedups[f"predict --batch-size {B} vs 1, workers {workers}"] = \
                    rates[(B, workers, True)] / rates[(1, workers, True)]
            speedups[f"predict --batch-size {B} vs 1, workers 2, no frame cache"] = \
                rates[(B, 2, False)] / rates[(1, 2, False)]
            speedups[f"predict --batch-size {B} workers 2 with vs without the frame cache"] = \
                rates[(B, 2, True)] / rates[(B, 2, False)]
            speedups[f"predict --batch-size {B} workers 2 (cache) vs --batch-size 1 workers 2 without"] = \
                rates[(B, 2, True)] / rates[(1, 2, False)]
    if rows:
        print_table(rows)
    batched = f"batched_engine_b{args.batch_size}"
    if qps:
        print(f"batched engine vs one-prompt engine: {qps[batched] / qps['one_prompt_engine']:.2f}x queries/s; "
              f"vs transformers generate: {qps[batched] / qps['hf_generate']:.2f}x queries/s, "
              f"{qps[batched] * tokens[batched] / (qps['hf_generate'] * tokens['hf_generate']):.2f}x tokens/s")
    for name, value in speedups.items():
        print(f"{name}: {value:.2f}x queries/s")
    if not args.no_csv:
        print(f"appended {len(rows)} rows to {append_rows('infer.csv', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
