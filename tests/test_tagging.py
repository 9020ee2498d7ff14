"""Specification of the multi-label tagging metrics (`vitaudio.tagging`) and the reports of multi-label runs."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from vitaudio import plots
from vitaudio.report import write_test_outputs
from vitaudio.tagging import (
    DEFAULT_THRESHOLD,
    TaggingError,
    apply_thresholds,
    average_precision,
    mean_average_precision,
    tagging_report,
    tune_thresholds,
)


def reference_average_precision(scores: list[float], targets: list[int]) -> float:
    """AP from its definition: for each distinct score, highest first, tag every clip scoring at least that much
    and add (recall - previous recall) * precision."""
    n_positives = sum(targets)
    total, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        tagged = [t for s, t in zip(scores, targets) if s >= threshold]
        recall = sum(tagged) / n_positives
        total += (recall - previous_recall) * sum(tagged) / len(tagged)
        previous_recall = recall
    return total


def reference_f1(tagged: list[bool], targets: list[int]) -> float:
    true_positives = sum(1 for p, t in zip(tagged, targets) if p and t)
    return 2 * true_positives / max(sum(tagged) + sum(targets), 1)


def random_scores_with_ties(rng: np.random.Generator, n_clips: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores on a coarse grid (many ties) and targets of random class frequencies, some classes without positive."""
    scores = np.round(rng.random((n_clips, n_classes)), 1)
    targets = (rng.random((n_clips, n_classes)) < rng.uniform(0, 0.6, n_classes)).astype(np.float64)
    return scores, targets


# average precision


def test_average_precision_of_a_hand_computed_ranking():
    # ranked: pos, neg, pos, neg -> precision 1/1 at the first positive, 2/3 at the second
    assert average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert average_precision([0.2, 0.9, 0.1], [0, 1, 0]) == 1.0


