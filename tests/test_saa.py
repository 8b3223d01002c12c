"""SAA sampling: density, placement and budget properties without video, then `saa_sample` and the
`tempo-fast saa` picture on clips made with ffmpeg (skipped when ffmpeg or torchcodec is absent).

References are independent of the code under test: placement is checked by integrating the
density numerically on a fine grid (numpy), the density against a direct numpy construction
from the scores, and uniform sampling against its closed form.
"""
import math
import shutil

import numpy as np
import pytest
import torch

from tempo_fast.video.saa import (Density, choose_budget, saa_density, saa_slot_times, uniform_times)

# (duration, probe rate, scores seed) for property tests: short, awkward and long videos.
VIDEOS = [(1.0, 4.0, 0), (7.3, 4.0, 1), (33.0, 2.0, 2), (150.0, 4.0, 3)]
ALPHAS = [0.0, 0.3, 0.5, 0.9, 1.0]


def probe_scores(duration, rate, seed):
    """Probe times k/rate inside the video and bursty non-negative scores (s_0 = 0)."""
    times = np.arange(0.0, duration, 1.0 / rate)
    rng = np.random.default_rng(seed)
    scores = rng.random(len(times)) ** 4 * (rng.random(len(times)) < 0.3)
    scores[0] = 0.0
    return torch.tensor(scores), torch.tensor(times)


def numeric_cdf(density_fn, duration, points=200_001):
    """CDF of an arbitrary density on [0, duration] by the trapezoid rule (numpy)."""
    grid = np.linspace(0.0, duration, points)
    values = density_fn(grid)
    mass = np.concatenate([[0.0], np.cumsum((values[1:] + values[:-1]) / 2 * np.diff(grid))])
    return grid, mass / mass[-1]


def density_numpy(scores, times, duration, alpha):
    """SAA density without smoothing, written directly: piecewise constant on probe intervals."""
    s, t = np.asarray(scores, float), np.asarray(times, float)

    def fn(x):
        i = np.clip(np.searchsorted(t, x, side="left"), 1, len(t) - 1)
        x_rate = s[i]                       # [t_{i-1}, t_i] has the change s_i; ends extend
        widths = np.diff(np.concatenate([[0.0], t, [duration]]))
        rate = np.concatenate([[s[1]], s[1:], [s[-1]]])
        total = np.sum(rate * widths)
        if total == 0:                      # no change anywhere: uniform
            return np.full_like(x, 1.0 / duration)
        return (1 - alpha) / duration + alpha * x_rate / total
    return fn


def test_uniform_times_closed_form():
    times = uniform_times(7.5, 6)
    assert times.dtype == torch.float64
    assert times.tolist() == pytest.approx([0.625, 1.875, 3.125, 4.375, 5.625, 6.875], abs=1e-12)


@pytest.mark.parametrize("duration,rate,seed", VIDEOS)
def test_alpha_zero_is_exactly_uniform(duration, rate, seed):
    scores, times = probe_scores(duration, rate, seed)
    for n in (2, 8, 34):
        placed = saa_slot_times(saa_density(scores, times, duration, alpha=0.0), n)
        assert torch.equal(placed, uniform_times(duration, n))


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("duration,rate,seed", VIDEOS)
def test_density_integrates_to_one_and_has_floor(duration, rate, seed, alpha):
    scores, times = probe_scores(duration, rate, seed)
    d = saa_density(scores, times, duration, alpha)
    widths = torch.diff(d.edges)
    assert float(d.edges[0]) == 0.0 and float(d.edges[-1]) == duration
    assert (widths > 0).all()
    assert float((d.values * widths).sum()) == pytest.approx(1.0, rel=1e-12)
    assert float(d.values.min()) >= (1 - alpha) / duration * (1 - 1e-12)


