"""The synthetic grounding set: short H.264 clips of coloured shapes with events at known times,
templated queries with exact ground-truth windows, and a sidecar of event facts.

Each clip is a pure function of `(config, index)`: a numpy generator seeded with
`SeedSequence([seed, index])` draws a *plan* (objects, events, distractors, queries), the plan is
rendered to uint8 RGB frames with numpy (frame k shows time k/fps), and the frames are piped to
`ffmpeg -f rawvideo ... -c:v libx264 -pix_fmt yuv420p` (one x264 thread per clip, bit-exact
flags, so the same plan gives the same file). Clips are rendered in a process pool.

Content:
- objects: a shape (square, circle, triangle, diamond) of one colour and size; no two objects of a
  clip ever share a (colour, shape) pair, and their boxes never overlap (counting the place of an
  object not yet appeared or gone), so "the red circle" names one object, its pixels are never
  hidden and the pixels where it appears show only background before;
- events (what queries ask about): `appear` (grows from nothing over the window), `disappear`
  (shrinks to nothing), `move` (slides in a straight line), `change` (colour blends to another);
- distractors (pixel changes that are NOT events): camera `shake`, `brightness` ramps and a scene
  `cut` (the background changes).

Queries read "the [size] colour shape verb [colour]" (`the red circle moves`, `the large blue
square turns green`), one per (object colour at the time, shape, action, target colour), with every
window where it happens (a circle moving twice gives two windows).

Output folder: `videos/<vid>.mp4`, `train.jsonl`/`val.jsonl`/`test.jsonl` in the QVHighlights layout
(qid, query, duration, vid, relevant_windows, relevant_clip_ids, saliency_scores), `facts.jsonl`
(one plan per video: objects, events with times, distractors, queries with their fields) and
`config.json`. Clips already present are kept (files appear by an atomic rename, so a present file
is complete), which makes a run resumable and a larger `num_videos` extend a set.

Modules: `vocab` (words, query text, split rule), `config` (SynthConfig, SynthResult), `plan`
(one clip's plan, annotation rows), `render` (frames, H.264 encoding), `generate` (the set on disk,
the facts sidecar). Every public name is importable from `tempo_fast.data.synthetic`.
"""
from .config import SynthConfig, SynthResult
from .generate import BATCH_BYTES, BATCH_CLIPS, generate_synthetic, load_facts
from .plan import annotation_rows, object_state, plan_video
from .render import INSTALL_FFMPEG, FFmpegNotFound, encode_h264, render_frames, require_ffmpeg
from .vocab import (ACTIONS, BACKGROUNDS, CLIP_SECONDS, COLOURS, EXTENT, MARGIN, MAX_OBJECTS, SHAPES, SIZES, SPLITS,
                    matches, parse_query, query_text, split_of, video_id)

__all__ = ["ACTIONS", "BACKGROUNDS", "BATCH_BYTES", "BATCH_CLIPS", "CLIP_SECONDS", "COLOURS", "EXTENT",
           "FFmpegNotFound", "INSTALL_FFMPEG", "MARGIN", "MAX_OBJECTS", "SHAPES", "SIZES", "SPLITS",
           "SynthConfig", "SynthResult", "annotation_rows", "encode_h264", "generate_synthetic", "load_facts",
           "matches", "object_state", "parse_query", "plan_video", "query_text", "render_frames",
           "require_ffmpeg", "split_of", "video_id"]
