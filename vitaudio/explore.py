"""What the notebooks read: a data set's melify output and a training run's directory, as plain Python objects.

`load_dataset(root)` -> DataSet (class balance, clip durations, example mels, melify failures);
`load_run(run_dir)` -> Run (curves, test report, predictions, the mels of test clips, the trained classifier).
Labels come from the class folders, or from the manifest a data set was listed in (`vitaudio.manifest`), where a
clip may have several. A run is a classifier's or a tagger's (`Run.multi_label`); the methods the notebooks call
return what fits either. Tables come back as `Table`, which a notebook renders as Markdown and `print` shows as
aligned text.
"""
from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .data import MULTI_LABEL, read_labels
from .features import MelConfig, read_mel_png
from .manifest import LABEL_SEPARATOR, MANIFEST_SUFFIXES, ManifestError, is_manifest, read_manifest
from .melify import FAILED, MANIFEST, cached_melify
from .plots import plot_confusion_matrix, plot_per_class_ap
from .splits import clip_key


@dataclass
class Table:
    """Rows of cells under a header; `_repr_markdown_` for notebooks, `str` for terminals."""

    header: list[str]
    rows: list[list] = field(default_factory=list)
    empty: str = "(no rows)"  # shown instead of a table without rows

    def _cells(self) -> list[list[str]]:
        return [self.header] + [[_cell(value) for value in row] for row in self.rows]

    def _repr_markdown_(self) -> str:
        if not self.rows:
            return f"*{self.empty}*"
        lines = [self.header, ["---"] * len(self.header)] + self._cells()[1:]
        return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |" for line in lines)

    def __str__(self) -> str:
        if not self.rows:
            return self.empty
        cells = self._cells()
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.header))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)

    def __len__(self) -> int:
        return len(self.rows)


def _cell(value) -> str:
    if value is None:  # a score with nothing to measure by, e.g. the AP of a class without a positive clip
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)



# ---------------------------------------------------------------------------------------------------- data sets

