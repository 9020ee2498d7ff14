"""The one log-mel feature definition, and its storage as 16-bit PNG images.

`log_mel` is the only place audio becomes features: melify uses it to make the training images, and the
dataset and inference read those images (or call it directly), so features can never drift apart.

Convention (that of the GTZAN ViT blog we start from, `librosa.power_to_db(S, ref=np.max, top_db=80)`):
power mel spectrogram -> dB relative to the clip's own maximum, floored at -top_db. Values lie in [-top_db, 0].

PNG mapping (fixed, independent of the mel parameters): a dB value d in [PNG_DB_MIN, PNG_DB_MAX] = [-160, 0]
is stored as round((d - PNG_DB_MIN) / (PNG_DB_MAX - PNG_DB_MIN) * 65535) in a single-channel 16-bit PNG, one
row per mel band with the lowest band at the bottom of the picture, one column per frame. `png_to_db` is the
exact inverse up to one quantisation step, PNG_DB_STEP = 160 / 65535 ~ 0.0024 dB.
"""
from __future__ import annotations

import hashlib
import json
import struct
import threading
import warnings
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from .files import atomic_path

PNG_DB_MIN, PNG_DB_MAX = -160.0, 0.0
PNG_DB_STEP = (PNG_DB_MAX - PNG_DB_MIN) / 65535


