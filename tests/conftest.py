"""Shared helpers: tests make their own audio, there is no data to download."""
import contextlib
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 22050


@contextlib.contextmanager
def running(clf, **options):
    """A DemoServer of the classifier `clf` on a free port of 127.0.0.1, serving in a thread while the block runs."""
    from vitaudio import serve

    demo = serve.make_server(clf, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=demo.serve_forever, daemon=True)
    thread.start()
    try:
        yield demo
    finally:
        demo.shutdown()
        demo.server_close()
        thread.join(timeout=5)


def write_tone(path: Path, freq: float = 440.0, seconds: float = 2.0, sample_rate: int = SR,
               channels: int = 1, amplitude: float = 0.5) -> Path:
    """Write a sine tone (same in every channel) as a 16-bit file whose format follows the extension."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = amplitude * np.sin(2 * np.pi * freq * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.repeat(tone[:, None], channels, axis=1), sample_rate, subtype="PCM_16")
    return path


@pytest.fixture
def tone_tree(tmp_path) -> Path:
    """SRC/<class>/<clip>.wav: two classes of two 2 s tones each."""
    src = tmp_path / "src"
    for label, freq in (("low", 220.0), ("high", 3000.0)):
        for i in range(2):
            write_tone(src / label / f"{label}.{i:05d}.wav", freq * (1 + 0.05 * i))
    return src


def write_separable_set(root: Path, per_class: int, seconds: float = 2.0, sample_rate: int = SR) -> Path:
    """Three classes of noisy tones in three well-apart registers, GTZAN layout."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    for label, freq in (("bass", 150.0), ("mid", 900.0), ("treble", 5000.0)):
        for i in range(per_class):
            tone = 0.4 * np.sin(2 * np.pi * freq * rng.uniform(0.9, 1.1) * t) + 0.05 * rng.standard_normal(len(t))
            (root / label).mkdir(parents=True, exist_ok=True)
            sf.write(root / label / f"{label}.{i:05d}.wav", tone, sample_rate, subtype="PCM_16")
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One run directory shared by the plot, notebook and serve tests: a `mini` ViT trained for one epoch on
    separable tones (10 clips per class, 2 s), with one undecodable file for melify to report.
    Its audio is in `tiny_run.parent / "audio"`."""
    from vitaudio.config import TrainConfig
    from vitaudio.train import train

    base = tmp_path_factory.mktemp("tiny_run")
    write_separable_set(base / "audio", per_class=10)
    (base / "audio/bass/broken.wav").write_bytes(b"RIFF, but not really a WAV file")
    return train(TrainConfig(root=str(base / "audio"), model="mini", epochs=1, segment_seconds=1.0,
                             out=str(base / "run")))


def write_mixtures(folder: Path, n_clips: int = 60, seconds: float = 1.0, sample_rate: int = 16000) -> Path:
    """Clips each mixing one or two of three tones (low, mid, high), in folder/audio/, and their manifest
    folder/set.csv (path,label,group: `;`-separated labels, groups of three clips)."""
    rng = np.random.default_rng(0)
    tones = {"low": 200.0, "mid": 1000.0, "high": 4000.0}
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rows = ["path,label,group"]
    (folder / "audio").mkdir(parents=True)
    for i in range(n_clips):
        names = list(rng.choice(list(tones), size=int(rng.integers(1, 3)), replace=False))
        mixture = sum(0.3 * np.sin(2 * np.pi * tones[name] * rng.uniform(0.9, 1.1) * t) for name in names)
        sf.write(folder / f"audio/c{i:03d}.wav", mixture + 0.02 * rng.standard_normal(len(t)), sample_rate)
        rows.append(f"audio/c{i:03d}.wav,{';'.join(names)},g{i // 3}")
    (folder / "set.csv").write_text("\n".join(rows) + "\n")
    return folder / "set.csv"


@pytest.fixture(scope="session")
def tiny_tagger(tmp_path_factory) -> Path:
    """One multi-label run directory shared by the predict, export and serve tests: a `mini` ViT tagger trained for
    two epochs on 2 s tone mixtures (`write_mixtures`), 1 s segments. Its clips are `tiny_tagger.parent /
    "audio"/*.wav`, its manifest `tiny_tagger.parent / "set.csv"`."""
    from vitaudio.config import TrainConfig
    from vitaudio.train import train

    base = tmp_path_factory.mktemp("tiny_tagger")
    manifest = write_mixtures(base, seconds=2.0)
    return train(TrainConfig(root=str(manifest), model="mini", epochs=2, members=1, segment_seconds=1.0,
                             out=str(base / "run")))
