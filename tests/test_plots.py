"""Plot helpers, attention rollout, embeddings and the run/data readers the notebooks use."""
import json

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from vitaudio import explain, explore, plots
from vitaudio.features import MelConfig
from vitaudio.inference import pipeline
from vitaudio.model import ViT, ViTConfig, ViTEnsemble

MEL = MelConfig(n_mels=32)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def mel_db(n_frames: int = 60, n_mels: int = 32) -> np.ndarray:
    return np.random.default_rng(0).uniform(-80, 0, (n_mels, n_frames)).astype(np.float32)


REPORT = {"classes": ["a", "b"], "accuracy": 0.75, "macro_f1": 0.73, "n_clips": 4,
          "per_class": {"a": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2},
                        "b": {"precision": 0.667, "recall": 1.0, "f1": 0.8, "support": 2}},
          "confusion_matrix": [[1, 1], [0, 2]]}
TAGGER_REPORT = {"task": "multi_label", "map": 0.8, "macro_f1": 0.7, "micro_f1": 0.75, "exact_match": 0.5,
                 "n_clips": 4, "classes": ["a", "b", "c"], "thresholds": {"a": 0.4, "b": 0.6, "c": 0.5},
                 "per_class": {"a": {"ap": 0.9, "f1": 0.8, "precision": 1.0, "recall": 0.667, "support": 3,
                                     "threshold": 0.4},
                               "b": {"ap": 0.7, "f1": 0.6, "precision": 0.5, "recall": 0.75, "support": 2,
                                     "threshold": 0.6},
                               "c": {"ap": None, "f1": 0.0, "precision": 0.0, "recall": 0.0, "support": 0,
                                     "threshold": 0.5}}}


def curve_records(with_map: bool = False, member: int | None = None) -> list[dict]:
    """metrics.jsonl records of three epochs: a classifier's, or a tagger's with val_map."""
    return [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": 0.2 * e, "val_acc": 0.15 * e,
             **({"val_map": 0.25 * e} if with_map else {}), **({} if member is None else {"member": member})}
            for e in (1, 2, 3)]


HELPERS = {
    "curves": lambda path: plots.plot_curves(curve_records(), path),
    "curves_with_map": lambda path: plots.plot_curves(curve_records(with_map=True), path),
    "confusion_matrix": lambda path: plots.plot_confusion_matrix(REPORT["confusion_matrix"], ["a", "b"], path),
    "per_class": lambda path: plots.plot_per_class_metrics(REPORT, path),
    "per_class_of_a_tagger": lambda path: plots.plot_per_class_metrics(TAGGER_REPORT, path),
    "per_class_ap": lambda path: plots.plot_per_class_ap(TAGGER_REPORT, path),
    "mel": lambda path: plots.plot_mel(mel_db(), MEL, path, title="a clip"),
    "mels": lambda path: plots.plot_mels([mel_db(), mel_db(40)], ["one", "two"], MEL, path),
    "no_mels": lambda path: plots.plot_mels([], [], MEL, path),
    "rollout": lambda path: plots.plot_attention_rollout(mel_db(), np.full((32, 60), 1 / 60), MEL, path),
    "embeddings": lambda path: plots.plot_embeddings(np.random.default_rng(0).normal(size=(12, 8)),
                                                     ["a", "b", "c"] * 4, path),
    "class_balance": lambda path: plots.plot_class_balance({"a": 10, "b": 3}, path),
    "durations": lambda path: plots.plot_durations({"a": [2.0, 2.5, 30.0], "b": [1.0]}, path),
}


