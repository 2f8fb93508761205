"""synth_dataset's settings: a frozen SynthSpec, or its fields as keywords (the same dataset)."""
from __future__ import annotations

import pytest

from fastvid.data.synth import SynthSpec, synth_dataset
from fastvid.errors import FastvidError


def test_a_spec_and_its_fields_as_keywords_write_the_same_dataset(tmp_path):
    spec = SynthSpec(classes=2, train=2, val=1, frames=4, size=(32, 32), seed=3)
    a = synth_dataset(tmp_path / "a", spec)
    b = synth_dataset(tmp_path / "b", classes=2, train=2, val=1, frames=4, size=(32, 32), seed=3)
    c = synth_dataset(tmp_path / "c", SynthSpec(classes=2, train=2, val=1, frames=4, size=(32, 32)),
                      seed=3)  # a field given as a keyword replaces the spec's
    for other in (b, c):
        assert [v["num_frames"] for v in other["videos"]] == [v["num_frames"] for v in a["videos"]]
        assert [v["label"] for v in other["videos"]] == [v["label"] for v in a["videos"]]
    for rel in ("20bn-jester-v1/00001/00001.jpg", "labels/train.csv"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_an_impossible_spec_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(FastvidError, match="even frame size"):
        synth_dataset(tmp_path / "x", SynthSpec(kind="video", size=(33, 32)))
    with pytest.raises(FastvidError, match="class_ids must be distinct"):
        SynthSpec(class_ids=(1, 1)).check()
    with pytest.raises(TypeError):
        synth_dataset(tmp_path / "x", clases=3)
    assert not (tmp_path / "x").exists()
