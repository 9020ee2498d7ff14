"""Clip-level test reports: accuracy, per-class precision/recall/F1, confusion matrix, per-clip predictions,
and the files training and `evaluate` write from them. Multi-label runs (targets (N, C) multi-hot) get the tagging
report of `vitaudio.tagging` instead: mAP, F1 at per-class thresholds, per-class AP."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from .manifest import LABEL_SEPARATOR
from .plots import plot_confusion_matrix, plot_per_class_ap
from .tagging import TaggingError, apply_thresholds, tagging_report


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n_classes, n_classes) counts, rows = true class, columns = predicted class."""
    return torch.bincount(labels * n_classes + predictions, minlength=n_classes**2).reshape(n_classes, n_classes)


def classification_report(clip_logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """The `test_report.json` contents for clip logits (n_clips, n_classes) and true labels (n_clips,)."""
    matrix = confusion_matrix(labels, clip_logits.argmax(dim=1), len(classes))
    true_positives = matrix.diag().double()
    precision = true_positives / matrix.sum(dim=0).clamp_min(1)
    recall = true_positives / matrix.sum(dim=1).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(matrix[i].sum())} for i, name in enumerate(classes)}
    present = matrix.sum(dim=1) > 0  # macro F1 and balanced accuracy over the classes the split holds
    return {"accuracy": float(true_positives.sum() / max(len(labels), 1)), "n_clips": len(labels),
            "classes": list(classes), "per_class": per_class, "macro_f1": float(f1[present].mean()),
            "balanced_accuracy": float(recall[present].mean()),  # mean recall: what accuracy is on balanced classes
            "confusion_matrix": matrix.tolist()}


def write_predictions(path: Path, clips: list[str], clip_logits: torch.Tensor, labels: torch.Tensor,
                      classes: list[str], top: int = 3) -> None:
    """CSV: clip, true, predicted, then the top labels and their softmax scores."""
    scores, indices = clip_logits.softmax(dim=1).topk(min(top, len(classes)), dim=1)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["clip", "true", "predicted", *[f"{kind}{k + 1}" for k in range(scores.shape[1])
                                                        for kind in ("label", "score")]])
        for clip, label, top_scores, top_indices in zip(clips, labels.tolist(), scores.tolist(), indices.tolist()):
            ranked = [value for i, s in zip(top_indices, top_scores) for value in (classes[i], f"{s:.4f}")]
            writer.writerow([clip, classes[label], classes[top_indices[0]], *ranked])


def write_tagging_predictions(path: Path, clips: list[str], clip_probs: torch.Tensor, targets: torch.Tensor,
                              classes: list[str], thresholds: list[float]) -> None:
    """CSV: clip, true and predicted labels (`;`-joined names; predicted = scores reaching their class threshold),
    then every class's sigmoid score; clip_probs and targets (N, C)."""
    predicted = apply_thresholds(clip_probs, thresholds)  # (N, C) bool
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["clip", "true", "predicted", *classes])
        for clip, target_row, predicted_row, scores in zip(clips, targets.tolist(), predicted.tolist(),
                                                           clip_probs.tolist()):
            writer.writerow([clip, _joined(classes, target_row), _joined(classes, predicted_row),
                             *[f"{score:.4f}" for score in scores]])


def write_test_outputs(out_dir: Path, clip_logits: torch.Tensor, labels: torch.Tensor, clips: list[str],
                       classes: list[str], *, thresholds: list[float] | None = None, **extra) -> dict:
    """test_report.json (the report and `extra`), test_predictions.csv and a picture for scored clips; returns the
    report.

    Single-label: labels (N,) class indices, the picture confusion_matrix.png. Multi-label: labels (N, C) multi-hot
    and `thresholds` (C floats, e.g. `tagging.tune_thresholds` on the validation clips) required; the report is
    `tagging.tagging_report` of the sigmoid scores, the picture per_class_ap.png.
    """
    if labels.ndim == 2:
        return _write_tagging_outputs(out_dir, clip_logits, labels, clips, classes, thresholds, **extra)
    if thresholds is not None:
        raise TaggingError("thresholds apply to multi-label labels (N, C); these labels are class indices (N,)")
    report = {**classification_report(clip_logits, labels, classes), **extra}
    (out_dir / "test_report.json").write_text(json.dumps(report, indent=1))
    write_predictions(out_dir / "test_predictions.csv", clips, clip_logits, labels, classes)
    plot_confusion_matrix(report["confusion_matrix"], classes, out_dir / "confusion_matrix.png")
    return report


def _write_tagging_outputs(out_dir: Path, clip_logits: torch.Tensor, targets: torch.Tensor, clips: list[str],
                           classes: list[str], thresholds: list[float] | None, **extra) -> dict:
    """write_test_outputs for clip logits and multi-hot targets (N, C)."""
    if thresholds is None:
        raise TaggingError("a multi-label report needs one threshold per class: tune them on the validation clips "
                           "with tagging.tune_thresholds and pass thresholds=...")
    clip_probs = clip_logits.float().sigmoid()  # (N, C): each class scored on its own
    report = {**tagging_report(clip_probs, targets, classes, thresholds), **extra}
    (out_dir / "test_report.json").write_text(json.dumps(report, indent=1))
    write_tagging_predictions(out_dir / "test_predictions.csv", clips, clip_probs, targets, classes, thresholds)
    plot_per_class_ap(report, out_dir / "per_class_ap.png")
    return report


def _joined(classes: list[str], flags: list) -> str:
    """The names of the classes whose flag is set, `;`-joined in class order."""
    return LABEL_SEPARATOR.join(name for name, flag in zip(classes, flags) if flag)


def scores_line(report: dict) -> str:
    """The headline numbers of a test report: accuracy, macro F1 and balanced accuracy, or a tagger's mAP, macro
    and micro F1 ("n/a" where the clips hold no positive to measure by)."""
    def number(key: str) -> str:
        return "n/a" if report.get(key) is None else f"{report[key]:.3f}"

    if report.get("task") == "multi_label":
        return f"mAP {number('map')} (macro F1 {number('macro_f1')}, micro F1 {number('micro_f1')})"
    return (f"accuracy {number('accuracy')} (macro F1 {number('macro_f1')}, balanced accuracy "
            f"{number('balanced_accuracy')})")
