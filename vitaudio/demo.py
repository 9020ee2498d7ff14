"""Built-in demo data set: seeded, *synthetic*, music-like clips in the GTZAN folder layout.

Nothing here is real music. Six made-up styles are rendered with additive synthesis and
filtered-noise percussion so that training a spectrogram ViT runs end to end on a fresh machine
with no downloads, and tests have real audio files to read. Accuracy on this set says nothing
about accuracy on real recordings.

Each style is a set of distributions (tempo range, metre, swing, rhythms, scales, instruments,
drums, reverb) that overlap on purpose between styles: pairs share instruments, tempo ranges
overlap, and every clip gets random part levels, EQ tilt, noise and peak level, so no single
feature gives the class away. Clips come in pairs cut from one synthetic piece (same key, tempo,
instruments and melody; different excerpt, transposition and mix); the `group` column of
`metadata.csv` names the piece so splits can keep a piece on one side.

Every random draw comes from `numpy.random.default_rng` seeded with (seed, class index, piece or
clip index), so any clip can be regenerated on its own and reruns give byte-identical files.

    python -m vitaudio.demo data/demo --clips-per-class 40 --seconds 6

Multi-label mode (`--multi-label`, `make_demo_dataset(..., multi_label=True)`) is a tagging set: the same number
of clips (clips-per-class x 6), each the sum of 1 to 3 of the styles at random levels, normalised to a peak below
full scale. Clip i mixes clip i of each of its styles (as the single-label set renders it), so clips 2k and 2k+1
share pieces and form one group. How many styles a clip mixes is random; which ones favours the styles used least
so far, so every style is in as many clips as any other, give or take one (one generator seeded by the seed
draws these choices; each clip's levels come from one seeded by (seed, clip index)). The clips go into
`dst/clips/`, and `dst/manifest.csv` lists them (`path,label,group`, labels `;`-joined) for `melify` and training:

    python -m vitaudio.demo data/demo-tags --multi-label
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from .cli_help import DefaultsHelpFormatter
from .files import atomic_path
from .manifest import LABEL_SEPARATOR

log = logging.getLogger(__name__)

CLIPS_PER_PIECE = 2  # consecutive clips of a class are excerpts of one synthetic piece
MAX_STYLES_PER_MIX = 3  # a multi-label clip mixes 1 to this many styles
MIX_FOLDER, MIX_MANIFEST = "clips", "manifest.csv"  # where the multi-label set goes under its folder
# Last entries of the seed sequences of the multi-label draws, apart from the 1 and 2 of pieces and clips.
_MIX_LEVEL_STREAM, _MIX_LABEL_STREAM = 3, 4
TABLE_SIZE = 4096  # samples in one wavetable period
MAX_HARMONICS = 24
VIBRATO_HZ = 5.5

SCALES = {  # semitones above the tonic
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "major_pentatonic": (0, 2, 4, 7, 9),
    "minor_pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
    "whole_tone": (0, 2, 4, 6, 8, 10),
}


@dataclass(frozen=True)
class Instrument:
    """Additive-synthesis voice: harmonic amplitudes and an envelope."""

    harmonics: tuple[float, ...]  # amplitude of partial k + 1, fundamental first
    attack: float  # seconds from silence to full level
    decay: float  # seconds, time constant of the fall from full level toward `sustain`
    sustain: float  # level held until note off, as a fraction of full level
    release: float  # seconds of linear fade after note off
    vibrato_cents: float = 0.0  # depth of a VIBRATO_HZ pitch wobble


def _saw(n: int) -> tuple[float, ...]:
    return tuple(1 / k for k in range(1, n + 1))


def _odd(n: int, power: float = 1.0) -> tuple[float, ...]:
    return tuple(1 / k**power if k % 2 else 0.0 for k in range(1, n + 1))


INSTRUMENTS = {  # harmonics, attack s, decay s, sustain level, release s[, vibrato cents]
    "pad": Instrument(tuple(1 / k**2 for k in range(1, 9)), 0.6, 2.0, 0.8, 0.8, 6),
    "strings": Instrument(_saw(14), 0.12, 1.0, 0.85, 0.3, 14),
    "organ": Instrument((1, 1, 0.8, 0.6, 0, 0.5, 0, 0.4), 0.01, 1.0, 1.0, 0.05),
    "bell": Instrument((1, 0.1, 0.5, 0, 0.1, 0.3, 0, 0.2), 0.003, 1.2, 0.0, 0.3),
    "piano": Instrument(tuple(1 / k**1.5 for k in range(1, 13)), 0.004, 0.5, 0.05, 0.15),
    "pluck": Instrument(_saw(16), 0.003, 0.25, 0.0, 0.08),
    "brass": Instrument(_saw(12), 0.05, 0.4, 0.75, 0.08, 6),
    "reed": Instrument(_odd(15), 0.03, 1.0, 0.9, 0.06, 4),
    "square": Instrument(_odd(19), 0.002, 1.0, 1.0, 0.01),
    "pulse": Instrument(tuple(abs(math.sin(math.pi * k / 4)) / k for k in range(1, 20)), 0.002, 0.15, 0.6, 0.01),
    "triangle": Instrument(_odd(9, 2.0), 0.002, 1.0, 1.0, 0.01),
    "synth_bass": Instrument(_saw(10), 0.003, 0.15, 0.3, 0.03),
}


@dataclass(frozen=True)
class Style:
    """Distributions one class draws its pieces from; beats are quarter notes."""

    bpm: tuple[float, float]  # tempo range, drawn uniformly
    scales: tuple[str, ...]  # keys of SCALES
    progressions: tuple[tuple[int, ...], ...]  # chord roots as scale degrees, one per bar
    lead: tuple[str, ...]  # instruments a piece picks its melody voice from
    lead_tonic: tuple[int, int]  # MIDI range of the tonic in the melody's register
    rhythms: tuple[tuple[float, ...], ...]  # one-bar melody rhythms in beats; negative = rest
    bass: tuple[str, ...]
    bass_line: tuple[tuple[float, float, int], ...]  # (beat, beats, scale steps over chord root)
    reverb: tuple[float, float]  # decay-time range in seconds
    beats_per_bar: int = 4
    swing: tuple[float, float] = (0.5, 0.5)  # where an off-beat eighth lands in its beat (0.5: straight)
    arpeggio: bool = False  # melody plays chord tones instead of stepping along the scale
    motif_bars: int = 0  # melody repeats a motif this many bars long (0: fresh every bar)
    chords: tuple[str, ...] = ()  # empty: no chord part
    comping: tuple[tuple[float, float], ...] = ()  # (beat, beats) of each chord in a bar
    drums: tuple[tuple[str, tuple[float, ...]], ...] = ()  # (kick|snare|hat, beats hit in a bar)


# Overlaps are deliberate: instruments shared between pairs of styles, tempo ranges that cross.
_EIGHTHS = (0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5)
_POP = ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3))
STYLES = {
    "ambient": Style(
        bpm=(56, 92), scales=("major_pentatonic", "lydian", "minor_pentatonic", "whole_tone"),
        progressions=((0, 3), (0, 5, 3, 4), (0, 1)), lead=("bell", "pad", "organ"), lead_tonic=(62, 76),
        rhythms=((4,), (2, 2), (-1, 3), (3, 1), (-2, 2)), bass=("pad", "strings"), bass_line=((0, 4, 0),),
        chords=("pad", "strings"), comping=((0, 4),), reverb=(1.5, 3.0)),
    "chiptune": Style(
        bpm=(118, 168), scales=("major", "minor", "major_pentatonic"), progressions=_POP,
        lead=("square", "pulse"), lead_tonic=(64, 78),
        rhythms=((0.25,) * 16, (0.5,) * 8, (0.25, 0.25, 0.5) * 4),
        arpeggio=True, motif_bars=2, bass=("triangle", "square"),
        bass_line=((0, 0.5, 0), (1, 0.5, 4), (2, 0.5, 0), (3, 0.5, 4)),
        drums=(("hat", _EIGHTHS), ("snare", (1, 3))), reverb=(0.05, 0.2)),
    "march": Style(
        bpm=(100, 128), scales=("major", "mixolydian"), progressions=_POP,
        lead=("brass", "reed", "pulse"), lead_tonic=(60, 72),
        rhythms=((1.5, 0.5, 1, 1), (1, 1, 1, 1), (0.75, 0.25, 0.75, 0.25, 2), (2, 1, 1)),
        bass=("brass", "synth_bass"), bass_line=((0, 1, 0), (1, 1, 4), (2, 1, 0), (3, 1, 4)),
        chords=("reed", "brass"), comping=((0.5, 0.5), (1.5, 0.5), (2.5, 0.5), (3.5, 0.5)),
        drums=(("kick", (0, 2)), ("snare", (1, 3, 3.5, 3.75))), reverb=(0.4, 1.0)),
    "waltz": Style(
        bpm=(84, 168), beats_per_bar=3, scales=("major", "harmonic_minor"),
        progressions=((0, 3, 4, 0), (0, 4, 4, 0), (0, 5, 1, 4)), lead=("strings", "piano", "reed"),
        lead_tonic=(62, 76), rhythms=((2, 1), (3,), (1, 1, 1), (1.5, 0.5, 1)),
        bass=("piano", "strings"), bass_line=((0, 1, 0),),  # oom-pah-pah
        chords=("piano", "strings", "reed"), comping=((1, 1), (2, 1)), reverb=(0.8, 1.8)),
    "bluesy": Style(
        bpm=(68, 124), swing=(0.6, 0.7), scales=("blues", "minor_pentatonic", "mixolydian"),
        progressions=((0, 0, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4), (0, 3, 0, 4)), lead=("pluck", "piano", "organ"),
        lead_tonic=(57, 69),
        rhythms=((0.5,) * 8, (1, 0.5, 0.5, -1, 1), (1.5, 0.5, -0.5, 0.5, 1), (-0.5, 0.5, 0.5, 0.5, 2)),
        bass=("pluck", "synth_bass"), bass_line=((0, 1, 0), (1, 1, 2), (2, 1, 4), (3, 1, 5)),  # walking
        chords=("piano", "organ"), comping=((0.5, 0.5), (2.5, 0.5)),
        drums=(("hat", _EIGHTHS), ("snare", (1, 3)), ("kick", (0, 2))), reverb=(0.4, 1.2)),
    "techno": Style(
        bpm=(118, 140), scales=("minor", "phrygian", "dorian"),
        progressions=((0, 0, 5, 6), (0, 0, 0, 0), (0, 6, 5, 6)),
        lead=("square", "brass", "pulse"), lead_tonic=(57, 69), motif_bars=1,
        rhythms=((-0.5, 0.5) * 4, (0.75, 0.75, 0.5, -2), (0.25, -0.25) * 8, (0.75, 0.75, 0.75, 0.75, 1)),
        bass=("synth_bass", "square"),
        bass_line=((0.5, 0.25, 0), (1.5, 0.25, 0), (2.5, 0.25, 0), (3.5, 0.25, 7)),  # off-beat
        chords=("pad",), comping=((0, 4),),
        drums=(("kick", (0, 1, 2, 3)), ("hat", (0.5, 1.5, 2.5, 3.5)), ("snare", (1, 3))), reverb=(0.2, 0.8)),
}
CLASSES = tuple(STYLES)

Notes = list[tuple[float, float, int, float]]  # (onset beat, beats, MIDI pitch, velocity)


@lru_cache(maxsize=1)
def _sine_basis() -> np.ndarray:
    """(MAX_HARMONICS, TABLE_SIZE) one period of each harmonic."""
    phase = np.arange(TABLE_SIZE) / TABLE_SIZE
    return np.sin(2 * np.pi * np.arange(1, MAX_HARMONICS + 1)[:, None] * phase)


def _render_note(voice: Instrument, freq: float, seconds: float, sample_rate: int) -> np.ndarray:
    """One note (held `seconds`, plus its release) from a band-limited wavetable."""
    t = np.arange(int((seconds + voice.release) * sample_rate)) / sample_rate
    n_harmonics = max(1, min(len(voice.harmonics), int(0.45 * sample_rate / freq)))
    table = np.asarray(voice.harmonics[:n_harmonics]) @ _sine_basis()[:n_harmonics]
    table /= np.abs(table).max()
    cycles = freq * t
    if voice.vibrato_cents:  # closed-form integral of a sinusoidally wobbling frequency
        depth = 2 ** (voice.vibrato_cents / 1200) - 1
        cycles += freq * depth / (2 * np.pi * VIBRATO_HZ) * (1 - np.cos(2 * np.pi * VIBRATO_HZ * t))
    wave = table[(cycles * TABLE_SIZE).astype(np.int64) & (TABLE_SIZE - 1)]  # TABLE_SIZE is a power of 2
    decayed = voice.sustain + (1 - voice.sustain) * np.exp(-np.maximum(t - voice.attack, 0) / voice.decay)
    released = np.clip(1 - (t - seconds) / voice.release, 0, 1)
    return wave * np.minimum(t / voice.attack, 1) * decayed * released


def _band_noise(rng: np.random.Generator, n: int, low_hz: float, high_hz: float, sample_rate: int
                ) -> np.ndarray:
    """(n,) white noise kept only between low_hz and high_hz, peak 1."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise / np.abs(noise).max()