@pytest.mark.parametrize("alpha", [0.25, 0.7, 1.0])
def test_density_matches_direct_construction(alpha):
    duration = 9.6
    scores, times = probe_scores(duration, 4.0, 5)
    d = saa_density(scores, times, duration, alpha, smooth_seconds=0.0)
    expected = density_numpy(scores, times, duration, alpha)
    mids = ((d.edges[1:] + d.edges[:-1]) / 2).numpy()
    np.testing.assert_allclose(d.values.numpy(), expected(mids), rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("duration,rate,seed", VIDEOS)
def test_frames_sit_at_density_quantiles(duration, rate, seed, alpha):
    scores, times = probe_scores(duration, rate, seed)
    d = saa_density(scores, times, duration, alpha, smooth_seconds=0.0)
    n = 24
    placed = saa_slot_times(d, n).numpy()
    grid, cdf = numeric_cdf(density_numpy(scores, times, duration, alpha), duration)
    at = np.interp(placed, grid, cdf)
    np.testing.assert_allclose(at, (np.arange(n) + 0.5) / n, atol=2e-3)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("duration,rate,seed", VIDEOS)
def test_coverage_bound(duration, rate, seed, alpha):
    scores, times = probe_scores(duration, rate, seed)
    for smooth in (0.0, 0.5, 2.0):
        d = saa_density(scores, times, duration, alpha, smooth_seconds=smooth)
        for n in (4, 16, 64):
            placed = saa_slot_times(d, n)
            bound = duration / ((1 - alpha) * n) * (1 + 1e-9)
            gaps = torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), placed,
                                         torch.full((1,), duration, dtype=torch.float64)]))
            gaps[0] *= 2   # the first frame is half a frame interval (in mass) from the start
            gaps[-1] *= 2
            assert float(gaps.max()) <= bound
            centres = placed.view(-1, 2).mean(1)
            if len(centres) > 1:
                assert float(torch.diff(centres).max()) <= 2 * bound


def test_busy_stretch_gets_the_frames():
    duration, n = 20.0, 32
    times = torch.arange(0.0, duration, 0.25, dtype=torch.float64)
    # s_i is the change over [t_{i-1}, t_i]: changes from 15 s on (the last quarter)
    scores = torch.where(times > 15.0, 0.1, 0.0).to(torch.float64)
    for alpha, least in ((0.5, 0.5), (0.9, 0.8)):
        placed = saa_slot_times(saa_density(scores, times, duration, alpha, smooth_seconds=0.0), n)
        busy = int((placed >= 15.0).sum())
        # expected mass of [15, 20]: (1 - alpha) * 1/4 + alpha
        assert busy >= least * n
        assert busy == round(n * ((1 - alpha) / 4 + alpha))


def test_sorted_deterministic_and_pairs_close():
    duration = 33.0
    scores, times = probe_scores(duration, 4.0, 7)
    d = saa_density(scores, times, duration, 0.8)
    a, b = saa_slot_times(d, 40), saa_slot_times(d, 40)
    assert torch.equal(a, b)
    assert (torch.diff(a) >= 0).all()
    pairs = a.view(-1, 2)
    within = pairs[:, 1] - pairs[:, 0]
    between = pairs[1:, 0] - pairs[:-1, 1]
    # the two frames of a slot are half as far apart (in mass) as the slot centres
    assert float(within.max()) <= duration / (0.2 * 40) * (1 + 1e-9)
    assert torch.isclose(within.sum() + between.sum(), pairs[-1, 1] - pairs[0, 0])


def test_pair_gap_and_min_gap():
    duration = 10.0
    scores, times = probe_scores(duration, 4.0, 8)
    d = saa_density(scores, times, duration, 0.9, smooth_seconds=0.0)
    plain = saa_slot_times(d, 12).view(-1, 2)
    fixed = saa_slot_times(d, 12, pair_gap=0.1).view(-1, 2)
    np.testing.assert_allclose((fixed[:, 1] - fixed[:, 0]).numpy(), 0.1, atol=1e-12)
    quantiles = d.quantile((torch.arange(6, dtype=torch.float64) + 0.5) / 6)
    np.testing.assert_allclose(fixed.mean(1).numpy(), quantiles.numpy(), atol=1e-12)
    small = float((plain[:, 1] - plain[:, 0]).min()) * 1.5
    spread = saa_slot_times(d, 12, min_gap=small).view(-1, 2)
    assert float((spread[:, 1] - spread[:, 0]).min()) >= small - 1e-12
    three = saa_slot_times(d, 12, temporal_patch=3, min_gap=0.05).view(-1, 3)
    assert float(torch.diff(three, dim=1).min()) >= 0.05 - 1e-12


