"""Annotation loaders on the real QVHighlights / Charades-STA files and on small bad files; the
reference is the raw JSON read here with the json module."""
import dataclasses
import json
import os

import pytest

from tempo_fast.data import (AnnotationError, GroundingRecord, load_annotations, load_charades,
                             load_qvhighlights)

QVH = ("qvhighlights/highlight_train_release.jsonl", 7218), ("qvhighlights/highlight_val_release.jsonl", 1550)
GOOD_QVH = {"qid": 7, "query": "a dog runs.", "duration": 150, "vid": "abc_0.0_150.0",
            "relevant_windows": [[2, 10], [20, 24]], "relevant_clip_ids": [1, 2],
            "saliency_scores": [[1, 2, 3], [4, 4, 4]]}


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name,count", QVH)
def test_qvhighlights_real_files_match_raw_json(shared_data, name, count):
    path = os.path.join(shared_data, name)
    raw = [json.loads(line) for line in open(path, encoding="utf-8")]
    records = load_annotations(path)
    assert len(records) == len(raw) == count and records.skipped == 0
    for rec, obj in zip(records, raw):
        assert (rec.id, rec.video_id, rec.query, rec.duration) == (obj["qid"], obj["vid"], obj["query"].strip(), obj["duration"])
        assert [list(w) for w in rec.windows] == obj["relevant_windows"]
        assert list(rec.relevant_clip_ids) == obj["relevant_clip_ids"]
        assert [list(s) for s in rec.saliency_scores] == obj["saliency_scores"]
        assert rec.relevance == "relevant" and rec.video_path is None


def test_charades_test_file_raw_and_clipped(shared_data):
    path = os.path.join(shared_data, "charades_sta/charades_sta_test.json")
    raw = json.load(open(path, encoding="utf-8"))
    expected = [(f"{vid}_{i}", vid, v["duration"], s, w) for vid, v in raw.items()
                for i, (w, s) in enumerate(zip(v["timestamps"], v["sentences"]))]
    unclipped = load_charades(path, clip=False)
    clipped = load_annotations(path)
    assert len(unclipped) == len(clipped) == len(expected) == 3720
    overshoot = 0
    for a, b, (qid, vid, duration, sentence, (s, e)) in zip(unclipped, clipped, expected):
        assert (a.id, a.video_id, a.duration, a.query) == (qid, vid, duration, sentence.strip())
        assert a.windows == ((s, e),)
        assert b.windows == ((max(s, 0.0), min(e, duration)),)
        overshoot += e > duration
    assert overshoot == 562  # the public file's ends past the video length, within 1.5 s


def test_charades_train_reversed_windows(shared_data):
    path = os.path.join(shared_data, "charades_sta/charades_sta_train.json")
    with pytest.raises(AnnotationError, match=r"charades_sta_train\.json.*'LEOL6'.*reversed"):
        load_charades(path)
    records = load_charades(path, strict=False)
    assert len(records) + records.skipped == 12408 and records.skipped == 4
    assert sum("AKKWU" in p for p in records.problems) == 2


def test_charades_text_lines_equal_json_layout(shared_data, tmp_path):
    raw = json.load(open(os.path.join(shared_data, "charades_sta/charades_sta_test.json"), encoding="utf-8"))
    lines = [f"{vid} {w[0]} {w[1]}##{s}" for vid, v in raw.items() for w, s in zip(v["timestamps"], v["sentences"])]
    text_path = _write(tmp_path, "charades_sta_test.txt", "\n".join(lines) + "\n")
    durations = {vid: v["duration"] for vid, v in raw.items()}
    from_text = load_annotations(text_path, durations=durations)
    from_json = load_charades(os.path.join(shared_data, "charades_sta/charades_sta_test.json"))
    assert from_text == from_json
    unknown = load_charades(text_path)
    assert all(r.duration is None for r in unknown)
    assert unknown[0].windows == ((raw[unknown[0].video_id]["timestamps"][0][0], raw[unknown[0].video_id]["timestamps"][0][1]),)