def _fft_size(n: int) -> int:
    """Smallest 2**a * 3**b >= n: a length numpy's FFT handles fast."""
    return min(3**b << max(0, (math.ceil(n / 3**b) - 1).bit_length()) for b in range(4))


def _drum_kit(rng: np.random.Generator, sample_rate: int) -> dict[str, np.ndarray]:
    """Kick (pitch-swept sine), snare (band noise + tone) and hat (high noise), one set per piece."""
    t = np.arange(int(0.5 * sample_rate)) / sample_rate
    f_start, f_end, sweep = rng.uniform(100, 170), rng.uniform(40, 60), rng.uniform(0.02, 0.06)
    kick_cycles = f_end * t + (f_start - f_end) * sweep * (1 - np.exp(-t / sweep))
    nyquist = sample_rate / 2
    snare_band = rng.uniform(800, 2000), min(rng.uniform(4000, 9000), 0.98 * nyquist)
    hat_band = min(rng.uniform(5000, 8000), 0.7 * nyquist), 0.98 * nyquist
    snare_noise = _band_noise(rng, t.size, *snare_band, sample_rate)
    hat_noise = _band_noise(rng, t.size, *hat_band, sample_rate)
    return {
        "kick": np.sin(2 * np.pi * kick_cycles) * np.exp(-t / rng.uniform(0.12, 0.35)),
        "snare": snare_noise * np.exp(-t / rng.uniform(0.06, 0.18))
        + 0.5 * np.sin(2 * np.pi * rng.uniform(170, 240) * t) * np.exp(-t / 0.04),
        "hat": hat_noise * np.exp(-t / rng.uniform(0.02, 0.07)),
    }