@pytest.mark.parametrize("kwargs", [dict(min_gap=0.4), dict(pair_gap=3.0), dict(min_gap=5.0, temporal_patch=4)])
def test_spreading_never_overlaps_slots(kwargs):
    """A gap wider than the slots leave room for: slots stay apart and in order, within the video."""
    duration = 10.0
    scores, times = probe_scores(duration, 4.0, 8)
    d = saa_density(scores, times, duration, 0.9, smooth_seconds=0.0)
    tp = kwargs.get("temporal_patch", 2)
    placed = saa_slot_times(d, 12, **kwargs)
    slots = placed.view(-1, tp)
    assert (torch.diff(placed) >= 0).all() and float(placed[0]) >= 0 and float(placed[-1]) <= duration
    assert (slots[1:, 0] >= slots[:-1, -1]).all()
    # each slot keeps its centre: the quantile (k + 0.5) / K for pair_gap, else its frames' mean
    if "pair_gap" in kwargs:
        centres = d.quantile((torch.arange(len(slots), dtype=torch.float64) + 0.5) / len(slots))
    else:
        centres = saa_slot_times(d, 12, temporal_patch=tp).view(-1, tp).mean(1)
    np.testing.assert_allclose(slots.mean(1).numpy(), centres.numpy(), atol=1e-9)
    assert float((slots[:, -1] - slots[:, 0]).min()) > 0


def test_static_video_is_uniform_and_single_probe():
    zeros = torch.zeros(20, dtype=torch.float64)
    times = torch.arange(20, dtype=torch.float64) / 4
    for density in (saa_density(zeros, times, 5.0, 1.0), saa_density([0.3], [0.0], 5.0, 0.9)):
        assert torch.equal(saa_slot_times(density, 10), uniform_times(5.0, 10))


def test_density_quantile_skips_empty_bins():
    d = Density(torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64),
                torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64))
    q = d.quantile(torch.tensor([0.25, 0.49, 0.51, 0.75], dtype=torch.float64))
    assert q.tolist() == pytest.approx([0.5, 0.98, 2.02, 2.5])
    assert saa_slot_times(d, 4).tolist() == pytest.approx([0.25, 0.75, 2.25, 2.75])


@pytest.mark.parametrize("call,match", [
    (lambda d: saa_slot_times(d, 7), "multiple of temporal_patch=2"),
    (lambda d: saa_slot_times(d, 0), "positive int"),
    (lambda d: saa_slot_times(d, 4, pair_gap=-1.0), "pair_gap"),
    (lambda d: saa_density([0.0, 1.0], [0.0], 2.0), "same length"),
    (lambda d: saa_density([0.0, 1.0], [1.0, 0.5], 2.0), "strictly increasing"),
    (lambda d: saa_density([0.0, -1.0], [0.0, 0.5], 2.0), "finite and >= 0"),
    (lambda d: saa_density([0.0, 1.0], [0.0, 0.5], 2.0, alpha=1.5), "alpha must be a number in"),
    (lambda d: saa_density([0.0, 1.0], [0.0, 0.5], 0.0), "duration"),
    (lambda d: saa_density([], [], 2.0), "at least one probe frame"),
    (lambda d: uniform_times(5.0, 0), "num_frames"),
])
def test_bad_arguments(call, match):
    d = saa_density([0.0, 1.0], [0.0, 0.5], 2.0)
    with pytest.raises(ValueError, match=match):
        call(d)


# ---- budget ---------------------------------------------------------------------------------

BUDGETS = [dict(max_visual_tokens=16384), dict(max_visual_tokens=3000, min_frames=4, max_frames=64),
           dict(max_visual_tokens=8192, aspect=4 / 3, min_pixels=64 * 28 * 28),
           dict(max_visual_tokens=1000, min_frames=2, max_frames=512, aspect=0.5, min_pixels=1)]
VARIATIONS = [0.0, 0.001, 0.004, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.5, 1.0]


@pytest.mark.parametrize("kwargs", BUDGETS)
def test_budget_within_limits_and_monotone(kwargs):
    results = [choose_budget(v, **kwargs) for v in VARIATIONS]
    for r in results:
        tokens = r.num_frames // 2 * (r.height // 28) * (r.width // 28)
        assert r.tokens == tokens <= kwargs["max_visual_tokens"]
        assert r.height % 28 == 0 and r.width % 28 == 0 and r.height > 0 and r.width > 0
        assert r.num_frames % 2 == 0
        assert kwargs.get("min_frames", 8) <= r.num_frames <= kwargs.get("max_frames", 256)
        assert r.height * r.width <= kwargs.get("max_pixels", 768 * 28 * 28)
    for a, b in zip(results, results[1:]):
        assert b.num_frames >= a.num_frames and b.height <= a.height and b.width <= a.width


def test_budget_static_gets_fewer_sharper_frames():
    static = choose_budget(0.002, max_visual_tokens=16384)
    busy = choose_budget(0.15, max_visual_tokens=16384)
    assert static.num_frames < busy.num_frames
    assert static.height * static.width > busy.height * busy.width
    assert abs(static.width / static.height - 16 / 9) < 0.1


