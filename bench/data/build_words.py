"""Build `words`, a spoken-keyword data set: the ten Speech Commands words said by espeak-ng voices, one second
each, grouped by voice.

    python bench/data/build_words.py --out data/words_dev                          # 60 voices x 10 words x 2 takes
    python bench/data/build_words.py --out data/words_tiny --voices 6 --takes 1
    python bench/data/build_words.py --out data/words_held_out --held-out          # the held-out voices instead
    python bench/data/build_words.py --out data/words_unlabelled --voices 97 --takes 1 --seed 1 \
        --exclude-voices-of data/words_dev      # other development voices: a pool for `train.py --unlabelled`

Source, not written here: the speech synthesizer espeak-ng (Debian `espeak-ng`, GPL-3) with its built-in voices;
its MBROLA voices (`mb/...`) are not used.

Ten classes, a closed set: yes, no, up, down, left, right, on, off, stop, go. A voice is an espeak-ng accent (eight
English ones, from en-us to en-029, and ten other languages that say the English word with their own sounds,
from a spelling in their own orthography, e.g. Spanish "estop") combined with a variant (a speaker: m1-m8, f1-f5,
klatt, croak, whisper and named ones such as Andy or Annie), and given a base pitch and speed. Voices are drawn
with a seeded RNG, one accent after another in shuffled rounds and the least used variant first, so a build's
voices spread over all accents and variants; the first N voices of a seed are the same whatever `--voices` asks.
Each voice says every word `--takes` times, each take at its own pitch and speed near the voice's base. A take is
trimmed of espeak-ng's silence (re-rendered faster if it is longer than the window allows, never cut), peak
normalised, scaled by a random gain of +-6 dB, placed at a random onset inside the one-second window and mixed
with white or pink noise at a random SNR of 15-40 dB.

The `group` column of metadata.csv names the voice, `<accent>+<variant>` (e.g. `en-gb-scotland+m3`): split by it,
never by clip. Every possible voice is assigned once and for all to development or held-out by a SHA-1 hash of
its group (`voice_split`); a build renders development voices only, unless `--held-out` asks for the held-out
~30 % (into a folder of their own), which can later test a recipe on voices no development run has heard. A
variant's timbre recurs under other accents and an accent under other variants: a held-out voice is a new
combination, not an unheard accent.

Layout: OUT/<word>/<word>.<accent>+<variant>.<take>.wav (16,000 Hz, mono, 16-bit PCM, 1.000 s) and OUT/metadata.csv
(clip, class, group, voice, accent, variant, text, take, pitch, speed, gain_db, offset_s, duration_s, snr_db,
noise); `text` is what espeak-ng was given (`[[...]]` is its phoneme input), `speed` the one finally used.
Every file is written atomically; finished voices are recorded in OUT/.build_words.jsonl, so a rerun renders only
the voices an interrupted run had not finished, or whose clips are missing. Each take is drawn from its own seed,
so the same seed gives the same files with the same espeak-ng version; other versions need not: compare results
on one build (the fingerprint printed at the end, `vitaudio.files.data_fingerprint`, is the one bench/accuracy.py
stamps on its results).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from vitaudio.audio import resample
from vitaudio.files import atomic_path, data_fingerprint

log = logging.getLogger("build_words")

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SAMPLE_RATE = 16000
WINDOW_S = 1.0  # every clip's length
EDGE_S = 0.03  # a word starts and ends at least this far from the window's edges
PEAK_DBFS = -12.0  # a word's peak before its random gain, which is within +-MAX_GAIN_DB
MAX_GAIN_DB = 6.0
SNR_DB = (15.0, 40.0)  # range of the background noise's SNR: the word's mean power over the noise's
PITCH_JITTER = 4  # a take's pitch is within this many espeak-ng pitch steps (0-99) of the voice's
SPEED_JITTER = 0.06  # a take's speed is within this fraction of the voice's
MAX_SPEED = 450  # words per minute; espeak-ng's fastest
HELD_OUT_FRACTION = 0.3  # share of the hash space whose voices are held out; changing it changes the held-out pool
JOURNAL_NAME = ".build_words.jsonl"
RENDER_VERSION = 1  # part of each journal key: raise it when a change alters the audio, so reruns redo old voices
METADATA_COLUMNS = ("clip", "class", "group", "voice", "accent", "variant", "text", "take", "pitch", "speed",
                    "gain_db", "offset_s", "duration_s", "snr_db", "noise")
INSTALL_HINT = "apt-get install -y --no-install-recommends espeak-ng"
ESPEAK = "espeak-ng"

ENGLISH_ACCENTS = ("en-us", "en-us-nyc", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan",
                   "en-gb-x-gbcwmd", "en-029")

# How speakers of other languages say each word, spelled so that the language's own rules read it close to the
# English word ("rait" for right: the English spelling would be read letter by letter). `[[...]]` is espeak-ng's
# phoneme input, for two words French spelling cannot give.
FOREIGN_TEXT = {
    "de": ("jes", "no", "app", "daun", "left", "reit", "onn", "off", "stop", "go"),
    "es": ("yes", "no", "ap", "daun", "left", "rait", "on", "of", "estop", "gou"),
    "fr": ("yèsse", "nau", "eupe", "[[d'awn]]", "lefte", "[[r'ajt]]", "onne", "offe", "stope", "gau"),
    "it": ("ies", "no", "ap", "daun", "left", "rrait", "on", "off", "stop", "gou"),
    "nl": ("jes", "noo", "ap", "daun", "left", "rait", "on", "of", "stop", "goo"),
    "pl": ("jes", "nou", "ap", "dałn", "left", "rajt", "on", "of", "stop", "gou"),
    "pt-br": ("iés", "nou", "âp", "dáun", "léft", "ráit", "ón", "óf", "stóp", "gôu"),
    "cs": ("jes", "nou", "ap", "daun", "left", "rajt", "on", "of", "stop", "gou"),
    "hu": ("jesz", "nou", "áp", "daun", "left", "rájt", "on", "of", "sztop", "gou"),
    "ro": ("ies", "nou", "ap", "daun", "left", "rait", "on", "of", "stop", "gou"),
}
ACCENTS = ENGLISH_ACCENTS + tuple(FOREIGN_TEXT)

# espeak-ng variants (files in espeak-ng-data/voices/!v) that sound like a person; robots, echoes and the
# demonic ones are left out. Names are case-sensitive: espeak-ng silently ignores a variant it cannot find.
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "croak", "whisper", "whisperf", "grandma", "grandpa",
    "adam", "Alex", "Alicia", "Andrea", "Andy", "anika", "Annie", "antonio", "aunty", "belinda", "benjamin",
    "boris", "caleb", "david", "Denis", "Diogo", "ed", "edward", "gustave", "Henrique", "Hugo", "iven3", "Jacky",
    "john", "Lee", "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike", "Nguyen",
    "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "shelby", "steph", "Storm", "travis", "victor",
)


class WordsBuildError(Exception):
    """The data set cannot be built as asked; the message says what to change."""


class MissingToolError(WordsBuildError):
    """espeak-ng, or a voice or variant of it, is not installed."""


class HeldOutVoiceError(WordsBuildError):
    """A voice of one pool was about to be rendered into a data set of the other."""


@dataclass(frozen=True)
class Voice:
    """A speaker: an accent, a variant, and the pitch and speed its takes vary around."""

    accent: str  # espeak-ng language voice, e.g. "en-gb-scotland" or "pl"
    variant: str  # espeak-ng variant, e.g. "m3" or "Andy"
    pitch: int  # base pitch, espeak-ng's 0-99 scale (50 is the variant's own)
    speed: int  # base speed, words per minute

    @property
    def name(self) -> str:
        """'<accent>+<variant>': espeak-ng's -v argument and the voice's group."""
        return f"{self.accent}+{self.variant}"


@dataclass(frozen=True)
class VoiceJob:
    """The clips of one voice; all that a worker needs, and the voice's identity in the journal."""

    voice: Voice
    takes: int
    seed: int  # every random draw of the voice's takes derives from it

    def clip_name(self, word: str, take: int) -> str:
        """Root-relative path of a take: '<word>/<word>.<accent>+<variant>.<take>.wav'."""
        return f"{word}/{word}.{self.voice.name}.{take}.wav"


