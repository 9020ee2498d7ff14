"""Pictures of data and runs: mels, training curves, confusion matrices, per-class scores and AP, attention rollout,
embedding projections.

Figures are made with matplotlib's `Figure` directly, not pyplot: no backend is switched, no display is needed,
and a notebook shows the returned figure as it is (after `%matplotlib inline`). Every helper takes plain data
(numpy arrays, lists, the dicts of a run's JSON files), returns the Figure, and saves it as PNG when given a path.
Mels are dB arrays (n_mels, n_frames), index 0 = lowest band, as `features.log_mel` and `read_mel_png` give them.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .features import MelConfig, mel_band_edges

FREQ_TICKS_HZ = (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


def plot_curves(metrics: list[dict], path: Path | None = None) -> Figure:
    """Loss and accuracy per epoch (train and validation) from the records of metrics.jsonl, and a tagger's val mAP
    beside them where the records have "val_map" (a tagger's accuracy is the share of its label decisions that are
    right); an ensemble's records carry a "member" field, and each member gets its own lines."""
    with_map = any("val_map" in m for m in metrics)
    fig = Figure(figsize=(15 if with_map else 10, 4))
    ax_loss, ax_acc, *ax_map = fig.subplots(1, 3 if with_map else 2)
    for member in dict.fromkeys(m.get("member") for m in metrics):  # None for a one-model run
        records = [m for m in metrics if m.get("member") == member]
        epochs, suffix = [m["epoch"] for m in records], "" if member is None else f", member {member}"
        for split in ("train", "val"):
            ax_loss.plot(epochs, [m[f"{split}_loss"] for m in records], marker=".", label=split + suffix)
            ax_acc.plot(epochs, [m[f"{split}_acc"] for m in records], marker=".", label=split + suffix)
        if with_map:
            scored = [m for m in records if "val_map" in m]
            ax_map[0].plot([m["epoch"] for m in scored], [m["val_map"] for m in scored], marker=".",
                           label="val" + suffix, color=ax_acc.lines[-1].get_color())  # as its val accuracy
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1),
               title="label decisions right (val: clip level)" if with_map else "accuracy (val: clip level)")
    for ax in ax_map:
        ax.set(xlabel="epoch", ylabel="mAP", title="mean average precision (val: clip level)", ylim=(0, 1))
    for ax in (ax_loss, ax_acc, *ax_map):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path | None = None,
                          normalize: bool | None = None) -> Figure:
    """Confusion matrix, rows = true class: counts and row shares side by side (None), or only one of them."""
    counts = np.asarray(matrix, dtype=float)
    kinds = [False, True] if normalize is None else [normalize]
    size = 2 + 0.5 * len(classes)
    fig = Figure(figsize=((size + 1) * len(kinds), size))
    for ax, row_share in zip(np.atleast_1d(fig.subplots(1, len(kinds))), kinds):
        shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if row_share else counts
        image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if row_share else max(shown.max(), 1))
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set(xlabel="predicted", ylabel="true",
               title="row share (recall on the diagonal)" if row_share else f"counts ({int(counts.sum())} clips)")
        threshold = 0.5 if row_share else max(shown.max(), 1) / 2
        for (row, col), value in np.ndenumerate(shown):
            ax.text(col, row, f"{value:.2f}" if row_share else f"{int(value)}", ha="center", va="center",
                    color="white" if value > threshold else "black", fontsize=8)
    return _save(fig, path)


