"""Build `styles`, the benchmark's real-music data set: scores from the music21 corpus rendered with recorded
General-MIDI instrument samples, in the GTZAN layout.

    python bench/data/build_styles.py --out data/styles_dev --per-class 60 --seconds 30
    python bench/data/build_styles.py --out data/styles_tiny --per-class 4 --seconds 10

Sources, none of them written here:
  * scores: the corpus inside the PyPI package `music21` (code BSD-3; the encodings are redistributed with their
    encoders' permission, some for non-commercial use only, e.g. the Essen folksongs: see
    music21/corpus/license.txt and the licence files in its folders);
  * sound: a General-MIDI SoundFont of recorded instrument samples, by default Debian's `timgm6mb-soundfont`
    (GPL-2); `--soundfont` takes another, e.g. Debian's `fluid-soundfont-gm`;
  * synthesis: libfluidsynth (Debian `fluidsynth`, LGPL-2.1) through PyPI `pyfluidsynth` (MIT).

Ten "style" classes, each a repertoire of the corpus: Bach chorales, Palestrina masses, Monteverdi madrigals,
trecento songs, O'Neill's Irish tunes, Aird's Scottish airs, Ryan's Mammoth (American) collection, German and
Chinese folksongs of the Essen collection, and classical string quartets (Beethoven, Mozart, Haydn, Schumann).
Each clip plays one excerpt of one work with instruments drawn from the class's presets, which overlap between
classes on purpose (a fiddle plays Irish, Scottish and American tunes; a choir sings Bach and Palestrina), at a
tempo that puts the median time between note onsets in the class's range, transposed by up to two semitones,
in a random room. Short works (folk tunes) loop to fill the clip; long works give up to `clips_per_work`
excerpts spread over the work.

The `group` column of metadata.csv names the source work (a chorale melody, a mass, a tune title, a quartet
opus): split by it, never by clip. Every work is assigned once and for all to development or held-out by a hash
of its group (`group_split`); this builder renders development works only, so the held-out ~30 % can later test
a recipe on music no development run has heard.

Layout: OUT/<class>/<class>.<NNNNN>.wav (22,050 Hz, mono, 16-bit PCM, all of one length) and OUT/metadata.csv
(clip, class, group, source, number, preset, bpm, transpose, start_quarters, parts). Clip numbers can skip: each
work reserves `clips_per_work` numbers, and short works fill one. Every file is written atomically; finished
works are recorded in OUT/.build_styles.jsonl, so a rerun renders only the works an interrupted run had not
finished. Each clip is rendered on a fresh synthesizer from its own seed, so a resumed build equals an
uninterrupted one; rebuilds with other versions of music21, FluidSynth or the SoundFont, or on another machine,
need not be bit-identical: compare results on one build.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import random
import re
import statistics
import sys
import time
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from vitaudio.files import atomic_path

log = logging.getLogger("build_styles")

SAMPLE_RATE = 22050
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")  # Debian timgm6mb-soundfont
HELD_OUT_FRACTION = 0.3  # share of the hash space whose works are held out; changing it changes the held-out pool
OVER_PROVISION = 1.05  # works are selected for 5 % more clips than asked (plus 2), for scores that fail to parse
JOURNAL_NAME = ".build_styles.jsonl"
RENDER_VERSION = 2  # part of each journal key: raise it when a change alters the audio, so reruns redo old works
METADATA_COLUMNS = ("clip", "class", "group", "source", "number", "preset", "bpm", "transpose", "start_quarters",
                    "parts")
INSTALL_HINT = ("apt-get install -y --no-install-recommends fluidsynth timgm6mb-soundfont && "
                "pip install music21 pyfluidsynth")

# General-MIDI programs (0-based). A preset's programs are dealt to the parts in turn, top voice first.
PRESETS = {
    "organ": (19,), "choir": (52,), "oohs": (53,), "piano": (0,), "harpsichord": (6,),
    "strings4": (40, 40, 41, 42), "string_ens": (48,), "viols": (41, 41, 42, 42),
    "winds4": (73, 68, 71, 70), "brass4": (56, 56, 60, 57), "recorder": (74,),
    "lute": (24,), "fiddle": (110,), "violin": (40,), "flute": (73,), "bagpipe": (109,),
    "accordion": (21,), "harp": (46,), "banjo": (105,), "harmonica": (22,),
    "clarinet": (71,), "shakuhachi": (77,), "koto": (107,), "pan_flute": (75,),
    "dulcimer": (15,), "oboe": (68,), "piccolo": (72,),
}


@dataclass(frozen=True)
class Style:
    """How the clips of one class are drawn."""

    presets: tuple[str, ...]  # instrument presets, one drawn per clip
    onset_interval: tuple[float, float]  # range of the median time between note onsets (s): sets the tempo
    clips_per_work: int  # most excerpts taken from one corpus entry


CLASSES = {
    "bach_chorale": Style(("organ", "choir", "strings4", "string_ens", "piano", "brass4"), (0.28, 0.50), 1),
    "palestrina_mass": Style(("choir", "oohs", "organ", "recorder", "viols"), (0.35, 0.65), 2),
    "monteverdi_madrigal": Style(("oohs", "choir", "strings4", "harpsichord", "lute"), (0.30, 0.55), 3),
    "trecento": Style(("recorder", "lute", "harpsichord", "oohs", "viols"), (0.25, 0.50), 1),
    "irish_oneills": Style(("fiddle", "flute", "bagpipe", "accordion", "harp", "banjo"), (0.13, 0.25), 1),
    "scottish_aird": Style(("fiddle", "violin", "bagpipe", "flute", "harp", "piano"), (0.15, 0.35), 1),
    "american_ryan": Style(("fiddle", "banjo", "harmonica", "violin", "piccolo", "accordion"), (0.13, 0.25), 1),
    "german_folksong": Style(("accordion", "clarinet", "piano", "oohs", "violin", "flute"), (0.25, 0.45), 1),
    "chinese_folksong": Style(("shakuhachi", "koto", "pan_flute", "dulcimer", "violin", "oboe"), (0.25, 0.45), 1),
    "classical_chamber": Style(("strings4", "piano", "winds4", "string_ens"), (0.15, 0.35), 5),
}

# Corpus files that repeat tunes found elsewhere in O'Neill's collection.
ONEILLS_DUPLICATE_FILES = ("0626-0635", "0732-0758_mh", "1116-1135_ml", "1556-1576", "1577-1624", "1710-1750")
GERMAN_FILES = ("altdeu10", "altdeu20", "boehme10", "boehme20", "erk10", "erk20", "erk30", "fink0", "kinder0",
                "zuccal0")
CHAMBER_DIRS = ("beethoven", "mozart", "haydn", "schumann_robert/opus41no1")


class StylesBuildError(Exception):
    """The data set cannot be built as asked; the message says what to change."""


class MissingToolError(StylesBuildError):
    """music21, pyfluidsynth, libfluidsynth or the SoundFont is not installed."""


class HeldOutWorkError(StylesBuildError):
    """A held-out work was about to be rendered into development data."""


@dataclass(frozen=True)
class Work:
    """One corpus entry: a score file, or one tune of a multi-tune file."""

    class_name: str
    group: str  # the source work; every clip of a group stays in one split
    source: str  # path inside music21's corpus, e.g. "bach/bwv1.6.mxl"
    number: str | None  # tune number inside a multi-tune file (ABC), else None


@dataclass(frozen=True)
class WorkJob:
    """The clips to render from one work; all that a worker needs, and the work's identity in the journal."""

    work: Work
    first_index: int  # number of the work's first clip within its class
    max_clips: int
    seed: int  # every random draw of the work's clips derives from it
    seconds: float

    def clip_name(self, k: int) -> str:
        """Root-relative path of the work's clip k: '<class>/<class>.<NNNNN>.wav'."""
        name = self.work.class_name
        return f"{name}/{name}.{self.first_index + k:05d}.wav"


