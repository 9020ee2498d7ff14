"""Multi-label tagging metrics: average precision, mAP, per-class thresholds tuned for F1, and the test report.

Pure functions of clip scores (N, C) and 0/1 targets (N, C), as torch tensors or numpy arrays; nothing is
written. A clip is tagged with a class when its score *reaches* the class threshold (`score >= threshold`).

Average precision follows scikit-learn's `average_precision_score`: clips ranked by score, equal scores forming one
threshold, AP = sum over those thresholds of (R_n - R_{n-1}) * P_n. A class without a positive clip has no AP
(`average_precision` gives NaN, the report None, so test_report.json stays strict JSON), and mAP and macro F1 skip it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .errors import VitaudioError

DEFAULT_THRESHOLD = 0.5  # for a class the tuning data holds no positive of


class TaggingError(VitaudioError, ValueError):
    """Scores, targets, classes or thresholds that do not fit together; the message says which and how."""


def average_precision(scores, targets) -> float:
    """Area under the precision-recall curve of one class: scores (N,), targets (N,) 0/1 -> AP, NaN without a
    positive."""
    scores, targets = _as_array(scores, "scores"), _as_targets(targets)
    if scores.ndim != 1 or scores.shape != targets.shape:
        raise TaggingError(f"average_precision needs scores (N,) and targets (N,) of one class; got scores "
                           f"{scores.shape} and targets {targets.shape}")
    true_positives, predicted_positives = _ranked_counts(scores, targets)
    if not true_positives.size or true_positives[-1] == 0:  # no clip, or no positive: AP is undefined
        return math.nan
    precision = true_positives / predicted_positives
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def mean_average_precision(clip_probs, targets) -> float:
    """Mean over classes of their AP: clip_probs (N, C), targets (N, C) -> mAP over the classes with at least one
    positive (NaN when none has)."""
    scores, targets = _check_pair(clip_probs, targets)
    per_class = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    return _nanmean(per_class)


def tune_thresholds(clip_probs, targets) -> list[float]:
    """Per class, the threshold with the best F1 on these (validation) clips: clip_probs (N, C) in [0, 1], targets
    (N, C) -> C thresholds.

    Candidates are the midpoints between consecutive distinct scores of the class, so a threshold sits between the
    scores it separates (not on one of them, which a new clip rarely reproduces); halfway between the lowest score
    and 0 ("tag every clip") and between the highest and 1 ("tag none") are candidates too. Ties go to the higher
    threshold (fewer false alarms). A class without a positive here gets DEFAULT_THRESHOLD.
    """
    scores, targets = _check_pair(clip_probs, targets)
    _check_probabilities(scores)
    return [_best_f1_threshold(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]


def tagging_report(clip_probs, targets, classes: list[str], thresholds: list[float]) -> dict:
    """The test_report.json contents of a multi-label run: clip_probs (N, C) in [0, 1], targets (N, C) 0/1, C class
    names and C thresholds -> mAP, macro/micro F1, exact match and per-class AP, F1, precision, recall, support.

    Macro F1 and mAP average the classes present in the targets; micro F1 pools every (clip, class) pair; exact
    match is the share of clips whose tagged set is their true set. Precision of a class never tagged is 0.
    """
    scores, targets = _check_pair(clip_probs, targets)
    _check_probabilities(scores)
    n_clips, n_classes = scores.shape
    if len(classes) != n_classes or len(thresholds) != n_classes:
        raise TaggingError(f"scores have {n_classes} classes, but {len(classes)} class names and {len(thresholds)} "
                           f"thresholds were given: pass one of each per class, in the scores' column order")
    predicted = apply_thresholds(scores, thresholds)
    actual = targets.astype(bool)
    true_positives = (predicted & actual).sum(axis=0)  # (C,)
    false_positives = (predicted & ~actual).sum(axis=0)
    support = actual.sum(axis=0)
    precision = true_positives / np.maximum(true_positives + false_positives, 1)
    recall = true_positives / np.maximum(support, 1)
    f1 = _f1(true_positives, true_positives + false_positives, support)
    ap = [average_precision(scores[:, c], targets[:, c]) for c in range(n_classes)]
    present = support > 0
    pooled_predicted, pooled_true_positives = int(predicted.sum()), int(true_positives.sum())
    per_class = {name: {"ap": _none_if_nan(ap[c]), "f1": float(f1[c]), "precision": float(precision[c]),
                        "recall": float(recall[c]), "support": int(support[c]), "threshold": float(thresholds[c])}
                 for c, name in enumerate(classes)}
    return {"task": "multi_label", "map": _none_if_nan(_nanmean(ap)),
            "macro_f1": _none_if_nan(float(f1[present].mean()) if present.any() else math.nan),
            "micro_f1": float(_f1(pooled_true_positives, pooled_predicted, int(support.sum()))),
            "exact_match": _none_if_nan(float((predicted == actual).all(axis=1).mean()) if n_clips else math.nan),
            "n_clips": n_clips, "classes": list(classes),
            "thresholds": {name: float(t) for name, t in zip(classes, thresholds)}, "per_class": per_class}


def apply_thresholds(clip_probs, thresholds: list[float]) -> np.ndarray:
    """The tags: clip_probs (N, C), C thresholds -> (N, C) bool, True where a score reaches its class threshold."""
    scores = _as_array(clip_probs, "clip scores")
    if scores.ndim != 2 or scores.shape[1] != len(thresholds):
        raise TaggingError(f"need clip scores (N, C) and C thresholds; got scores {scores.shape} and "
                           f"{len(thresholds)} thresholds")
    return scores >= np.asarray(thresholds, dtype=np.float64)  # (N, C) >= (C,): thresholds broadcast over clips


def _ranked_counts(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clips ranked by score, highest first; at each distinct score (one threshold for equal scores), the true
    positives and all clips scoring at least that much: two (n_distinct,) arrays."""
    if scores.size == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    ranked_scores, ranked_targets = scores[order], targets[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(ranked_scores)), scores.size - 1]  # (n_distinct,) positions
    return np.cumsum(ranked_targets)[last_of_each_score], last_of_each_score + 1.0


