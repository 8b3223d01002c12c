"""The synthetic grounding set: determinism, decodable files of the planned size and length,
ground truth that agrees with the decoded pixels, disjoint splits, resumable output."""
import json
import shutil

import numpy as np
import pytest

from tempo_fast.data import SynthConfig, generate_synthetic, load_qvhighlights
from tempo_fast.data.synthetic import COLOURS, load_facts, plan_video, render_frames, split_of

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg tool")

TINY = dict(num_videos=5, width=32, height=32, fps=8, min_seconds=2.0, max_seconds=4.0, workers=1)


def _decode(path):
    decoders = pytest.importorskip("torchcodec.decoders")
    decoder = decoders.VideoDecoder(str(path))
    frames = decoder.get_frames_in_range(0, decoder.metadata.num_frames).data
    return decoder.metadata, frames.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    result = generate_synthetic(out, SynthConfig(**TINY), progress=False)
    return out, result


def test_files_decode_with_planned_frames(tiny_set):
    out, result = tiny_set
    assert result.rendered == 5 and result.reused == 0
    facts = load_facts(out)
    assert len(facts) == 5
    for vid, plan in facts.items():
        meta, frames = _decode(out / "videos" / f"{vid}.mp4")
        assert frames.shape == (plan["num_frames"], 32, 32, 3)
        assert meta.width == 32 and meta.height == 32
        assert meta.duration_seconds == pytest.approx(plan["num_frames"] / 8, abs=1e-6)
        assert 2.0 <= plan["duration"] <= 4.0
        # the encoded clip is the rendered one up to H.264 loss
        assert np.abs(frames.astype(np.int16) - render_frames(plan)).mean() < 8


def test_same_seed_same_annotations_and_frames(tiny_set, tmp_path):
    out, _ = tiny_set
    again = tmp_path / "again"
    generate_synthetic(again, SynthConfig(**{**TINY, "num_videos": 3}), progress=False)
    first = load_facts(out)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl"):
        ours = [r for r in map(json.loads, (out / name).read_text().splitlines()) if r["vid"] in load_facts(again)]
        theirs = list(map(json.loads, (again / name).read_text().splitlines()))
        assert ours == theirs
    for vid, plan in load_facts(again).items():
        assert plan == first[vid]
        assert (again / "videos" / f"{vid}.mp4").read_bytes() == (out / "videos" / f"{vid}.mp4").read_bytes()
        assert np.array_equal(render_frames(plan), render_frames(first[vid]))
    other = plan_video(SynthConfig(**{**TINY, "seed": 1}), 0)
    assert other["queries"] != first[next(iter(first))]["queries"]


def test_appear_windows_agree_with_pixels(tmp_path):
    """Independent of the renderer: the decoded pixels at the box centre are background up to the
    window start and the object's colour at its end."""
    config = SynthConfig(num_videos=4, width=64, height=64, fps=8, min_seconds=3.0, max_seconds=4.0,
                         shake_prob=0.0, brightness_prob=0.0, cut_prob=0.0, workers=1)
    generate_synthetic(tmp_path, config, progress=False)
    checked = 0
    for vid, plan in load_facts(tmp_path).items():
        _, frames = _decode(tmp_path / "videos" / f"{vid}.mp4")
        for event in plan["events"]:
            if event["action"] != "appear":
                continue
            x0, y0, x1, y1 = event["box"]
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            patch = frames[:, cy - 1:cy + 2, cx - 1:cx + 2].astype(float).mean(axis=(1, 2))  # [T, 3]
            distance = np.abs(patch - np.array(COLOURS[event["colour"]])).max(axis=1)
            k0, k1 = round(event["start"] * 8), round(event["end"] * 8)
            assert (distance[:k0 + 1] > 60).all(), (vid, event, distance[:k0 + 1])
            assert distance[k1] < 40, (vid, event, distance[k1])
            checked += 1
    assert checked >= 2


def test_queries_agree_with_facts_and_load(tiny_set):
    out, _ = tiny_set
    facts = load_facts(out)
    records = [r for s in ("train", "val", "test") for r in load_qvhighlights(out / f"{s}.jsonl", out / "videos")]
    assert len(records) == sum(len(p["queries"]) for p in facts.values())
    for rec in records:
        plan = facts[rec.video_id]
        assert rec.video_exists() and rec.duration == plan["duration"]
        words = rec.query.split()
        # windows = the events of the named object and action (an independent reading of the text)
        colour, shape = (words[2], words[3]) if words[1] in ("small", "large") else (words[1], words[2])
        verb = words[-2] if words[-2] == "turns" else words[-1]
        action = {"appears": "appear", "disappears": "disappear", "moves": "move", "turns": "change"}[verb]
        expected = sorted((e["start"], e["end"]) for e in plan["events"]
                          if (e["colour"], e["shape"], e["action"]) == (colour, shape, action)
                          and (action != "change" or e["target"] == words[-1]))
        assert sorted(rec.windows) == expected
        assert all(0 <= s < e <= rec.duration for s, e in rec.windows)


