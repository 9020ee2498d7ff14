"""Specification of the synthetic demo data set (`vitaudio.demo`)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vitaudio.demo import (
    CLASSES,
    CLIPS_PER_PIECE,
    MAX_STYLES_PER_MIX,
    make_demo_dataset,
    mix_styles,
    synthesize_clip,
)
from vitaudio.demo import main as demo_main
from vitaudio.manifest import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIPS_PER_CLASS = 4  # two pieces per class, so within-class comparisons span pieces
SECONDS = 1.5
SAMPLE_RATE = 22050


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("demo")
    make_demo_dataset(dst, clips_per_class=CLIPS_PER_CLASS, seconds=SECONDS)
    return dst


def _wav_files(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.wav"))


def _read_metadata(root: Path) -> list[dict[str, str]]:
    with (root / "metadata.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _band_features(samples: np.ndarray, sample_rate: int, n_fft: int = 1024, n_bands: int = 24) -> np.ndarray:
    """Mean and std over frames of log energy in log-spaced bands: a crude spectral/rhythmic fingerprint."""
    frame_starts = np.arange(0, samples.size - n_fft, n_fft // 4)
    frames = samples[frame_starts[:, None] + np.arange(n_fft)] * np.hanning(n_fft)  # (n_frames, n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (n_frames, n_fft // 2 + 1)
    edges = (np.geomspace(50, sample_rate / 2, n_bands + 1) * n_fft / sample_rate).astype(int)
    band_energy = np.stack([power[:, lo : max(hi, lo + 1)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])], 1)
    log_energy = np.log(band_energy + 1e-10)
    return np.concatenate([log_energy.mean(0), log_energy.std(0)])


def test_layout_is_one_folder_per_class_with_numbered_wavs(demo_dir: Path) -> None:
    assert sorted(p.name for p in demo_dir.iterdir() if p.is_dir()) == sorted(CLASSES)
    for class_name in CLASSES:
        names = sorted(p.name for p in (demo_dir / class_name).iterdir())
        assert names == [f"{class_name}.{i:05d}.wav" for i in range(CLIPS_PER_CLASS)]


def test_make_demo_dataset_returns_the_written_wav_paths(tmp_path: Path) -> None:
    wav_paths = make_demo_dataset(tmp_path, clips_per_class=1, seconds=0.5)
    assert sorted(wav_paths) == _wav_files(tmp_path)
    assert len(wav_paths) == len(CLASSES)


def test_clips_are_mono_pcm16_at_the_sample_rate_and_length(demo_dir: Path) -> None:
    for wav_path in _wav_files(demo_dir):
        info = sf.info(wav_path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (SAMPLE_RATE, 1, "PCM_16", "WAV")
        assert info.frames == round(SECONDS * SAMPLE_RATE), wav_path


def test_metadata_lists_every_clip_with_its_class_and_piece(demo_dir: Path) -> None:
    rows = _read_metadata(demo_dir)
    assert sorted(row["clip"] for row in rows) == [p.relative_to(demo_dir).as_posix() for p in _wav_files(demo_dir)]
    groups: dict[str, set[str]] = {}
    for row in rows:
        assert row["class"] == row["clip"].split("/")[0]
        assert row["group"]
        groups.setdefault(row["group"], set()).add(row["class"])
    assert all(len(classes) == 1 for classes in groups.values()), "a piece must belong to one class"
    assert len(groups) == len(CLASSES) * CLIPS_PER_CLASS // CLIPS_PER_PIECE


def test_two_runs_write_byte_identical_files_also_with_two_workers(demo_dir: Path, tmp_path: Path) -> None:
    wav_paths = make_demo_dataset(tmp_path, clips_per_class=CLIPS_PER_CLASS, seconds=SECONDS, workers=2)
    assert sorted(wav_paths) == [tmp_path / p.relative_to(demo_dir) for p in _wav_files(demo_dir)]
    first = sorted(p.relative_to(demo_dir) for p in demo_dir.rglob("*") if p.is_file())
    second = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert first == second
    for relative_path in first:
        assert (demo_dir / relative_path).read_bytes() == (tmp_path / relative_path).read_bytes(), relative_path


def test_another_seed_gives_different_audio(demo_dir: Path, tmp_path: Path) -> None:
    make_demo_dataset(tmp_path, clips_per_class=CLIPS_PER_CLASS, seconds=SECONDS, seed=1)
    for wav_path in _wav_files(demo_dir):
        relative_path = wav_path.relative_to(demo_dir)
        assert not np.array_equal(sf.read(wav_path)[0], sf.read(tmp_path / relative_path)[0]), relative_path


def test_rerun_into_the_same_folder_overwrites_and_leaves_no_temp_files(demo_dir: Path, tmp_path: Path) -> None:
    for _ in range(2):
        make_demo_dataset(tmp_path, clips_per_class=CLIPS_PER_CLASS, seconds=SECONDS)
    assert not [p for p in tmp_path.rglob(".*")], "temporary files were left behind"
    for wav_path in _wav_files(demo_dir):
        assert wav_path.read_bytes() == (tmp_path / wav_path.relative_to(demo_dir)).read_bytes()


def test_clips_are_neither_silent_nor_clipped(demo_dir: Path) -> None:
    for wav_path in _wav_files(demo_dir):
        samples, _ = sf.read(wav_path)
        assert np.sqrt(np.mean(samples**2)) > 0.02, f"{wav_path} is (nearly) silent"
        assert np.abs(samples).max() < 0.95, f"{wav_path} reaches full scale"


def test_clips_differ_more_between_classes_than_within(demo_dir: Path) -> None:
    features = {}
    for wav_path in _wav_files(demo_dir):
        samples, sample_rate = sf.read(wav_path)
        features[wav_path] = _band_features(samples, sample_rate)
    within, between = [], []
    paths = list(features)
    for i, path_a in enumerate(paths):
        for path_b in paths[i + 1 :]:
            distance = np.sqrt(np.mean((features[path_a] - features[path_b]) ** 2))
            (within if path_a.parent == path_b.parent else between).append(distance)
    assert np.mean(between) > 1.2 * np.mean(within)


def test_rejects_settings_that_cannot_make_a_data_set(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seconds > 0"):
        make_demo_dataset(tmp_path, seconds=0)


def test_cli_reports_bad_settings_in_one_line_and_writes_nothing(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "demo"
    assert demo_main([str(dst), "--seconds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("demo: error: ") and "seconds > 0" in err and err.count("\n") == 1
    assert not dst.exists()


def test_cli_writes_the_set_and_prints_a_summary(tmp_path: Path) -> None:
    dst = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "vitaudio.demo", str(dst), "--clips-per-class", "2", "--seconds", "1.5"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(_wav_files(dst)) == 2 * len(CLASSES)
    assert len(_read_metadata(dst)) == 2 * len(CLASSES)
    assert result.stdout.startswith(f"wrote {2 * len(CLASSES)} clips ({len(CLASSES)} classes x 2) to {dst}")


# multi-label mode: mixes of styles, listed in a manifest

MIX_CLIPS_PER_CLASS = 2  # 12 mixes: six groups of two


@pytest.fixture(scope="module")
def mix_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("demo_mix")
    make_demo_dataset(dst, clips_per_class=MIX_CLIPS_PER_CLASS, seconds=SECONDS, multi_label=True)
    return dst


def test_multi_label_set_is_one_folder_of_clips_listed_in_a_readable_manifest(mix_dir: Path) -> None:
    assert sorted(p.name for p in mix_dir.iterdir()) == ["clips", "manifest.csv"]
    with (mix_dir / "manifest.csv").open(newline="") as f:
        assert next(csv.reader(f)) == ["path", "label", "group"]
    manifest = read_manifest(mix_dir / "manifest.csv")
    assert not manifest.problems
    assert sorted(row.source for row in manifest.rows) == sorted((mix_dir / "clips").glob("*.wav"))
    assert len(manifest.rows) == MIX_CLIPS_PER_CLASS * len(CLASSES)
    assert manifest.multi_label and set(manifest.classes) <= set(CLASSES)
    assert all(1 <= len(row.labels) <= MAX_STYLES_PER_MIX for row in manifest.rows)


def test_multi_label_clips_share_a_group_exactly_when_they_hold_excerpts_of_the_same_pieces(mix_dir: Path) -> None:
    rows = read_manifest(mix_dir / "manifest.csv").rows
    groups = [row.group for row in rows]  # in clip order: clip i mixes excerpts of piece i // CLIPS_PER_PIECE
    assert groups == [groups[i - i % CLIPS_PER_PIECE] for i in range(len(rows))]
    assert len(set(groups)) == len(rows) // CLIPS_PER_PIECE


def test_multi_label_clips_have_the_format_and_length_of_the_single_label_ones(mix_dir: Path) -> None:
    for wav_path in sorted((mix_dir / "clips").glob("*.wav")):
        info = sf.info(wav_path)
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (
            SAMPLE_RATE, 1, "PCM_16", round(SECONDS * SAMPLE_RATE)), wav_path
        samples, _ = sf.read(wav_path)
        assert np.sqrt(np.mean(samples**2)) > 0.02, f"{wav_path} is (nearly) silent"
        assert np.abs(samples).max() < 0.95, f"{wav_path} reaches full scale"


def test_each_clip_is_the_sum_of_its_labelled_styles_each_clearly_audible(mix_dir: Path) -> None:
    for clip_index, row in enumerate(read_manifest(mix_dir / "manifest.csv").rows):
        mix, _ = sf.read(row.source, dtype="int16")
        # the single-label clips of the same index, as the mix renders them: (n_samples, n_styles)
        sources = np.stack([synthesize_clip(name, clip_index, seconds=SECONDS) for name in row.labels], axis=1)
        levels, *_ = np.linalg.lstsq(sources.astype(np.float64), mix.astype(np.float64), rcond=None)
        residual = mix - sources @ levels
        assert np.sqrt(np.mean(residual**2)) < 0.01 * np.sqrt(np.mean(mix.astype(np.float64) ** 2)), row.key
        contributions = np.sqrt(np.mean((sources * levels) ** 2, axis=0))
        assert contributions.min() > 0.2 * contributions.max(), f"{row.key}: a style is drowned out"


def test_every_style_is_mixed_into_as_many_clips_as_any_other() -> None:
    label_sets = mix_styles(240, seed=0)
    counts = [sum(name in styles for styles in label_sets) for name in CLASSES]
    assert max(counts) - min(counts) <= 1
    assert {len(styles) for styles in label_sets} == set(range(1, MAX_STYLES_PER_MIX + 1))
    assert len(set(label_sets)) > 20, "the mixes should combine the styles in many ways"
    assert mix_styles(240, seed=1) != label_sets


def test_multi_label_reruns_write_byte_identical_files_also_with_two_workers(mix_dir: Path, tmp_path: Path) -> None:
    make_demo_dataset(tmp_path, clips_per_class=MIX_CLIPS_PER_CLASS, seconds=SECONDS, multi_label=True, workers=2)
    first = sorted(p.relative_to(mix_dir) for p in mix_dir.rglob("*") if p.is_file())
    assert first == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for relative_path in first:
        assert (mix_dir / relative_path).read_bytes() == (tmp_path / relative_path).read_bytes(), relative_path


def test_cli_multi_label_writes_the_manifest_and_says_so(tmp_path: Path) -> None:
    dst = tmp_path / "tags"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "vitaudio.demo", str(dst), "--multi-label", "--clips-per-class", "1", "--seconds",
         "1", "--workers", "1"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(read_manifest(dst / "manifest.csv").rows) == len(CLASSES)
    assert result.stdout.startswith(f"wrote {len(CLASSES)} clips (mixes of 1-3 of {len(CLASSES)} styles")
