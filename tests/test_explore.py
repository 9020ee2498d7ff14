"""What the notebooks read of manifest data sets and of taggers' runs: labels from the manifest, not folder names;
a tagger's report, mistakes and errors per class."""
import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import write_separable_set
from test_multilabel import write_mixtures

from vitaudio import explore
from vitaudio.config import TrainConfig
from vitaudio.features import MelConfig
from vitaudio.report import write_tagging_predictions
from vitaudio.train import train

CLASSES = ["high", "low", "mid"]


def manifest_labels(manifest: Path) -> dict[str, list[str]]:
    """path -> labels of a CSV manifest, read here without vitaudio."""
    with open(manifest, newline="") as file:
        return {row["path"]: row["label"].split(";") for row in csv.DictReader(file)}


@pytest.fixture(scope="module")
def mixtures(tmp_path_factory) -> Path:
    """A manifest of 12 one- or two-label tone mixtures, one undecodable file and one row of a missing file."""
    manifest = write_mixtures(tmp_path_factory.mktemp("mixtures"), n_clips=12)
    (manifest.parent / "audio/broken.wav").write_bytes(b"RIFF, but not really a WAV file")
    with open(manifest, "a") as file:
        file.write("audio/broken.wav,low,g99\naudio/gone.wav,mid,g99\n")
    return manifest


@pytest.fixture(scope="module")
def manifest_run(tmp_path_factory) -> Path:
    """A one-epoch classifier trained on a manifest whose paths all start with the folder "audio/"."""
    base = tmp_path_factory.mktemp("manifest_run")
    write_separable_set(base / "audio", per_class=6, seconds=1.0)
    rows = [f"{p.relative_to(base).as_posix()},{p.parent.name}" for p in sorted((base / "audio").rglob("*.wav"))]
    (base / "set.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return train(TrainConfig(root=str(base / "set.csv"), model="mini", epochs=1, members=1, segment_seconds=1.0,
                             out=str(base / "run")))


def test_a_manifests_clips_count_under_each_of_their_labels_and_once_in_all(mixtures):
    data = explore.load_dataset(mixtures)
    labels = manifest_labels(mixtures)
    converted = {path: names for path, names in labels.items() if path not in ("audio/broken.wav", "audio/gone.wav")}
    assert data.classes == CLASSES and data.multi_label
    assert data.class_counts() == dict(sorted(Counter(n for names in converted.values() for n in names).items()))
    assert {name: len(seconds) for name, seconds in data.durations().items()} == data.class_counts()
    summary = {row[0]: row[1:3] for row in data.summary().rows}
    assert summary["all"] == [12, 1] and summary["low"][1] == 1  # each clip once; the broken file is a low one
    assert explore.load_dataset(data.mel_root).class_counts() == data.class_counts()  # melify output works too


def test_a_manifests_failures_are_its_broken_files_and_the_rows_melify_could_not_use(mixtures):
    failures = explore.load_dataset(mixtures).failures()
    assert [row[0] for row in failures.rows] == ["audio/broken.wav", "set.csv line 15"]
    assert "audio/gone.wav does not exist" in failures.rows[1][2]


def test_examples_of_a_manifest_show_a_clip_of_the_label_alone_where_there_is_one(mixtures):
    data = explore.load_dataset(mixtures)
    mels, titles = data.examples(per_class=1)
    labels = manifest_labels(mixtures)
    alone = {names[0] for names in labels.values() if len(names) == 1}
    assert len(mels) == 3 and all(mel.shape[0] == data.mel_config.n_mels for mel in mels)
    for name, title in zip(CLASSES, titles):
        assert title.startswith(f"{name}: c") and ("(with " in title) == (name not in alone)


def test_a_manifest_runs_clips_take_their_class_from_its_labels_not_their_folder(manifest_run):
    run = explore.load_run(manifest_run)
    assert not run.multi_label and run.classes == ["bass", "mid", "treble"]
    assert all(run.class_of(clip) == Path(clip).parent.name for clip in run.clips())  # not "audio"
    assert explore.class_of(run.clips()[0]) == "audio"
    assert {run.class_of(p.clip) for p in run.examples(3)} == {"bass", "mid", "treble"}
    assert run.mistakes() == run.misclassified()
    assert run.mel(run.clips()[0]).shape[0] == run.mel_config.n_mels


def test_without_its_mel_root_a_manifest_run_knows_the_labels_of_its_test_clips_only(manifest_run, tmp_path):
    moved = shutil.copytree(manifest_run, tmp_path / "run", ignore=shutil.ignore_patterns("*.pt"))
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "mel_root": str(tmp_path / "gone")}))
    run = explore.load_run(moved)
    assert all(run.class_of(p.clip) == p.true for p in run.predictions)
    with pytest.raises(KeyError, match="labels.csv"):
        run.labels_of(run.split["train"][0])


