"""`predict`: answer a whole data set into a prediction file, as a pipeline.

    workers (threads)     decode + SAA + resize + prompt of the next queries (decode, resize and
                          patchify release the GIL), at most `batch_size + prefetch` queries ahead
                          of the model (a bounded queue, in annotation order); one torch intra-op
                          thread each, so their OpenMP teams do not oversubscribe the model's cores
    frame cache           each video decoded and SAA-sampled once, its frames shared by all of its
                          queries (`frame_cache.FrameCache`: LRU of `frame_cache_mb` MiB, keyed by
                          the file's path, inode, size and mtime and the sampling settings; a
                          worker wanting a video another one is decoding waits for it)
    batcher               takes the next prepared query (waiting for it if it is not ready), then
                          every following one already prepared, up to `batch_size` queries and
                          `batch_tokens` padded prompt tokens: batches form as prompts are ready
    model                 one `Grounder.answer_many` per batch: one prefill of the batch, one decode
                          loop of its (1 + num_samples) rows per query, while the workers prepare on

Every query samples from its own generator seeded by (seed, video id, query), so its prediction
does not depend on the batch size, on how batches formed, on the shard or on a rerun.

Output: the layout of `tempo_fast.infer.files`, one JSON line per query, appended and flushed
after each batch, so a crash loses at most the batch in flight and a rerun skips every qid already
in the file (a truncated last line is dropped). A missing or corrupt video becomes an error
record (scored as a miss by `tempo-fast eval`) and a count in the summary; a batch the model fails
on (e.g. out of memory) is answered again query by query, and a query that still fails becomes an
error record. A rerun leaves error records alone unless `retry_errors`.

Data parallel: with `WORLD_SIZE > 1` (torchrun) rank r answers every r-th query into
`<out stem>.rank{r}<suffix>`, then after a barrier (gloo on CPU, nccl on CUDA) rank 0 merges the
shards and any earlier `out` into `out` (annotation order) and deletes the shards. Ranks started
as separate processes (`rank=`/`world_size=` given, no process group) leave their shards for
`merge_shards` (`tempo-fast predict --merge`).

Where the time goes (the summary): decode_s and preprocess_s summed over queries (in the
workers, overlapping the model; decode_s of a query served from the frame cache is its lookup or
its wait for the worker decoding that video), prefill_s and generate_s (decode steps) summed over
batches, wait_s the model's time blocked on the workers, seconds the wall time; videos_decoded
and frames_cached count the queries that decoded their video and those served from the cache.
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from tempo_fast.infer.config import InferConfig, batch_limits
from tempo_fast.infer.files import merge_shards, qid_key, read_predictions, shard_path, write_atomic
from tempo_fast.infer.frame_cache import FrameCache
from tempo_fast.infer.grounding import Grounder, load, pixel_bounds, prepare, query_seed

STAGES = ("decode_s", "preprocess_s", "prefill_s", "generate_s", "wait_s")


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


def _safe_prepare(vl, record, config: InferConfig, cache: FrameCache):
    try:
        if record.video_path is None or not record.video_path.is_file():
            raise FileNotFoundError(f"video file not found: {record.video_path}")
        return prepare(vl, record.video_path, record.query, config, cache)
    except (OSError, ValueError, RuntimeError) as err:  # missing / corrupt video: an error record
        return f"{type(err).__name__}: {err}"


def _one_intra_op_thread() -> None:
    """A worker's torch ops run on its own thread (torch's OpenMP thread count is per thread): an
    OpenMP team per worker on top of the model's would oversubscribe the cores, and the workers'
    ops are small. Their results do not depend on it (integer SAA sums, per-pixel preprocessing)."""
    torch.set_num_threads(1)


class Prefetcher:
    """Prepared queries in order, `ahead` at most in flight in `workers` threads (0: inline)."""

    def __init__(self, vl, records, config: InferConfig, ahead: int):
        self.vl, self.config, self.records = vl, config, iter(records)
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="prepare",
                                       initializer=_one_intra_op_thread) if config.workers else None
        self.pending = deque()
        self.wait_s = 0.0
        self.cache = FrameCache(config.frame_cache_mb * 2**20)
        for _ in range(ahead):
            self._submit()

    def _submit(self) -> None:
        record = next(self.records, None)
        if record is not None:
            job = self.pool.submit(_safe_prepare, self.vl, record, self.config, self.cache) if self.pool else None
            self.pending.append((record, job))

    def ready(self) -> bool:
        """Whether the next query can be had without waiting for a worker."""
        return bool(self.pending) and (self.pending[0][1] is None or self.pending[0][1].done())

    def head(self):
        """The next query's prepared dict or error text (waiting for it; inline: preparing it)."""
        record, job = self.pending[0]
        if job is None:
            job = Future()
            job.set_result(_safe_prepare(self.vl, record, self.config, self.cache))
            self.pending[0] = (record, job)
        elif not job.done():
            start = time.perf_counter()
            job.result()
            self.wait_s += time.perf_counter() - start
        return job.result()

    def pop(self):
        """(record, prepared dict or error text) of the next query."""
        prepared = self.head()
        record, _ = self.pending.popleft()
        self._submit()
        return record, prepared

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def next_batch(feed: Prefetcher, size: int, budget: int) -> list:
    """The next queries as (record, prepared dict or error text), in order: the next query, then
    each following one already prepared while the prepared ones fit `size` queries and `budget`
    padded prompt tokens (queries whose preparation failed ride along, they cost nothing)."""
    items, count, widest = [], 0, 0
    while feed.pending and count < size:
        if items and not feed.ready():
            break
        prepared = feed.head()
        if isinstance(prepared, dict):
            length = prepared["prompt"].length
            if count and max(widest, length) * (count + 1) > budget:
                break
            count, widest = count + 1, max(widest, length)
        items.append(feed.pop())
    return items