@dataclass
class Piece:
    """A composed piece: voiced parts and drum hits on a beat grid, plus its drum kit and room."""

    seconds_per_beat: float
    swing: float
    parts: list[tuple[Instrument, Notes]]
    drum_hits: list[tuple[str, float, float]]  # (drum, onset beat, velocity)
    kit: dict[str, np.ndarray]
    reverb_ir: np.ndarray  # unit-energy impulse response
    wet: float  # reverb mix, 0..1

    def to_seconds(self, beat: float) -> float:
        """Beat position -> seconds, with swung off-beat eighths (beats are exact binary fractions)."""
        whole = math.floor(beat)
        frac = beat - whole
        return (whole + (self.swing if frac == 0.5 else frac)) * self.seconds_per_beat


def _vary(voice: Instrument, rng: np.random.Generator) -> Instrument:
    """The same instrument with a random brightness, attack and decay (another 'player')."""
    tilt = rng.uniform(-0.3, 0.5)
    harmonics = tuple(a * k**-tilt for k, a in enumerate(voice.harmonics, start=1))
    return replace(voice, harmonics=harmonics, attack=voice.attack * rng.uniform(0.7, 1.4),
                   decay=voice.decay * rng.uniform(0.7, 1.4))


def _compose(style: Style, rng: np.random.Generator, seconds: float, sample_rate: int) -> Piece:
    """Draw tempo, key, instruments and notes for a piece at least `seconds` long."""
    bpm = rng.uniform(*style.bpm)
    n_bars = int(np.ceil(seconds * bpm / 60 / style.beats_per_bar)) + 1
    scale = SCALES[style.scales[rng.integers(len(style.scales))]]
    progression = style.progressions[rng.integers(len(style.progressions))]
    tonic = int(rng.integers(*style.lead_tonic, endpoint=True))

    def pitch(base: int, degree: int) -> int:
        return base + 12 * (degree // len(scale)) + scale[degree % len(scale)]

    def pick(names: tuple[str, ...]) -> Instrument:
        return _vary(INSTRUMENTS[names[rng.integers(len(names))]], rng)

    lead: Notes = []
    degree, legato = 0, rng.uniform(0.6, 1.0)
    for bar in range(n_bars):
        start, root = bar * style.beats_per_bar, progression[bar % len(progression)]
        if style.motif_bars and bar >= style.motif_bars:
            motif_start = (bar % style.motif_bars) * style.beats_per_bar
            motif_end = motif_start + style.beats_per_bar
            lead += [(o - motif_start + start, d, p, v) for o, d, p, v in lead if motif_start <= o < motif_end]
            continue
        beat = 0.0
        for beats in style.rhythms[rng.integers(len(style.rhythms))]:
            if beats > 0:
                if style.arpeggio:  # root, third, fifth or octave of the bar's chord
                    degree = root + int(rng.choice((0, 2, 4, len(scale))))
                else:  # mostly steps, sometimes small leaps, within about two octaves
                    degree = int(np.clip(degree + rng.choice((-2, -1, -1, 0, 1, 1, 2, 3)), -3, 9))
                lead.append((start + beat, beats * legato, pitch(tonic, degree), rng.uniform(0.6, 1.0)))
            beat += abs(beats)
    bass_tonic, chord_tonic = 36 + tonic % 12, 48 + tonic % 12
    bass: Notes = []
    chords: Notes = []
    for bar in range(n_bars):
        start, root = bar * style.beats_per_bar, progression[bar % len(progression)]
        bass += [(start + b, n, pitch(bass_tonic, root + s), rng.uniform(0.7, 1.0))
                 for b, n, s in style.bass_line]
        chords += [(start + b, n, pitch(chord_tonic, root + s), rng.uniform(0.5, 0.8))
                   for b, n in style.comping for s in (0, 2, 4)]
    parts = [(pick(style.lead), lead), (pick(style.bass), bass)]
    if style.chords:
        parts.append((pick(style.chords), chords))
    drum_hits = [(drum, bar * style.beats_per_bar + beat, rng.uniform(0.6, 1.0))
                 for bar in range(n_bars) for drum, beats in style.drums for beat in beats
                 if rng.random() > 0.08]  # a few dropped hits
    reverb_seconds = rng.uniform(*style.reverb)
    t = np.arange(int(reverb_seconds * sample_rate)) / sample_rate
    reverb_ir = rng.standard_normal(t.size) * np.exp(-6.9 * t / reverb_seconds)
    return Piece(60 / bpm, rng.uniform(*style.swing), parts, drum_hits, _drum_kit(rng, sample_rate),
                 reverb_ir / np.sqrt(np.sum(reverb_ir**2)), rng.uniform(0.15, 0.45))


def _add_at(track: np.ndarray, sound: np.ndarray, offset: int) -> None:
    """Mix `sound` into `track` starting at sample `offset` (may be negative), cropping at both ends."""
    lo, hi = max(offset, 0), min(offset + sound.size, track.size)
    if lo < hi:
        track[lo:hi] += sound[lo - offset : hi - offset]


def synthesize_clip(class_name: str, clip_index: int, *, seconds: float = 6.0, seed: int = 0,
                    sample_rate: int = 22050) -> np.ndarray:
    """Render one clip of the demo set: (n_samples,) int16 PCM, exactly what its wav file holds."""
    return _to_pcm16(_render_clip(class_name, clip_index, seconds=seconds, seed=seed, sample_rate=sample_rate))


def _render_clip(class_name: str, clip_index: int, *, seconds: float, seed: int, sample_rate: int) -> np.ndarray:
    """One clip of a style as (n_samples,) float64 audio, peak between 0.5 and 0.9."""
    class_index = CLASSES.index(class_name)
    piece_rng = np.random.default_rng([seed, class_index, clip_index // CLIPS_PER_PIECE, 1])
    clip_rng = np.random.default_rng([seed, class_index, clip_index, 2])
    piece = _compose(STYLES[class_name], piece_rng, CLIPS_PER_PIECE * seconds + 2, sample_rate)
    start = (clip_index % CLIPS_PER_PIECE) * seconds + clip_rng.uniform(0, 1.5)
    transpose = 2 ** (clip_rng.integers(-2, 2, endpoint=True) / 12)
    # Render a pre-roll of half the reverb time so the excerpt opens with the room already sounding.
    n_samples, n_preroll = round(seconds * sample_rate), piece.reverb_ir.size // 2
    window_start, n_window = start - n_preroll / sample_rate, n_samples + n_preroll
    mix = np.zeros(n_window)
    for voice, notes in piece.parts:
        track = np.zeros(n_window)
        for onset_beat, beats, midi, velocity in notes:
            onset, end = piece.to_seconds(onset_beat), piece.to_seconds(onset_beat + beats)
            if onset < start + seconds and end + voice.release > window_start:
                freq = 440 * 2 ** ((midi - 69) / 12) * transpose
                note = velocity * _render_note(voice, freq, end - onset, sample_rate)
                _add_at(track, note, round((onset - window_start) * sample_rate))
        mix += clip_rng.uniform(0.3, 1.0) * track
    drum_gain = clip_rng.uniform(0.2, 0.8)
    for drum, onset_beat, velocity in piece.drum_hits:
        offset = round((piece.to_seconds(onset_beat) - window_start) * sample_rate)
        _add_at(mix, drum_gain * velocity * piece.kit[drum], offset)
    # Room, recording noise floor and a random spectral tilt (mic/EQ differences), in one FFT pass.
    noise_level = np.std(mix) * 10 ** (clip_rng.uniform(-50, -25) / 20)
    noise = noise_level * clip_rng.standard_normal(n_window)
    n_fft = _fft_size(n_window + piece.reverb_ir.size)
    room = (1 - piece.wet) + piece.wet * np.fft.rfft(piece.reverb_ir, n_fft)
    tilt = (np.maximum(np.fft.rfftfreq(n_fft, 1 / sample_rate), 50) / 1000) ** clip_rng.uniform(-0.4, 0.3)
    audio = np.fft.irfft(np.fft.rfft(mix + noise, n_fft) * room * tilt, n_fft)[n_preroll:n_window]
    samples_to_edge = np.minimum(np.arange(n_samples), np.arange(n_samples)[::-1])
    fade = np.minimum(1, samples_to_edge / (0.01 * sample_rate))  # 10 ms, so the cut ends do not click
    audio *= fade * clip_rng.uniform(0.5, 0.9) / np.abs(audio).max()
    return audio


def _to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio within [-1, 1] -> int16 samples."""
    return np.round(audio * 32767).astype(np.int16)


def mix_styles(n_clips: int, seed: int = 0) -> list[tuple[str, ...]]:
    """The styles each clip of the multi-label demo mixes, in CLASSES order: 1 to MAX_STYLES_PER_MIX per clip, the
    least used styles so far (ties broken at random), so style counts differ by one at most."""
    rng = np.random.default_rng([seed, _MIX_LABEL_STREAM])
    counts = np.zeros(len(CLASSES), dtype=np.int64)
    chosen_styles = []
    for _ in range(n_clips):
        n_styles = int(rng.integers(1, MAX_STYLES_PER_MIX, endpoint=True))
        least_used = np.lexsort((rng.random(len(CLASSES)), counts))  # by count, then by a random tie-breaker
        chosen = np.sort(least_used[:n_styles])
        counts[chosen] += 1
        chosen_styles.append(tuple(CLASSES[i] for i in chosen))
    return chosen_styles


def synthesize_mix(styles: tuple[str, ...], clip_index: int, *, seconds: float = 6.0, seed: int = 0,
                   sample_rate: int = 22050) -> np.ndarray:
    """Render one clip of the multi-label demo: clip `clip_index` of each of `styles`, summed at random levels and
    scaled to a peak between 0.5 and 0.9; (n_samples,) int16 PCM, exactly what its wav file holds."""
    level_rng = np.random.default_rng([seed, clip_index, _MIX_LEVEL_STREAM])
    mix = sum(level_rng.uniform(0.35, 1.0)
              * _render_clip(name, clip_index, seconds=seconds, seed=seed, sample_rate=sample_rate) for name in styles)
    return _to_pcm16(mix * level_rng.uniform(0.5, 0.9) / np.abs(mix).max())


def _write_clip(class_name: str, clip_index: int, wav_path: Path, seconds: float, seed: int,
                sample_rate: int) -> Path:
    samples = synthesize_clip(class_name, clip_index, seconds=seconds, seed=seed, sample_rate=sample_rate)
    return _write_wav(wav_path, samples, sample_rate)


def _write_mix(styles: tuple[str, ...], clip_index: int, wav_path: Path, seconds: float, seed: int,
               sample_rate: int) -> Path:
    samples = synthesize_mix(styles, clip_index, seconds=seconds, seed=seed, sample_rate=sample_rate)
    return _write_wav(wav_path, samples, sample_rate)


def _write_wav(wav_path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    with atomic_path(wav_path) as tmp_path:  # hidden and not ending in .wav: loaders never see half a file
        sf.write(tmp_path, samples, sample_rate, subtype="PCM_16", format="WAV")
    return wav_path


def _render_all(write, jobs: list[tuple], workers: int) -> list[Path]:
    """Run `write(*job)` for every job, in `workers` processes when more than one; the paths written, in job order."""
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        written = (pool.map if pool else map)(write, *zip(*jobs))  # in job order
        return list(tqdm(written, total=len(jobs), desc="demo clips", unit="clip", disable=None))


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    with atomic_path(path) as tmp_csv, tmp_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _warn_about_strays(folder: Path, pattern: str, wav_paths: list[Path], listing: str) -> None:
    stray = set(folder.glob(pattern)) - set(wav_paths)
    if stray:
        log.warning("%s holds %d wav files not in this demo set (e.g. %s); %s lists only this set",
                    folder, len(stray), min(stray), listing)


def make_demo_dataset(dst: Path, *, clips_per_class: int = 40, seconds: float = 6.0, seed: int = 0,
                      sample_rate: int = 22050, workers: int = 1, multi_label: bool = False) -> list[Path]:
    """Write `dst/<class>/<class>.<NNNNN>.wav` and `dst/metadata.csv` (clips rendered by `workers` processes);
    return the wav paths.

    `multi_label`: instead, clips_per_class x len(CLASSES) mixes of 1 to 3 styles as `dst/clips/mix.<NNNNN>.wav`,
    listed with their labels and groups in `dst/manifest.csv` (see the module doc).

    Files are written atomically (`files.atomic_path`) and existing files of
    the same name are overwritten, so rerunning into a complete or interrupted folder is safe.
    """
    if clips_per_class < 1 or seconds <= 0 or seed < 0 or sample_rate < 8000 or workers < 1:
        raise ValueError(f"need clips_per_class >= 1, seconds > 0, seed >= 0, sample_rate >= 8000, workers >= 1; "
                         f"got {clips_per_class}, {seconds}, {seed}, {sample_rate}, {workers}")
    dst = Path(dst)
    if multi_label:
        return _make_mix_dataset(dst, clips_per_class * len(CLASSES), seconds, seed, sample_rate, workers)
    jobs, rows = [], []  # jobs: the arguments of _write_clip
    for class_name in CLASSES:
        (dst / class_name).mkdir(parents=True, exist_ok=True)
        for clip_index in range(clips_per_class):
            wav_path = dst / class_name / f"{class_name}.{clip_index:05d}.wav"
            jobs.append((class_name, clip_index, wav_path, seconds, seed, sample_rate))
            piece_name = f"{class_name}.piece{clip_index // CLIPS_PER_PIECE:03d}"
            rows.append((f"{class_name}/{wav_path.name}", class_name, piece_name))
    wav_paths = _render_all(_write_clip, jobs, workers)
    _write_csv(dst / "metadata.csv", ("clip", "class", "group"), rows)
    _warn_about_strays(dst, "*/*.wav", wav_paths, "metadata.csv")
    return wav_paths


def _make_mix_dataset(dst: Path, n_clips: int, seconds: float, seed: int, sample_rate: int,
                      workers: int) -> list[Path]:
    """The multi-label demo: `dst/clips/mix.<NNNNN>.wav` and `dst/manifest.csv`; the wav paths."""
    (dst / MIX_FOLDER).mkdir(parents=True, exist_ok=True)
    jobs, rows = [], []  # jobs: the arguments of _write_mix
    for clip_index, styles in enumerate(mix_styles(n_clips, seed)):
        wav_path = dst / MIX_FOLDER / f"mix.{clip_index:05d}.wav"
        jobs.append((styles, clip_index, wav_path, seconds, seed, sample_rate))
        # clips 2k and 2k+1 hold excerpts of the same pieces (piece k of each style), so they share a group
        rows.append((f"{MIX_FOLDER}/{wav_path.name}", LABEL_SEPARATOR.join(styles),
                     f"mix.piece{clip_index // CLIPS_PER_PIECE:03d}"))
    wav_paths = _render_all(_write_mix, jobs, workers)
    _write_csv(dst / MIX_MANIFEST, ("path", "label", "group"), rows)
    _warn_about_strays(dst / MIX_FOLDER, "*.wav", wav_paths, MIX_MANIFEST)
    return wav_paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitaudio.demo", formatter_class=DefaultsHelpFormatter,
                                     description="Write the synthetic demo data set (GTZAN layout, or a manifest "
                                                 "of multi-label mixes).")
    parser.add_argument("dst", type=Path, help="output folder; gets one subfolder per class and metadata.csv "
                                               "(--multi-label: clips/ and manifest.csv)")
    parser.add_argument("--clips-per-class", type=int, default=40,
                        help="clips of each style (--multi-label: as many clips in all)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each clip")
    parser.add_argument("--seed", type=int, default=0, help="the same seed renders the same files")
    parser.add_argument("--sample-rate", type=int, default=22050, help="Hz")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    parser.add_argument("--multi-label", action="store_true",
                        help="a tagging set: each clip mixes 1-3 styles; clips/ and manifest.csv, no class folders")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        wav_paths = make_demo_dataset(args.dst, clips_per_class=args.clips_per_class, seconds=args.seconds,
                                      seed=args.seed, sample_rate=args.sample_rate, workers=args.workers,
                                      multi_label=args.multi_label)
    except ValueError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    contents = (f"mixes of 1-{MAX_STYLES_PER_MIX} of {len(CLASSES)} styles, listed in {MIX_MANIFEST}"
                if args.multi_label else f"{len(CLASSES)} classes x {args.clips_per_class}")
    print(f"wrote {len(wav_paths)} clips ({contents}) to {args.dst} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