@pytest.mark.parametrize("name", HELPERS)
def test_every_plot_helper_returns_a_figure_and_writes_a_png(tmp_path, name):
    fig = HELPERS[name](tmp_path / f"{name}.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    assert plots.figure_png(fig)[:8] == PNG_MAGIC


def test_curves_of_a_classifier_are_loss_and_accuracy():
    fig = plots.plot_curves(curve_records())
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy (val: clip level)"]


def test_curves_of_a_tagger_draw_val_map_beside_loss_and_accuracy_one_line_per_member():
    fig = plots.plot_curves(curve_records(with_map=True, member=0) + curve_records(with_map=True, member=1))
    ax_loss, ax_acc, ax_map = fig.axes
    assert ax_map.get_ylabel() == "mAP" and ax_map.get_ylim() == (0, 1)
    assert [line.get_label() for line in ax_map.lines] == ["val, member 0", "val, member 1"]
    assert list(ax_map.lines[0].get_ydata()) == [0.25, 0.5, 0.75]
    assert len(ax_loss.lines) == len(ax_acc.lines) == 4  # train and val of each member, as for a classifier


def test_per_class_bars_of_a_tagger_are_titled_with_its_map_and_those_without_a_positive_clip_say_so():
    assert "mAP 0.800, macro F1 0.700" in plots.plot_per_class_metrics(TAGGER_REPORT).axes[0].get_title()
    ax = plots.plot_per_class_ap(TAGGER_REPORT).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (n=3)", "b (n=2)", "c (n=0)"]  # best first
    assert [t.get_text() for t in ax.texts] == ["0.900", "0.700", "no positive clip"]


def test_mel_axes_are_seconds_and_hertz():
    ax = plots.plot_mel(mel_db(n_frames=86), MelConfig(n_mels=32)).axes[0]
    assert ax.get_xlim() == pytest.approx((0, 86 * 512 / 22050))
    assert ax.get_xlabel() == "time (s)" and ax.get_ylabel() == "frequency (Hz)"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "1k" in labels and "5k" in labels
    centres = plots.mel_band_frequencies(MelConfig(n_mels=32))
    tick_1k = ax.get_yticks()[labels.index("1k")]  # band i spans [i, i + 1]: 1 kHz lies between the band centres
    assert centres[int(tick_1k - 0.5)] <= 1000 <= centres[int(tick_1k + 0.5)]


def test_mel_of_the_wrong_height_is_refused():
    with pytest.raises(ValueError, match=r"n_mels=128"):
        plots.plot_mel(mel_db(n_mels=32), MelConfig())


def test_confusion_matrix_shows_counts_and_row_shares_unless_told_one():
    both = plots.plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b"])
    cells = [[t.get_text() for t in ax.texts] for ax in both.axes if ax.texts]  # the others are colour bars
    assert cells == [["3", "1", "0", "4"], ["0.75", "0.25", "0.00", "1.00"]]
    shares = plots.plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b"], normalize=True)
    assert len(shares.axes) == 2 and shares.axes[0].texts[0].get_text() == "0.75"


def test_rollout_overlay_must_match_the_mel():
    with pytest.raises(ValueError, match="relevance_map"):
        plots.plot_attention_rollout(mel_db(), np.ones((2, 3)), MEL)


def test_pca_finds_the_direction_of_largest_variance_with_a_fixed_sign():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    along = rng.normal(size=(50, 1)) * 10
    embeddings = along * direction + rng.normal(size=(50, 16)) * 0.1
    points, shares = plots.pca_2d(embeddings)
    assert points.shape == (50, 2) and shares[0] > 0.95 and shares.sum() <= 1
    assert abs(np.corrcoef(points[:, 0], along[:, 0])[0, 1]) > 0.99
    assert np.allclose(plots.pca_2d(embeddings[::-1])[0], points[::-1])  # same picture whatever the order


def test_pca_of_a_single_clip_is_a_point_at_the_origin():
    points, shares = plots.pca_2d(np.ones((1, 8)))
    assert points.shape == (1, 2) and np.allclose(points, 0) and shares.shape == (2,)


def tiny_vit(pool: str = "mean", depth: int = 2, stride: int = 8, clip_context: bool = False) -> ViT:
    torch.manual_seed(0)
    return ViT(ViTConfig(n_mels=32, n_classes=3, dim=32, depth=depth, heads=4, patch_size=(8, 8),
                         patch_stride=(stride, stride), pool=pool, drop_path=0.0, clip_context=clip_context))


def test_rollout_is_a_distribution_over_the_patch_grid():
    model = tiny_vit()
    relevance = explain.attention_rollout(model, torch.randn(32, 44))  # 44 frames: 5 whole patches in time
    assert relevance.shape == model.patch_embed.grid_size(44) == (4, 5)
    assert (relevance >= 0).all() and relevance.sum() == pytest.approx(1, abs=1e-5)


def test_rollout_of_an_ensemble_is_the_mean_of_its_members_rollouts():
    torch.manual_seed(0)
    ensemble = ViTEnsemble(tiny_vit().config, 2)
    mel = torch.randn(32, 44)
    expected = np.mean([explain.attention_rollout(member, mel) for member in ensemble.members], axis=0)
    assert np.allclose(explain.attention_rollout(ensemble, mel), expected)
    assert not np.allclose(explain.attention_rollout(ensemble.members[0], mel), expected)


def test_rollout_of_one_block_is_the_head_mean_plus_identity_renormalised_then_averaged_over_queries():
    model = tiny_vit(depth=1).eval()
    mel = torch.randn(1, 1, 32, 32)
    weights = model.forward_attention(mel)[0][0]  # (H, N, N)
    mixed = weights.mean(0) + torch.eye(weights.shape[-1])
    expected = (mixed / mixed.sum(-1, keepdim=True)).mean(0).reshape(4, 4)
    assert np.allclose(explain.attention_rollout(model, mel), expected.detach().numpy(), atol=1e-6)


def test_rollout_with_a_context_token_averages_the_rows_over_the_patch_columns_only():
    model = tiny_vit(depth=1, clip_context=True).eval()
    mel, context = torch.randn(1, 1, 32, 32), torch.randn(64)
    weights = model.forward_attention(mel, context[None])[0][0]  # (H, 1 + N, 1 + N)
    mixed = weights.mean(0) + torch.eye(weights.shape[-1])
    patches = (mixed / mixed.sum(-1, keepdim=True)).mean(0)[1:]  # the context token's column is left out
    expected = (patches / patches.sum()).reshape(4, 4).detach().numpy()
    assert np.allclose(explain.attention_rollout(model, mel, context), expected, atol=1e-6)
    assert not np.allclose(explain.attention_rollout(model, mel), expected, atol=1e-6)  # its own context


def test_rollout_with_a_class_token_reads_its_row_and_leaves_the_training_mode_alone():
    model = tiny_vit(pool="cls", depth=1).train()
    mel = torch.randn(1, 32, 32)
    model.eval()
    weights = model.forward_attention(mel[None])[0][0]  # (H, 1 + N, 1 + N)
    model.train()
    mixed = weights.mean(0) + torch.eye(weights.shape[-1])
    row = (mixed / mixed.sum(-1, keepdim=True))[0, 1:]
    assert np.allclose(explain.attention_rollout(model, mel), (row / row.sum()).reshape(4, 4).detach().numpy(),
                       atol=1e-6)
    assert model.training


def test_rollout_refuses_a_batch():
    with pytest.raises(ValueError, match="one input"):
        explain.attention_rollout(tiny_vit(), torch.randn(2, 1, 32, 32))


def test_relevance_map_averages_overlapping_patches_and_leaves_uncovered_frames_nan():
    model = tiny_vit(stride=4)  # 8x8 patches every 4 bins / frames: most pixels lie under 2 x 2 patches
    grid = model.patch_embed.grid_size(22)  # (7, 4): frames 0..19 covered, 20..21 not
    relevance = np.arange(np.prod(grid), dtype=float).reshape(grid)
    pixels = explain.relevance_map(relevance, model.config, 22)
    assert pixels.shape == (32, 22)
    assert pixels[0, 0] == relevance[0, 0]  # corner: one patch
    assert pixels[5, 5] == pytest.approx(relevance[:2, :2].mean())  # under four patches
    assert np.isnan(pixels[:, 20:]).all() and not np.isnan(pixels[:, :20]).any()


def test_segment_rollout_and_embeddings_of_a_trained_run(tiny_run):
    clf = pipeline(tiny_run / "best.pt", device="cpu")
    run = explore.load_run(tiny_run)
    clip = run.predictions[0].clip
    segment_db, relevance = explain.segment_rollout(clf, run.mel(clip))
    assert segment_db.shape == relevance.shape == (clf.mel_config.n_mels, clf.segment_rule.frames)
    assert np.nanmin(relevance) >= 0
    from_mels = explain.embed_mels(clf, [run.mel(clip)])
    from_audio = clf.embed([str(tiny_run.parent / "audio" / clip)])
    assert from_mels.shape == (1, clf.model.embed_dim) == (1, 2 * 128)  # the default: 2 members' embeddings
    assert np.allclose(from_mels, from_audio, atol=2e-3)  # the same path, up to the PNG's 0.0024 dB steps


def test_load_run_reads_every_run_file(tiny_run):
    run = explore.load_run(tiny_run)
    assert run.classes == ["bass", "mid", "treble"] and run.checkpoint.exists()
    assert [(m["member"], m["epoch"]) for m in run.metrics] == [(0, 1), (1, 1)]
    assert len(run.predictions) == run.report["n_clips"] == 3
    assert all(len(p.top) == 3 for p in run.predictions)
    assert run.mel(run.predictions[0].clip).shape[0] == run.mel_config.n_mels
    assert len(run.report_table()) == 6  # three classes, accuracy, macro F1, balanced accuracy
    wrong = run.misclassified()
    assert all(not p.correct for p in wrong)
    assert [p.top[0][1] for p in wrong] == sorted((p.top[0][1] for p in wrong), reverse=True)
    assert sorted(run.clips()) == sorted(c for split in json.loads((tiny_run / "split.json").read_text()).values()
                                         for c in split)
    assert {p.true for p in run.examples(3)} == {"bass", "mid", "treble"}


def test_load_run_finds_the_newest_tested_run_and_relative_paths_from_a_subfolder(tiny_run, monkeypatch):
    monkeypatch.chdir(tiny_run)  # a notebook in <project>/notebooks asks for "runs/x": found one level up
    assert explore.load_run(tiny_run.name).path == tiny_run
    assert explore.load_run(tiny_run.parent).path == tiny_run  # a folder of runs: its newest tested one
    with pytest.raises(FileNotFoundError, match="no-such-run"):
        explore.load_run("no-such-run")


def test_load_dataset_reports_class_balance_durations_and_melify_failures(tiny_run):
    data = explore.load_dataset(tiny_run.parent / "audio")
    assert data.class_counts() == {"bass": 10, "mid": 10, "treble": 10}
    assert all(d == pytest.approx(2.0) for durations in data.durations().values() for d in durations)
    failures = data.failures()
    assert [row[0] for row in failures.rows] == ["bass/broken.wav"]
    assert "bass/broken.wav" in failures._repr_markdown_()
    mels, titles = data.examples(per_class=2)
    assert len(mels) == 6 and titles[0].startswith("bass: ")
    assert explore.load_dataset(data.mel_root).records == data.records  # melify output works as well


def test_most_confused_pairs_are_the_largest_off_diagonal_cells():
    matrix = [[5, 3, 0], [1, 4, 0], [0, 2, 6]]
    assert explore.most_confused_pairs(matrix, ["a", "b", "c"], top=2) == [("a", "b", 3, 0.375), ("c", "b", 2, 0.25)]
    assert explore.most_confused_pairs([[2, 0], [0, 2]], ["a", "b"]) == []


def test_table_renders_markdown_for_notebooks_and_text_for_terminals():
    table = explore.Table(["class", "F1"], [["jazz", 0.91234], ["a|b", 1]])
    assert table._repr_markdown_().splitlines() == ["| class | F1 |", "| --- | --- |", "| jazz | 0.912 |",
                                                    "| a\\|b | 1 |"]
    assert str(table).splitlines()[1] == "jazz   0.912"
    assert str(explore.Table(["x"], empty="nothing here")) == "nothing here"