@dataclass(frozen=True)
class MelConfig:
    """Parameters of the log-mel features; they travel in melify.json and in every checkpoint."""

    sample_rate: int = 22050  # audio is resampled to this rate (Hz) before the STFT
    n_fft: int = 2048  # STFT window length in samples; shorter audio is "too short"
    hop_length: int = 512  # samples between frames: 22050 / 512 = 43 frames per second
    n_mels: int = 128  # mel bands = image height
    fmin: float = 0.0  # lowest mel band edge (Hz)
    fmax: float | None = None  # highest mel band edge (Hz); None = sample_rate / 2
    top_db: float = 80.0  # dB floor below the clip's maximum

    def __post_init__(self):
        checks = [
            (self.sample_rate > 0, f"sample_rate must be positive, got {self.sample_rate}"),
            (self.n_fft > 0 and self.hop_length > 0, "n_fft and hop_length must be positive"),
            (self.n_mels > 0, f"n_mels must be positive, got {self.n_mels}"),
            (0 <= self.fmin < self.max_frequency <= self.sample_rate / 2,
             f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, fmax={self.fmax}"),
            (0 < self.top_db <= PNG_DB_MAX - PNG_DB_MIN,
             f"top_db must be in (0, {PNG_DB_MAX - PNG_DB_MIN:g}] (the PNG range), got {self.top_db}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"MelConfig: {message}")

    @property
    def max_frequency(self) -> float:
        return self.sample_rate / 2 if self.fmax is None else self.fmax

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Frames `log_mel` makes from `n_samples` samples (centred STFT)."""
        return 1 + n_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """A short stable hash of the parameters, for naming caches of features made with them."""
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]


SHORT_CLIP_SECONDS = 3.0  # clips shorter than this (words, short events) get the short-clip parameters


def mel_config_for(sample_rate: int, clip_seconds: float) -> MelConfig:
    """The log-mel parameters for audio recorded at `sample_rate` whose clips typically last `clip_seconds`.

    Clips of SHORT_CLIP_SECONDS or more (music, scenes) get MelConfig(): 22,050 Hz, 93 ms windows every 23 ms,
    128 bands, so a 3 s segment is 130 frames. Shorter clips (spoken words, short events) get the resolution
    keyword spotting uses: 10 ms hops and 32 ms windows at the file's rate up to 22,050 Hz (a one-second word
    is then 100 frames instead of 43), and 64 bands, because 128 bands over a 512-point FFT leave some low
    bands without an FFT bin.
    """
    if clip_seconds >= SHORT_CLIP_SECONDS:
        return MelConfig()
    rate = min(int(sample_rate), MelConfig.sample_rate)
    n_fft = 2 ** round(np.log2(0.032 * rate))  # 512 at 16 kHz and at 22,050 Hz
    return MelConfig(sample_rate=rate, n_fft=n_fft, hop_length=round(0.010 * rate), n_mels=64)


_HZ_PER_MEL = 200.0 / 3  # Slaney's scale: 3 mels per 200 Hz up to 1 kHz,
_MEL_AT_1KHZ = 1000.0 / _HZ_PER_MEL  # that is 15 mels,
_MELS_PER_LOG_HZ = np.log(6.4) / 27.0  # then 27 mels per factor of 6.4 in frequency


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear up to 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MEL_AT_1KHZ + np.log(np.maximum(hz, 1000.0) / 1000.0) / _MELS_PER_LOG_HZ
    return np.where(hz >= 1000.0, log_part, hz / _HZ_PER_MEL)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """The inverse of `hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    log_part = 1000.0 * np.exp(_MELS_PER_LOG_HZ * (np.maximum(mels, _MEL_AT_1KHZ) - _MEL_AT_1KHZ))
    return np.where(mels >= _MEL_AT_1KHZ, log_part, mels * _HZ_PER_MEL)


def mel_band_edges(config: MelConfig) -> np.ndarray:
    """(n_mels + 2,) Hz, evenly spaced in mels from fmin to fmax: band i rises from edge i to i + 1, falls to i + 2."""
    return mel_to_hz(np.linspace(hz_to_mel(config.fmin), hz_to_mel(config.max_frequency), config.n_mels + 2))


@lru_cache(maxsize=8)
def mel_filterbank(config: MelConfig) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 Slaney mel filters, bit for bit as librosa.filters.mel makes them (so the
    features, and the hashes `data.mel_digest` takes of them, match earlier melify output): triangles over the FFT
    bins' frequencies, each scaled to unit area in Hz. Computed here, not by librosa, whose import costs a command
    ~1.5 s of start-up. Warns, as librosa does, when some bands cover no FFT bin."""
    edges = mel_band_edges(config)
    bin_hz = np.fft.rfftfreq(config.n_fft, 1.0 / config.sample_rate)  # (n_bins,)
    rising = (bin_hz - edges[:-2, None]) / np.diff(edges)[:-1, None]  # (n_mels, n_bins): 0 at the lower edge, 1 at
    falling = (edges[2:, None] - bin_hz) / np.diff(edges)[1:, None]  # the centre, and down to 0 at the upper edge
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)  # rounded here, as librosa does
    filters = triangles * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    empty = int((filters.max(axis=1) == 0).sum())
    if empty:
        warnings.warn(f"{config}: {empty} of the {config.n_mels} mel bands cover no FFT bin and will be all zero; "
                      f"use fewer bands (n_mels) or a longer window (n_fft)", stacklevel=2)
    return filters.astype(np.float32)


_SPARSE_LOCK = threading.Lock()


@lru_cache(maxsize=8)
def sparse_mel_filterbank(config: MelConfig):
    """`mel_filterbank` as a torch CSR matrix: each band covers a few FFT bins (2,018 of the 131,200 values of the
    default bank are not zero, 1.5 %), so the product costs ~1/65 of the dense one's multiplications."""
    import torch

    # torch warns that CSR tensors are in beta (log_mel uses one stable operation of them, CSR @ dense). The lock:
    # melify's threads may build this at once, and catch_warnings is not safe to enter from two threads.
    with _SPARSE_LOCK, warnings.catch_warnings(), torch.inference_mode(False):  # a plain tensor, autograd or not
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.from_numpy(mel_filterbank(config)).to_sparse_csr()


def log_mel(samples, config: MelConfig):
    """Audio (..., n_samples) -> log-mel dB (..., n_mels, n_frames), each clip relative to its own maximum.

    Takes a numpy array (returns numpy) or a torch tensor (returns torch, on the tensor's device).
    Matches `librosa.power_to_db(librosa.feature.melspectrogram(...), ref=np.max, top_db=...)` to ~1e-5 dB.
    """
    import torch

    as_numpy = isinstance(samples, np.ndarray)
    waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)) if as_numpy else samples.float()
    batch_shape = waveform.shape[:-1]
    waveform = waveform.reshape(-1, waveform.shape[-1])  # (..., S) -> (B, S)
    with torch.autocast(waveform.device.type, enabled=False):  # fp32 under any autocast: powers overflow fp16
        if waveform.device.type == "cpu" and torch.get_num_threads() == 1 and not waveform.requires_grad:
            mel_power = _mel_power_in_chunks(waveform, config)  # melify's workers, loader workers
        else:  # GPUs, torch's own threads, gradients through the features
            mel_power = _mel_power_of_stft(waveform, config)
        mel_db = 10.0 * torch.log10(mel_power.clamp_min(1e-10))
        mel_db = mel_db - mel_db.amax(dim=(-2, -1), keepdim=True)
    mel_db = mel_db.clamp_min(-config.top_db).reshape(*batch_shape, *mel_db.shape[-2:])  # (B, ...) -> (..., M, T)
    return mel_db.numpy() if as_numpy else mel_db


def _mel_power_of_stft(waveform, config: MelConfig):
    """(B, n_samples) -> (B, n_mels, n_frames) mel power from one batched torch.stft, which torch spreads over its
    threads (6.9 ms a 30 s clip on 2 threads, where the one-thread chunks take 9.9), and the mel product: sparse on
    CPU, dense on GPUs, where the product costs nothing next to the transfers."""
    import torch

    window = torch.hann_window(config.n_fft, device=waveform.device)
    spectrum = torch.stft(waveform, config.n_fft, config.hop_length, window=window, center=True,
                          pad_mode="constant", return_complex=True)  # (B, n_fft // 2 + 1, n_frames)
    power = spectrum.real.square() + spectrum.imag.square()
    if power.device.type == "cpu":  # (n_mels, n_bins) @ (n_bins, n_frames) per clip -> (B, n_mels, n_frames)
        filters = sparse_mel_filterbank(config)
        return torch.stack([filters @ clip_power for clip_power in power])
    filters = torch.from_numpy(mel_filterbank(config)).to(waveform.device)
    return filters @ power  # (n_mels, n_bins) @ (B, n_bins, n_frames) -> (B, n_mels, n_frames)


CHUNK_FRAMES = 64  # STFT frames per step on CPU: their spectra (0.5 MiB at n_fft 2048) stay in a core's cache


def _mel_power_in_chunks(waveform, config: MelConfig):
    """(B, n_samples) -> (B, n_mels, n_frames) mel power on one CPU thread, the frames of a centred, zero-padded
    STFT taken CHUNK_FRAMES at a time: windowing, FFT, power and the sparse mel product then work in cache, where
    one whole-clip STFT passes 10 MiB arrays through memory four times (5.9 ms against 8.4 for a 30 s clip). On
    more threads the whole-clip STFT is faster: torch splits it, where the chunks' small operations do not split
    well."""
    import torch

    n_fft, hop = config.n_fft, config.hop_length
    window = torch.hann_window(n_fft)
    filters = sparse_mel_filterbank(config)
    padded = torch.nn.functional.pad(waveform, (n_fft // 2, n_fft // 2))  # as torch.stft(center=True, "constant")
    frames = padded.unfold(-1, n_fft, hop)  # (B, n_frames, n_fft), a view
    mel_power = waveform.new_empty(waveform.shape[0], config.n_mels, frames.shape[1])
    for clip_frames, clip_mel_power in zip(frames, mel_power):
        for start in range(0, frames.shape[1], CHUNK_FRAMES):
            spectrum = torch.fft.rfft(clip_frames[start:start + CHUNK_FRAMES] * window).numpy()  # (k, n_bins)
            with np.errstate(over="ignore"):  # inf, as torch gives it; callers name the file whose samples overflow
                power = spectrum.real * spectrum.real  # numpy: 2.5x torch's speed on the real and imaginary views
                power += spectrum.imag * spectrum.imag
            clip_mel_power[:, start:start + CHUNK_FRAMES] = filters @ torch.from_numpy(power).T  # (n_mels, k)
    return mel_power


def band_stats(mel, frame_mask=None):
    """(B, 1, M, T) -> (B, 2M): each mel band's mean over time, then each band's std over time: the clip
    statistics the model's context token is made from. `frame_mask` (B, T) bool: over those frames of each item."""
    import torch

    if frame_mask is None:
        return torch.cat([mel.mean(dim=-1), mel.std(dim=-1, unbiased=False)], dim=-1).flatten(1)  # -> (B, 2M)
    weights = frame_mask[:, None, :, None].to(mel.dtype)  # (B, T) -> (B, 1, T, 1): sums over time as products
    count = weights.sum(dim=-2, keepdim=True)  # (B, 1, 1, 1)
    mean = (mel @ weights) / count  # (B, 1, M, T) @ (B, 1, T, 1) -> (B, 1, M, 1)
    std = (((mel - mean).square_() @ weights) / count).sqrt()  # two passes, as Tensor.std; one temporary
    return torch.cat([mean[..., 0], std[..., 0]], dim=-1).flatten(1)  # (B, 1, 2M) -> (B, 2M)


def db_to_png(mel_db: np.ndarray) -> np.ndarray:
    """(n_mels, n_frames) dB -> (n_mels, n_frames) uint16 image, lowest band in the bottom row."""
    scaled = (np.clip(mel_db, PNG_DB_MIN, PNG_DB_MAX) - PNG_DB_MIN) / PNG_DB_STEP
    return np.round(scaled).astype(np.uint16)[::-1]  # flip: row 0 of an image is its top


def png_to_db(image):
    """(..., n_mels, n_frames) uint16 image (numpy, or torch on any device) -> float32 dB, index 0 = lowest band."""
    import torch

    if isinstance(image, np.ndarray):
        return image[..., ::-1, :].astype(np.float32) * np.float32(PNG_DB_STEP) + np.float32(PNG_DB_MIN)
    flipped = image.view(torch.int16).flip(-2).view(torch.uint16)  # flipped as int16 bits: torch's uint16 has few ops
    return flipped.float().mul_(PNG_DB_STEP).add_(PNG_DB_MIN)


def encode_png16(image: np.ndarray) -> bytes:
    """(height, width) uint16 -> the bytes of a 16-bit greyscale PNG.

    Written here rather than by Pillow, which takes 18 ms for a 30 s mel at its fastest compression level. Rows are
    stored unfiltered in uncompressed deflate blocks: the low bytes of dB values are noise, so the fastest real
    compression (Huffman coding only) saves 14 % of the bytes for 2.4 ms a clip, a fifth of melify's time, where
    storing takes 0.1 ms. Any PNG reader opens it.
    """
    height, width = image.shape
    rows = np.zeros((height, 1 + 2 * width), np.uint8)  # each row: filter type 0, then big-endian samples
    rows[:, 1:] = image.astype(">u2").view(np.uint8).reshape(height, 2 * width)
    deflate = zlib.compressobj(0)  # level 0: stored blocks

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16-bit greyscale, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", deflate.compress(rows.tobytes()) + deflate.flush()) + chunk(b"IEND", b""))


def write_mel_png(path: Path, mel_db: np.ndarray) -> None:
    """Write `mel_db` as a 16-bit PNG, atomically."""
    with atomic_path(path) as tmp_path:
        tmp_path.write_bytes(encode_png16(db_to_png(mel_db)))


def read_mel_png(path: Path) -> np.ndarray:
    """Read a melify PNG -> (n_mels, n_frames) float32 dB, index 0 = lowest band."""
    return png_to_db(read_png16(path))


def read_png16(path: Path) -> np.ndarray:
    """Read a melify PNG -> its (n_mels, n_frames) uint16 image as stored (png_to_db gives the dB)."""
    with Image.open(path) as image:
        if image.mode not in ("I;16", "I;16B", "I"):
            raise ValueError(f"{path}: not a 16-bit melify image (PIL mode {image.mode}); re-run vitaudio.melify")
        return np.asarray(image).astype(np.uint16, copy=False)
