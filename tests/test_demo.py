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

from vitaudio.demo import CLASSES, CLIPS_PER_PIECE, make_demo_dataset

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