def plot_per_class_metrics(report: dict, path: Path | None = None) -> Figure:
    """Precision, recall and F1 of every class as grouped bars, from a test_report.json dict (a classifier's or a
    tagger's)."""
    classes = report["classes"]
    per_class = report["per_class"]
    names = ("precision", "recall", "f1")
    width = 0.8 / len(names)
    fig = Figure(figsize=(max(6.0, 1.0 + 0.9 * len(classes)), 4))
    ax = fig.subplots()
    positions = np.arange(len(classes))
    for i, name in enumerate(names):
        ax.bar(positions + (i - 1) * width, [per_class[c][name] for c in classes], width, label=name)
    ax.set_xticks(positions, [f"{c}\n(n={per_class[c]['support']})" for c in classes],
                  rotation=45 if len(classes) > 8 else 0, ha="right" if len(classes) > 8 else "center")
    if report.get("task") == "multi_label":  # a tagger's: at the thresholds tuned on validation
        title = f"per class at the tuned thresholds: mAP {_score(report['map'])}, macro F1 {_score(report['macro_f1'])}"
    else:
        title = f"per class: accuracy {report['accuracy']:.3f}, macro F1 {report['macro_f1']:.3f}"
    ax.set(ylim=(0, 1.05), ylabel="score", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_per_class_ap(report: dict, path: Path | None = None) -> Figure:
    """Average precision of every class as horizontal bars, best at the top, from a multi-label test_report.json
    dict (`tagging.tagging_report`); classes without a positive clip (AP None) are listed last, without a bar."""
    per_class = report["per_class"]
    scored = sorted((c for c in report["classes"] if per_class[c]["ap"] is not None),
                    key=lambda c: -per_class[c]["ap"])
    unscored = [c for c in report["classes"] if per_class[c]["ap"] is None]
    names = scored + unscored
    fig = Figure(figsize=(7, 1.2 + 0.35 * len(names)))
    ax = fig.subplots()
    bars = ax.barh([f"{c} (n={per_class[c]['support']})" for c in names],
                   [per_class[c]["ap"] or 0.0 for c in names], color="tab:blue")
    ax.bar_label(bars, labels=[f"{per_class[c]['ap']:.3f}" if c in scored else "no positive clip" for c in names],
                 padding=3, fontsize=8)
    ax.invert_yaxis()  # best class at the top
    ax.set(xlim=(0, 1.15), xlabel="average precision",
           title=f"per-class AP: mAP {_score(report['map'])} over {len(scored)} classes, {report['n_clips']} clips")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_mel(mel_db: np.ndarray, mel_config: MelConfig, path: Path | None = None, *,
             title: str | None = None) -> Figure:
    """One log-mel (n_mels, n_frames) dB with time in seconds and frequency in Hz (mel-spaced axis)."""
    fig = Figure(figsize=(10, 3.5))
    ax = fig.subplots()
    image = _draw_mel(ax, mel_db, mel_config, title)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label="dB")
    return _save(fig, path)


