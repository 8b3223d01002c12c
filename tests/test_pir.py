"""PIR samples: exact negatives on the synthetic set's facts (checked here against the facts with
a matcher written in this file), word-swap negatives on real QVHighlights queries, fractions and
determinism."""
import collections
import json
import os
import re

import pytest

from tempo_fast.data import PIRConfig, SynthConfig, load_qvhighlights, make_pir_samples
from tempo_fast.data.pir import SWAP_GROUPS, jaccard, swap_word, tokens
from tempo_fast.data.synthetic import annotation_rows, plan_video

VERBS = {"appears": "appear", "disappears": "disappear", "moves": "move", "turns": "change"}


def _describes(query: str, event: dict) -> bool:
    """Whether a synthetic query sentence describes an event fact."""
    words = query.split()[1:]
    size = words.pop(0) if words[0] in ("small", "large") else event["size"]
    colour, shape, verb = words[:3]
    target = words[3] if len(words) > 3 else event["target"]
    return (size, colour, shape, VERBS[verb], target) == (
        event["size"], event["colour"], event["shape"], event["action"], event["target"])


def _one_word_changed(a: str, b: str) -> tuple[str, str] | None:
    wa, wb = a.split(), b.split()
    diff = [(x, y) for x, y in zip(wa, wb) if x != y]
    return diff[0] if len(wa) == len(wb) and len(diff) == 1 else None


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    config = SynthConfig(num_videos=40, seed=3)
    plans = [plan_video(config, i) for i in range(40)]
    path = tmp_path_factory.mktemp("pir") / "all.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for p in plans for row in annotation_rows(p)))
    return load_qvhighlights(path), {p["vid"]: p for p in plans}


def test_synthetic_negatives_are_exact(synthetic):
    records, facts = synthetic
    config = PIRConfig(irrelevant_fraction=0.3, partial_fraction=0.3)
    out = make_pir_samples(records, config, seed=5, facts=facts)
    counts = collections.Counter(r.relevance for r in out)
    assert counts["partial"] == round(0.3 * len(records)) == counts["irrelevant"]
    for before, after in zip(records, out):
        events = facts[after.video_id]["events"]
        assert any(_describes(before.query, e) for e in events)  # the originals are true
        if after.relevance == "relevant":
            assert after == before
            continue
        assert after.windows == () and after.relevant_clip_ids == () and after.source_query == before.query
        assert after.video_id == before.video_id
        assert not any(_describes(after.query, e) for e in events), (after.query, events)
        if after.relevance == "partial":
            assert _one_word_changed(before.query, after.query) is not None
        else:
            assert after.source_video_id != after.video_id
            assert after.query in {r.query for r in records if r.video_id == after.source_video_id}


def test_same_seed_same_samples(synthetic):
    records, facts = synthetic
    first = make_pir_samples(records, PIRConfig(), seed=11, facts=facts)
    assert first == make_pir_samples(records, PIRConfig(), seed=11, facts=facts)
    assert first != make_pir_samples(records, PIRConfig(), seed=12, facts=facts)


@pytest.mark.parametrize("irrelevant,partial", [(0.0, 0.0), (0.5, 0.0), (0.0, 1.0), (0.13, 0.41)])
def test_fractions_respected(synthetic, irrelevant, partial):
    records, facts = synthetic
    out = make_pir_samples(records, PIRConfig(irrelevant_fraction=irrelevant, partial_fraction=partial),
                           seed=0, facts=facts)
    counts = collections.Counter(r.relevance for r in out)
    assert counts["irrelevant"] == round(irrelevant * len(records))
    assert counts["partial"] == round(partial * len(records))
    assert len(out) == len(records)


def test_real_queries(shared_data):
    records = load_qvhighlights(os.path.join(shared_data, "qvhighlights/highlight_val_release.jsonl"))
    out = make_pir_samples(records, PIRConfig(irrelevant_fraction=0.2, partial_fraction=0.2, max_jaccard=0.25), seed=2)
    counts = collections.Counter(r.relevance for r in out)
    assert counts["irrelevant"] == round(0.2 * len(records)) == counts["partial"]
    by_video = collections.defaultdict(list)
    for r in records:
        by_video[r.video_id].append(r.query)
    group_of = {w: g for g in SWAP_GROUPS for w in g}
    for before, after in zip(records, out):
        if after.relevance == "partial":
            old, new = _one_word_changed(before.query, after.query)
            (old_core, new_core), = [(a.lower(), b.lower()) for a, b in zip(re.findall(r"\w+", old), re.findall(r"\w+", new))
                                     if a != b]
            assert group_of[old_core] is group_of[new_core] and old_core != new_core
            assert new_core not in before.query.lower().split()
        elif after.relevance == "irrelevant":
            assert after.source_video_id != before.video_id and not after.windows
            assert after.query in by_video[after.source_video_id]
            assert all(jaccard(tokens(after.query), tokens(q)) <= 0.25 for q in by_video[before.video_id])


def test_swap_word_keeps_case_and_punctuation():
    import random
    rng = random.Random(0)
    for _ in range(20):
        out = swap_word("Woman opens the Door.", rng)
        changed = _one_word_changed("Woman opens the Door.", out)
        assert changed is not None and out.endswith(".")
        assert changed[1][0].isupper() == changed[0][0].isupper()
    assert swap_word("Nothing to see here", rng) is None


def test_swap_groups_are_disjoint():
    words = [w for g in SWAP_GROUPS for w in g]
    assert len(words) == len(set(words))


def test_tokens_and_jaccard():
    assert tokens("The man opens a door.") == {"man", "opens", "door"}
    assert jaccard(tokens("a man opens the door"), tokens("the door opens")) == pytest.approx(2 / 3)
    assert jaccard(frozenset(), frozenset()) == 1.0


def test_errors(synthetic):
    records, _ = synthetic
    with pytest.raises(ValueError, match="irrelevant_fraction \\+ partial_fraction = 1.2"):
        PIRConfig(irrelevant_fraction=0.6, partial_fraction=0.6)
    with pytest.raises(ValueError, match="max_jaccard=2"):
        PIRConfig(max_jaccard=2)
    negatives = make_pir_samples(records, PIRConfig(partial_fraction=1.0, irrelevant_fraction=0.0), seed=0)
    with pytest.raises(ValueError, match="already 'partial'"):
        make_pir_samples(negatives, seed=0)
