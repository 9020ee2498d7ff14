"""Clip-level test reports: accuracy, per-class precision/recall/F1, confusion matrix, per-clip predictions,
and the files training and `evaluate` write from them."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from .plots import plot_confusion_matrix


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


def write_test_outputs(out_dir: Path, clip_logits: torch.Tensor, labels: torch.Tensor, clips: list[str],
                       classes: list[str], **extra) -> dict:
    """test_report.json (the report and `extra`), test_predictions.csv and confusion_matrix.png for scored clips;
    returns the report."""
    report = {**classification_report(clip_logits, labels, classes), **extra}
    (out_dir / "test_report.json").write_text(json.dumps(report, indent=1))
    write_predictions(out_dir / "test_predictions.csv", clips, clip_logits, labels, classes)
    plot_confusion_matrix(report["confusion_matrix"], classes, out_dir / "confusion_matrix.png")
    return report
