"""Grounding inference: `ground` answers one (video, query) pair, `predict` a whole data set.

One query runs: probe + SAA frame sampling (`alpha=0`: plain uniform sampling, no probe decode)
→ `model.build_prompt` (ETA layout, time-true position ids, pixels) → the rollout engine (one
greedy answer, then `num_samples` sampled answers) → `rewards.parse_answer` with the video's
duration → scored windows.

Scored windows (`merge_candidates`), the rule:
- every window of every answer (the greedy answer first, then the samples in order) joins the
  cluster whose *seed* (its first window) it overlaps most, when that IoU is at least
  `merge_iou`; otherwise it seeds a new cluster;
- a cluster's window is its seed when the greedy answer seeded it (the model's own best answer is
  kept exactly), else the mean start and mean end of its members;
- a cluster's score is the share of answers (greedy + samples, refusals and unreadable answers
  included) holding a window in it: `score="frequency"` counts each answer once,
  `score="likelihood"` weights each by its per-token probability exp(mean log-prob) (the log-probs
  the engine returns: temperature 1 for the greedy answer, the sampling temperature for samples);
- order: the greedy answer's windows first, as written (the official R1 reads the first listed
  window), then the other clusters by decreasing score; at most `max_windows` are kept.
The answer is a refusal when the greedy answer refuses; `refusal_score` is the share of sampled
answers that refuse. A refusal keeps the samples' windows (scored as above) for callers that
threshold `refusal_score` themselves; the metrics count a refused prediction as a miss.

`predict` pipeline: a thread pool decodes and preprocesses up to `prefetch` queries ahead while
the model answers the current one (decode, resize and patchify release the GIL). Output is the
official QVHighlights prediction layout, one JSON line per query (`qid`, `query`, `vid`,
`pred_relevant_windows`, `refused`, `refusal_score`, `answer`), appended and flushed as each
query completes, so a crash loses at most the queries in flight and a rerun skips every qid
already in the file (a truncated last line is dropped). A missing or corrupt video, or a model
error on one query, becomes an error record `{"qid", "query", "vid", "pred_relevant_windows": [],
"refused": false, "error"}` (scored as a miss by `tempo-fast eval`) and a count in the summary; a
rerun leaves those alone unless `retry_errors`.

Data parallel: with `WORLD_SIZE > 1` (torchrun) rank r answers every r-th query into
`<out stem>.rank{r}<suffix>`, then after a barrier (gloo on CPU, nccl on CUDA) rank 0 merges the
shards and any earlier `out` into `out` (annotation order) and deletes the shards. Ranks started
as separate processes (`rank=`/`world_size=` given, no process group) leave their shards for
`merge_shards` (`tempo-fast predict --merge`).
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch

SCORES = ("frequency", "likelihood")
TIMING_KEYS = ("decode_s", "preprocess_s", "prefill_s", "generate_s", "total_s")
_TOKENIZER_LOCK = threading.Lock()


@dataclass
class InferConfig:
    """Settings of grounding inference (`ground`, `predict`, `tempo-fast ground/predict`)."""

    model: str = "tiny"  # "tiny" or a local Qwen2.5-VL / Qwen3-VL checkpoint folder
    device: str = "auto"  # "auto" (CUDA when present; torchrun: cuda:LOCAL_RANK), "cpu", "cuda:0", ...
    dtype: str | None = None  # "bfloat16", "float16", "float32"; None: the loader's default for the device
    attn_implementation: str | None = None  # "sdpa", "flash_attention_2", "eager"; None: the loader's default
    num_frames: int = 16  # frames sampled per video (a multiple of 2: Qwen merges frame pairs)
    alpha: float = 0.5  # SAA mix of content-driven and uniform density; 0 = uniform sampling
    probe_fps: float = 4.0  # SAA probe rate (frames/s) for the variation scores
    min_pixels: int | None = None  # lower bound of pixels per frame; None: the checkpoint's (as in training)
    max_pixels: int | None = None  # upper bound of pixels per frame; None: the checkpoint's
    decode_resize: bool = True  # resize inside the decoder to the model's frame size (faster; bilinear)
    num_samples: int = 8  # sampled answers per query for scored candidates (0: greedy answer only)
    temperature: float = 1.0  # sampling temperature of the candidates
    top_p: float = 1.0  # nucleus sampling of the candidates (1: off)
    top_k: int = 0  # top-k sampling of the candidates (0: off)
    max_new_tokens: int = 64  # generation limit per answer
    merge_iou: float = 0.5  # candidate windows with IoU >= this (to a cluster's seed) are merged
    score: Literal["frequency", "likelihood"] = "frequency"  # window score: "frequency" or "likelihood" (see the module docstring)
    max_windows: int = 10  # windows kept per query (the official mAP reads 10)
    seed: int = 0  # sampling seed; each query draws from its own generator seeded by (seed, video, query)
    workers: int = 2  # threads decoding and preprocessing ahead of the model (0: inline)
    prefetch: int = 4  # queries prepared ahead of the model at most (bounded queue)

    def __post_init__(self):
        def bad(name, expected):
            raise ValueError(f"InferConfig: {name} must be {expected}, got {getattr(self, name)!r}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.num_frames) or self.num_frames < 2 or self.num_frames % 2:
            bad("num_frames", "an even int >= 2")
        if not 0.0 <= self.alpha <= 1.0:
            bad("alpha", "in [0, 1]")
        for name in ("probe_fps", "temperature"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                bad(name, "a number > 0")
        for name in ("min_pixels", "max_pixels"):
            if getattr(self, name) is not None and (not is_int(getattr(self, name)) or getattr(self, name) < 1):
                bad(name, "None or an int >= 1")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"InferConfig: min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        for name, low in (("num_samples", 0), ("top_k", 0), ("max_new_tokens", 1), ("max_windows", 1),
                          ("workers", 0), ("prefetch", 1)):
            if not is_int(getattr(self, name)) or getattr(self, name) < low:
                bad(name, f"an int >= {low}")
        if not 0.0 < self.top_p <= 1.0:
            bad("top_p", "in (0, 1]")
        if not 0.0 < self.merge_iou <= 1.0:
            bad("merge_iou", "in (0, 1]")
        if self.score not in SCORES:
            bad("score", f"one of {SCORES}")
        if self.dtype is not None and not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            bad("dtype", "None or a torch dtype name such as 'bfloat16'")


# ---------------------------------------------------------------- candidates


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else float(a[0] == b[0] and a[1] == b[1])


def merge_candidates(answers, weights: Sequence[float] | None = None, *, merge_iou: float = 0.5,
                     max_windows: int = 10, greedy_first: bool = True) -> list[list[float]]:
    """Scored windows `[[start, end, score], ...]` from parsed answers (module docstring rule).

    answers: `rewards.Answer`s, the greedy one first when `greedy_first`; weights: one per answer
    (None: 1 each, i.e. frequency scoring). Scores are in [0, 1].
    """
    weights = [1.0] * len(answers) if weights is None else [float(w) for w in weights]
    if len(weights) != len(answers):
        raise ValueError(f"merge_candidates: {len(answers)} answers but {len(weights)} weights")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"merge_candidates: weights must be finite and >= 0, got {weights}")
    clusters = []  # dicts: seed window, members, supporting answer indices, seeded by the greedy answer
    for i, answer in enumerate(answers):
        for window in answer.windows:
            ious = [_iou(window, c["seed"]) for c in clusters]
            best = max(range(len(ious)), key=ious.__getitem__, default=None)
            if best is not None and ious[best] >= merge_iou:
                clusters[best]["members"].append(window)
                clusters[best]["support"].add(i)
            else:
                clusters.append({"seed": window, "members": [window], "support": {i},
                                 "greedy": greedy_first and i == 0})
    total = sum(weights)
    out = []
    for c in clusters:
        score = sum(weights[i] for i in c["support"]) / total if total > 0 else 0.0
        start, end = c["seed"] if c["greedy"] else (sum(w[k] for w in c["members"]) / len(c["members"])
                                                    for k in (0, 1))
        out.append((not c["greedy"], -score if not c["greedy"] else 0.0, [start, end, score]))
    out.sort(key=lambda item: item[:2])  # stable: greedy windows as written, the rest by score
    return [[round(s, 3), round(e, 3), round(score, 4)] for _, _, (s, e, score) in out[:max_windows]]


def answer_likelihoods(logprobs: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Per-token probability exp(mean log-prob) of each of G answers (`[G, T]` log-probs and mask)."""
    mask = mask.float()
    mean = (logprobs.float() * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.exp(mean).tolist()


# ---------------------------------------------------------------- one query


def load(model, config: InferConfig):
    """`model` if it is a loaded `VLModel`, else the one it names (None: `config.model`) loaded on
    `config.device` in `config.dtype`."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    from tempo_fast.model import load_model

    dtype = None if config.dtype is None else getattr(torch, config.dtype)
    from tempo_fast.train.dist import resolve_device

    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    return load_model(os.fspath(model or config.model), device=str(device), dtype=dtype,
                      attn_implementation=config.attn_implementation)


def pixel_bounds(vl, config: InferConfig) -> tuple[int, int]:
    """(min_pixels, max_pixels) per frame: the config's, else the checkpoint's."""
    low = vl.min_pixels if config.min_pixels is None else config.min_pixels
    high = vl.max_pixels if config.max_pixels is None else config.max_pixels
    if low > high:
        raise ValueError(f"min_pixels {low} > max_pixels {high} (config or checkpoint defaults)")
    return low, high


def sample_frames(vl, video_path, config: InferConfig):
    """Frames of the video for the model: SAA (`alpha > 0`) or uniform times, resized in the decoder
    to the model's frame size when `config.decode_resize`."""
    from tempo_fast.video import probe, saa_sample, smart_resize

    size = None
    if config.decode_resize:
        info = probe(video_path)
        factor = int(vl.vision.patch_size) * int(vl.vision.spatial_merge_size)
        size = smart_resize(info.height, info.width, factor, *pixel_bounds(vl, config))
    return saa_sample(video_path, config.num_frames, alpha=config.alpha, probe_fps=config.probe_fps, size=size)


def prepare(vl, video_path, query: str, config: InferConfig) -> dict:
    """Decode, sample and preprocess one query: {"prompt": PromptInputs, "decode_s", "preprocess_s"}.
    Raises FileNotFoundError / VideoError for a missing or undecodable video."""
    from tempo_fast.model import build_prompt

    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query must be a non-empty string, got {query!r}")
    start = time.perf_counter()
    frames = sample_frames(vl, video_path, config)
    mid = time.perf_counter()
    low, high = pixel_bounds(vl, config)
    with _TOKENIZER_LOCK:  # a fast tokenizer may raise "Already borrowed" when shared by threads
        prompt = build_prompt(vl, frames, query, min_pixels=low, max_pixels=high, device=vl.device)
    return {"prompt": prompt, "decode_s": mid - start, "preprocess_s": time.perf_counter() - mid}


def _seed(seed: int, *parts) -> int:
    """A per-query seed from (seed, video id = file stem, query): independent of query order, so
    reruns, shards and `ground` on the same video and query sample the same answers."""
    return (seed * 1_000_003 + zlib.crc32("\x00".join(map(str, parts)).encode())) % (2**63)


class Grounder:
    """A model with its greedy and sampling engines; `answer` turns a prepared query into a result."""

    def __init__(self, vl, config: InferConfig):
        from tempo_fast.rollout import RolloutEngine, SamplingConfig

        self.vl, self.config = vl, config
        self.greedy = RolloutEngine(vl, SamplingConfig(max_new_tokens=config.max_new_tokens, greedy=True))
        self.sampler = RolloutEngine(vl, SamplingConfig(max_new_tokens=config.max_new_tokens,
                                                        temperature=config.temperature, top_p=config.top_p,
                                                        top_k=config.top_k))

    def answer(self, prepared: dict, seed: int) -> dict:
        """The result dict of `ground` (without decode/preprocess timing) plus "tokens"."""
        from tempo_fast.rewards import parse_answer

        prompt, config = prepared["prompt"], self.config
        start = time.perf_counter()
        if config.num_samples:
            # Row 0 greedy, the rest sampled: one prefill for the answer and its candidates.
            generator = torch.Generator(device=self.vl.device).manual_seed(seed)
            rollout = self.sampler.generate(prompt, 1 + config.num_samples, generator=generator, greedy_rows=1)
        else:
            rollout = self.greedy.generate(prompt, 1)
        elapsed = time.perf_counter() - start
        texts = list(rollout.texts)
        answers = [parse_answer(t, prompt.duration) for t in texts]
        weights = None
        if config.score == "likelihood":
            weights = answer_likelihoods(rollout.logprobs, rollout.completion_mask)
        windows = merge_candidates(answers, weights, merge_iou=config.merge_iou, max_windows=config.max_windows)
        prefill = float(rollout.timing.get("prefill_s", 0.0))
        sampled = answers[1:]
        return {"windows": windows, "refused": answers[0].refused,
                "refusal_score": round(sum(a.refused for a in sampled) / len(sampled), 4) if sampled else 0.0,
                "answer": texts[0], "duration": float(prompt.duration),
                "tokens": int(rollout.lengths.sum()),
                "timing": {"prefill_s": prefill, "generate_s": max(elapsed - prefill, 0.0)}}


def ground(video_path, query: str, *, model=None, config: InferConfig | None = None) -> dict:
    """Ground `query` in the video at `video_path`.

    model: a `VLModel`, or a name for `load_model` ("tiny", a checkpoint folder); None: `config.model`.
    Returns {"windows": [[start, end, score], ...], "refused": bool, "refusal_score": float,
    "answer": str (the greedy answer), "duration": float, "timing": {decode_s, preprocess_s,
    prefill_s, generate_s, total_s}}. Raises FileNotFoundError for a missing video, VideoError for
    an undecodable one, ValueError for an empty query.
    """
    config = InferConfig() if config is None else config
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query must be a non-empty string, got {query!r}")
    if not os.path.isfile(video_path):
        raise FileNotFoundError(f"video file not found: {video_path}")
    vl = load(model, config)
    start = time.perf_counter()  # the query's time, not the model's loading
    prepared = prepare(vl, video_path, query, config)
    result = Grounder(vl, config).answer(prepared, _seed(config.seed, Path(video_path).stem, query))
    result.pop("tokens")
    timing = {"decode_s": prepared["decode_s"], "preprocess_s": prepared["preprocess_s"], **result["timing"],
              "total_s": time.perf_counter() - start}
    result["timing"] = {k: round(timing[k], 4) for k in TIMING_KEYS}
    return result


# ---------------------------------------------------------------- prediction files


def shard_path(out, rank: int) -> Path:
    """Rank r's shard of `out`: preds.jsonl -> preds.rank{r}.jsonl."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rank{rank}{out.suffix}")


def read_predictions(path, *, repair: bool = True) -> list[dict]:
    """The records of a prediction JSONL file ([] when absent). A last line cut off by a crash (no
    newline, not JSON) is dropped, and with `repair` cut from the file so appends stay valid; any
    other bad line raises ValueError naming it."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records, good_end, offset = [], 0, 0
    for number, line in enumerate(lines, 1):
        end = offset + len(line) + 1
        if line.strip():
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "qid" not in record:
                    raise ValueError("not an object with a qid")
            except ValueError as err:
                if number == len(lines):  # the unterminated tail of an interrupted write
                    break
                raise ValueError(f"{path}:{number}: not a prediction record ({err}): {line[:80]!r}") from None
            records.append(record)
        good_end, offset = min(end, len(raw)), end
    if repair and good_end < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    elif repair and raw and not raw.endswith(b"\n"):  # a whole last record without its newline
        with open(path, "ab") as f:
            f.write(b"\n")
    return records


def _write_atomic(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def _key(qid) -> str:
    return json.dumps(qid)  # 5 and "5" stay distinct, as in the file


def merge_shards(out, world_size: int, order: Sequence | None = None, *, remove: bool = True) -> Path:
    """Merge `out` (if present) and the shards of ranks 0..world_size-1 into `out`, atomically.

    For each qid a result beats an error record and a later source (higher rank) beats an earlier
    one. order: qids in the order to write (annotation order); others follow in order of appearance.
    Raises FileNotFoundError naming a missing shard. Shards are deleted after the write (`remove`).
    """
    out = Path(out)
    shards = [shard_path(out, r) for r in range(world_size)]
    missing = [str(p) for p in shards if not p.exists()]
    if missing:
        raise FileNotFoundError(f"merge_shards: missing shard(s) {missing} (did every rank finish?)")
    merged: dict[str, dict] = {}
    for source in [out, *shards]:
        for record in read_predictions(source, repair=False):
            key = _key(record["qid"])
            if "error" not in record or "error" in merged.get(key, {"error": ""}):
                merged[key] = record
    keys = [_key(q) for q in order or []]
    keys = [k for k in dict.fromkeys(keys) if k in merged] + [k for k in merged if k not in set(keys)]
    _write_atomic(out, [merged[k] for k in keys])
    if remove:
        for shard in shards:
            shard.unlink()
    return out


def _dist_env() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _start_group(device: str) -> bool:
    """Join torchrun's process group when there is none yet; True when this call made it."""
    import datetime

    import torch.distributed as dist

    if dist.is_initialized():
        return False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":  # all_gather_object and barrier use the current CUDA device
        torch.cuda.set_device(torch.device(device))
    # Ranks wait at the barrier for the slowest shard: allow far longer than the 30 min default.
    dist.init_process_group(backend, timeout=datetime.timedelta(hours=48))
    return True


def _safe_prepare(vl, record, config: InferConfig):
    try:
        if record.video_path is None or not record.video_path.is_file():
            raise FileNotFoundError(f"video file not found: {record.video_path}")
        return prepare(vl, record.video_path, record.query, config)
    except (OSError, ValueError, RuntimeError) as err:  # missing / corrupt video: an error record
        return f"{type(err).__name__}: {err}"


def predict(annotations, videos_dir, *, model=None, out, config: InferConfig | None = None,
            rank: int | None = None, world_size: int | None = None, retry_errors: bool = False,
            progress: bool = True) -> dict:
    """Answer every query of `annotations` (any layout `data.load_annotations` reads) with the videos
    in `videos_dir`, appending predictions to `out` (module docstring: layout, resume, errors, ranks).

    model: a `VLModel` or a name for `load_model`; None: `config.model`. rank / world_size: this
    process's shard when ranks run as separate processes without a process group (default: RANK and
    WORLD_SIZE from the environment, with torchrun's process group when WORLD_SIZE > 1).
    Returns the summary: queries, skipped, errors, tokens, seconds, queries_per_s, tokens_per_s, the
    per-stage times summed over queries and the output path; under a process group summed over all
    ranks (seconds: the slowest rank's), else this rank's.
    """
    from tempo_fast.data import load_annotations
    from tqdm import tqdm

    config = InferConfig() if config is None else config
    env_rank, env_world = _dist_env()
    grouped = rank is None and world_size is None and env_world > 1
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"predict: need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
    records = load_annotations(annotations, videos_dir)
    out = Path(out)
    target = shard_path(out, rank) if world_size > 1 else out
    target.parent.mkdir(parents=True, exist_ok=True)
    done = read_predictions(target)
    if retry_errors and any("error" in r for r in done):
        _write_atomic(target, [r for r in done if "error" not in r])
    earlier = read_predictions(out, repair=False) if world_size > 1 else []
    skip = {_key(r["qid"]) for r in done + earlier if not (retry_errors and "error" in r)}
    mine = records[rank::world_size]
    todo = [r for r in mine if _key(r.id) not in skip]

    vl = load(model, config)
    pixel_bounds(vl, config)  # a bad setting fails here, not as one error record per query
    made_group = _start_group(str(vl.device)) if grouped else False
    grounder = Grounder(vl, config)
    totals = {k: 0.0 for k in TIMING_KEYS[:4]}
    errors = tokens = 0
    start = time.perf_counter()
    pool = ThreadPoolExecutor(config.workers, thread_name_prefix="prepare") if config.workers else None
    pending = deque()
    queue = iter(todo)

    def submit():
        record = next(queue, None)
        if record is not None:
            pending.append((record, pool.submit(_safe_prepare, vl, record, config) if pool else None))

    try:
        with open(target, "a", encoding="utf-8") as f, \
                tqdm(total=len(todo), desc="predict", disable=not progress or rank != 0) as bar:
            for _ in range(config.prefetch):
                submit()
            while pending:
                record, future = pending.popleft()
                prepared = future.result() if future is not None else _safe_prepare(vl, record, config)
                submit()
                line = {"qid": record.id, "query": record.query, "vid": record.video_id}
                try:
                    if isinstance(prepared, str):
                        raise RuntimeError(prepared)
                    result = grounder.answer(prepared, _seed(config.seed, record.video_id, record.query))
                    line.update(pred_relevant_windows=result["windows"], refused=result["refused"],
                                refusal_score=result["refusal_score"], answer=result["answer"])
                    tokens += result["tokens"]
                    for k in ("decode_s", "preprocess_s"):
                        totals[k] += prepared[k]
                    for k in ("prefill_s", "generate_s"):
                        totals[k] += result["timing"][k]
                except RuntimeError as err:  # a bad video, or the model failing on one query (e.g. OOM)
                    errors += 1
                    line.update(pred_relevant_windows=[], refused=False,
                                error=str(err) if isinstance(prepared, str) else f"{type(err).__name__}: {err}")
                f.write(json.dumps(line) + "\n")
                f.flush()
                bar.update(1)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    counts = {"queries": len(todo), "skipped": len(mine) - len(todo), "errors": errors, "tokens": tokens,
              "seconds": time.perf_counter() - start, **totals}
    if grouped:
        import torch.distributed as dist

        every = [None] * world_size
        dist.all_gather_object(every, counts)  # doubles as the barrier before the merge
        if rank == 0:
            merge_shards(out, world_size, [r.id for r in records])
        dist.barrier()
        if made_group:
            dist.destroy_process_group()
        counts = {k: (max if k == "seconds" else sum)(c[k] for c in every) for k in counts}
    seconds = counts["seconds"]
    return {"rank": rank, "world_size": world_size, **{k: round(v, 3) for k, v in counts.items()},
            "queries_per_s": round(counts["queries"] / seconds, 4) if seconds > 0 else 0.0,
            "tokens_per_s": round(counts["tokens"] / seconds, 2) if seconds > 0 else 0.0,
            "out": str(out if grouped or world_size == 1 else target)}