@dataclass
class DataSet:
    """A melify output folder and its melify.json records (source, output, duration, status, error), with the labels
    of its clips: their class folders, or a manifest's labels (a clip with several counts for each)."""

    mel_root: Path
    mel_config: MelConfig
    records: list[dict]
    labels: dict[str, tuple[str, ...]] | None = None  # a record's output -> its manifest labels; None: class folders
    left_out: list[str] = field(default_factory=list)  # the manifest's rows melify could not use, why for each

    def labels_of(self, record: dict) -> tuple[str, ...]:
        """A melify.json record's labels: its class folder, or its labels in the manifest (none where unknown)."""
        if self.labels is None:
            return (class_of(record["source"]),)
        return self.labels.get(record["output"], ())

    @property
    def classes(self) -> list[str]:
        return sorted({label for record in self.records for label in self.labels_of(record)})

    @property
    def converted(self) -> list[dict]:
        return [r for r in self.records if r["status"] != FAILED]

    @property
    def multi_label(self) -> bool:
        """Whether some clip has two labels or more."""
        return any(len(self.labels_of(record)) > 1 for record in self.records)

    def describe(self) -> str:
        """One line: where the mels are and where their labels come from."""
        if self.labels is None:
            return f"mels in {self.mel_root}; labels: the class folders"
        several = sum(len(self.labels_of(record)) > 1 for record in self.converted)
        per_clip = f"{several} of {len(self.converted)} clips with several" if several else "one per clip"
        left_out = f"; {len(self.left_out)} of its rows left out" if self.left_out else ""
        return f"mels in {self.mel_root}; labels: the manifest's, {per_clip}{left_out}"

    def class_counts(self) -> dict[str, int]:
        """Clips per class that became mels (failed files not counted), every class listed; a clip with several
        labels counts for each."""
        counts = Counter(label for record in self.converted for label in self.labels_of(record))
        return {c: counts[c] for c in self.classes}

    def durations(self) -> dict[str, list[float]]:
        """Seconds of audio of every converted clip, by class (under each of its labels)."""
        durations = defaultdict(list)
        for record in self.converted:
            if record.get("duration") is not None:
                for label in self.labels_of(record):
                    durations[label].append(float(record["duration"]))
        return {c: durations[c] for c in self.classes}

    def failures(self) -> Table:
        """The files melify could not convert, and why; then the manifest's rows it could not use."""
        rows = [[r["source"], "" if r.get("duration") is None else round(r["duration"], 3), r["error"]]
                for r in self.records if r["status"] == FAILED]
        rows += [[where, "", why] for where, _, why in (problem.partition(": ") for problem in self.left_out)]
        return Table(["file", "duration (s)", "error"], rows, empty="no failures: every file became a mel")

    def summary(self) -> Table:
        """Per class: clips, failed files, total and median duration; then all clips, each counted once."""
        counts, durations = self.class_counts(), self.durations()
        failed_records = [r for r in self.records if r["status"] == FAILED]
        failed = Counter(label for record in failed_records for label in self.labels_of(record))
        rows = [[c, counts[c], failed[c], f"{sum(durations[c]) / 60:.1f}",
                 f"{np.median(durations[c]):.2f}" if durations[c] else ""] for c in self.classes]
        seconds = sum(float(r["duration"]) for r in self.converted if r.get("duration") is not None)
        rows.append(["all", len(self.converted), len(failed_records), f"{seconds / 60:.1f}", ""])
        return Table(["class", "clips", "failed", "minutes", "median s"], rows)

    def examples(self, per_class: int = 1) -> tuple[list[np.ndarray], list[str]]:
        """The first `per_class` mels of every class (dB) and their titles, ready for `plots.plot_mels`. Clips of
        that label alone come first: a mixture does not show what one label sounds like."""
        mels, titles = [], []
        for name in self.classes:
            having = [r for r in self.converted if name in self.labels_of(r)]
            for record in sorted(having, key=lambda r: len(self.labels_of(r)) > 1)[:per_class]:  # stable: file order
                others = [label for label in self.labels_of(record) if label != name]
                mels.append(read_mel_png(self.mel_root / record["output"]))
                titles.append(f"{name}: {Path(record['source']).name}" +
                              (f" (with {', '.join(others)})" if others else ""))
        return mels, titles


def load_dataset(root: str | Path) -> DataSet:
    """Audio class folders or a manifest (melified into their cache `ROOT.mel-<hash>` next to them, made now if
    missing) or a melify output folder -> DataSet. A relative root is looked up from the working directory and its
    parents."""
    root = _find(root)
    mel_root = cached_melify(root, progress=False)
    melify_json = json.loads((mel_root / MANIFEST).read_text())
    labels, left_out = _manifest_labels(mel_root, melify_json.get("source_root"))
    return DataSet(mel_root, MelConfig(**melify_json["mel_config"]), melify_json.get("files", []), labels, left_out)


def class_of(clip: str) -> str:
    """The class of a root-relative clip path of class folders: its first folder ("jazz/jazz.00012.wav" -> "jazz").
    A manifest's clips take theirs from its labels instead (`DataSet.labels_of`, `Run.labels_of`)."""
    return clip.replace("\\", "/").split("/")[0]


def _manifest_labels(mel_root: Path, source_root: str | None) -> tuple[dict[str, tuple[str, ...]] | None, list[str]]:
    """(image path -> labels, the rows left out of the manifest) of melify output made from a manifest; (None, [])
    for class folders. The images' labels.csv names the clips that became mels; the manifest they were made from,
    where it is still there, adds those that failed and the rows melify could not use."""
    images = read_labels(mel_root)
    labels = {} if images is None else {f"{row.key}.png": row.labels for row in images.rows}
    left_out = []
    if source_root and is_manifest(Path(source_root)):
        source = Path(source_root)
        try:
            manifest = read_manifest(source)
        except ManifestError:  # changed since melify ran: labels.csv still names the clips that became mels
            manifest = None
        if manifest is not None:
            for row in manifest.rows:
                labels.setdefault(f"{row.key}.png", row.labels)
            # a problem reads "<manifest path> line <n>: <why>": beside the table, the file's name is enough
            left_out = [problem.replace(str(source), source.name, 1) for problem in manifest.problems]
            return labels, left_out
    return (None if images is None else labels), left_out