# ------------------------------------------------------------------ which works: development or held out

def group_split(group: str) -> str:
    """'test' for the held-out ~30 % of works, 'train' for the development works; fixed by the group's SHA-1."""
    bucket = int(hashlib.sha1(group.encode()).hexdigest(), 16) % 1000
    return "test" if bucket < HELD_OUT_FRACTION * 1000 else "train"


def ensure_development(work: Work) -> None:
    """Raise HeldOutWorkError unless `work` is a development work."""
    if group_split(work.group) != "train":
        raise HeldOutWorkError(f"{work.source} (group {work.group!r}) is held out; development data must not "
                               f"contain it")


def select_works(works: list[Work], per_class: int, seed: int = 0,
                 class_names: list[str] | None = None) -> list[Work]:
    """The development works to render for each class, enough for `per_class` clips with some to spare.

    Held-out works are skipped. Within a class the works are shuffled (seeded by `seed` and the class name, so a
    class's selection does not depend on the others) and dealt out one per group first, then second works of the
    same groups (other movements of one quartet), and so on, so the clips come from as many groups as possible.
    """
    class_names = list(CLASSES) if class_names is None else class_names
    selected = []
    for class_name in class_names:
        candidates = sorted((w for w in works if w.class_name == class_name and group_split(w.group) == "train"),
                            key=lambda w: (w.source, w.number or "", w.group))
        random.Random(f"{seed}/{class_name}").shuffle(candidates)
        works_of_group: dict[str, list[Work]] = {}
        for work in candidates:
            works_of_group.setdefault(work.group, []).append(work)
        dealt = [group_works[rank] for rank in range(max(map(len, works_of_group.values()), default=0))
                 for group_works in works_of_group.values() if rank < len(group_works)]
        clips_reserved = 0
        for work in dealt:
            if clips_reserved >= per_class * OVER_PROVISION + 2:
                break
            selected.append(work)
            clips_reserved += CLASSES[class_name].clips_per_work
    return selected