@pytest.mark.parametrize("change,message", [
    ({"relevant_windows": [[10, 2]]}, "reversed"),
    ({"relevant_windows": [[2, 151]]}, "ends after the duration 150"),
    ({"relevant_windows": [[-3, 2]]}, "starts before 0"),
    ({"relevant_windows": [["a", 2]]}, "window start must be a number, got 'a'"),
    ({"relevant_windows": [[1, 2, 3]]}, "window must be"),
    ({"duration": "long"}, "duration must be a number"),
    ({"duration": 0}, "duration must be > 0"),
    ({"query": ""}, "query must be a non-empty string"),
    ({"saliency_scores": [[1, 2, 3]]}, "saliency_scores must be one list"),
    ({"qid": None}, "qid must be"),
])
def test_qvhighlights_bad_records(tmp_path, change, message):
    bad = {**GOOD_QVH, **change}
    path = _write(tmp_path, "bad.jsonl", json.dumps(GOOD_QVH) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(AnnotationError, match=rf"bad\.jsonl:3: .*{message}"):
        load_qvhighlights(path)
    records = load_qvhighlights(path, strict=False)
    assert len(records) == 1 and records.skipped == 1 and "bad.jsonl:3" in records.problems[0]


def test_qvhighlights_missing_field_and_bad_json(tmp_path):
    missing = {k: v for k, v in GOOD_QVH.items() if k != "vid"}
    path = _write(tmp_path, "a.jsonl", json.dumps(missing) + "\n" + '{"qid": 1, "query": "x",\n' + json.dumps(GOOD_QVH) + "\n")
    with pytest.raises(AnnotationError, match=r"a\.jsonl:1: missing field\(s\) \['vid'\]"):
        load_qvhighlights(path)
    records = load_qvhighlights(path, strict=False)
    assert records.skipped == 2 and "a.jsonl:2" in records.problems[1] and len(records) == 1


def test_tolerance_clips_small_overshoot(tmp_path):
    path = _write(tmp_path, "t.jsonl", json.dumps({**GOOD_QVH, "relevant_windows": [[-0.2, 150.3]]}) + "\n")
    assert load_qvhighlights(path)[0].windows == ((0.0, 150.0),)
    assert load_qvhighlights(path, clip=False)[0].windows == ((-0.2, 150.3),)
    with pytest.raises(AnnotationError, match="tolerance 0.1"):
        load_qvhighlights(path, tolerance=0.1)


def test_charades_json_bad_entries(tmp_path):
    data = {"GOOD1": {"duration": 30.0, "timestamps": [[1, 5]], "sentences": ["person sits."]},
            "BAD22": {"duration": 30.0, "timestamps": [[1, 5], [3, 40]], "sentences": ["a", "b"]},
            "BAD33": {"duration": 30.0, "timestamps": [[1, 5]], "sentences": []},
            "BAD44": {"timestamps": [], "sentences": []}}
    path = _write(tmp_path, "c.json", json.dumps(data))
    with pytest.raises(AnnotationError, match=r"c\.json: video 'BAD22' sentence 1: .*ends after"):
        load_charades(path)
    records = load_charades(path, strict=False)
    assert [r.id for r in records] == ["GOOD1_0", "BAD22_0"] and records.skipped == 3
    assert any("'BAD33'" in p for p in records.problems) and any("'BAD44'" in p for p in records.problems)
    broken = _write(tmp_path, "d.json", '{"X": {"duration": 3,\n "timestamps": [}')
    with pytest.raises(AnnotationError, match=r"d\.json:2: not valid JSON"):
        load_charades(broken)


def test_charades_text_bad_lines(tmp_path):
    path = _write(tmp_path, "c.txt", "AAA 1.0 2.0##person sits.\nBBB 3 x##oops\nno separator here\nCCC 5 4##reversed\n")
    with pytest.raises(AnnotationError, match=r"c\.txt:2: window end must be a number, got 'x'"):
        load_charades(path)
    records = load_charades(path, strict=False)
    assert len(records) == 1 and records.skipped == 3
    assert "c.txt:3" in records.problems[1] and "c.txt:4" in records.problems[2]
    with pytest.raises(AnnotationError, match="'AAA' has no entry in the durations mapping"):
        load_charades(path, durations={"BBB": 3.0})


def test_layout_detection_errors(tmp_path):
    with pytest.raises(AnnotationError, match="does not exist"):
        load_annotations(tmp_path / "nope.jsonl")
    with pytest.raises(AnnotationError, match="empty"):
        load_annotations(_write(tmp_path, "e.jsonl", "\n\n"))
    with pytest.raises(AnnotationError, match="unknown annotation layout"):
        load_annotations(_write(tmp_path, "u.txt", "hello world\n"))


def test_video_paths_resolve_without_requiring_videos(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "abc_0.0_150.0.mkv").write_bytes(b"")
    other = {**GOOD_QVH, "qid": 8, "vid": "zzz"}
    path = _write(tmp_path, "v.jsonl", json.dumps(GOOD_QVH) + "\n" + json.dumps(other) + "\n")
    found, missing = load_qvhighlights(path, videos)
    assert found.video_path == videos / "abc_0.0_150.0.mkv" and found.video_exists()
    assert missing.video_path == videos / "zzz.mp4" and not missing.video_exists()
    assert not load_qvhighlights(path)[0].video_exists()


def test_record_is_frozen_and_checked():
    rec = GroundingRecord(id=1, video_id="v", video_path=None, duration=10.0, query="q", windows=((1.0, 2.0),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.query = "other"
    with pytest.raises(ValueError, match="relevance 'maybe'"):
        dataclasses.replace(rec, relevance="maybe")
    assert rec.to_json() == {"qid": 1, "query": "q", "duration": 10.0, "vid": "v", "relevant_windows": [[1.0, 2.0]]}