def test_budget_errors():
    with pytest.raises(ValueError, match="cannot hold min_frames=8"):
        choose_budget(0.1, max_visual_tokens=100)
    with pytest.raises(ValueError, match="variation must be"):
        choose_budget(-1.0, max_visual_tokens=16384)
    with pytest.raises(ValueError, match="multiples of temporal_patch"):
        choose_budget(0.1, max_visual_tokens=16384, min_frames=3)
    with pytest.raises(ValueError, match="max_visual_tokens must be a positive int"):
        choose_budget(0.1, max_visual_tokens=0)


# ---- on video ---------------------------------------------------------------------------------

def _have_video_tools():
    if shutil.which("ffmpeg") is None:
        return False
    try:
        import torchcodec  # noqa: F401
    except ImportError:
        return False
    return True


needs_video = pytest.mark.skipif(not _have_video_tools(), reason="needs ffmpeg and torchcodec")


@pytest.fixture(scope="module")
def still_then_busy(tmp_path_factory):
    from tempo_fast.video.clips import make_still_then_busy
    return str(make_still_then_busy(tmp_path_factory.mktemp("saa") / "still_busy.mp4", 6, 6,
                                    width=96, height=64, fps=10))


@needs_video
def test_saa_sample_moves_frames_to_the_busy_part(still_then_busy):
    from tempo_fast.video.saa import saa_sample
    frames = saa_sample(still_then_busy, 16, alpha=0.8)
    assert frames.data.shape == (16, 3, 64, 96) and frames.data.dtype == torch.uint8
    assert frames.pts.dtype == torch.float64 and (torch.diff(frames.pts) >= 0).all()
    busy = int((frames.pts >= 6.0).sum())
    still_far = int((frames.pts < 4.0).sum())
    assert busy >= 11                        # uniform sampling puts 8 there
    assert still_far <= 16 * 4 / 12 * 0.2 + 1.5   # at most its (1 - alpha) share, plus rounding
    # the still frames are the grey colour, the busy ones are not
    grey = frames.data.float().std(dim=(1, 2, 3)) < 2
    assert bool(grey[frames.pts < 5.5].all()) and not bool(grey[frames.pts > 6.5].any())
    again = saa_sample(still_then_busy, 16, alpha=0.8)
    assert torch.equal(again.pts, frames.pts) and torch.equal(again.data, frames.data)


@needs_video
def test_saa_sample_alpha_zero_is_uniform_decode(still_then_busy):
    from tempo_fast.video.decode import decode
    from tempo_fast.video.saa import saa_sample
    frames = saa_sample(still_then_busy, 8, alpha=0.0, size=(32, 48))
    expected = uniform_times(frames.duration, 8)
    assert torch.equal(frames.pts, expected)
    plain = decode(still_then_busy, timestamps=expected.tolist(), size=(32, 48))
    assert torch.equal(frames.data, plain.data)


@needs_video
def test_saa_sample_pairs_are_distinct_frames(still_then_busy):
    from tempo_fast.video.saa import saa_plan
    plan = saa_plan(still_then_busy, 64, alpha=1.0)
    pairs = plan.times.view(-1, 2)
    assert float((pairs[:, 1] - pairs[:, 0]).min()) >= 1 / plan.fps - 1e-9
    assert plan.probe_times.shape == plan.scores.shape and plan.variation > 0


@needs_video
def test_saa_sample_source_slower_than_probe(tmp_path):
    """A 2 fps source probed at 4 fps repeats each frame: one score per distinct frame."""
    from tempo_fast.video.clips import make_clip
    from tempo_fast.video.saa import saa_plan, saa_sample
    path = str(make_clip(tmp_path / "slow.mp4", fps=2, seconds=5, width=32, height=32))
    plan = saa_plan(path, 4, alpha=0.5)
    assert (torch.diff(plan.probe_times) > 0).all() and len(plan.probe_times) == 10
    frames = saa_sample(path, 4, alpha=0.5)
    assert frames.data.shape[0] == 4 and (torch.diff(frames.pts) >= 0).all()


@needs_video
def test_saa_sample_bad_frame_count(still_then_busy):
    from tempo_fast.video.saa import saa_sample
    with pytest.raises(ValueError, match="multiple of temporal_patch=2"):
        saa_sample(still_then_busy, 9)


@needs_video
def test_saa_command_writes_png(still_then_busy, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from tempo_fast.cli import main
    out = tmp_path / "pic" / "saa.png"
    assert main(["saa", still_then_busy, "--out", str(out), "--num-frames", "12", "--alpha", "0.7"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "wrote" in capsys.readouterr().out
