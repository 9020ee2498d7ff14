"""Data listed in a CSV or JSON Lines manifest instead of class folders: reading it, melify, splits, training and
evaluation."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, write_tone

from vitaudio import evaluate, melify
from vitaudio.config import TrainConfig
from vitaudio.data import MelClips, source_paths
from vitaudio.manifest import LABELS_CSV, ManifestError, read_manifest
from vitaudio.melify import cached_melify
from vitaudio.splits import make_split
from vitaudio.train import train


def write_flat_set(folder: Path, per_class: int, seconds: float = 2.0) -> list[tuple[str, str]]:
    """Noisy tones of three registers in ONE flat folder (no class folders); -> (file name, label) per clip."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    clips = []
    for label, freq in (("bass", 150.0), ("mid", 900.0), ("treble", 5000.0)):
        for _ in range(per_class):
            tone = 0.4 * np.sin(2 * np.pi * freq * rng.uniform(0.9, 1.1) * t) + 0.05 * rng.standard_normal(len(t))
            name = f"take{len(clips):03d}.wav"
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / name, tone, SR, subtype="PCM_16")
            clips.append((name, label))
    return clips


def test_bad_rows_are_reported_with_their_line_numbers_and_the_others_kept(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav", "d.wav"):
        write_tone(tmp_path / "clips" / name)
    manifest = tmp_path / "clips.csv"
    manifest.write_text("path,label,split\n"
                        "clips/a.wav,jazz,train\n"  # line 2: fine
                        "clips/missing.wav,jazz,train\n"  # 3: no such file
                        "clips/b.wav,,train\n"  # 4: empty label
                        "clips/c.wav,rock,holdout\n"  # 5: unknown split
                        "clips/a.wav,rock,val\n"  # 6: listed before
                        "clips/d.wav, rock ; live ,\n")  # 7: fine, two labels, no split
    read = read_manifest(manifest)
    assert [(row.line, row.key, row.labels, row.split) for row in read.rows] == [
        (2, "clips/a", ("jazz",), "train"), (7, "clips/d", ("rock", "live"), None)]
    problems = "\n".join(read.problems)
    for line, words in ((3, "does not exist"), (4, "has no label"), (5, "'holdout'"), (6, "listed already, on line 2")):
        assert f"clips.csv line {line}: " in problems and words in problems
    assert len(read.problems) == 4
    assert read.multi_label and read.classes == ["jazz", "live", "rock"]


def test_a_json_lines_manifest_may_give_labels_as_a_list_and_paths_absolute(tmp_path):
    write_tone(tmp_path / "elsewhere/x.wav")
    manifest = tmp_path / "lists/set.jsonl"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"path": str(tmp_path / "elsewhere/x.wav"), "label": ["dog", "bark"],
                                    "group": "walk1"}) + "\n\n")
    (row,) = read_manifest(manifest).rows
    assert row.labels == ("dog", "bark") and row.group == "walk1" and row.source.is_file()
    assert row.key.endswith("elsewhere/x") and not row.key.startswith("/")