def plan_jobs(works: list[Work], seconds: float, seed: int = 0) -> list[WorkJob]:
    """One job per selected work, with the clip numbers it reserves and its own seed. Refuses held-out works."""
    jobs, next_index = [], Counter()
    for work in works:
        ensure_development(work)
        max_clips = CLASSES[work.class_name].clips_per_work
        digest = hashlib.sha1(f"{seed}|{work.class_name}|{work.source}|{work.number}".encode()).digest()
        jobs.append(WorkJob(work, next_index[work.class_name], max_clips, int.from_bytes(digest[:4], "big"),
                            seconds))
        next_index[work.class_name] += max_clips
    return jobs


# ------------------------------------------------------------------ the corpus

def _import_music21():
    try:
        import music21
    except ImportError as err:
        raise MissingToolError(f"music21 is not installed ({err}); install it: {INSTALL_HINT}") from err
    return music21


def normalize_title(title: str | None) -> str:
    """A tune title reduced to its words, so that variants of one tune ('The Rose Tree', 'Rose Tree Reel No. 2')
    share a group: ASCII, lower case, without articles, dance types, numbers and roman numerals."""
    title = unicodedata.normalize("NFKD", title or "").encode("ascii", "ignore").decode().lower()
    title = re.sub(r"[^a-z0-9 ]+", " ", title)
    title = re.sub(r"\b(the|a|an|no|reel|jig|hornpipe|strathspey|air|march|version|[0-9]+|i+)\b", " ", title)
    return " ".join(title.split())


def _palestrina_mass(path: Path) -> str | None:
    """The mass a Humdrum movement belongs to (its !!!OPR record)."""
    with open(path, encoding="latin-1") as file:
        for line in file:
            if line.startswith("!!!OPR"):
                return line.split(":", 1)[1].strip()
    return None