def _best_f1_threshold(scores: np.ndarray, targets: np.ndarray) -> float:
    """(N,) scores in [0, 1] and 0/1 targets -> the candidate threshold (see tune_thresholds) of the best F1."""
    n_positives = targets.sum()
    if n_positives == 0:
        return DEFAULT_THRESHOLD
    true_positives, predicted_positives = _ranked_counts(scores, targets)
    distinct_scores = np.unique(scores)[::-1]  # (n_distinct,) highest first, aligned with the counts
    # Threshold k (k = 0 .. n_distinct) lies just below the k-th distinct score: it tags the clips scoring at least
    # that much; k = 0, above every score, tags none.
    upper = np.r_[1.0, distinct_scores]
    lower = np.r_[distinct_scores, 0.0]
    candidates = (upper + lower) / 2  # (n_distinct + 1,)
    f1 = np.r_[0.0, _f1(true_positives, predicted_positives, n_positives)]
    best = np.flatnonzero(f1 == f1.max())[0]  # the first, i.e. highest, of equally good thresholds
    return float(candidates[best])


def _f1(true_positives, predicted_positives, actual_positives):
    """2 TP / (predicted + actual), 0 where both are 0; works on numbers and arrays alike."""
    denominator = np.asarray(predicted_positives + actual_positives, dtype=np.float64)
    return 2 * np.asarray(true_positives, dtype=np.float64) / np.maximum(denominator, 1)


def _as_array(values, name: str) -> np.ndarray:
    """A torch tensor or array-like -> float64 numpy array (float32 scores convert exactly, so ties stay ties)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise TaggingError(f"{name} hold NaN or infinite values; score clips with a model whose outputs are finite")
    return array


def _as_targets(targets) -> np.ndarray:
    array = _as_array(targets, "targets")
    if not np.isin(array, (0.0, 1.0)).all():
        raise TaggingError("targets must be 0 or 1 (multi-hot: 1 where the clip has the class)")
    return array


def _check_pair(clip_probs, targets) -> tuple[np.ndarray, np.ndarray]:
    scores, targets = _as_array(clip_probs, "clip scores"), _as_targets(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise TaggingError(f"need clip scores (N, C) and targets (N, C) of the same shape; got scores "
                           f"{scores.shape} and targets {targets.shape}")
    return scores, targets


def _check_probabilities(scores: np.ndarray) -> None:
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        raise TaggingError(f"clip scores range from {scores.min():.3g} to {scores.max():.3g}, but thresholds are "
                           f"for probabilities in [0, 1]: pass the sigmoid of the logits")


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value