def plot_mels(mels: Sequence[np.ndarray], titles: Sequence[str], mel_config: MelConfig, path: Path | None = None,
              *, ncols: int = 3) -> Figure:
    """A grid of log-mels, e.g. one example per class or the misclassified clips, each with its title."""
    if not mels:
        return _note("no clips to show", path)
    nrows = -(-len(mels) // ncols)
    fig = Figure(figsize=(4.2 * min(ncols, len(mels)), 3.2 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, min(ncols, len(mels)), squeeze=False)).ravel()
    for ax, mel_db, title in zip(axes, mels, titles):
        _draw_mel(ax, mel_db, mel_config, title)
    for ax in axes[len(mels):]:
        ax.set_axis_off()
    return _save(fig, path)


def plot_attention_rollout(mel_db: np.ndarray, relevance: np.ndarray, mel_config: MelConfig,
                           path: Path | None = None, *, title: str | None = None) -> Figure:
    """A segment's mel and, beside it, the mel with the attention-rollout relevance laid over it.

    `relevance` has the mel's shape (n_mels, n_frames): the (F', T') patch grid spread over the pixels each patch
    covers (`explain.relevance_map`); NaN where no patch reaches (trailing frames).
    """
    return plot_attention_rollouts([mel_db], [relevance], [title or ""], mel_config, path)


def plot_attention_rollouts(mels: Sequence[np.ndarray], relevances: Sequence[np.ndarray], titles: Sequence[str],
                            mel_config: MelConfig, path: Path | None = None) -> Figure:
    """One row per clip: its mel, then the mel overlaid with its rollout relevance (see plot_attention_rollout)."""
    if not mels:
        return _note("no clips to show", path)
    fig = Figure(figsize=(11, 3.2 * len(mels)))
    axes = fig.subplots(len(mels), 2, squeeze=False)
    for (ax_mel, ax_rollout), mel_db, relevance, title in zip(axes, mels, relevances, titles):
        if relevance.shape != mel_db.shape:
            raise ValueError(f"relevance shape {relevance.shape} doesn't match the mel's {mel_db.shape}; "
                             f"spread the patch grid over the mel with explain.relevance_map")
        _draw_mel(ax_mel, mel_db, mel_config, title)
        _draw_mel(ax_rollout, mel_db, mel_config, "attention rollout", cmap="gray")
        overlay = ax_rollout.imshow(np.ma.masked_invalid(relevance), origin="lower", aspect="auto", cmap="inferno",
                                    alpha=0.6, extent=_mel_extent(mel_db, mel_config), interpolation="nearest")
        fig.colorbar(overlay, ax=ax_rollout, fraction=0.03, pad=0.01, label="relevance")
    return _save(fig, path)


def pca_2d(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> the first two principal components (N, 2) and their shares of the variance (2,), by SVD.

    Signs are fixed (each axis' largest loading is positive), so the same embeddings always give the same picture.
    """
    centred = np.asarray(embeddings, dtype=np.float64)
    centred = centred - centred.mean(axis=0, keepdims=True)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)  # components: (min(N, D), D)
    components = components[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1, signs)[:, None]
    projected = centred @ components.T  # (N, D) @ (D, k) -> (N, k)
    variance = singular**2
    shares = variance[:2] / max(variance.sum(), 1e-12)
    missing = 2 - projected.shape[1]  # fewer than two samples or dimensions: a flat axis
    return np.pad(projected, ((0, 0), (0, missing))), np.pad(shares, (0, missing))


def plot_embeddings(embeddings: np.ndarray, labels: Sequence[str], path: Path | None = None, *,
                    title: str = "clip embeddings, PCA") -> Figure:
    """Clip embeddings (N, D) projected on their first two principal components, one colour per class."""
    points, shares = pca_2d(embeddings)
    fig = Figure(figsize=(7, 5.5))
    ax = fig.subplots()
    colours = _class_colours(sorted(set(labels)))
    labels = np.asarray(labels)
    for label, colour in colours.items():
        chosen = labels == label
        ax.scatter(points[chosen, 0], points[chosen, 1], s=22, color=colour, label=f"{label} ({chosen.sum()})",
                   alpha=0.8, edgecolors="none")
    ax.set(xlabel=f"PC 1 ({shares[0]:.0%} of variance)", ylabel=f"PC 2 ({shares[1]:.0%} of variance)",
           title=f"{title}: {len(labels)} clips")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", markerscale=1.2)
    return _save(fig, path)


def plot_class_balance(counts: dict[str, int], path: Path | None = None) -> Figure:
    """Clips per class as horizontal bars, the count written at each bar's end."""
    classes = list(counts)
    fig = Figure(figsize=(7, 1.2 + 0.35 * len(classes)))
    ax = fig.subplots()
    bars = ax.barh(classes, [counts[c] for c in classes], color="tab:blue")
    ax.bar_label(bars, padding=3, fontsize=8)
    ax.invert_yaxis()  # first class at the top
    ax.set(xlabel="clips", title=f"class balance: {sum(counts.values())} clips in {len(classes)} classes")
    ax.margins(x=0.12)
    return _save(fig, path)


def plot_durations(durations: dict[str, list[float]], path: Path | None = None) -> Figure:
    """Clip durations: a histogram of all clips, and every clip per class (seconds)."""
    classes = [c for c in durations if durations[c]]
    if not classes:
        return _note("no clip durations known", path)
    everything = np.concatenate([durations[c] for c in classes])
    fig = Figure(figsize=(11, 1.5 + 0.3 * max(len(classes), 6)))
    ax_hist, ax_box = fig.subplots(1, 2)
    ax_hist.hist(everything, bins=min(40, max(5, len(everything) // 5)), color="tab:blue")
    ax_hist.set(xlabel="seconds", ylabel="clips",
                title=f"durations: {everything.min():.2f} to {everything.max():.2f} s, median "
                      f"{np.median(everything):.2f} s")
    jitter = np.random.default_rng(0)  # spreads equal durations vertically; seeded, so the picture is stable
    for row, name in enumerate(classes):
        seconds = np.asarray(durations[name])
        ax_box.scatter(seconds, row + jitter.uniform(-0.25, 0.25, len(seconds)), s=8, alpha=0.5)
        ax_box.plot([np.median(seconds)] * 2, [row - 0.35, row + 0.35], color="black")  # the class median
    ax_box.set_yticks(range(len(classes)), classes)
    ax_box.invert_yaxis()
    ax_box.set(xlabel="seconds", title="per class (one dot per clip, bar = median)")
    for ax in (ax_hist, ax_box):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """The bytes of a PNG of `fig` (e.g. to send over HTTP), without touching the file system."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_rgb(fig: Figure, dpi: int = 80) -> np.ndarray:
    """(H, W, 3) uint8 pixels of `fig` as `figure_png` renders it (e.g. an image for TensorBoard)."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(figure_png(fig, dpi))).convert("RGB"))


def mel_band_frequencies(mel_config: MelConfig) -> np.ndarray:
    """(n_mels,) centre frequency in Hz of each mel band, as `features.mel_filterbank` places them."""
    return mel_band_edges(mel_config)[1:-1]  # band i spans edges i .. i + 2


def _mel_extent(mel_db: np.ndarray, mel_config: MelConfig) -> tuple[float, float, float, float]:
    """imshow extent: x in seconds (frame t starts at t * hop / sr), y in band index units (band i = [i, i+1])."""
    return (0.0, mel_db.shape[1] / mel_config.frames_per_second, 0.0, float(mel_db.shape[0]))


def _draw_mel(ax: Axes, mel_db: np.ndarray, mel_config: MelConfig, title: str | None, cmap: str = "magma"):
    if mel_db.ndim != 2 or mel_db.shape[0] != mel_config.n_mels:
        raise ValueError(f"Expected a mel (n_mels={mel_config.n_mels}, n_frames), got shape {mel_db.shape}.")
    image = ax.imshow(mel_db, origin="lower", aspect="auto", cmap=cmap, vmin=-mel_config.top_db, vmax=0.0,
                      extent=_mel_extent(mel_db, mel_config), interpolation="nearest")
    centres = mel_band_frequencies(mel_config)
    ticks, positions = [], []
    for hz in FREQ_TICKS_HZ:
        # band i covers [i, i + 1] on the y axis, so its centre frequency sits at i + 0.5
        position = float(np.interp(hz, centres, np.arange(len(centres)) + 0.5))
        if centres[0] <= hz <= centres[-1] and (not positions or position - positions[-1] >= 0.07 * len(centres)):
            ticks.append(hz)
            positions.append(position)
    ax.set_yticks(positions, [f"{hz // 1000}k" if hz >= 1000 else str(hz) for hz in ticks])
    ax.set(xlabel="time (s)", ylabel="frequency (Hz)")
    if title:
        ax.set_title(title, fontsize=9)
    return image


def _class_colours(classes: Sequence[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    return {c: palette(i % palette.N) for i, c in enumerate(classes)}


def _score(value: float | None) -> str:
    """A report's score to three places; "n/a" where the report has none (no positive clip to measure by)."""
    return "n/a" if value is None else f"{value:.3f}"


def _note(text: str, path: Path | None) -> Figure:
    """A small figure that says why there is nothing to plot, so a notebook cell still shows something."""
    fig = Figure(figsize=(5, 1))
    ax = fig.subplots()
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return _save(fig, path)


def _save(fig: Figure, path: Path | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