# --------------------------------------------------------------------------------------------------------- runs

@dataclass
class Prediction:
    """One row of a classifier's test_predictions.csv."""

    clip: str  # the clip's path as split.json lists it, e.g. "jazz/jazz.00012.wav"
    true: str
    predicted: str
    top: list[tuple[str, float]]  # the top labels and their softmax scores

    @property
    def correct(self) -> bool:
        return self.true == self.predicted

    def caption(self) -> str:
        """`clip: true X`, then the top predictions with their scores, on two lines."""
        ranked = ", ".join(f"{label} {score:.2f}" for label, score in self.top)
        return f"{Path(self.clip).name}: true {self.true}\n{ranked}"


@dataclass
class TagPrediction:
    """One row of a tagger's test_predictions.csv."""

    clip: str  # the clip's path as split.json lists it: relative to its manifest's folder, e.g. "audio/take1.wav"
    true: tuple[str, ...]  # its labels, in class order
    predicted: tuple[str, ...]  # the classes whose score reached their threshold
    scores: dict[str, float]  # class -> sigmoid score, every class

    @property
    def missed(self) -> tuple[str, ...]:
        """True labels the tagger did not give."""
        return tuple(label for label in self.true if label not in self.predicted)

    @property
    def false_tags(self) -> tuple[str, ...]:
        """Tags given that are not the clip's."""
        return tuple(label for label in self.predicted if label not in self.true)

    @property
    def correct(self) -> bool:
        """Exactly the clip's labels were tagged."""
        return not self.missed and not self.false_tags

    def caption(self) -> str:
        """`clip: true X;Y`, then the missed and false tags with their scores (a right clip: its tags), on two
        lines."""
        def scored(labels: tuple[str, ...]) -> str:
            return ", ".join(f"{label} {self.scores[label]:.2f}" for label in labels)

        wrong = [f"{kind} {scored(labels)}" for kind, labels in (("missed", self.missed), ("false", self.false_tags))
                 if labels]
        detail = "; ".join(wrong) if wrong else f"tagged {scored(self.predicted)}" if self.predicted else "no tag"
        return f"{Path(self.clip).name}: true {LABEL_SEPARATOR.join(self.true) or '(none)'}\n{detail}"