def classify_entry(source: str, number: str | None, title: str | None, corpus_root: Path,
                   chorale_titles: dict[str, str]) -> tuple[str, str] | None:
    """(class, group) of one corpus entry, or None when it belongs to no class.

    `chorale_titles` maps a BWV number ('153.1') to its normalised chorale title, which groups the harmonisations
    of one melody.
    """
    top = source.split("/")[0]
    file_name = source.rsplit("/", 1)[-1]
    if top == "bach" and source.endswith(".mxl") and source.count("/") == 1:
        bwv = file_name[len("bwv"):-len(".mxl")]  # bwv153.1.mxl -> 153.1
        class_name = "bach_chorale"
        group = "bach:" + (chorale_titles.get(bwv) or chorale_titles.get(bwv.split(".")[0]) or file_name)
    elif top == "palestrina":
        class_name, group = "palestrina_mass", "pal:" + (_palestrina_mass(corpus_root / source) or file_name)
    elif top == "monteverdi" and source.endswith(".mxl"):
        class_name, group = "monteverdi_madrigal", "mon:" + file_name
    elif top == "trecento":
        class_name, group = "trecento", "tre:" + file_name
    elif top == "oneills1850" and not any(name in file_name for name in ONEILLS_DUPLICATE_FILES):
        class_name, group = "irish_oneills", "irl:" + normalize_title(title)
    elif top == "airdsAirs":
        class_name, group = "scottish_aird", "sco:" + normalize_title(title)
    elif top == "ryansMammoth":
        class_name, group = "american_ryan", "usa:" + normalize_title(title)
    elif top == "essenFolksong" and file_name.split(".")[0] in GERMAN_FILES:
        class_name, group = "german_folksong", "ger:" + normalize_title(title)
    elif top == "essenFolksong" and file_name.startswith("han"):
        class_name, group = "chinese_folksong", "chn:" + normalize_title(title)
    elif (any(source.startswith(d) for d in CHAMBER_DIRS) and "/movement" in source and source.endswith(".mxl")):
        class_name = "classical_chamber"
        group = "cha:" + "/".join(source.split("/")[:2]).replace(".mxl", "")  # composer/opus: the quartet
    else:
        return None
    if group.endswith(":"):  # an untitled tune is a work of its own
        group += f"{source}#{number}"
    return class_name, group


def enumerate_works() -> list[Work]:
    """Every corpus entry that belongs to a class, development and held-out alike (needs music21)."""
    music21 = _import_music21()
    from music21 import corpus
    from music21.corpus.chorales import ChoraleListRKBWV

    corpus_root = Path(music21.__file__).parent / "corpus"
    chorale_titles = {bwv: normalize_title(entry["title"]) or bwv
                      for bwv, entry in ChoraleListRKBWV().byBWV.items()}
    bundle = corpus.corpora.CoreCorpus().metadataBundle
    bundle.read()
    works, seen = [], set()
    for entry in bundle[:]:  # one list: iterating the bundle itself rebuilds its list at every step
        source = Path(entry.sourcePath).as_posix()
        number = None if entry.number is None else str(entry.number)
        title = entry.metadata.title if entry.metadata else None
        found = classify_entry(source, number, title, corpus_root, chorale_titles)
        if found is None or (found[0], source, number) in seen:
            continue
        seen.add((found[0], source, number))
        works.append(Work(found[0], found[1], source, number))
    return works


# ------------------------------------------------------------------ scores -> notes -> audio (worker side)

class Note(NamedTuple):
    part: int  # index of the part (voice) in the score, top first
    onset: float  # quarter notes from the start
    duration: float  # quarter notes
    pitch: int  # MIDI note number
    velocity: int | None  # as written, None when the score gives none


@dataclass(frozen=True)
class ClipPlan:
    """How one excerpt of a work is performed."""

    preset: str
    bpm: float
    transpose: int  # semitones
    start_quarters: float  # where the excerpt starts in the score