@dataclass(frozen=True)
class Take:
    """How one take of a word is said and mixed."""

    pitch: int
    speed: int  # words per minute asked of espeak-ng; raised when the word does not fit the window
    gain_db: float
    snr_db: float
    noise: str  # "white" or "pink"
    position: float  # where in the free part of the window the word starts, 0 (earliest) to 1 (latest)
    noise_seed: int


# ------------------------------------------------------------------ which voices: development or held out

def voice_split(group: str) -> str:
    """'test' for the held-out ~30 % of voices, 'train' for the development voices; fixed by the group's SHA-1."""
    bucket = int(hashlib.sha1(group.encode()).hexdigest(), 16) % 1000
    return "test" if bucket < HELD_OUT_FRACTION * 1000 else "train"


def make_voice(accent: str, variant: str, seed: int = 0) -> Voice:
    """The voice `<accent>+<variant>` with its base pitch and speed, drawn from `seed` and its name alone."""
    rng = random.Random(f"{seed}/{accent}+{variant}")
    return Voice(accent, variant, pitch=rng.randint(30, 70), speed=rng.randint(100, 170))


def draw_voices(n_voices: int, seed: int = 0, pool: str = "train") -> list[Voice]:
    """`n_voices` distinct voices of `pool` ('train': development, 'test': held out).

    Rounds go through the accents in a shuffled order, one voice each; an accent takes, among its variants left
    in the pool (in a seeded shuffled order), the one used least so far. The draw never depends on `n_voices`,
    so asking for fewer voices gives the first of the same voices.
    """
    rng = random.Random(f"{seed}/voices")
    left = {}  # accent -> its variants still to draw, in a seeded order
    for accent in ACCENTS:
        variants = [v for v in VARIANTS if voice_split(f"{accent}+{v}") == pool]
        rng.shuffle(variants)
        left[accent] = variants
    uses: Counter[str] = Counter()
    voices: list[Voice] = []
    while len(voices) < n_voices:
        round_accents = [accent for accent in ACCENTS if left[accent]]
        if not round_accents:
            raise WordsBuildError(f"the {'development' if pool == 'train' else 'held-out'} pool holds "
                                  f"{len(voices)} voices; ask for at most that many")
        rng.shuffle(round_accents)
        for accent in round_accents[:n_voices - len(voices)]:
            variant = min(left[accent], key=lambda v: uses[v])  # the first of the least used, in seeded order
            left[accent].remove(variant)
            uses[variant] += 1
            voices.append(make_voice(accent, variant, seed))
    return voices