def test_a_tagger_run_reads_its_scores_report_and_the_manifests_first_labels(tiny_tagger):
    run = explore.load_run(tiny_tagger)
    assert run.multi_label and run.classes == CLASSES
    assert len(run.predictions) == run.report["n_clips"]
    assert all(isinstance(p, explore.TagPrediction) and list(p.scores) == CLASSES for p in run.predictions)
    labels = manifest_labels(tiny_tagger.parent / "set.csv")
    assert all(run.class_of(clip) == labels[clip][0] for clip in run.clips(("val", "test")))
    table = run.report_table()
    assert table.header[-1] == "threshold" and [row[0] for row in table.rows[3:]] == \
        ["mAP", "macro F1", "micro F1", "exact match"]
    assert run.plot_test_figure().axes[0].get_xlabel() == "average precision"
    assert all(not p.correct for p in run.mistakes())
    assert run.mel(run.mistakes()[0].clip if run.mistakes() else run.clips()[0]).shape[0] == run.mel_config.n_mels


# Runs made here by hand: the tagger's logic, without training.

def tag(clip: str, true: str, predicted: str, **scores: float) -> explore.TagPrediction:
    return explore.TagPrediction(clip, tuple(true.split(";")) if true else (),
                                 tuple(predicted.split(";")) if predicted else (), scores)


def tagger_run(predictions: list[explore.TagPrediction], thresholds: dict[str, float] | None = None) -> explore.Run:
    report = {"task": "multi_label", "map": 0.6, "macro_f1": 0.5, "micro_f1": 0.55, "exact_match": None,
              "n_clips": len(predictions), "classes": ["a", "b", "c"],
              "thresholds": thresholds or {"a": 0.5, "b": 0.5, "c": 0.5},
              "per_class": {name: {"ap": None if name == "c" else 0.6, "f1": 0.5, "precision": 0.5, "recall": 0.5,
                                   "support": 1, "threshold": 0.5} for name in "abc"}}
    return explore.Run(path=Path("run"), config={"classes": ["a", "b", "c"], "task": "multi_label",
                                                 "mel": MelConfig().to_dict()},
                       metrics=[], report=report, predictions=predictions, split={}, mel_root=None)


def test_a_tagged_clip_names_its_missed_and_false_tags_with_their_scores():
    wrong = tag("x/one.wav", "a;b", "b;c", a=0.31, b=0.9, c=0.72)
    assert wrong.missed == ("a",) and wrong.false_tags == ("c",) and not wrong.correct
    assert wrong.caption() == "one.wav: true a;b\nmissed a 0.31; false c 0.72"
    right = tag("x/two.wav", "b", "b", a=0.1, b=0.8, c=0.2)
    assert right.correct and right.caption() == "two.wav: true b\ntagged b 0.80"


def test_a_taggers_mistakes_put_the_most_wrong_tags_first_then_the_farthest_from_their_thresholds():
    run = tagger_run([tag("right.wav", "a", "a", a=0.9, b=0.1, c=0.1),
                      tag("near.wav", "a", "", a=0.45, b=0.1, c=0.1),
                      tag("far.wav", "b", "", a=0.1, b=0.05, c=0.1),
                      tag("two.wav", "a", "b", a=0.49, b=0.51, c=0.1)])
    assert [p.clip for p in run.mistakes()] == ["two.wav", "far.wav", "near.wav"]
    assert run.mistakes_summary() == "3 of 4 test clips with wrong tags: 3 missed, 1 false tags"


def test_a_taggers_error_table_counts_missed_and_false_tags_per_class_and_what_was_tagged_instead():
    run = tagger_run([tag("1.wav", "a", "b", a=0.2, b=0.7, c=0.1),
                      tag("2.wav", "a", "b;c", a=0.2, b=0.7, c=0.6),
                      tag("3.wav", "a;c", "a", a=0.8, b=0.1, c=0.3),
                      tag("4.wav", "b", "b", a=0.1, b=0.9, c=0.1)])
    assert run.error_table().rows == [["a", 3, 2, 0, "b (2)"], ["b", 1, 0, 2, ""], ["c", 1, 1, 1, ""]]
    assert "no wrong tags" in str(tagger_run([tag("4.wav", "b", "b", a=0.1, b=0.9, c=0.1)]).error_table())


def test_a_taggers_report_table_shows_scores_it_could_not_measure_as_not_available():
    table = tagger_run([]).report_table()
    assert table.rows[2][:2] == ["c", None] and "| c | n/a |" in table._repr_markdown_()
    assert "| exact match |  | n/a |" in table._repr_markdown_()


def test_a_taggers_predictions_file_reads_back_as_labels_and_every_class_score(tmp_path):
    import torch

    write_tagging_predictions(tmp_path / "test_predictions.csv", ["a/1.wav", "a/2.wav"],
                              torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.3, 0.2]]),
                              torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), ["a", "b", "c"], [0.5, 0.5, 0.5])
    first, second = explore.read_predictions(tmp_path / "test_predictions.csv", multi_label=True)
    assert (first.true, first.predicted, first.scores) == (("a", "b"), ("a", "c"), {"a": 0.9, "b": 0.2, "c": 0.6})
    assert (second.true, second.predicted) == (("c",), ())
