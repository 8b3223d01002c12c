"""One full GRPO step - rollout, log-probs, loss, backward, optimizer - of tempo_fast's loop
(`tempo_fast.train.grpo.grpo_step`) against TRL's `GRPOTrainer`, on the same model, prompts, G and
completion length: samples/s (prompts x G per step time) and peak memory of one step.

    python benchmarks/bench_grpo_step.py                        # CPU, the tiny preset
    python benchmarks/bench_grpo_step.py --prompt video         # ours sees the video; TRL its tokens as text
    python benchmarks/bench_grpo_step.py --device cuda          # bf16, a random Qwen2.5-VL-7B-shaped model

What each provider runs per step (P prompts, G completions each, at most T new tokens):
- tempo_fast: `grpo_step` - the rollout engine (one shared prefill per prompt, G continuations),
  PIR rewards, group advantages, the policy forward over prompt + completions with the prompt
  prefilled once and its cache shared by the G completions, `fused_grpo_loss` from hidden states
  (no [G, T, V] logits), backward, gradient clipping, AdamW.
- trl: `GRPOTrainer.training_step` on a batch from its own dataloader (generation with
  `model.generate`, the prompt repeated G times; rewards; advantages; its loss from logits;
  backward), then gradient clipping and the trainer's AdamW step - the body of TRL's training loop.
Both: the same weights at the start (two copies of one model), loss "grpo", beta 0 (no reference
model), epsilon 0.2 / 0.28, one iteration per batch, temperature 1, no top-k/top-p, stop at EOS only
(the engine's `</answer>` stop is switched off, as TRL has none), max-grad-norm 1, the vision tower
frozen, the same PIR reward (relevant prompts: IoU + format; irrelevant ones: refusal + format).

Prompts: TRL's GRPOTrainer takes images but not videos, so TRL gets each prompt's token ids as
text (the same ids, the `<|video_pad|>` tokens included, decoded and re-tokenized: checked equal),
without pixels. `--prompt text` (default, the like-for-like comparison) gives tempo_fast the same
text-only prompt; `--prompt video` gives tempo_fast the real video (its vision encoder runs, TRL's
does not: the comparison then favours TRL). Random weights rarely emit EOS, so completions run to
T tokens in both; the mean completion length of each provider is a row too.

Timing: the median of several steps after warm-up steps (each a real update of that provider's
copy), the two providers' steps alternating so both see the same machine load. Peak memory: one more step under `common.peak_memory_bytes` (CUDA: max allocated above the
level before the step, and `peak_memory_total` with weights, gradients and optimizer states; CPU:
the profiler's allocations replayed). Rows: benchmarks/results/grpo_step.csv.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import append_rows, device_name, peak_memory_bytes, print_table  # noqa: E402


def make_prompts(vl, num_prompts: int, frames: int, size: tuple[int, int], seconds: float, video: bool) -> list:
    """`num_prompts` ETA prompts over random-pixel videos (one per prompt); text-only when not `video`."""
    from benchmarks.bench_infer import uniform_frames
    from tempo_fast.model import build_prompt

    pixels = size[0] * size[1]
    prompts = []
    for i in range(num_prompts):
        clip = uniform_frames(None, frames, size, seconds + i)
        prompt = build_prompt(vl, clip, f"the red circle moves {i}", min_pixels=pixels, max_pixels=pixels)
        if not video:
            prompt = dataclasses.replace(prompt, pixel_values_videos=None, video_grid_thw=None,
                                         second_per_grid_ts=None)
        prompts.append(prompt)
    return prompts


def make_samples(prompts: list) -> list:
    """Training samples over `prompts`: even ones relevant (a window in the middle), odd ones irrelevant."""
    from tempo_fast.data.loaders import GroundingRecord
    from tempo_fast.rewards import format_answer
    from tempo_fast.train.data import Sample

    samples = []
    for i, prompt in enumerate(prompts):
        relevant = i % 2 == 0
        windows = ((0.25 * prompt.duration, 0.5 * prompt.duration),) if relevant else ()
        record = GroundingRecord(id=i, video_id=f"v{i}", video_path=None, duration=prompt.duration,
                                 query=f"the red circle moves {i}", windows=windows,
                                 relevance="relevant" if relevant else "irrelevant")
        samples.append(Sample(prompt=prompt, record=record, relevance=record.relevance,
                              target=format_answer(windows or None)))
    return samples


def freeze_vision(model) -> None:
    for p in model.model.visual.parameters():
        p.requires_grad_(False)


def ours_step(vl, samples: list, G: int, T: int, lr: float):
    """A closure running one `grpo_step`, and a list collecting mean completion lengths."""
    from tempo_fast.rollout import RolloutEngine, SamplingConfig
    from tempo_fast.train.config import GRPOConfig, OptimConfig
    from tempo_fast.train.grpo import grpo_step

    cfg = GRPOConfig(num_generations=G, max_new_tokens=T, optim=OptimConfig(lr=lr, warmup_steps=0), loss_type="grpo",
                     beta=0.0, epsilon_low=0.2, epsilon_high=0.28)
    engine = RolloutEngine(vl, SamplingConfig(max_new_tokens=T, temperature=1.0, stop_strings=()))
    optimizer = torch.optim.AdamW([p for p in vl.model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator(vl.device).manual_seed(0)
    lengths = []

    def step():
        metrics, _ = grpo_step(vl, samples, cfg, engine=engine, optimizer=optimizer, generator=generator)
        lengths.append(metrics["completion_len"])

    return step, lengths


def trl_step(vl, samples: list, G: int, T: int, lr: float, out_dir: str):
    """A closure running one TRL GRPOTrainer step on the samples' prompts (as text), and lengths."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tempo_fast.rewards import RewardConfig, pir_reward

    tokenizer = vl.tokenizer
    texts = []
    for sample in samples:
        ids = sample.prompt.input_ids[0].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=False)
        if tokenizer(text)["input_ids"] != ids:
            raise AssertionError("bench_grpo_step: the prompt does not re-tokenize to the same ids for TRL")
        texts.append(text)
    rows = {"prompt": texts, "windows": [[list(w) for w in s.record.windows] for s in samples],
            "relevance": [s.relevance for s in samples], "duration": [float(s.prompt.duration) for s in samples]}
    config = RewardConfig(format_weight=0.1)

    def reward(completions, windows, relevance, duration, **_):
        return pir_reward(completions, [[tuple(w) for w in ws] for ws in windows], list(relevance),
                          list(duration), config).tolist()

    P = len(samples)
    args = GRPOConfig(output_dir=out_dir, per_device_train_batch_size=P * G, num_generations=G, steps_per_generation=1,
                      gradient_accumulation_steps=1, max_completion_length=T, learning_rate=lr, beta=0.0,
                      loss_type="grpo", epsilon=0.2, epsilon_high=0.28, num_iterations=1, temperature=1.0,
                      top_p=1.0, top_k=0, max_grad_norm=1.0, use_cpu=vl.device.type == "cpu",
                      bf16=vl.dtype == torch.bfloat16, report_to=[], logging_steps=10**9, save_strategy="no",
                      shuffle_dataset=False, lr_scheduler_type="constant", warmup_steps=0)
    trainer = GRPOTrainer(model=vl.model, reward_funcs=[reward], args=args, train_dataset=Dataset.from_dict(rows),
                          processing_class=tokenizer)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's own loop before each step
    model = trainer.model
    state = {"batches": iter(())}
    lengths = []

    def batch():
        try:
            return next(state["batches"])
        except StopIteration:
            state["batches"] = iter(trainer.get_train_dataloader())
            return next(state["batches"])

    def step():
        model.train()
        trainer.training_step(model, batch(), None)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], args.max_grad_norm)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        lengths.append(float(trainer._metrics["train"]["completions/mean_length"][-1]))

    return step, lengths