def read_notes(source: str, number: str | None) -> tuple[list[Note], int]:
    """Parse a corpus entry into notes sorted by onset, with ties merged; and its number of parts.

    Repeats are written out for short scores only (folk tunes are AABB forms; long works are windowed anyway).
    Ties are merged here because music21's stripTies is slow on long scores. Grace notes are dropped.
    """
    from music21 import corpus

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # music21 warns about many harmless encoding quirks of the corpus
        score = corpus.parse(source, number=number) if number is not None else corpus.parse(source)
        if hasattr(score, "scores") and not hasattr(score, "parts"):  # an Opus: take its first score
            score = score.scores[0]
        if len(score.flatten().notes) < 1500:
            try:
                score = score.expandRepeats()
            except Exception:  # music21 raises several kinds on inconsistent repeat marks; play as written
                pass
        parts = list(score.parts) if score.parts else [score]
        notes: list[Note] = []
        for part_index, part in enumerate(parts):
            open_ties: dict[int, int] = {}  # MIDI pitch -> index in notes of the note its tie continues
            for element in part.flatten().notes:
                duration = float(element.duration.quarterLength)
                if duration <= 0:
                    continue
                onset = float(element.offset)
                velocity = element.volume.velocity if element.volume is not None else None
                members = element.notes if element.isChord else [element]
                for member in members:
                    pitch = int(member.pitch.midi)
                    tie = member.tie.type if member.tie is not None else None
                    if tie in ("stop", "continue") and pitch in open_ties:
                        tied = notes[open_ties[pitch]]
                        notes[open_ties[pitch]] = tied._replace(duration=onset + duration - tied.onset)
                        if tie == "stop":
                            del open_ties[pitch]
                        continue
                    notes.append(Note(part_index, onset, duration, pitch, velocity))
                    if tie in ("start", "continue"):
                        open_ties[pitch] = len(notes) - 1
                    else:
                        open_ties.pop(pitch, None)
    notes.sort(key=lambda note: (note.onset, note.part))
    return notes, len(parts)


def plan_clip(notes: list[Note], style: Style, k: int, max_clips: int, seconds: float,
              rng: random.Random) -> ClipPlan | None:
    """Excerpt k of max_clips: instruments, a tempo in the class's range, a transposition, a start on an onset.
    None when the work is too short for a k-th excerpt (a short work gives one clip, from its start)."""
    onsets = sorted({round(note.onset, 4) for note in notes})
    intervals = [b - a for a, b in pairwise(onsets) if b > a]
    median_interval = statistics.median(intervals) if intervals else 1.0  # quarter notes
    length = max(note.onset + note.duration for note in notes)  # quarter notes
    preset = rng.choice(style.presets)
    bpm = float(np.clip(60.0 * median_interval / rng.uniform(*style.onset_interval), 30, 260))
    transpose = rng.randint(-2, 2)
    clip_quarters = seconds * bpm / 60.0
    if length > clip_quarters * 1.05:  # long work: excerpt k starts on an onset in the k-th slice of the work
        low, high = ((length - clip_quarters) * i / max_clips for i in (k, k + 1))
        start = rng.choice([onset for onset in onsets if low <= onset <= high] or [low])
    elif k == 0:
        start = 0.0
    else:
        return None
    return ClipPlan(preset, round(bpm, 1), transpose, start)