def test_splits_disjoint_and_proportional(tiny_set):
    out, _ = tiny_set
    vids = {s: {json.loads(line)["vid"] for line in (out / f"{s}.jsonl").read_text().splitlines()}
            for s in ("train", "val", "test")}
    assert not (vids["train"] & vids["val"] or vids["train"] & vids["test"] or vids["val"] & vids["test"])
    assert set().union(*vids.values()) <= set(load_facts(out))
    counts = np.unique([split_of(i, (0.7, 0.2, 0.1)) for i in range(10000)], return_counts=True)
    assert dict(zip(*counts)) == pytest.approx({"test": 1000, "train": 7000, "val": 2000}, abs=20)


def test_resume_renders_only_missing_clips(tmp_path):
    config = SynthConfig(**{**TINY, "num_videos": 3})
    generate_synthetic(tmp_path, config, progress=False)
    victim = sorted((tmp_path / "videos").iterdir())[1]
    data = victim.read_bytes()
    victim.unlink()
    (tmp_path / "videos" / f".{victim.stem}.999.tmp.mp4").write_bytes(b"partial")  # an interrupted run
    result = generate_synthetic(tmp_path, config, progress=False)
    assert (result.rendered, result.reused) == (1, 2)
    assert victim.read_bytes() == data
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]
    with pytest.raises(ValueError, match="fps: 8 there, 10 now"):
        generate_synthetic(tmp_path, SynthConfig(**{**TINY, "fps": 10}), progress=False)


def test_pool_and_cli_give_the_same_files(tiny_set, tmp_path):
    from tempo_fast.cli import main
    out, _ = tiny_set
    pooled = generate_synthetic(tmp_path / "pool", SynthConfig(**{**TINY, "num_videos": 3, "workers": 2}), progress=False)
    assert pooled.rendered == 3
    assert main(["synth", "--out", str(tmp_path / "cli"), "--num-videos", "2", "--size", "32x32",
                 "--seconds", "2-4", "--workers", "1", "--no-progress"]) == 0
    for folder, count in (("pool", 3), ("cli", 2)):
        files = sorted((tmp_path / folder / "videos").iterdir())
        assert len(files) == count
        for path in files:
            assert path.read_bytes() == (out / "videos" / path.name).read_bytes()


def test_encoder_failure_is_reported_and_leaves_no_files(tmp_path):
    from tempo_fast.data.synthetic import encode_h264
    frames = np.zeros((4, 16, 33, 3), np.uint8)  # odd width: x264 refuses 4:2:0
    with pytest.raises(RuntimeError, match="ffmpeg failed"):
        encode_h264([(frames, tmp_path / "odd.mp4")], fps=8)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"must be uint8 \[T, H, W, 3\]"):
        encode_h264([(frames[..., :2], tmp_path / "two.mp4")], fps=8)


@pytest.mark.parametrize("kwargs,message", [
    ({"width": 33}, "width=33 must be even"),
    ({"min_seconds": 5.0, "max_seconds": 4.0}, "seconds range"),
    ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
    ({"shake_prob": 2.0}, "shake_prob=2.0"),
    ({"events_per_object": -1}, "events_per_object=-1"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SynthConfig(**kwargs)


def test_events_per_object_caps_each_object_and_spreads_actions_over_time():
    config = SynthConfig(**{**TINY, "num_videos": 60, "width": 64, "height": 64, "min_seconds": 4.0,
                            "max_seconds": 8.0, "events_per_object": 1})
    plans = [plan_video(config, i) for i in range(config.num_videos)]
    starts = {}
    for plan in plans:
        per_object = {}
        for event in plan["events"]:
            per_object[event["object"]] = per_object.get(event["object"], 0) + 1
            starts.setdefault(event["action"], []).append(event["start"] / plan["duration"])
        assert per_object and max(per_object.values()) == 1
    # one event alone may be an appearance late in the clip or a disappearance early on
    assert max(starts["appear"]) > 0.4 and min(starts["disappear"]) < 0.4
    # the cap draws from the rng only when it bites, so the default (uncapped) plans did not change
    for cap in (0, 10):
        capped = SynthConfig(**{**config.__dict__, "events_per_object": cap})
        assert [plan_video(capped, i) for i in range(5)] == [
            plan_video(SynthConfig(**{**config.__dict__, "events_per_object": 0}), i) for i in range(5)]


def test_cli_passes_event_settings(tmp_path):
    from tempo_fast.cli import main

    assert main(["synth", "--out", str(tmp_path), "--num-videos", "2", "--size", "32x32", "--seconds", "2-4",
                 "--objects", "1-2", "--event-scale", "0.5", "--events-per-object", "1", "--workers", "1",
                 "--no-progress"]) == 0
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["event_scale"] == 0.5 and written["events_per_object"] == 1
    for plan in load_facts(tmp_path).values():
        assert len(plan["events"]) == len({e["object"] for e in plan["events"]})