def word_text(accent: str, word: str) -> str:
    """What espeak-ng is given to say `word` in `accent`."""
    return FOREIGN_TEXT[accent][WORDS.index(word)] if accent in FOREIGN_TEXT else word


# ------------------------------------------------------------------ one take: draw, trim, fit, mix

def draw_take(job: VoiceJob, word: str, take: int) -> Take:
    """Take `take` of `word`, from its own seed, so a take does not depend on which others were rendered."""
    rng = random.Random(f"{job.seed}/{job.voice.name}/{word}/{take}")
    voice = job.voice
    return Take(pitch=int(np.clip(voice.pitch + rng.randint(-PITCH_JITTER, PITCH_JITTER), 0, 99)),
                speed=round(voice.speed * rng.uniform(1 - SPEED_JITTER, 1 + SPEED_JITTER)),
                gain_db=round(rng.uniform(-MAX_GAIN_DB, MAX_GAIN_DB), 2),
                snr_db=round(rng.uniform(*SNR_DB), 1),
                noise=rng.choice(("white", "pink")),
                position=rng.random(),
                noise_seed=rng.getrandbits(32))


def trim_silence(audio: np.ndarray, sample_rate: int, threshold_db: float = -40.0, frame_s: float = 0.01,
                 pad_s: float = 0.01) -> np.ndarray:
    """(n,) -> (m,): from the first to the last 10 ms frame whose RMS is within `threshold_db` of the loudest
    frame's, with `pad_s` kept either side; the quiet consonants of a word are far above espeak-ng's silence."""
    frame = max(1, round(frame_s * sample_rate))
    n_frames = math.ceil(len(audio) / frame)
    padded = np.zeros(n_frames * frame, dtype=np.float64)
    padded[:len(audio)] = audio
    frame_rms = np.sqrt(np.mean(padded.reshape(n_frames, frame) ** 2, axis=1))  # (n,) -> (n_frames, frame)
    if frame_rms.max() <= 0:
        return audio[:0]
    loud = np.flatnonzero(frame_rms >= frame_rms.max() * 10 ** (threshold_db / 20))
    pad = round(pad_s * sample_rate)
    start = max(0, loud[0] * frame - pad)
    end = min(len(audio), (loud[-1] + 1) * frame + pad)
    return audio[start:end]


def max_word_samples(sample_rate: int = SAMPLE_RATE) -> int:
    """The longest word that fits the window with EDGE_S to spare at both ends."""
    return int((WINDOW_S - 2 * EDGE_S) * sample_rate)