class Synthesizer:
    """Renders notes with a General-MIDI SoundFont through FluidSynth, each clip on a fresh synthesizer, so that
    no note or reverb tail of one clip sounds in the next and a clip does not depend on the clips before it."""

    def __init__(self, soundfont: Path, sample_rate: int = SAMPLE_RATE):
        try:
            import fluidsynth
        except ImportError as err:  # pyfluidsynth raises ImportError when libfluidsynth is missing too
            raise MissingToolError(f"cannot load pyfluidsynth/libfluidsynth ({err}); install them: "
                                   f"{INSTALL_HINT}") from err
        if not Path(soundfont).is_file():
            raise MissingToolError(f"SoundFont {soundfont} not found: install Debian's timgm6mb-soundfont "
                                   f"or pass --soundfont PATH.sf2")
        self.fluidsynth = fluidsynth
        self.soundfont = Path(soundfont)
        self.sample_rate = sample_rate
        self._new_synth()[0].delete()  # fail now if FluidSynth cannot read the file

    def _new_synth(self):
        """(a FluidSynth instance, the id of the SoundFont loaded into it)."""
        synth = self.fluidsynth.Synth(gain=0.5, samplerate=float(self.sample_rate))
        soundfont_id = synth.sfload(str(self.soundfont))
        if soundfont_id < 0:
            synth.delete()
            raise MissingToolError(f"FluidSynth could not load {self.soundfont}: is it a SoundFont 2 file?")
        return synth, soundfont_id

    def render(self, notes: list[Note], n_parts: int, plan: ClipPlan, seconds: float,
               rng: random.Random) -> np.ndarray:
        """(n_samples,) float32 audio of the excerpt, before any level normalisation. Short works loop."""
        synth, soundfont_id = self._new_synth()
        try:
            return self._perform(synth, soundfont_id, notes, n_parts, plan, seconds, rng)
        finally:
            synth.delete()

    def _perform(self, synth, soundfont_id: int, notes: list[Note], n_parts: int, plan: ClipPlan, seconds: float,
                 rng: random.Random) -> np.ndarray:
        channels = [c for c in range(16) if c != 9]  # MIDI channel 10 plays drums
        programs = PRESETS[plan.preset]
        for part in range(min(n_parts, len(channels))):
            synth.program_select(channels[part], soundfont_id, 0, programs[part % len(programs)])
        synth.set_reverb(roomsize=rng.uniform(0.2, 0.8), damping=rng.uniform(0.1, 0.6),
                         width=rng.uniform(0.5, 1.0), level=rng.uniform(0.2, 0.7))
        seconds_per_quarter = 60.0 / plan.bpm
        base_velocity = rng.randint(70, 105)
        length = max(note.onset + note.duration for note in notes)
        events = []  # (time s, 1 = on / 0 = off, channel, key, velocity)
        for repeat in range(64):  # strophic songs and dance tunes are repeated in practice; a beat's rest between
            shift = repeat * (length + 1.0) - plan.start_quarters
            if shift * seconds_per_quarter > seconds:
                break
            for note in notes:
                start = (note.onset + shift) * seconds_per_quarter
                if not 0 <= start < seconds:
                    continue
                start = max(start + rng.gauss(0, 0.008), 0.0)  # a player's timing is not a grid
                end = min(start + note.duration * seconds_per_quarter * 0.95, seconds)
                velocity = int(np.clip((note.velocity or base_velocity) + rng.randint(-8, 8), 20, 127))
                key = int(np.clip(note.pitch + plan.transpose, 0, 127))
                channel = channels[note.part % len(channels)]
                events += [(start, 1, channel, key, velocity), (end, 0, channel, key, 0)]
        events.sort(key=lambda event: event[:2])  # at one instant, releases before attacks
        n_samples = int(seconds * self.sample_rate)
        chunks, rendered = [], 0
        for time_s, is_on, channel, key, velocity in events:
            frame = min(int(time_s * self.sample_rate), n_samples)
            if frame > rendered:
                chunks.append(synth.get_samples(frame - rendered))
                rendered = frame
            if is_on:
                synth.noteon(channel, key, velocity)
            else:
                synth.noteoff(channel, key)
        if rendered < n_samples:
            chunks.append(synth.get_samples(n_samples - rendered))
        stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2)  # interleaved int16 -> (n_samples, 2)
        return stereo.mean(axis=1) / 32768.0


def normalize_level(audio: np.ndarray, rms_db: float = -20.0, peak: float = 0.99) -> np.ndarray:
    """Scale to an RMS of `rms_db` dBFS, then down as needed so no sample exceeds `peak`."""
    rms = float(np.sqrt(np.mean(audio ** 2))) + 1e-9
    audio = audio * (10 ** (rms_db / 20) / rms)
    return audio * min(1.0, peak / max(float(np.abs(audio).max()), 1e-9))


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM atomically, under a hidden temporary name that no loader picks up until it is whole."""
    with atomic_path(path) as tmp_path:
        sf.write(tmp_path, audio, sample_rate, subtype="PCM_16", format="WAV")


def render_work(job: WorkJob, out: Path, synthesizer: Synthesizer) -> tuple[list[dict], str | None]:
    """Write the work's clips under OUT; return their metadata rows and, when the work gave none, why."""
    work = job.work
    try:
        notes, n_parts = read_notes(work.source, work.number)
    except Exception as err:  # a score music21 cannot read costs that work only
        return [], f"{work.source}#{work.number}: parse failed: {err!r}"[:300]
    if len(notes) < 8:
        return [], f"{work.source}#{work.number}: only {len(notes)} notes"
    rows = []
    for k in range(job.max_clips):
        rng = random.Random(f"{job.seed}/{k}")
        plan = plan_clip(notes, CLASSES[work.class_name], k, job.max_clips, job.seconds, rng)
        if plan is None:
            break
        audio = synthesizer.render(notes, n_parts, plan, job.seconds, rng)
        if np.sqrt(np.mean(audio ** 2)) < 1e-4:  # the excerpt fell in a long rest
            continue
        clip = job.clip_name(k)
        write_wav(out / clip, normalize_level(audio))
        rows.append({"clip": clip, "class": work.class_name, "group": work.group, "source": work.source,
                     "number": work.number or "", "preset": plan.preset, "bpm": plan.bpm,
                     "transpose": plan.transpose, "start_quarters": round(plan.start_quarters, 2),
                     "parts": n_parts})
    return rows, None if rows else f"{work.source}#{work.number}: every excerpt was silent"


