"""Prediction files: the JSONL that `predict` appends to, resumes and shards.

Layout: the official QVHighlights prediction layout, one JSON object per query (`qid`, `query`,
`vid`, `pred_relevant_windows: [[s, e, score], ...]`, `refused`, `refusal_score`, `answer`), or an
error record `{"qid", "query", "vid", "pred_relevant_windows": [], "refused": false, "error"}`.
A file cut off by a crash loses at most its unterminated last line (`read_predictions` drops
it). Rank r of W writes `<stem>.rank{r}<suffix>` (`shard_path`); `merge_shards` joins the shards
and any earlier output into one file, in annotation order, a result beating an error record.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence


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


def write_atomic(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def qid_key(qid) -> str:
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
            key = qid_key(record["qid"])
            if "error" not in record or "error" in merged.get(key, {"error": ""}):
                merged[key] = record
    keys = [qid_key(q) for q in order or []]
    keys = [k for k in dict.fromkeys(keys) if k in merged] + [k for k in merged if k not in set(keys)]
    write_atomic(out, [merged[k] for k in keys])
    if remove:
        for shard in shards:
            shard.unlink()
    return out