def faster_speed(speed: int, n_word: int, n_max: int) -> int:
    """A speed at which a word now `n_word` samples long should take at most `n_max` (5 % to spare)."""
    return min(MAX_SPEED, math.ceil(speed * n_word / n_max * 1.05))


def word_offset(n_word: int, position: float, sample_rate: int = SAMPLE_RATE) -> int:
    """First sample of a word of `n_word` samples placed at `position` (0-1) of the room the window leaves it."""
    n_window, edge = round(WINDOW_S * sample_rate), round(EDGE_S * sample_rate)
    room = n_window - 2 * edge - n_word
    if room < 0:
        raise ValueError(f"a word of {n_word / sample_rate:.3f} s does not fit a {WINDOW_S:g} s window with "
                         f"{EDGE_S:g} s edges")
    return edge + round(position * room)


def make_noise(kind: str, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_samples,) float64 noise of unit RMS: 'white' (flat spectrum) or 'pink' (power falling as 1/f)."""
    white = rng.standard_normal(n_samples)
    if kind == "pink":
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n_samples)
        spectrum[1:] /= np.sqrt(freqs[1:] / freqs[1])  # amplitude ~ 1/sqrt(f): power ~ 1/f
        spectrum[0] = 0.0
        white = np.fft.irfft(spectrum, n_samples)
    elif kind != "white":
        raise ValueError(f"unknown noise {kind!r}; use 'white' or 'pink'")
    return white / np.sqrt(np.mean(white ** 2))


def compose_clip(word: np.ndarray, offset: int, take: Take, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_word,) -> (n_window,) float32: the word peak-normalised to PEAK_DBFS + gain, at `offset`, over noise at
    `take.snr_db` below the word's mean power (no noise when snr_db is infinite)."""
    n_window = round(WINDOW_S * sample_rate)
    if offset < 0 or offset + len(word) > n_window:
        raise ValueError(f"a word of {len(word)} samples at {offset} leaves the {n_window}-sample window")
    level = 10 ** ((PEAK_DBFS + take.gain_db) / 20) / max(float(np.abs(word).max()), 1e-9)
    clip = np.zeros(n_window)
    clip[offset:offset + len(word)] = word * level
    if math.isfinite(take.snr_db):
        word_power = float(np.mean((word * level) ** 2))
        noise = make_noise(take.noise, n_window, np.random.default_rng(take.noise_seed))
        clip += noise * np.sqrt(word_power / 10 ** (take.snr_db / 10))
    return np.clip(clip, -1.0, 1.0).astype(np.float32)  # never reached at these levels; 16 bits would wrap


# ------------------------------------------------------------------ espeak-ng

def espeak_info() -> tuple[str, Path]:
    """(espeak-ng's version, its data folder); MissingToolError when it is not installed."""
    if shutil.which(ESPEAK) is None:
        raise MissingToolError(f"{ESPEAK} is not installed; install it: {INSTALL_HINT}")
    text = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"text-to-speech:\s*(\S+).*Data at:\s*(.+)", text)
    if not found:
        raise MissingToolError(f"cannot read the version of {ESPEAK} from {text.strip()!r}")
    return found[1], Path(found[2].strip())


def check_variants(voices: list[Voice], data_dir: Path) -> None:
    """Raise MissingToolError for a variant espeak-ng lacks: it would silently speak with the default one."""
    missing = sorted({v.variant for v in voices if not (data_dir / "voices" / "!v" / v.variant).is_file()})
    if missing:
        raise MissingToolError(f"espeak-ng variants {missing} are not in {data_dir / 'voices' / '!v'}; "
                               f"is this espeak-ng older than 1.51?")


