"""What the notebooks read: a data set's melify output and a training run's directory, as plain Python objects.

`load_dataset(root)` -> DataSet (class balance, clip durations, example mels, melify failures);
`load_run(run_dir)` -> Run (curves, test report, predictions, the mels of test clips, the trained classifier).
Tables come back as `Table`, which a notebook renders as Markdown and `print` shows as aligned text.
"""
from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .features import MelConfig, read_mel_png
from .melify import FAILED, MANIFEST, cached_melify
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
    return f"{value:.3f}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------------- data sets

@dataclass
class DataSet:
    """A melify output folder and its melify.json records (source, output, duration, status, error)."""

    mel_root: Path
    mel_config: MelConfig
    records: list[dict]

    @property
    def classes(self) -> list[str]:
        return sorted({class_of(r["source"]) for r in self.records})

    @property
    def converted(self) -> list[dict]:
        return [r for r in self.records if r["status"] != FAILED]

    def class_counts(self) -> dict[str, int]:
        """Clips per class that became mels (failed files not counted), every class listed."""
        counts = Counter(class_of(r["source"]) for r in self.converted)
        return {c: counts[c] for c in self.classes}

    def durations(self) -> dict[str, list[float]]:
        """Seconds of audio of every converted clip, by class."""
        durations = defaultdict(list)
        for record in self.converted:
            if record.get("duration") is not None:
                durations[class_of(record["source"])].append(float(record["duration"]))
        return {c: durations[c] for c in self.classes}

    def failures(self) -> Table:
        """The files melify could not convert, and why."""
        return Table(["file", "duration (s)", "error"],
                     [[r["source"], "" if r.get("duration") is None else round(r["duration"], 3), r["error"]]
                      for r in self.records if r["status"] == FAILED],
                     empty="no failures: every file became a mel")

    def summary(self) -> Table:
        """Per class: clips, failed files, total and median duration."""
        counts, durations = self.class_counts(), self.durations()
        failed = Counter(class_of(r["source"]) for r in self.records if r["status"] == FAILED)
        rows = [[c, counts[c], failed[c], f"{sum(durations[c]) / 60:.1f}",
                 f"{np.median(durations[c]):.2f}" if durations[c] else ""] for c in self.classes]
        rows.append(["all", sum(counts.values()), sum(failed.values()),
                     f"{sum(map(sum, durations.values())) / 60:.1f}", ""])
        return Table(["class", "clips", "failed", "minutes", "median s"], rows)

    def examples(self, per_class: int = 1) -> tuple[list[np.ndarray], list[str]]:
        """The first `per_class` mels of every class (dB) and their titles, ready for `plots.plot_mels`."""
        mels, titles = [], []
        for name in self.classes:
            for record in [r for r in self.converted if class_of(r["source"]) == name][:per_class]:
                mels.append(read_mel_png(self.mel_root / record["output"]))
                titles.append(f"{name}: {Path(record['source']).name}")
        return mels, titles


def load_dataset(root: str | Path) -> DataSet:
    """Audio class folders (melified into their cache `ROOT.mel-<hash>` next to them, made now if missing) or a
    melify output folder -> DataSet. A relative root is looked up from the working directory and its parents."""
    root = _find(root)
    mel_root = cached_melify(root, progress=False)
    manifest = json.loads((mel_root / MANIFEST).read_text())
    return DataSet(mel_root, MelConfig(**manifest["mel_config"]), manifest.get("files", []))


def class_of(clip: str) -> str:
    """The class of a root-relative clip path: its first folder ("jazz/jazz.00012.wav" -> "jazz")."""
    return clip.replace("\\", "/").split("/")[0]


# --------------------------------------------------------------------------------------------------------- runs