def _answer(grounder: Grounder, batch: list, seeds: list, timings: list) -> list:
    """Results of the prepared queries `batch`, one forward's timing appended to `timings`; a
    batch the model fails on is answered query by query, and a query that fails alone gets its
    error text instead of a result."""
    try:
        results = grounder.answer_many(batch, seeds)
    except RuntimeError as err:  # e.g. out of memory: retry alone, so one bad query costs only itself
        if len(batch) == 1:
            return [f"{type(err).__name__}: {err}"]
        return [_answer(grounder, [item], [seed], timings)[0] for item, seed in zip(batch, seeds)]
    timings.append(results[0]["timing"])
    return results


def predict(annotations, videos_dir, *, model=None, out, config: InferConfig | None = None,
            rank: int | None = None, world_size: int | None = None, retry_errors: bool = False,
            progress: bool = True) -> dict:
    """Answer every query of `annotations` (any layout `data.load_annotations` reads) with the videos
    in `videos_dir`, appending predictions to `out` (module docstring: pipeline, resume, errors, ranks).

    model: a `VLModel` or a name for `load_model`; None: `config.model`. rank / world_size: this
    process's shard when ranks run as separate processes without a process group (default: RANK and
    WORLD_SIZE from the environment, with torchrun's process group when WORLD_SIZE > 1).
    Returns the summary: queries, skipped, errors, batches, tokens, seconds, queries_per_s,
    tokens_per_s, the stage times (STAGES) and the output path; under a process group summed over
    all ranks (seconds: the slowest rank's), else this rank's.
    """
    from tqdm import tqdm

    from tempo_fast.data import load_annotations

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
        write_atomic(target, [r for r in done if "error" not in r])
    earlier = read_predictions(out, repair=False) if world_size > 1 else []
    skip = {qid_key(r["qid"]) for r in done + earlier if not (retry_errors and "error" in r)}
    mine = records[rank::world_size]
    todo = [r for r in mine if qid_key(r.id) not in skip]

    vl = load(model, config)
    pixel_bounds(vl, config)  # a bad setting fails here, not as one error record per query
    made_group = _start_group(str(vl.device)) if grouped else False
    grounder = Grounder(vl, config)
    size, budget = batch_limits(config, vl.device)
    totals = {k: 0.0 for k in STAGES}
    errors = tokens = batches = 0
    start = time.perf_counter()
    feed = Prefetcher(vl, todo, config, ahead=size + config.prefetch)

    def line(record, **fields) -> str:
        return json.dumps({"qid": record.id, "query": record.query, "vid": record.video_id, **fields}) + "\n"

    timings = []
    try:
        with open(target, "a", encoding="utf-8") as f, \
                tqdm(total=len(todo), desc="predict", unit="query", disable=not progress or rank != 0) as bar:
            while feed.pending:
                items = next_batch(feed, size, budget)
                ready = [(r, p) for r, p in items if isinstance(p, dict)]
                answered = iter(_answer(grounder, [p for _, p in ready],
                                        [query_seed(config.seed, r.video_id, r.query) for r, _ in ready], timings)
                                if ready else [])
                batches += bool(ready)
                lines = []
                for record, prepared in items:  # annotation order
                    result = next(answered) if isinstance(prepared, dict) else prepared
                    if isinstance(result, str):  # a bad video, or the model failing on this query
                        errors += 1
                        lines.append(line(record, pred_relevant_windows=[], refused=False, error=result))
                        continue
                    lines.append(line(record, pred_relevant_windows=result["windows"], refused=result["refused"],
                                      refusal_score=result["refusal_score"], answer=result["answer"]))
                    tokens += result["tokens"]
                    for k in ("decode_s", "preprocess_s"):
                        totals[k] += prepared[k]
                f.write("".join(lines))
                f.flush()
                bar.update(len(lines))
    finally:
        feed.close()
    for timing in timings:
        for k in ("prefill_s", "generate_s"):
            totals[k] += timing[k]
    totals["wait_s"] = feed.wait_s
    counts = {"queries": len(todo), "skipped": len(mine) - len(todo), "errors": errors, "batches": batches,
              "tokens": tokens, "seconds": time.perf_counter() - start, **totals,
              "videos_decoded": feed.cache.misses, "frames_cached": feed.cache.hits}
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
    return {"rank": rank, "world_size": world_size, "batch_size": size, "batch_tokens": budget,
            **{k: round(v, 3) for k, v in counts.items()},
            "queries_per_s": round(counts["queries"] / seconds, 4) if seconds > 0 else 0.0,
            "tokens_per_s": round(counts["tokens"] / seconds, 2) if seconds > 0 else 0.0,
            "out": str(out if grouped or world_size == 1 else target)}
