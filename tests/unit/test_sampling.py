"""Temporal sampling against TRN-pytorch's formulas and mmaction2's SampleFrames; sharding;
spatial plans (multi-scale crop, test crops)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from fastvid.data.sampling import (SamplingSpec, dense_test_indices, dense_train_indices,
                                   sample_indices, shard_indices, tsn_test_indices,
                                   tsn_train_indices, tsn_val_indices)
from fastvid.data.transforms import (MULTISCALE_SCALES, SamplePlanner, multiscale_crop_box,
                                     random_resized_crop_box, short_side_size, eval_plans)

CASES = [(n, t) for n in (1, 3, 5, 8, 9, 16, 37, 100) for t in (3, 8)]


# -- TSN (TRN-pytorch dataset.py, new_length = 1, 1-based frame files) -------------------------
def _trn_train(n: int, t: int, rs: np.random.RandomState) -> np.ndarray:
    avg = n // t
    if avg > 0:
        return np.multiply(list(range(t)), avg) + rs.randint(avg, size=t) + 1
    if n > t:
        return np.sort(rs.randint(n, size=t)) + 1
    return np.zeros(t, dtype=int) + 1


@pytest.mark.parametrize("n,t", CASES)
def test_tsn_train_matches_trn_formula(n, t):
    for seed in range(3):
        expected = _trn_train(n, t, np.random.RandomState(seed))
        got = tsn_train_indices(n, t, np.random.RandomState(seed), start_index=1)
        np.testing.assert_array_equal(got, expected)
        assert got.min() >= 1 and got.max() <= max(n, 1)


@pytest.mark.parametrize("n,t", CASES)
def test_tsn_val_and_test_match_trn_formula(n, t):
    tick = n / float(t)
    mids = np.array([int(tick / 2.0 + tick * i) for i in range(t)]) + 1
    val_expected = mids if n > t else np.ones(t, dtype=int)
    np.testing.assert_array_equal(tsn_val_indices(n, t, start_index=1), val_expected)
    np.testing.assert_array_equal(tsn_test_indices(n, t, start_index=1), mids)


def test_tsn_multi_clip_spreads_inside_segments():
    n, t, k = 80, 4, 3
    clips = np.stack([tsn_test_indices(n, t, c, k) for c in range(k)])
    seg = n / t
    for i in range(t):
        col = clips[:, i]
        assert np.all(np.diff(col) > 0), "clips take distinct, increasing points of a segment"
        assert np.all((col >= i * seg) & (col < (i + 1) * seg)), "each point stays in its segment"
    with pytest.raises(ValueError):
        tsn_test_indices(n, t, 3, 3)


# -- dense clips against mmaction2's SampleFrames -----------------------------------------------
def _sample_frames_cls():
    if importlib.util.find_spec("mmaction") is None:
        pytest.skip("mmaction2 is not installed (pip install .[test])")
    mmcv = pytest.importorskip("mmcv")
    # mmaction/__init__ asserts mmcv < 2.2.0; mmcv-lite 2.2.0 has all SampleFrames needs.
    real_version = mmcv.__version__
    mmcv.__version__ = "2.1.0"
    try:
        from mmaction.datasets.transforms.loading import SampleFrames
    finally:
        mmcv.__version__ = real_version
    return SampleFrames


@pytest.mark.parametrize("n", [5, 20, 64, 65, 200])
@pytest.mark.parametrize("clips", [1, 3, 10])
def test_dense_test_matches_mmaction(n, clips):
    sf = _sample_frames_cls()(clip_len=8, frame_interval=8, num_clips=clips, test_mode=True)
    ref = sf.transform({"total_frames": n, "start_index": 0})["frame_inds"].reshape(clips, 8)
    np.testing.assert_array_equal(dense_test_indices(n, 8, 8, clips), ref)


@pytest.mark.parametrize("n", [3, 10, 40, 64, 65, 300])
@pytest.mark.parametrize("clips", [1, 2])
def test_dense_train_matches_mmaction(n, clips):
    cls = _sample_frames_cls()
    for seed in range(3):
        np.random.seed(seed)  # SampleFrames draws from numpy's global RandomState
        ref = cls(clip_len=8, frame_interval=8, num_clips=clips).transform(
            {"total_frames": n, "start_index": 1})["frame_inds"].reshape(clips, 8)
        got = dense_train_indices(n, 8, 8, np.random.RandomState(seed), clips, start_index=1)
        np.testing.assert_array_equal(got, ref)
        assert got.min() >= 1 and got.max() <= n  # past-the-end indices loop back


def test_sample_indices_dispatch_and_errors():
    tsn = SamplingSpec("tsn", num_segments=4)
    dense = SamplingSpec("dense", clip_len=4, frame_interval=2)
    assert sample_indices(tsn, 20, train=False).tolist() == tsn_val_indices(20, 4).tolist()
    assert len(sample_indices(dense, 20, train=False, clip_index=1, num_clips=2)) == 4
    with pytest.raises(ValueError, match="rng"):
        sample_indices(tsn, 20, train=True)
    with pytest.raises(ValueError, match="0 frames"):
        sample_indices(tsn, 0, train=False)


# -- sharding ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,shards", [(10, 1), (10, 3), (7, 4), (16, 4)])
def test_shards_are_disjoint_cover_and_equal(n, shards):
    for shuffle in (False, True):
        parts = [shard_indices(n, shards, s, shuffle=shuffle, seed=1, epoch=2) for s in range(shards)]
        assert len({len(p) for p in parts}) == 1, "every rank runs the same number of steps"
        flat = np.concatenate(parts)
        assert set(flat.tolist()) == set(range(n))
        pad = len(flat) - n
        assert 0 <= pad < shards  # only DistributedSampler-style padding repeats samples
        if pad == 0:
            assert len(set(flat.tolist())) == n
    assert shard_indices(10).tolist() == list(range(10))  # one shard: list order


def test_shuffle_depends_on_epoch_and_is_reproducible():
    a = shard_indices(50, shuffle=True, seed=0, epoch=0)
    assert not np.array_equal(a, shard_indices(50, shuffle=True, seed=0, epoch=1))
    np.testing.assert_array_equal(a, shard_indices(50, shuffle=True, seed=0, epoch=0))
    with pytest.raises(ValueError):
        shard_indices(10, 2, 2)


def test_planner_epochs_change_train_sampling():
    p = SamplePlanner(SamplingSpec("tsn", num_segments=8), True, 64, 72)
    e0 = [p.frame_indices(100, 0, i).tolist() for i in range(5)]
    e1 = [p.frame_indices(100, 1, i).tolist() for i in range(5)]
    assert e0 != e1
    assert e0 == [p.frame_indices(100, 0, i).tolist() for i in range(5)]


# -- spatial plans -------------------------------------------------------------------------------
def test_multiscale_crop_boxes():
    h, w, out = 100, 176, 64
    base = min(h, w)
    sizes = {int(base * s) for s in MULTISCALE_SCALES} | {out}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        x, y, cw, ch = multiscale_crop_box(h, w, out, rng)
        assert cw in sizes and ch in sizes
        assert 0 <= x and x + cw <= w and 0 <= y and y + ch <= h
        seen.add((x, y, cw, ch))
    assert len(seen) > 20  # scales x aspect pairs x 13 fixed offsets


def test_random_resized_crop_inside_frame():
    rng = np.random.default_rng(1)
    for _ in range(100):
        x, y, cw, ch = random_resized_crop_box(60, 90, rng)
        assert cw > 0 and ch > 0 and x + cw <= 90 and y + ch <= 60


@pytest.mark.parametrize("h,w", [(72, 96), (96, 72)])
def test_eval_crops(h, w):
    rh, rw = short_side_size(h, w, 64)
    assert min(rh, rw) == 64
    one = eval_plans(h, w, 64, 48, 1)
    assert len(one) == 1 and one[0].crop == ((rw - 48) // 2, (rh - 48) // 2, 48, 48)
    three = eval_plans(h, w, 64, 48, 3)
    long_axis = 0 if rw >= rh else 1
    starts = sorted(p.crop[long_axis] for p in three)
    assert starts == [0, (max(rh, rw) - 48) // 2, max(rh, rw) - 48]
    ten = eval_plans(h, w, 64, 48, 10)
    assert len(ten) == 10 and sum(p.flip for p in ten) == 5
    for p in one + three + ten:
        x, y, cw, ch = p.crop
        assert p.resize == (rh, rw) and x + cw <= rw and y + ch <= rh
    with pytest.raises(ValueError):
        eval_plans(h, w, 64, 48, 5)