def load(device: str):
    """The model: the tiny preset (fp32) on CPU, a random bf16 Qwen2.5-VL-7B-shaped model on CUDA."""
    if torch.device(device).type == "cuda":
        from benchmarks.bench_infer import model_7b

        vl = model_7b(device)
    else:
        from tempo_fast.model import load_model

        vl = load_model("tiny", device=device)
    freeze_vision(vl.model)
    return vl


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (tiny preset) or cuda (random Qwen2.5-VL-7B shape)")
    parser.add_argument("--prompt", choices=("text", "video"), default="text",
                        help="what tempo_fast's prompts hold (TRL always gets the same ids as text)")
    parser.add_argument("--prompts", type=int, default=2, help="P, prompts per step")
    parser.add_argument("--num-generations", type=int, default=8, help="G, completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="T; default 32 (CPU), 64 (CUDA)")
    parser.add_argument("--frames", type=int, default=None, help="frames per video; default 16 (CPU), 64 (CUDA)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="frame size; default 112 112 (CPU), 448 448 (CUDA)")
    parser.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate of both")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per provider (median reported)")
    parser.add_argument("--providers", nargs="+", default=["tempo_fast", "trl"], choices=("tempo_fast", "trl"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-csv", action="store_true", help="print only, append no rows")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.device(args.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"bench_grpo_step: --device {args.device} needs a CUDA device")
    T = args.max_new_tokens or (64 if cuda else 32)
    frames = args.frames or (64 if cuda else 16)
    size = tuple(args.size or ((448, 448) if cuda else (112, 112)))
    G, P = args.num_generations, args.prompts

    base = load(args.device)
    prompts = make_prompts(base, P, frames, size, 8.0, args.prompt == "video")
    samples = make_samples(prompts)
    shape = f"P={P} G={G} prompt={prompts[0].length} new<={T} frames={frames}@{size[0]}x{size[1]}"
    dtype = str(base.dtype).removeprefix("torch.")
    rows, ms = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        def build(provider, last):
            # the same starting weights for both; the last one trains the loaded model itself
            vl = base if last else dataclasses.replace(base, model=copy.deepcopy(base.model))
            if provider == "tempo_fast":
                return ours_step(vl, samples, G, T, args.lr)
            return trl_step(vl, samples, G, T, args.lr, tmp)

        # CPU: both providers alive, steps alternating (the machine's load is shared by both);
        # CUDA: one provider at a time (two 7B-shaped models with AdamW states do not fit together).
        groups = [args.providers] if not cuda else [[p] for p in args.providers]
        for group in groups:
            built = {p: build(p, p == args.providers[-1]) for p in group}
            ms.update(interleaved_ms({p: b[0] for p, b in built.items()}, args.device, warmup=2, reps=args.steps))
            for provider, (step, lengths) in built.items():
                torch.manual_seed(0)
                peak = peak_memory_bytes(step, args.device)
                if cuda:  # also the whole footprint: weights, gradients and optimizer states included
                    torch.cuda.reset_peak_memory_stats()
                    step()
                    rows.append(dict(what="grpo_step", provider=provider, mode=mode, shape=shape, dtype=dtype,
                                     metric="peak_memory_total", median=torch.cuda.max_memory_allocated() / 2**20,
                                     unit="MiB", device=device_name(args.device)))
                mode = f"prompt={args.prompt}" if provider == "tempo_fast" else "prompt=text"
                for metric, value, unit in (("samples_per_s", P * G * 1e3 / ms[provider], "1/s"),
                                            ("ms_per_step", ms[provider], "ms"),
                                            ("peak_memory", peak / 2**20, "MiB"),
                                            ("completion_len", sum(lengths) / len(lengths), "tokens")):
                    rows.append(dict(what="grpo_step", provider=provider, mode=mode, shape=shape, dtype=dtype,
                                     metric=metric, median=value, unit=unit, device=device_name(args.device)))
            del built
            if cuda:
                torch.cuda.empty_cache()
    print_table(rows)
    if {"tempo_fast", "trl"} <= set(ms):
        print(f"tempo_fast vs TRL GRPOTrainer: {ms['trl'] / ms['tempo_fast']:.2f}x samples/s")
    if not args.no_csv:
        print(f"appended {len(rows)} rows to {append_rows('grpo_step.csv', rows)}")
    return 0


def interleaved_ms(steps: dict, device, *, warmup: int, reps: int) -> dict:
    """Median wall time (ms) of each provider's step, the providers' steps alternating so that
    both see the same machine load (whole steps take seconds: no do_bench-style inner loops)."""
    import statistics
    import time

    cuda = torch.device(device).type == "cuda"
    times = {name: [] for name in steps}
    for rep in range(warmup + reps):
        for name, step in steps.items():
            torch.manual_seed(rep)
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            if rep >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


if __name__ == "__main__":
    raise SystemExit(main())