def test_a_manifest_without_a_usable_row_is_refused_naming_the_file_and_the_fix(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nnothing.wav,jazz\n")
    with pytest.raises(ManifestError, match=r"m.csv has no usable row: .*line 2: nothing.wav does not exist"):
        read_manifest(manifest)
    manifest.write_text("file,class\na.wav,jazz\n")
    with pytest.raises(ManifestError, match="must name the columns path,label"):
        read_manifest(manifest)
    assert melify.main([str(manifest), str(tmp_path / "out")]) == 2


def test_melify_of_a_manifest_mirrors_paths_and_writes_the_labels_beside_the_images(tmp_path, capsys):
    write_tone(tmp_path / "audio/day1/take.wav", 220.0)
    write_tone(tmp_path / "audio/day2/take.wav", 3000.0)  # same file name, other folder: still two clips
    manifest = tmp_path / "labels_in.csv"
    manifest.write_text("path,label,group\naudio/day1/take.wav,low,d1\naudio/day2/take.wav,high;loud,d2\n"
                        "audio/day3/gone.wav,low,\n")
    assert melify.main([str(manifest), str(tmp_path / "mel")]) == 0
    assert "labels_in.csv line 4: audio/day3/gone.wav does not exist" in capsys.readouterr().err
    assert (tmp_path / "mel/audio/day1/take.png").is_file() and (tmp_path / "mel/audio/day2/take.png").is_file()
    assert (tmp_path / "mel" / LABELS_CSV).read_text() == ("path,label,group,split\n"
                                                         "audio/day1/take.png,low,d1,\n"
                                                         "audio/day2/take.png,high;loud,d2,\n")
    clips = MelClips(tmp_path / "mel")
    assert clips.classes == ["high", "loud", "low"] and clips.multi_label
    assert [target.tolist() for _, target in clips] == [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    assert source_paths(tmp_path / "mel") == {"audio/day1/take": "audio/day1/take.wav",
                                              "audio/day2/take": "audio/day2/take.wav"}
    assert cached_melify(manifest, progress=False) == tmp_path / "mel"  # one next to the manifest is reused


def test_training_from_a_manifest_uses_its_split_column_as_it_is(tmp_path):
    clips = write_flat_set(tmp_path / "audio", per_class=6)
    splits = ["train"] * 4 + ["val", "test"]
    manifest = tmp_path / "set.csv"
    manifest.write_text("path,label,split\n" + "".join(
        f"audio/{name},{label},{splits[i % 6]}\n" for i, (name, label) in enumerate(clips)))
    run_dir = train(TrainConfig(root=str(manifest), epochs=1, members=1, segment_seconds=1.0,
                                out=str(tmp_path / "run")))
    split = json.loads((run_dir / "split.json").read_text())
    assert split["val"] == [f"audio/{name}" for i, (name, _) in enumerate(clips) if i % 6 == 4]
    assert len(split["train"]) == 12 and len(split["test"]) == 3
    config = json.loads((run_dir / "config.json").read_text())
    assert config["classes"] == ["bass", "mid", "treble"]
    report = json.loads((run_dir / "test_report.json").read_text())
    assert report["n_clips"] == 3

    scored = evaluate.evaluate_checkpoint(run_dir / "best.pt", manifest, out=tmp_path / "eval")
    assert scored["n_clips"] == 18  # a manifest is scored like class folders, every clip
    assert (tmp_path / "eval/test_predictions.csv").read_text().count("audio/take") == 18


def test_a_manifests_groups_keep_each_source_in_one_split(tmp_path):
    clips = write_flat_set(tmp_path / "audio", per_class=10, seconds=1.0)
    manifest = tmp_path / "set.csv"
    manifest.write_text("path,label,group\n" + "".join(
        f"audio/{name},{label},session{i // 2}\n" for i, (name, label) in enumerate(clips)))
    mel_root = cached_melify(manifest)
    assert mel_root.name.startswith("set.csv.mel-")
    labels = MelClips(mel_root).labels
    split = make_split([r.key for r in labels.rows], [0] * len(labels.rows), labels.groups, seed=3)
    split_of = {key: name for name, keys in split.items() for key in keys}
    for i in range(0, len(clips), 2):
        assert split_of[f"audio/{clips[i][0][:-4]}"] == split_of[f"audio/{clips[i + 1][0][:-4]}"]


def test_a_multi_label_split_keeps_the_rarest_label_in_every_split():
    keys = [f"clip{i:02d}" for i in range(40)]
    # label 0 on every clip, label 1 on every fourth: counted by its rarest label, label 1 is stratified too
    labels = [(0, 1) if i % 4 == 0 else (0,) for i in range(40)]
    split = make_split(keys, labels, seed=0)
    rare = {f"clip{i:02d}" for i in range(0, 40, 4)}
    assert [len(rare & set(split[name])) for name in ("train", "val", "test")] == [8, 1, 1]
