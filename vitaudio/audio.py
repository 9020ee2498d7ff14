"""Decode an audio file into mono float32 samples at a chosen sample rate.

libsndfile (through soundfile) reads WAV, FLAC, OGG/Opus, AU/SND (the original GTZAN release), AIFF and,
from libsndfile 1.1 on, MP3. Formats it cannot read (M4A/AAC, WMA, ...) raise `AudioDecodeError` with the fix.
Resampling uses soxr (librosa's own high-quality resampler).
"""
from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from .errors import VitaudioError

# Extensions treated as audio when walking folders; everything else is ignored.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".au", ".snd", ".aif", ".aiff", ".aifc", ".mp3",
    ".m4a", ".aac", ".wma",
})
_CONVERT_HINT = "convert it to WAV or FLAC first, e.g. `ffmpeg -i {name} {stem}.wav`"


class AudioDecodeError(VitaudioError):
    """An audio file could not be turned into samples: `path` says which, `reason` says why."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")


def is_audio_file(path: Path) -> bool:
    """True for a visible file whose extension is a known audio format."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in AUDIO_EXTENSIONS


def find_audio_files(folder: Path) -> list[Path]:
    """The audio files anywhere below `folder`, sorted; hidden files and anything in hidden folders skipped."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*")
                  if is_audio_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def audio_info(source: Path | bytes) -> tuple[int, float] | None:
    """(sample rate, seconds) of an audio file, or of a file's bytes, from its header, without decoding it; None
    when libsndfile cannot tell."""
    try:
        info = sf.info(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    return (info.samplerate, info.duration) if info.samplerate > 0 and info.frames >= 0 else None


def load_audio(source: str | Path | bytes | BinaryIO, sample_rate: int) -> np.ndarray:
    """Decode `source` (a path, the bytes of a file, or a file object) -> (n_samples,) float32 mono at `sample_rate`."""
    name = str(source) if isinstance(source, (str, Path)) else "<audio bytes>"
    # libsndfile says "System error." for a missing file and "Format not recognised" for an empty one
    if isinstance(source, (str, Path)):
        _check_path(Path(source))
    elif isinstance(source, bytes):
        if not source:
            raise AudioDecodeError(name, "empty file (0 bytes)")
        source = io.BytesIO(source)
    try:
        samples, file_rate = sf.read(source, dtype="float32", always_2d=True)  # (n_samples, n_channels)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioDecodeError(name, _explain(name, err)) from None
    except OSError as err:
        raise AudioDecodeError(name, f"cannot read file ({err.strerror or err})") from None
    if samples.size == 0:
        raise AudioDecodeError(name, "file holds no audio samples (empty)")
    # (n_samples, n_channels) -> (n_samples,); a mono file's one column as it is (numpy's mean over an axis of
    # length 1 takes as long as decoding the file)
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioDecodeError(name, "file holds NaN or infinite samples")
    return resample(mono, file_rate, sample_rate)


def too_short(n_samples: int, window: int, sample_rate: int) -> str | None:
    """Why a clip of `n_samples` is too short to make one `window`-sample FFT frame, or None when it is not: the
    one length rule of melify (hence training) and inference."""
    if n_samples >= window:
        return None
    return (f"too short: {n_samples / sample_rate:.3f} s is less than one FFT window "
            f"({window} samples = {window / sample_rate:.3f} s)")


def overflow_reason(samples: np.ndarray) -> str:
    """Why finite samples gave non-finite features: squaring them overflows float32 (|x| above ~1e19)."""
    return (f"its samples overflow: they reach {float(np.abs(samples).max()):.3g}, too large to square in 32-bit "
            f"floats, so its features are not finite; normalise it to [-1, 1] (divide by its peak) first")


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """(n,) float32 at `from_rate` -> (m,) float32 at `to_rate`, with soxr's high-quality filter."""
    if from_rate == to_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    import soxr  # a librosa dependency; imported here so that reading files at the target rate never loads it

    return soxr.resample(samples.astype(np.float32), from_rate, to_rate, quality="HQ").astype(np.float32)


def _check_path(path: Path) -> None:
    """Name what a path is when it is not an audio file at all: missing, a folder, or empty."""
    try:
        status = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise AudioDecodeError(path, "no such file") from None
    except OSError as err:
        raise AudioDecodeError(path, f"cannot read file ({err.strerror or err})") from None
    if stat.S_ISDIR(status.st_mode):
        raise AudioDecodeError(path, "is a folder, not an audio file")
    if stat.S_ISREG(status.st_mode) and status.st_size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")


def _explain(name: str, err: Exception) -> str:
    """Turn a libsndfile error into a reason a user can act on."""
    suffix = Path(name).suffix.lower()
    stem = Path(name).stem
    if suffix == ".mp3" and tuple(int(p) for p in sf.__libsndfile_version__.split(".")[:2]) < (1, 1):
        return (f"this libsndfile ({sf.__libsndfile_version__}) cannot decode MP3: "
                f"`pip install -U 'soundfile>=0.12.1'` (bundles libsndfile >= 1.1), or "
                + _CONVERT_HINT.format(name=Path(name).name, stem=stem))
    if suffix in {".m4a", ".aac", ".wma"}:
        return f"{suffix} is not a format libsndfile reads: " + _CONVERT_HINT.format(name=Path(name).name, stem=stem)
    return f"not a readable audio file ({err})"