@dataclass
class Run:
    """A training run directory (see `vitaudio.train`): its configuration, curves, report and predictions, for a
    classifier or a tagger (`multi_label`)."""

    path: Path
    config: dict  # config.json: train, model, mel, segment, normalization, classes, mel_root (and task, a tagger's)
    metrics: list[dict]  # metrics.jsonl, one record per epoch
    report: dict | None  # test_report.json (None until the run has been tested)
    predictions: list[Prediction] | list[TagPrediction]  # test_predictions.csv
    split: dict[str, list[str]]  # split.json: root-relative clip paths per split
    mel_root: Path | None  # where the run's mel images are, if found
    clip_labels: dict[str, tuple[str, ...]] | None = None  # clip -> its manifest labels; None: class folders
    images: dict[str, str] = field(default_factory=dict)  # clip -> its image under mel_root (melify.json)

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    @property
    def multi_label(self) -> bool:
        """A tagger's run: each clip may have several labels, each class scored on its own."""
        return self.config.get("task") == MULTI_LABEL

    @property
    def mel_config(self) -> MelConfig:
        return MelConfig(**self.config["mel"])

    @property
    def checkpoint(self) -> Path:
        return self.path / "best.pt"

    def labels_of(self, clip: str) -> tuple[str, ...]:
        """A clip's labels: the class folder it is in, or its labels in the run's manifest (the mel root's
        labels.csv, else the test predictions)."""
        if self.clip_labels is None:
            return (class_of(clip),)
        if clip not in self.clip_labels:
            raise KeyError(f"{clip} is not a labelled clip of {self.path}" + (
                "" if self.mel_root else f": the labels.csv beside its mel images (config.json's mel_root "
                                         f"{self.config.get('mel_root')!r}) was not found; run melify on its data "
                                         f"again"))
        return self.clip_labels[clip]

    def class_of(self, clip: str) -> str:
        """The class a clip is shown under (e.g. its colour): its class, or a tagger's clip its first label."""
        return self.labels_of(clip)[0]

    def examples(self, n: int = 3) -> list[Prediction] | list[TagPrediction]:
        """n test clips spread over the classes: the first clip of each class in turn, then the second, ..."""
        by_class = defaultdict(list)
        for prediction in self.predictions:
            by_class[self.class_of(prediction.clip)].append(prediction)
        rounds = max((len(v) for v in by_class.values()), default=0)
        return [clips[i] for i in range(rounds) for clips in by_class.values() if i < len(clips)][:n]

    def misclassified(self) -> list[Prediction]:
        """A classifier's wrongly predicted test clips, the most confidently wrong first."""
        return sorted((p for p in self.predictions if not p.correct), key=lambda p: -p.top[0][1])

    def mistakes(self) -> list[Prediction] | list[TagPrediction]:
        """The test clips predicted wrong, worst first: a classifier's most confident mistakes (`misclassified`); a
        tagger's clips with the most wrong tags (missed and false), ties to the larger sum of the wrong scores'
        distances from their thresholds."""
        if not self.multi_label:
            return self.misclassified()
        thresholds = self.report.get("thresholds", {}) if self.report else {}

        def badness(prediction: TagPrediction) -> tuple[int, float]:
            wrong = prediction.missed + prediction.false_tags
            distance = sum(abs(prediction.scores[label] - thresholds.get(label, 0.5)) for label in wrong)
            return len(wrong), distance

        return sorted((p for p in self.predictions if not p.correct), key=badness, reverse=True)

    def mistakes_summary(self) -> str:
        """One line: how many test clips are wrong (a tagger's: and how many tags were missed or false)."""
        wrong = [p for p in self.predictions if not p.correct]
        if not self.multi_label:
            return f"{len(wrong)} of {len(self.predictions)} test clips misclassified"
        missed, false_tags = sum(len(p.missed) for p in wrong), sum(len(p.false_tags) for p in wrong)
        return (f"{len(wrong)} of {len(self.predictions)} test clips with wrong tags: {missed} missed, "
                f"{false_tags} false tags")

    def report_table(self) -> Table:
        """A classifier's precision, recall, F1 and support per class, then accuracy, macro F1 and balanced
        accuracy (runs tested before it was reported have none); a tagger's AP, F1, precision, recall, support
        and threshold per class, then mAP, macro and micro F1 and exact match."""
        report = self._tested_report()
        per_class = report["per_class"]
        if self.multi_label:
            names = ("ap", "f1", "precision", "recall", "support", "threshold")
            rows = [[c, *(per_class[c][name] for name in names)] for c in self.classes]
            rows.append(["mAP", report["map"], "", "", "", report["n_clips"], ""])
            rows += [[title, "", report[key], "", "", "", ""]
                     for title, key in (("macro F1", "macro_f1"), ("micro F1", "micro_f1"),
                                        ("exact match", "exact_match"))]
            return Table(["class", "AP", "F1", "precision", "recall", "support", "threshold"], rows)
        rows = [[c, per_class[c]["precision"], per_class[c]["recall"], per_class[c]["f1"], per_class[c]["support"]]
                for c in self.classes]
        rows.append(["accuracy", "", "", report["accuracy"], report["n_clips"]])
        rows.append(["macro F1", "", "", report["macro_f1"], ""])
        if "balanced_accuracy" in report:
            rows.append(["balanced accuracy", "", "", report["balanced_accuracy"], ""])
        return Table(["class", "precision", "recall", "F1", "support"], rows)

    def plot_test_figure(self) -> Figure:
        """The picture training writes beside the test report: a classifier's confusion matrix (counts and row
        shares), a tagger's average precision per class."""
        report = self._tested_report()
        if self.multi_label:
            return plot_per_class_ap(report)
        return plot_confusion_matrix(report["confusion_matrix"], self.classes)

    def error_table(self, top: int = 5) -> Table:
        """Where the test mistakes go: a classifier's most confused pairs (`confused_pairs`); a tagger's classes
        with the most missed and false tags, and the tag most often given instead where one was missed."""
        if not self.multi_label:
            return self.confused_pairs(top)
        self._tested_report()
        rows = []
        for name in self.classes:
            missing = [p for p in self.predictions if name in p.missed]
            instead = Counter(label for p in missing for label in p.false_tags).most_common(1)
            n_false = sum(name in p.false_tags for p in self.predictions)
            rows.append([name, sum(name in p.true for p in self.predictions), len(missing), n_false,
                         f"{instead[0][0]} ({instead[0][1]})" if instead else ""])
        rows = sorted((row for row in rows if row[2] + row[3]), key=lambda row: (-(row[2] + row[3]), row[0]))
        return Table(["class", "clips with it", "missed", "false tags", "most often tagged instead"], rows[:top],
                     empty="no wrong tags on the test split")

    def confused_pairs(self, top: int = 5) -> Table:
        """The most frequent (true, predicted) mistakes of a classifier's test split."""
        return Table(["true", "predicted as", "clips", "share of true class"],
                     [list(pair) for pair in most_confused_pairs(self._tested_report()["confusion_matrix"],
                                                                 self.classes, top)],
                     empty="no mistakes on the test split")

    def mel(self, clip: str) -> np.ndarray:
        """The dB mel (n_mels, n_frames) of a clip of the run's data, by its root-relative path or key."""
        if self.mel_root is None:
            raise FileNotFoundError(f"the mel images of {self.path} were not found (config.json's mel_root "
                                    f"{self.config.get('mel_root')!r}); run melify on its data again")
        return read_mel_png(self.mel_root / self.images.get(clip, f"{clip_key(clip)}.png"))

    def clips(self, splits: tuple[str, ...] = ("train", "val", "test")) -> list[str]:
        """Root-relative paths of the run's clips in the given splits."""
        return [clip for name in splits for clip in self.split.get(name, [])]

    def classifier(self, device: str = "cpu"):
        """The best checkpoint as an `inference.AudioClassifier`."""
        from .inference import pipeline

        return pipeline(self.checkpoint, device=device)

    def _tested_report(self) -> dict:
        if self.report is None:
            raise FileNotFoundError(f"{self.path} has no test_report.json: the run has not been tested yet")
        return self.report


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory; a folder of runs (e.g. "runs") picks its newest tested run. A relative path is looked
    up from the working directory and its parents, so a notebook in notebooks/ finds "runs/x"."""
    path = _find(run_dir)
    if not (path / "config.json").exists():
        tested = sorted((p for p in path.iterdir() if (p / "test_report.json").exists()),
                        key=lambda p: (p / "test_report.json").stat().st_mtime)
        if not tested:
            raise FileNotFoundError(f"{path} is not a run directory (no config.json) and holds no tested run")
        path = tested[-1]
    config = json.loads((path / "config.json").read_text())
    metrics_file, report_file = path / "metrics.jsonl", path / "test_report.json"
    metrics = []
    if metrics_file.exists():
        metrics = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    split = json.loads((path / "split.json").read_text()) if (path / "split.json").exists() else {}
    predictions = read_predictions(path / "test_predictions.csv", multi_label=config.get("task") == MULTI_LABEL)
    mel_root = _find_mel_root(config.get("mel_root"), path)
    images, clip_labels = _run_labels(mel_root, config.get("train", {}).get("root"), predictions)
    return Run(path=path, config=config, metrics=metrics,
               report=json.loads(report_file.read_text()) if report_file.exists() else None,
               predictions=predictions, split=split, mel_root=mel_root, clip_labels=clip_labels, images=images)


def read_predictions(path: Path, *, multi_label: bool = False) -> list[Prediction] | list[TagPrediction]:
    """test_predictions.csv -> Predictions (a classifier's: clip, true, predicted, label1, score1, ...) or
    TagPredictions (a tagger's, `multi_label`: clip, true, predicted, then one score column per class); [] if it is
    missing."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        rows, columns = list(reader), reader.fieldnames or []
    if multi_label:
        classes = columns[3:]
        return [TagPrediction(clip=row["clip"], true=_split_labels(row["true"]),
                              predicted=_split_labels(row["predicted"]),
                              scores={name: float(row[name]) for name in classes}) for row in rows]
    predictions = []
    for row in rows:
        ranks = sorted(int(k[len("label"):]) for k in row if k.startswith("label") and row[k])
        top = [(row[f"label{k}"], float(row[f"score{k}"])) for k in ranks]
        predictions.append(Prediction(clip=row["clip"], true=row["true"], predicted=row["predicted"], top=top))
    return predictions


def most_confused_pairs(matrix: list[list[int]], classes: list[str], top: int = 5) -> list[tuple]:
    """(true, predicted, count, share of the true class' clips) of the `top` largest off-diagonal cells, count > 0."""
    counts = np.asarray(matrix)
    totals = counts.sum(axis=1)
    pairs = [(classes[t], classes[p], int(counts[t, p]), round(float(counts[t, p] / totals[t]), 3))
             for t, p in zip(*np.nonzero(counts)) if t != p]
    return sorted(pairs, key=lambda pair: (-pair[2], -pair[3], pair[0], pair[1]))[:top]


def _split_labels(joined: str) -> tuple[str, ...]:
    return tuple(label for label in joined.split(LABEL_SEPARATOR) if label)


def _run_labels(mel_root: Path | None, train_root: str | None, predictions: list[Prediction] | list[TagPrediction]
                ) -> tuple[dict[str, str], dict[str, tuple[str, ...]] | None]:
    """(clip -> its image under mel_root, clip -> its labels) of a run's clips; the labels None for class folders,
    whose clips' classes are their folders. A manifest's labels come from the images' labels.csv, where the mel
    root was found, else from the test predictions (the test clips only)."""
    records = json.loads((mel_root / MANIFEST).read_text()).get("files", []) if mel_root else []
    images = {record["source"]: record["output"] for record in records}
    listed = read_labels(mel_root) if mel_root else None
    from_manifest = listed is not None or (train_root and Path(train_root).suffix.lower() in MANIFEST_SUFFIXES)
    if not from_manifest:
        return images, None
    clip_labels = {p.clip: p.true if isinstance(p, TagPrediction) else (p.true,) for p in predictions}
    if listed is not None:
        # the manifest's order, so that a tagger's clip is shown under the label listed first
        by_image = {f"{row.key}.png": row.labels for row in listed.rows}
        clip_labels.update((clip, by_image[image]) for clip, image in images.items() if image in by_image)
    return images, clip_labels


def _find(path: str | Path) -> Path:
    """An existing path: absolute as given, relative from the working directory or the first parent holding it."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        return path.resolve()
    for parent in Path.cwd().resolve().parents:
        if (parent / path).exists():
            return parent / path
    raise FileNotFoundError(f"{path} is not in {Path.cwd()} nor in any folder above it")


def _find_mel_root(mel_root: str | None, run_dir: Path) -> Path | None:
    """config.json's mel_root, relative to where training ran: try the working directory, then the run's parents."""
    if not mel_root:
        return None
    candidates = [Path(mel_root)]
    if not Path(mel_root).is_absolute():
        candidates = [Path.cwd() / mel_root, *(parent / mel_root for parent in run_dir.resolve().parents)]
    return next((c for c in candidates if (c / MANIFEST).exists()), None)
