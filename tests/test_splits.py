import json

import pytest

from vitaudio.splits import SPLITS, check_split, clip_key, make_split, read_groups, read_split_file, write_split_file


def toy_clips(n_classes=3, per_class=20):
    keys = [f"c{c}/c{c}.{i:05d}" for c in range(n_classes) for i in range(per_class)]
    labels = [c for c in range(n_classes) for _ in range(per_class)]
    return keys, labels


def test_clip_key_strips_extension_and_matches_audio_and_png():
    assert clip_key("blues/blues.00029.wav") == clip_key("blues/blues.00029.png") == "blues/blues.00029"


def test_split_is_disjoint_complete_and_stratified():
    keys, labels = toy_clips()
    split = make_split(keys, labels, seed=0)
    assert sorted(sum(split.values(), [])) == sorted(keys)
    for name, share in zip(SPLITS, (16, 2, 2)):
        for c in range(3):
            assert sum(k.startswith(f"c{c}/") for k in split[name]) == share


def test_split_is_seeded():
    keys, labels = toy_clips()
    assert make_split(keys, labels, seed=1) == make_split(keys, labels, seed=1)
    assert make_split(keys, labels, seed=1) != make_split(keys, labels, seed=2)


def test_grouped_split_never_puts_a_group_in_two_splits():
    keys, labels = toy_clips(per_class=30)
    groups = {k: f"{k.split('/')[0]}-work{int(k[-5:]) // 3}" for k in keys}  # 3 clips per work
    split = make_split(keys, labels, groups, seed=0)
    split_of_group = {}
    for name in SPLITS:
        for key in split[name]:
            assert split_of_group.setdefault(groups[key], name) == name
    assert all(len(split[name]) > 0 for name in SPLITS)
    assert 0.7 < len(split["train"]) / len(keys) < 0.9


def test_groups_must_cover_every_clip():
    keys, labels = toy_clips()
    with pytest.raises(ValueError, match="no group"):
        make_split(keys, labels, {keys[0]: "g"})


def test_read_groups_needs_clip_and_group_columns(tmp_path):
    (tmp_path / "meta.csv").write_text("clip,class,group\nblues/blues.00001.wav,blues,w1\n")
    assert read_groups(tmp_path / "meta.csv") == {"blues/blues.00001": "w1"}
    (tmp_path / "other.csv").write_text("clip,class\nblues/blues.00001.wav,blues\n")
    assert read_groups(tmp_path / "other.csv") is None


def test_split_file_round_trip_json_and_csv(tmp_path):
    keys, labels = toy_clips()
    split = make_split(keys, labels)
    write_split_file(tmp_path / "split.json", split, {k: f"{k}.wav" for k in keys})
    assert json.loads((tmp_path / "split.json").read_text())["val"][0].endswith(".wav")
    assert read_split_file(tmp_path / "split.json") == split
    rows = ["clip,split"] + [f"{k}.au,{name}" for name in SPLITS for k in split[name]]
    (tmp_path / "split.csv").write_text("\n".join(rows))
    assert read_split_file(tmp_path / "split.csv") == split


def test_check_split_rejects_overlap_and_unknown_clips():
    keys, _ = toy_clips()
    with pytest.raises(ValueError, match="both train and test"):
        check_split({"train": keys[:2], "val": keys[2:3], "test": keys[:1]}, set(keys), "f")
    with pytest.raises(ValueError, match="not in the data root"):
        check_split({"train": ["x/y"], "val": keys[:1], "test": []}, set(keys), "f")


def test_a_class_of_few_large_groups_reaches_every_split():
    keys = [f"chamber/c.{i:05d}" for i in range(60)]
    groups = {k: f"work{int(k[-5:]) // 10}" for k in keys}  # 6 works x 10 clips
    split = make_split(keys, [0] * 60, groups, seed=0)
    assert [len(split[name]) for name in SPLITS] == [40, 10, 10]