def test_equal_scores_form_one_threshold_whatever_the_clip_order():
    # three clips tied at 0.5, one positive among them: precision 1/3 at the only threshold, in any order
    for order in ([1, 0, 0], [0, 0, 1]):
        assert average_precision([0.5, 0.5, 0.5], order) == pytest.approx(1 / 3)
    # a positive above a tie of one positive and one negative: 1/2 * 1 + 1/2 * 2/3
    assert average_precision([0.9, 0.4, 0.4], [1, 0, 1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision([0.9, 0.4, 0.4], [1, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_average_precision_matches_the_definition_on_random_rankings():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_clips = int(rng.integers(1, 25))
        scores = np.round(rng.random(n_clips), int(rng.integers(1, 3))).tolist()
        targets = (rng.random(n_clips) < 0.4).astype(int).tolist()
        if sum(targets):
            assert average_precision(scores, targets) == pytest.approx(reference_average_precision(scores, targets))


def test_average_precision_matches_scikit_learn_where_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(100):
        scores = np.round(rng.random(30), 1)
        targets = (rng.random(30) < 0.3).astype(int)
        if targets.any():
            assert average_precision(scores, targets) == pytest.approx(metrics.average_precision_score(targets, scores))


def test_a_class_without_positive_has_no_ap_and_map_skips_it():
    assert math.isnan(average_precision([0.3, 0.6], [0, 0]))
    clip_probs = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.7, 0.3], [0.6, 0.1, 0.2]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    # class 0 ranks its positives first (AP 1); class 1: neg 0.8, pos 0.7 (AP 1/2); class 2 has no positive
    assert mean_average_precision(clip_probs, targets) == pytest.approx((1 + 0.5) / 2)
    assert math.isnan(mean_average_precision(clip_probs, torch.zeros(3, 3)))


def test_metrics_refuse_mismatched_shapes_and_non_binary_targets():
    with pytest.raises(TaggingError, match=r"\(3, 2\)"):
        mean_average_precision(torch.rand(3, 2), torch.zeros(3, 4))
    with pytest.raises(TaggingError, match="0 or 1"):
        average_precision([0.1, 0.2], [0, 2])


# thresholds


def test_tuned_threshold_is_the_midpoint_below_the_best_f1_cut():
    # cuts: {0.8} F1 2/3, {0.8, 0.4} 1/2, {0.8, 0.4, 0.35} 4/5 (best), everything 2/3
    clip_probs = torch.tensor([[0.1], [0.4], [0.35], [0.8]])
    targets = torch.tensor([[0], [0], [1], [1]])
    assert tune_thresholds(clip_probs, targets) == [pytest.approx(0.225)]


def test_tuned_threshold_can_tag_every_clip_and_defaults_without_positive():
    clip_probs = torch.tensor([[0.2, 0.9], [0.3, 0.8]])
    targets = torch.tensor([[1, 0], [1, 0]])
    every_clip, no_positive = tune_thresholds(clip_probs, targets)
    assert every_clip == pytest.approx(0.1)  # halfway between 0 and the lowest score
    assert no_positive == DEFAULT_THRESHOLD


def test_tuned_thresholds_reach_the_best_f1_of_any_cut_and_sit_between_scores():
    rng = np.random.default_rng(2)
    for _ in range(30):
        clip_probs, targets = random_scores_with_ties(rng, 20, 4)
        for c, threshold in enumerate(tune_thresholds(clip_probs, targets)):
            scores, positives = clip_probs[:, c].tolist(), targets[:, c].astype(int).tolist()
            if not sum(positives):
                continue
            best = max(reference_f1([s >= cut for s in scores], positives) for cut in set(scores))
            assert reference_f1([s >= threshold for s in scores], positives) == pytest.approx(best)
            assert threshold not in scores or threshold == 0 == min(scores)  # 0: halfway from a score of 0 to 0


def test_tuning_refuses_logits():
    with pytest.raises(TaggingError, match="sigmoid"):
        tune_thresholds(torch.tensor([[-2.0], [3.0]]), torch.tensor([[0], [1]]))


# the report

CLASSES = ["drums", "piano", "voice"]
CLIP_PROBS = torch.tensor([[0.9, 0.2, 0.1],
                           [0.7, 0.6, 0.3],
                           [0.4, 0.8, 0.2],
                           [0.1, 0.3, 0.6]])
TARGETS = torch.tensor([[1, 0, 0],
                        [1, 1, 0],
                        [0, 0, 0],
                        [0, 1, 0]], dtype=torch.float32)
THRESHOLDS = [0.5, 0.5, 0.5]


def test_report_counts_per_class_macro_micro_and_exact_match_by_hand():
    report = tagging_report(CLIP_PROBS, TARGETS, CLASSES, THRESHOLDS)
    # tagged: clip 0 {drums}, clip 1 {drums, piano}, clip 2 {piano}, clip 3 {voice}
    assert report["per_class"]["drums"] == {"ap": 1.0, "f1": 1.0, "precision": 1.0, "recall": 1.0, "support": 2,
                                            "threshold": 0.5}
    piano = report["per_class"]["piano"]  # tagged clips 1, 2; true clips 1, 3
    assert (piano["precision"], piano["recall"], piano["f1"], piano["support"]) == (0.5, 0.5, 0.5, 2)
    assert piano["ap"] == pytest.approx(0.5 * 1 / 2 + 0.5 * 2 / 3)  # ranked 0.8 neg, 0.6 pos, 0.3 pos, 0.2 neg
    voice = report["per_class"]["voice"]  # no positive clip, one false alarm
    assert voice["ap"] is None and (voice["precision"], voice["f1"], voice["support"]) == (0.0, 0.0, 0)
    assert report["macro_f1"] == pytest.approx((1.0 + 0.5) / 2)  # voice is not in the targets
    assert report["map"] == pytest.approx((1.0 + piano["ap"]) / 2)
    assert report["micro_f1"] == pytest.approx(2 * 3 / (5 + 4))  # 3 true tags among 5 tagged, 4 true
    assert report["exact_match"] == 0.5  # clips 0 and 1
    assert (report["task"], report["n_clips"], report["classes"]) == ("multi_label", 4, CLASSES)
    assert report["thresholds"] == dict(zip(CLASSES, THRESHOLDS))


def test_report_f1_matches_a_reference_on_random_data_and_is_strict_json():
    rng = np.random.default_rng(3)
    clip_probs, targets = random_scores_with_ties(rng, 40, 5)
    targets[:, 0] = 0  # a class without a positive clip
    thresholds = rng.uniform(0.2, 0.8, 5).tolist()
    report = tagging_report(clip_probs, targets, list("abcde"), thresholds)
    tagged = clip_probs >= np.array(thresholds)
    per_class_f1 = [reference_f1(tagged[:, c].tolist(), targets[:, c].astype(int).tolist()) for c in range(5)]
    present = [c for c in range(5) if targets[:, c].any()]
    assert report["macro_f1"] == pytest.approx(np.mean([per_class_f1[c] for c in present]))
    assert report["micro_f1"] == pytest.approx(reference_f1(tagged.ravel().tolist(),
                                                            targets.astype(int).ravel().tolist()))
    assert report["map"] == pytest.approx(np.mean([
        reference_average_precision(clip_probs[:, c].tolist(), targets[:, c].astype(int).tolist()) for c in present]))
    json.dumps(report, allow_nan=False)  # a class without AP is null, not NaN


def test_report_refuses_a_threshold_or_class_name_too_few():
    with pytest.raises(TaggingError, match="2 thresholds"):
        tagging_report(CLIP_PROBS, TARGETS, CLASSES, [0.5, 0.5])


def test_a_score_equal_to_its_threshold_is_tagged():
    assert apply_thresholds(torch.tensor([[0.5, 0.49]]), [0.5, 0.5]).tolist() == [[True, False]]


# the files of a multi-label test


def logits_of(clip_probs: torch.Tensor) -> torch.Tensor:
    return torch.logit(clip_probs.double()).float()


def test_multi_label_outputs_are_the_tagging_report_predictions_and_ap_picture(tmp_path):
    clips = [f"clip{i}.wav" for i in range(4)]
    report = write_test_outputs(tmp_path, logits_of(CLIP_PROBS), TARGETS, clips, CLASSES, thresholds=THRESHOLDS,
                                best_epoch=3)
    written = json.loads((tmp_path / "test_report.json").read_text())
    assert written == report
    assert written["best_epoch"] == 3 and written["exact_match"] == 0.5 and written["task"] == "multi_label"
    with open(tmp_path / "test_predictions.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["clip", "true", "predicted", *CLASSES]
    assert rows[2] == ["clip1.wav", "drums;piano", "drums;piano", "0.7000", "0.6000", "0.3000"]
    assert rows[3][:3] == ["clip2.wav", "", "piano"]
    assert (tmp_path / "per_class_ap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "confusion_matrix.png").exists()


def test_multi_label_outputs_need_thresholds_and_single_label_refuses_them(tmp_path):
    with pytest.raises(TaggingError, match="tune_thresholds"):
        write_test_outputs(tmp_path, logits_of(CLIP_PROBS), TARGETS, ["a", "b", "c", "d"], CLASSES)
    with pytest.raises(TaggingError, match="multi-label"):
        write_test_outputs(tmp_path, torch.eye(2), torch.tensor([0, 1]), ["a", "b"], ["x", "y"], thresholds=[0.5])
    assert not list(tmp_path.iterdir())


def test_single_label_outputs_keep_the_confusion_matrix(tmp_path):
    report = write_test_outputs(tmp_path, torch.eye(2), torch.tensor([0, 1]), ["a", "b"], ["x", "y"])
    assert report["accuracy"] == 1.0 and "task" not in report
    assert (tmp_path / "confusion_matrix.png").exists() and not (tmp_path / "per_class_ap.png").exists()


def test_per_class_ap_picture_ranks_classes_best_first_and_names_the_map():
    aps = {"rare": 0.3, "absent": None, "easy": 0.9, "medium": 0.6}
    report = {"classes": list(aps), "map": 0.6, "n_clips": 10,
              "per_class": {name: {"ap": ap, "support": 0 if ap is None else 4} for name, ap in aps.items()}}
    ax = plots.plot_per_class_ap(report).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["easy (n=4)", "medium (n=4)", "rare (n=4)",
                                                            "absent (n=0)"]
    assert [bar.get_width() for bar in ax.patches] == [0.9, 0.6, 0.3, 0.0]
    assert "mAP 0.600" in ax.get_title()
    assert [t.get_text() for t in ax.texts] == ["0.900", "0.600", "0.300", "no positive clip"]