def speak(text: str, voice: str, pitch: int, speed: int) -> tuple[np.ndarray, int]:
    """((n,) float32 audio, its sample rate) of espeak-ng saying `text`."""
    result = subprocess.run([ESPEAK, "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text],
                            capture_output=True)
    if result.returncode != 0 or not result.stdout:
        raise WordsBuildError(f"espeak-ng -v {voice} failed on {text!r}: "
                              f"{result.stderr.decode(errors='replace').strip() or 'no audio'}")
    audio, sample_rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return audio, sample_rate


def say_word(text: str, voice: str, pitch: int, speed: int) -> tuple[np.ndarray, int]:
    """((n,) float32 trimmed word at SAMPLE_RATE, the speed used): re-rendered faster until it fits the window."""
    n_max = max_word_samples()
    for _ in range(6):
        audio, rate = speak(text, voice, pitch, speed)
        word = trim_silence(resample(audio, rate, SAMPLE_RATE), SAMPLE_RATE)
        if len(word) == 0:
            raise WordsBuildError(f"espeak-ng -v {voice} said nothing for {text!r}")
        if len(word) <= n_max:
            return word, speed
        if speed >= MAX_SPEED:
            break
        speed = faster_speed(speed, len(word), n_max)
    raise WordsBuildError(f"espeak-ng -v {voice} takes {len(word) / SAMPLE_RATE:.2f} s for {text!r} even at "
                          f"{speed} words per minute")


def write_wav(path: Path, audio: np.ndarray) -> None:
    """Write 16-bit PCM atomically, under a hidden temporary name that no loader picks up until it is whole."""
    with atomic_path(path) as tmp_path:
        sf.write(tmp_path, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def render_voice(job: VoiceJob, out: Path) -> list[dict]:
    """Write every take of every word of the voice under OUT; return their metadata rows."""
    voice, rows = job.voice, []
    for word in WORDS:
        text = word_text(voice.accent, word)
        for take_index in range(job.takes):
            take = draw_take(job, word, take_index)
            word_audio, speed = say_word(text, voice.name, take.pitch, take.speed)
            offset = word_offset(len(word_audio), take.position)
            clip = job.clip_name(word, take_index)
            write_wav(out / clip, compose_clip(word_audio, offset, take))
            rows.append({"clip": clip, "class": word, "group": voice.name, "voice": voice.name,
                         "accent": voice.accent, "variant": voice.variant, "text": text, "take": take_index,
                         "pitch": take.pitch, "speed": speed, "gain_db": take.gain_db,
                         "offset_s": round(offset / SAMPLE_RATE, 4),
                         "duration_s": round(len(word_audio) / SAMPLE_RATE, 4), "snr_db": take.snr_db,
                         "noise": take.noise})
    return rows


def render_jobs(jobs: list[VoiceJob], out: Path, workers: int) -> Iterator[tuple[VoiceJob, list[dict]]]:
    """Render the voices (in this process when workers == 1); yield (job, rows) as each finishes."""
    if workers == 1:
        for job in jobs:
            yield job, render_voice(job, out)
        return
    with ProcessPoolExecutor(workers) as pool:
        pending = {pool.submit(render_voice, job, out): job for job in jobs}
        for future in as_completed(pending):
            yield pending[future], future.result()


# ------------------------------------------------------------------ the build: plan, resume, write

def _journal_key(job: VoiceJob, pool: str, espeak_version: str) -> str:
    return json.dumps([asdict(job), pool, espeak_version, RENDER_VERSION], sort_keys=True)


def read_journal(path: Path) -> dict[str, dict]:
    """Journal key -> {"key", "pool", "rows"} of each finished voice; the latest entry wins. A line cut short by
    an interrupted run is ignored."""
    entries = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                entries[entry["key"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return entries


def write_metadata(out: Path, rows: list[dict]) -> None:
    """OUT/metadata.csv, one row per clip, written atomically."""
    with atomic_path(out / "metadata.csv") as tmp_path, tmp_path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def build_words(out: Path, *, voices: int = 60, takes: int = 2, seed: int = 0, held_out: bool = False,
                workers: int = 1, exclude_groups: frozenset[str] = frozenset()) -> list[dict]:
    """Build (or finish building) the data set in OUT; return its metadata rows, sorted by clip. Voices whose
    group is in `exclude_groups` (those of another build) are passed over in the draw, so the first `voices`
    others are rendered.

    Voices recorded as finished in OUT's journal, with all their clips on disk, are not rendered again.
    """
    if voices < 1 or takes < 1 or workers < 1:
        raise WordsBuildError(f"need voices >= 1, takes >= 1 and workers >= 1; got {voices}, {takes}, {workers}")
    pool = "test" if held_out else "train"
    out = Path(out)
    espeak_version, data_dir = espeak_info()
    drawn = [voice for voice in draw_voices(voices + len(exclude_groups), seed, pool)
             if voice.name not in exclude_groups][:voices]
    check_variants(drawn, data_dir)
    jobs = [VoiceJob(voice, takes, seed) for voice in drawn]

    journal_path = out / JOURNAL_NAME
    journal = read_journal(journal_path)
    if any(entry.get("pool") != pool for entry in journal.values()):  # a folder holds one pool: no leak possible
        this, other = ("held-out", "development") if held_out else ("development", "held-out")
        raise HeldOutVoiceError(f"{out} holds {other} voices; render the {this} pool into another folder")
    for word in WORDS:
        (out / word).mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*/.*.tmp"):  # half-written files of an interrupted run
        stale.unlink()

    def finished(job: VoiceJob) -> bool:
        entry = journal.get(_journal_key(job, pool, espeak_version))
        return entry is not None and all((out / row["clip"]).exists() for row in entry["rows"])

    todo = [job for job in jobs if not finished(job)]
    log.info("espeak-ng %s; %d voices, %d to render (%d already finished)", espeak_version, len(jobs), len(todo),
             len(jobs) - len(todo))
    started = time.perf_counter()
    with journal_path.open("a") as journal_file:
        for done, (job, rows) in enumerate(render_jobs(todo, out, workers), 1):
            key = _journal_key(job, pool, espeak_version)
            journal[key] = {"key": key, "pool": pool, "rows": rows}
            journal_file.write(json.dumps(journal[key]) + "\n")
            journal_file.flush()
            if done % 10 == 0 or done == len(todo):
                log.info("%d/%d voices rendered (%.0f s)", done, len(todo), time.perf_counter() - started)

    rows = sorted((row for job in jobs for row in journal[_journal_key(job, pool, espeak_version)]["rows"]),
                  key=lambda row: row["clip"])
    for row in rows:  # by construction; checked because a leak would silently spoil every held-out score
        if voice_split(row["group"]) != pool:
            raise HeldOutVoiceError(f"{row['clip']} is said by voice {row['group']!r} of the other pool")
    missing = [row["clip"] for row in rows if not (out / row["clip"]).exists()]
    if missing:
        raise WordsBuildError(f"{len(missing)} clips are missing after rendering, e.g. {out / missing[0]}")
    write_metadata(out, rows)
    listed = {row["clip"] for row in rows}
    stray = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.wav")
                   if p.relative_to(out).as_posix() not in listed)
    if stray:
        log.warning("%s holds %d wav files not in metadata.csv (e.g. %s), from a build with other options: "
                    "remove them before training", out, len(stray), stray[0])
    return rows


def summarize(rows: list[dict]) -> str:
    """Clips per class, and the voices and accents they come from."""
    clips = Counter(row["class"] for row in rows)
    accents = Counter(row["accent"] for row in rows if row["class"] == WORDS[0] and row["take"] == 0)
    lines = ["clips per class: " + ", ".join(f"{word} {clips[word]}" for word in WORDS),
             f"{len({row['group'] for row in rows})} voices in {len(accents)} accents: "
             + ", ".join(f"{accent} {n}" for accent, n in sorted(accents.items()))]
    return "\n".join(lines)


def voices_of(build: Path) -> frozenset[str]:
    """The groups (voices) in the metadata.csv of the build in `build`."""
    path = Path(build) / "metadata.csv"
    if not path.is_file():
        raise WordsBuildError(f"{path}: no such file; --exclude-voices-of takes the folder of an earlier build")
    with open(path, newline="", encoding="utf-8") as file:
        return frozenset(row["group"] for row in csv.DictReader(file))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python bench/data/build_words.py",
        description="Render the ten Speech Commands words with espeak-ng voices into one-second clips "
                    "(10 classes) with metadata.csv grouping clips by voice.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, default=argparse.SUPPRESS,
                        help="output folder (created; a rerun resumes it)")
    parser.add_argument("--voices", type=int, default=60, help="voices, each saying every word")
    parser.add_argument("--takes", type=int, default=2, help="takes of every word per voice")
    parser.add_argument("--seed", type=int, default=0, help="seeds the choice of voices and every take")
    parser.add_argument("--held-out", action="store_true",
                        help="render held-out voices instead of development ones (into a folder of their own)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument("--exclude-voices-of", type=Path, metavar="DIR",
                        help="pass over the voices of this earlier build (its metadata.csv), e.g. to render other "
                             "voices as unlabelled audio for the same task")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        excluded = voices_of(args.exclude_voices_of) if args.exclude_voices_of else frozenset()
        rows = build_words(args.out, voices=args.voices, takes=args.takes, seed=args.seed,
                           held_out=args.held_out, workers=args.workers, exclude_groups=excluded)
    except WordsBuildError as err:
        sys.exit(f"error: {err}")
    print(f"{args.out}: {len(rows)} clips of {WINDOW_S:g} s in {time.perf_counter() - started:.0f} s")
    print(summarize(rows))
    print(f"fingerprint {data_fingerprint(args.out, [row['clip'] for row in rows])}")


if __name__ == "__main__":
    main()
