"""Shared helpers: tests make their own audio, there is no data to download."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 22050


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