@dataclass
class Prediction:
    """One row of test_predictions.csv."""

    clip: str  # root-relative path of the clip, e.g. "jazz/jazz.00012.wav"
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
class Run:
    """A training run directory (see `vitaudio.train`): its configuration, curves, report and predictions."""

    path: Path
    config: dict  # config.json: train, model, mel, segment, normalization, classes, mel_root
    metrics: list[dict]  # metrics.jsonl, one record per epoch
    report: dict | None  # test_report.json (None until the run has been tested)
    predictions: list[Prediction]  # test_predictions.csv
    split: dict[str, list[str]]  # split.json: root-relative clip paths per split
    mel_root: Path | None  # where the run's mel images are, if found

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    @property
    def mel_config(self) -> MelConfig:
        return MelConfig(**self.config["mel"])

    @property
    def checkpoint(self) -> Path:
        return self.path / "best.pt"

    def examples(self, n: int = 3) -> list[Prediction]:
        """n test clips spread over the classes: the first clip of each class in turn, then the second, ..."""
        by_class = defaultdict(list)
        for prediction in self.predictions:
            by_class[prediction.true].append(prediction)
        rounds = max((len(v) for v in by_class.values()), default=0)
        return [clips[i] for i in range(rounds) for clips in by_class.values() if i < len(clips)][:n]

    def misclassified(self) -> list[Prediction]:
        """Wrongly predicted test clips, the most confidently wrong first."""
        return sorted((p for p in self.predictions if not p.correct), key=lambda p: -p.top[0][1])

    def report_table(self) -> Table:
        """Precision, recall, F1 and support per class, then accuracy, macro F1 and balanced accuracy (runs
        tested before it was reported have none)."""
        if self.report is None:
            raise FileNotFoundError(f"{self.path} has no test_report.json: the run has not been tested yet")
        per_class = self.report["per_class"]
        rows = [[c, per_class[c]["precision"], per_class[c]["recall"], per_class[c]["f1"], per_class[c]["support"]]
                for c in self.classes]
        rows.append(["accuracy", "", "", self.report["accuracy"], self.report["n_clips"]])
        rows.append(["macro F1", "", "", self.report["macro_f1"], ""])
        if "balanced_accuracy" in self.report:
            rows.append(["balanced accuracy", "", "", self.report["balanced_accuracy"], ""])
        return Table(["class", "precision", "recall", "F1", "support"], rows)

    def confused_pairs(self, top: int = 5) -> Table:
        """The most frequent (true, predicted) mistakes of the test split."""
        if self.report is None:
            raise FileNotFoundError(f"{self.path} has no test_report.json: the run has not been tested yet")
        return Table(["true", "predicted as", "clips", "share of true class"],
                     [list(pair) for pair in most_confused_pairs(self.report["confusion_matrix"], self.classes, top)],
                     empty="no mistakes on the test split")

    def mel(self, clip: str) -> np.ndarray:
        """The dB mel (n_mels, n_frames) of a clip of the run's data, by its root-relative path or key."""
        if self.mel_root is None:
            raise FileNotFoundError(f"the mel images of {self.path} were not found (config.json's mel_root "
                                    f"{self.config.get('mel_root')!r}); run melify on its data again")
        return read_mel_png(self.mel_root / f"{clip_key(clip)}.png")

    def clips(self, splits: tuple[str, ...] = ("train", "val", "test")) -> list[str]:
        """Root-relative paths of the run's clips in the given splits."""
        return [clip for name in splits for clip in self.split.get(name, [])]

    def classifier(self, device: str = "cpu"):
        """The best checkpoint as an `inference.AudioClassifier`."""
        from .inference import pipeline

        return pipeline(self.checkpoint, device=device)


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
    return Run(path=path, config=config, metrics=metrics,
               report=json.loads(report_file.read_text()) if report_file.exists() else None,
               predictions=read_predictions(path / "test_predictions.csv"), split=split,
               mel_root=_find_mel_root(config.get("mel_root"), path))


def read_predictions(path: Path) -> list[Prediction]:
    """test_predictions.csv (clip, true, predicted, label1, score1, ...) -> Predictions; [] if it is missing."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
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