_worker_synthesizer: Synthesizer | None = None  # one per worker process, made by _start_worker


def _start_worker(soundfont: Path) -> None:
    global _worker_synthesizer
    _worker_synthesizer = Synthesizer(soundfont)


def _render_in_worker(job: WorkJob, out: Path) -> tuple[list[dict], str | None]:
    return render_work(job, out, _worker_synthesizer)


def render_jobs(jobs: list[WorkJob], out: Path, soundfont: Path,
                workers: int) -> Iterator[tuple[WorkJob, list[dict], str | None]]:
    """Render the jobs (in this process when workers == 1); yield (job, rows, failure) as each finishes."""
    if not jobs:
        return
    if workers == 1:
        synthesizer = Synthesizer(soundfont)
        for job in jobs:
            yield (job, *render_work(job, out, synthesizer))
        return
    Synthesizer(soundfont)  # fail here, with the message, rather than in every worker
    with ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(soundfont,)) as pool:
        pending = {pool.submit(_render_in_worker, job, out): job
                   for job in sorted(jobs, key=lambda job: -job.max_clips)}  # long works first: better balance
        for future in as_completed(pending):
            yield (pending[future], *future.result())


# ------------------------------------------------------------------ the build: plan, resume, trim, write

def _journal_key(job: WorkJob, soundfont: Path) -> str:
    return json.dumps([asdict(job), Path(soundfont).name, RENDER_VERSION], sort_keys=True)


def read_journal(path: Path) -> dict[str, dict]:
    """Journal key -> {"rows": [...], "failure": str | None} of each finished work; the latest entry wins.
    A line cut short by an interrupted run is ignored."""
    entries = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                entries[entry["key"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return entries


def keep_per_class(rows: list[dict], per_class: int) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): the first `per_class` clips of each class by clip name, which follows the work order."""
    kept, dropped, count = [], [], Counter()
    for row in sorted(rows, key=lambda row: row["clip"]):
        count[row["class"]] += 1
        (kept if count[row["class"]] <= per_class else dropped).append(row)
    return kept, dropped


def write_metadata(out: Path, rows: list[dict]) -> None:
    """OUT/metadata.csv, one row per clip, written atomically."""
    with atomic_path(out / "metadata.csv") as tmp_path, tmp_path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def build_styles(out: Path, *, per_class: int = 60, seconds: float = 30.0, seed: int = 0,
                 class_names: list[str] | None = None, soundfont: Path = DEFAULT_SOUNDFONT,
                 workers: int = 1) -> list[dict]:
    """Build (or finish building) the data set in OUT; return its metadata rows.

    Works recorded as finished in OUT's journal, with their kept clips on disk, are not rendered again. Clips
    beyond `per_class` in a class are deleted; metadata.csv lists exactly the clips left.
    """
    class_names = list(CLASSES) if class_names is None else class_names
    unknown = sorted(set(class_names) - set(CLASSES))
    if unknown:
        raise StylesBuildError(f"unknown classes {unknown}; the classes are {', '.join(CLASSES)}")
    if per_class < 1 or seconds <= 0 or workers < 1:
        raise StylesBuildError(f"need per_class >= 1, seconds > 0 and workers >= 1; got {per_class}, {seconds}, "
                               f"{workers}")
    out = Path(out)
    started = time.perf_counter()
    works = enumerate_works()
    jobs = plan_jobs(select_works(works, per_class, seed, class_names), seconds, seed)
    log.info("%d corpus works, %d of them for development; %d selected (%.1f s)", len(works),
             sum(group_split(w.group) == "train" for w in works), len(jobs), time.perf_counter() - started)
    for class_name in class_names:
        (out / class_name).mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*/.*.tmp"):  # half-written files of an interrupted run
        stale.unlink()

    journal_path = out / JOURNAL_NAME
    journal = read_journal(journal_path)
    todo = [job for job in jobs if _journal_key(job, soundfont) not in journal]
    for attempt in range(2):  # the second pass re-renders works whose kept clips are missing on disk
        if todo:
            log.info("rendering %d works (%d already finished)", len(todo), len(jobs) - len(todo))
        with journal_path.open("a") as journal_file:
            for done, (job, rows, failure) in enumerate(render_jobs(todo, out, soundfont, workers), 1):
                key = _journal_key(job, soundfont)
                journal[key] = {"key": key, "rows": rows, "failure": failure}
                journal_file.write(json.dumps(journal[key]) + "\n")
                journal_file.flush()
                if failure:
                    log.warning("no clips from %s", failure)
                if done % 25 == 0 or done == len(todo):
                    log.info("%d/%d works rendered (%.0f s)", done, len(todo), time.perf_counter() - started)
        rows = [row for job in jobs for row in journal[_journal_key(job, soundfont)]["rows"]]
        kept, dropped = keep_per_class(rows, per_class)
        missing = {row["clip"] for row in kept if not (out / row["clip"]).exists()}
        if not missing:
            break
        if attempt == 1:
            raise StylesBuildError(f"{len(missing)} clips are still missing after re-rendering, e.g. "
                                   f"{out / min(missing)}")
        todo = [job for job in jobs if any(row["clip"] in missing
                                           for row in journal[_journal_key(job, soundfont)]["rows"])]

    for row in dropped:
        (out / row["clip"]).unlink(missing_ok=True)
    for row in kept:  # by construction; checked because a leak would silently spoil every held-out score
        if group_split(row["group"]) != "train":
            raise HeldOutWorkError(f"{row['clip']} comes from held-out group {row['group']!r}")
    write_metadata(out, kept)
    listed = {row["clip"] for row in kept}
    stray = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.wav")
                   if p.relative_to(out).as_posix() not in listed)
    if stray:
        log.warning("%s holds %d wav files not in metadata.csv (e.g. %s): remove them before training",
                    out, len(stray), stray[0])
    return kept


def summarize(rows: list[dict], class_names: list[str], per_class: int) -> str:
    """A table of clips and works (groups) per class."""
    clips = Counter(row["class"] for row in rows)
    groups = defaultdict(set)
    for row in rows:
        groups[row["class"]].add(row["group"])
    lines = [f"{'class':22s} {'clips':>5s} {'works':>5s}"]
    for class_name in class_names:
        short = "  (fewer than asked)" if clips[class_name] < per_class else ""
        lines.append(f"{class_name:22s} {clips[class_name]:5d} {len(groups[class_name]):5d}{short}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python bench/data/build_styles.py",
        description="Render the development works of the music21 corpus into a GTZAN-shaped data set "
                    "(10 style classes) with metadata.csv grouping clips by source work.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, default=argparse.SUPPRESS,
                        help="output folder (created; a rerun resumes it)")
    parser.add_argument("--per-class", type=int, default=60, help="clips per class")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of every clip")
    parser.add_argument("--seed", type=int, default=0, help="seeds the choice of works and every performance")
    parser.add_argument("--classes", default=",".join(CLASSES), help="comma-separated classes to build")
    parser.add_argument("--soundfont", type=Path, default=DEFAULT_SOUNDFONT, help="General-MIDI SoundFont (.sf2)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    class_names = [name for name in args.classes.split(",") if name]
    started = time.perf_counter()
    try:
        rows = build_styles(args.out, per_class=args.per_class, seconds=args.seconds, seed=args.seed,
                            class_names=class_names, soundfont=args.soundfont, workers=args.workers)
    except StylesBuildError as err:
        sys.exit(f"error: {err}")
    print(f"{args.out}: {len(rows)} clips of {args.seconds:g} s in {time.perf_counter() - started:.0f} s")
    print(summarize(rows, class_names, args.per_class))


if __name__ == "__main__":
    main()
