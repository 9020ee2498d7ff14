"""`python -m vitaudio.melify SRC DST`: class folders of audio -> class folders of 16-bit log-mel PNGs.

SRC holds one folder per class (`SRC/<class>/**/<clip>.wav`), or wraps such a folder: wrapper folders holding one
subfolder and no audio (`SRC/a/b/c/<class>/...`, at any depth) are stepped through, as is GTZAN's `genres/` or
`genres_original/` beside its other files; a class folder without audio is left out with a warning. DST gets
`DST/<class>/**/<clip>.png` and `DST/melify.json` (mel parameters, package version, one record per input file).
Re-runs skip images that are already up to date; a DST made with other mel parameters is refused unless
`--overwrite`. Every image is written atomically, so an interrupted run leaves no truncated file and the next run
completes it. Bad files are reported and skipped; a DST that cannot be written (a file, read-only, a full disk)
raises LayoutError naming the path and the fix.

SRC may also be a manifest (`.csv` or `.jsonl`: `path,label[,group][,split]`, see `vitaudio.manifest`): each
listed file becomes `DST/<its path relative to the manifest, without extension>.png`, and `DST/labels.csv` lists the
images with their labels, groups and splits. Rows that cannot be used are reported with their line numbers.

Large corpora convert on several machines into one DST: `--shard I/N` converts the I-th of N parts of SRC (every
N-th clip of the sorted list, from the I-th) and records them in `DST/melify.shard-I-of-N.json`; N such runs (a
Slurm array, any job runner) may run at once. A last run without `--shard`, once they are done, converts what
none of them did, merges their records into melify.json (and labels.csv) and removes the shard files.

Unlabelled audio (`train.py --unlabelled DIR`) has no class folders: every audio file anywhere under DIR becomes
`DST/unlabelled/<its path under DIR>.png` (`melify(..., labelled=False)`), one pool that `data.MelClips` reads as
one folder.
"""
from __future__ import annotations

import argparse
import errno
import json
import multiprocessing
import os
import shutil
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import __version__
from .audio import (
    AudioDecodeError,
    audio_info,
    find_audio_files,
    is_audio_file,
    load_audio,
    overflow_reason,
    too_short,
)
from .cli_help import DefaultsHelpFormatter
from .errors import VitaudioError
from .features import PNG_DB_MAX, PNG_DB_MIN, MelConfig, log_mel, mel_config_for, write_mel_png
from .files import write_text_atomic
from .manifest import LABELS_CSV, ManifestRow, is_manifest, manifest_text, read_manifest

MANIFEST = "melify.json"
GTZAN_FOLDERS = ("genres_original", "genres")  # what the GTZAN archives unpack into
CONVERTED, UP_TO_DATE, FAILED = "converted", "up to date", "failed"
# A worker process takes ~2-3 s to start (it imports torch), while this process converts on one thread
# per core at no start-up cost: a process pool is used from 2 x this many clips on.
CLIPS_PER_WORKER_MIN = 250
UNLABELLED = "unlabelled"  # the one folder of an unlabelled pool's images
SHARD_RECORDS = "melify.shard-*-of-*.json"  # what --shard runs leave for the next run without --shard to merge


class LayoutError(VitaudioError, ValueError):
    """SRC or DST is not laid out as melify expects; the message says what is expected."""


@dataclass
class MelifyReport:
    """What one melify run did: one record per input file, in sorted order."""

    records: list[dict] = field(default_factory=list)

    @property
    def counts(self) -> Counter:
        return Counter(record["status"] for record in self.records)

    @property
    def n_ok(self) -> int:
        return self.counts[CONVERTED] + self.counts[UP_TO_DATE]

    def summary(self) -> str:
        counts = self.counts
        return f"converted {counts[CONVERTED]}, up to date {counts[UP_TO_DATE]}, failed {counts[FAILED]}"


@dataclass(frozen=True)
class Shard:
    """The `index`-th (from 1) of `count` parts of a melify run: the clips at positions index - 1, index - 1 +
    count, ... of the sorted list, so that parts are equal within one clip and the same on every machine."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """"2/3" -> Shard(2, 3); LayoutError for anything else."""
        index, _, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            shard = None
        if shard is None or not 1 <= shard.index <= shard.count:
            raise LayoutError(f"--shard {text}: expected I/N with 1 <= I <= N, e.g. --shard 2/3 for the second "
                              f"of three parts")
        return shard

    def holds(self, position: int) -> bool:
        return position % self.count == self.index - 1

    @property
    def records_name(self) -> str:
        """The file in DST that this part's records go to."""
        return f"melify.shard-{self.index}-of-{self.count}.json"


def find_class_root(src: Path) -> Path:
    """The folder whose subfolders are the classes: SRC itself, or the folder below it reached through wrapper
    folders, each holding one subfolder and no audio of its own (any depth), or GTZAN's `genres[_original]/`."""
    src = Path(src)
    if not src.is_dir():
        raise LayoutError(f"{src} is not a folder. Expected SRC/<class>/<clip>.wav, one folder per class.")
    folder, seen = src, {src.resolve()}
    while True:
        inside = subfolders(folder)
        if any(is_audio_file(p) for sub in inside for p in sub.iterdir()):
            return folder
        wrappers = [p for p in inside if p.name in GTZAN_FOLDERS] or inside
        if len(wrappers) != 1 or wrappers[0].resolve() in seen or any(map(is_audio_file, folder.iterdir())):
            break  # several candidates, a link back up, or loose clips: `folder` is no mere wrapper
        folder = wrappers[0]
        seen.add(folder.resolve())
    if any(find_audio_files(p) for p in subfolders(folder)):  # classes whose clips sit in deeper folders
        return folder
    raise LayoutError(
        f"{src} has no class folders with audio in them. Expected one folder per class, e.g. "
        f"{src}/jazz/jazz.00000.wav, {src}/rock/rock.00000.wav (wav, flac, ogg, au, mp3, ...).")


def subfolders(folder: Path) -> list[Path]:
    """The folders in `folder`, sorted, hidden ones left out: the class folders of an audio root or of a melify
    output (whose hidden `.store/` is no class)."""
    return [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def _convert(task: tuple[Path, Path, MelConfig]) -> tuple[str, float | None, str | None]:
    """Worker: one audio file -> one PNG. Returns (status, duration in seconds, error reason)."""
    source, output, config = task
    try:
        samples = load_audio(source, config.sample_rate)
    except AudioDecodeError as err:
        return FAILED, None, err.reason
    duration = len(samples) / config.sample_rate
    short = too_short(len(samples), config.n_fft, config.sample_rate)
    if short:
        return FAILED, duration, short
    if not samples.any():
        return FAILED, duration, "silent: every sample is zero"
    mel_db = log_mel(samples, config)
    if not np.isfinite(mel_db).all():  # stored, NaN would become a flat -160 dB image
        return FAILED, duration, overflow_reason(samples)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_mel_png(output, mel_db)
    except OSError as err:
        return FAILED, duration, f"cannot write {output}: {err}"
    return CONVERTED, duration, None


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core does the parallel work


def _check_destination(dst: Path, config: MelConfig, overwrite: bool) -> dict:
    """Refuse a DST made with other parameters, or one that is not melify's; return its old records by source,
    those of melify.json and of any --shard runs' record files (which are newer)."""
    manifest_path = dst / MANIFEST
    shard_paths = sorted(dst.glob(SHARD_RECORDS)) if dst.is_dir() else []
    if not manifest_path.exists() and not shard_paths:
        # hidden files are no one's data: another shard's record file being written, say
        if dst.exists() and any(not p.name.startswith(".") for p in dst.iterdir()) and not overwrite:
            raise LayoutError(f"{dst} is not empty and has no {MANIFEST}: it was not made by melify. "
                              f"Choose an empty or new DST folder (or pass --overwrite).")
        return {}
    old_records = {}
    for path in [manifest_path] * manifest_path.exists() + shard_paths:
        try:
            manifest = json.loads(path.read_text())
            old_config = manifest["mel_config"]
        except (OSError, ValueError, KeyError) as err:
            raise LayoutError(f"{path} is unreadable ({err}); delete it (or DST) or pass --overwrite.") from None
        if old_config != config.to_dict() and not overwrite:
            changed = ", ".join(f"{k}: {old_config.get(k)} -> {v}" for k, v in config.to_dict().items()
                                if old_config.get(k) != v)
            raise LayoutError(f"{path} was made with other mel parameters ({changed}). Use another DST, "
                              f"or pass --overwrite to convert everything again with the new ones.")
        old_records.update((r["source"], r) for r in manifest.get("files", []))
    return {} if overwrite else old_records


def _write_manifest(dst: Path, config: MelConfig, source: Path, records: list[dict],
                    rows: dict[str, ManifestRow] | None = None, shard: Shard | None = None) -> None:
    """Write DST/melify.json, and DST/labels.csv for the images made from the manifest rows `rows` (by output);
    or, for a `shard`, its own records file alone. LayoutError when they cannot be written (the images already
    there stay)."""
    manifest = {
        "vitaudio_version": __version__,
        "mel_config": config.to_dict(),
        "png": {"bit_depth": 16, "db_min": PNG_DB_MIN, "db_max": PNG_DB_MAX,
                "layout": "one row per mel band, lowest band in the bottom row; one column per frame"},
        "source_root": str(source),
        "files": records,
    }
    if shard is not None:
        files = {shard.records_name: json.dumps({**manifest, "shard": f"{shard.index}/{shard.count}"}, indent=1)}
    else:
        files = {MANIFEST: json.dumps(manifest, indent=1)}
    if rows is not None and shard is None:
        made = [rows[r["output"]] for r in records if r["status"] in (CONVERTED, UP_TO_DATE)]
        files[LABELS_CSV] = manifest_text([{"path": f"{row.key}.png", "labels": row.labels, "group": row.group,
                                            "split": row.split} for row in made])
    for name, text in files.items():
        try:
            write_text_atomic(dst / name, text)  # the temporary file goes on failure
        except OSError as err:
            raise _unwritable(dst / name, err) from None


def _unwritable(path: Path, err: OSError) -> LayoutError:
    """A write into DST failed: say where, why and what to do."""
    if err.errno == errno.ENOSPC:
        fix = ("the disk is full: free some space or choose a DST on another disk, then run melify again "
               "(it keeps the images written so far)")
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"{err.strerror}: make DST writable (chmod u+w) or choose another DST"
    else:
        fix = f"{err.strerror or err}: choose another DST"
    return LayoutError(f"cannot write {path}: {fix}")


def source_files(src: Path) -> list[Path]:
    """The audio files of SRC: its manifest's files, or those in its class folders, sorted."""
    src = Path(src)
    if is_manifest(src):
        return sorted(row.source for row in read_manifest(src).rows)
    return [f for class_dir in subfolders(find_class_root(src)) for f in find_audio_files(class_dir)]


def source_root(src: Path) -> Path:
    """What a melify output records as made from: a manifest file, or the folder of SRC's class folders."""
    return Path(src).resolve() if is_manifest(src) else find_class_root(src).resolve()


def mel_config_of_audio(src: Path, n_probe: int = 256) -> MelConfig:
    """The mel parameters `features.mel_config_for` gives SRC's audio: its most common sample rate and median
    clip length, read from the headers of up to `n_probe` files spread over the sorted list."""
    files = source_files(src)
    probed = [info for info in map(audio_info, files[::max(1, len(files) // n_probe)]) if info]
    if not probed:
        return MelConfig()  # nothing readable: melify reports each file
    rate = Counter(r for r, _ in probed).most_common(1)[0][0]
    return mel_config_for(rate, float(np.median([seconds for _, seconds in probed])))


def melify(src: Path, dst: Path, config: MelConfig | None = None, *, workers: int | None = None,
           overwrite: bool = False, progress: bool = True, labelled: bool = True,
           shard: Shard | None = None) -> MelifyReport:
    """Convert every audio file under SRC's class folders (or listed in SRC, a manifest) into
    DST/<class>/.../<stem>.png (DST/<its path>.png), with `config` or by default the parameters
    `mel_config_of_audio` derives from SRC; see the module doc.

    The classes are the subfolders of `find_class_root(SRC)`: SRC itself, or the folder reached by stepping down
    through wrapper folders that hold one subfolder and no audio (as unpacked archives often have them), rather
    than one class named after the outermost wrapper. `labelled=False`: SRC is an unlabelled pool, every audio
    file under it goes to DST/unlabelled/ (see the module doc). A `shard` converts its part of the clips alone and
    records them in its own file; the next run without one merges them (see the module doc)."""
    src, dst = Path(src), Path(dst)
    if not labelled and not src.is_dir():
        raise LayoutError(f"{src} is not a folder of unlabelled audio")
    from_manifest = labelled and is_manifest(src)
    class_root = src.parent if from_manifest else find_class_root(src) if labelled else src
    if class_root != src and not from_manifest:
        print(f"melify: the class folders are in {class_root}", file=sys.stderr)
    config = config or mel_config_of_audio(src if from_manifest else class_root)
    rows = None
    if from_manifest:
        manifest = read_manifest(src)
        for problem in manifest.problems:
            print(f"melify: skipped {problem}", file=sys.stderr)
        rows = {f"{row.key}.png": row for row in manifest.rows}
    made_from = (src if from_manifest else class_root).resolve()  # what melify.json says DST is made from
    if dst.exists() and not dst.is_dir():
        raise LayoutError(f"{dst} is a file, not a folder: DST is the folder melify writes its class folders "
                          f"into; choose a new or empty folder")
    try:
        old_records = _check_destination(dst, config, overwrite)
        dst.mkdir(parents=True, exist_ok=True)
        if shard is None:  # (other shards may be writing theirs now)
            for stale in dst.rglob(".*.tmp"):  # half-written files of an interrupted run
                if not any(part.startswith(".") for part in stale.relative_to(dst).parts[:-1]):
                    stale.unlink(missing_ok=True)  # (a hidden folder is a training's store, maybe being built)
        # claims DST for these parameters before any image exists, keeping the records of the images already
        # there: a training reading DST meanwhile (another process) still finds every clip's source
        _write_manifest(dst, config, made_from, [] if shard else list(old_records.values()), shard=shard)
        if (src / "metadata.csv").is_file() and shard is None:  # clip groups travel with the images
            shutil.copyfile(src / "metadata.csv", dst / "metadata.csv")
    except OSError as err:
        raise _unwritable(Path(err.filename or dst), err) from None

    records, tasks, outputs_seen = [], [], {}
    clips = _manifest_clips(rows.values(), class_root) if rows is not None else _folder_clips(src, class_root,
                                                                                              labelled)
    for position, (source, rel_source, rel_output) in enumerate(clips):
        if shard is not None and not shard.holds(position):
            outputs_seen.setdefault(rel_output, rel_source)  # a clash with another part's clip is still one
            continue
        record = {"source": rel_source, "output": rel_output.as_posix(),
                  "duration": None, "status": None, "error": None}
        records.append(record)
        output = dst / rel_output
        if rel_output in outputs_seen:
            record.update(status=FAILED, error=f"same output name as {outputs_seen[rel_output]}; rename one")
        elif not overwrite and output.exists() and output.stat().st_mtime >= source.stat().st_mtime:
            old = old_records.get(record["source"], {})
            record.update(status=UP_TO_DATE, duration=old.get("duration") or _duration(source))
        else:
            tasks.append((record, (source, output, config)))
        outputs_seen.setdefault(rel_output, record["source"])

    cores = workers or os.cpu_count() or 1
    workers = min(cores, max(1, len(tasks) // CLIPS_PER_WORKER_MIN))
    bar = tqdm(total=len(records), initial=len(records) - len(tasks), desc="melify", unit="clip",
               disable=not progress, file=sys.stderr)
    try:
        for (record, _), (status, duration, error) in zip(tasks, _run(tasks, workers, threads=cores)):
            record.update(status=status, duration=duration, error=error)
            if error:
                bar.write(f"melify: skipped {class_root / record['source']}: {error}", file=sys.stderr)
            bar.update()
    finally:
        bar.close()
        _write_manifest(dst, config, made_from, records, rows, shard)
    if shard is None:
        for merged in dst.glob(SHARD_RECORDS):  # their records are in melify.json now
            merged.unlink(missing_ok=True)
    return MelifyReport(records)


def _folder_clips(src: Path, class_root: Path, labelled: bool):
    """Yield (audio file, its path as recorded, its image's path under DST) for class folders (`labelled`) or an
    unlabelled pool."""
    # (folder of audio, the folder its images go to under DST): a class folder each, or the whole pool
    folders = [(d, Path(d.name)) for d in subfolders(class_root)] if labelled else [(src, Path(UNLABELLED))]
    for folder, out_folder in folders:
        sources = find_audio_files(folder)
        if not sources:  # no class to learn: say so rather than train on one class fewer unawares
            print(f"melify: {'class folder' if labelled else 'unlabelled'} {folder} holds no audio: left out",
                  file=sys.stderr)
        for source in sources:
            yield source, source.relative_to(class_root).as_posix(), (out_folder / source.relative_to(folder)
                                                                      ).with_suffix(".png")


def _manifest_clips(rows, base: Path):
    """Yield (audio file, its path as recorded, its image's path under DST) for manifest rows: the path relative
    to the manifest's folder (or absolute, outside it), and the clip key mirrored under DST."""
    for row in rows:
        try:
            recorded = row.source.relative_to(base).as_posix()
        except ValueError:
            recorded = str(row.source.resolve())
        yield row.source, recorded, Path(f"{row.key}.png")


def cached_melify(root: Path, config: MelConfig | None = None, workers: int | None = None, *,
                  progress: bool = True, labelled: bool = True) -> Path:
    """Melify output for `root`: root itself when it is melify output (made with `config`, when given); else a
    melify output of `root` with the same parameters next to it (`melify root root.mel`, say), completed now;
    else its cache `ROOT.mel-<hash of config>` next to it, made now. No `config`: `mel_config_of_audio(root)`."""
    root = Path(root)
    if (root / MANIFEST).exists():
        made_with = json.loads((root / MANIFEST).read_text()).get("mel_config")
        if config is not None and made_with != config.to_dict():
            raise LayoutError(f"{root} holds mels made with other parameters ({made_with}) than needed "
                              f"({config.to_dict()}): pass the audio folder instead, and it is converted again")
        return root
    config = config or mel_config_of_audio(root)
    mel_root = root.parent / f"{root.name}.mel-{config.fingerprint()}"
    if not mel_root.exists() and labelled:
        earlier = earlier_outputs(root, config)
        if earlier:
            mel_root = earlier[0]
            print(f"melify: reusing {mel_root}, made from {root} with the same mel parameters", file=sys.stderr)
    report = melify(root, mel_root, config, workers=workers, progress=progress, labelled=labelled)
    print(f"melify {root} -> {mel_root}: {report.summary()}", file=sys.stderr)
    if not report.n_ok:
        raise LayoutError(f"no clip of {root} could be converted: see {mel_root / MANIFEST}")
    return mel_root


def earlier_outputs(root: Path, config: MelConfig) -> list[Path]:
    """The folders next to `root` that hold melify output of it made with `config`, sorted."""
    source = str(source_root(root))
    found = []
    for folder in sorted(p for p in Path(root).resolve().parent.iterdir() if (p / MANIFEST).is_file()):
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except ValueError:
            continue  # not ours to judge here: melify reports it when that folder is its DST
        if manifest.get("source_root") == source and manifest.get("mel_config") == config.to_dict():
            found.append(folder)
    return found


def _run(tasks: list, workers: int, threads: int = 1):
    """Yield `_convert` results in task order: in a pool of `workers` processes when `workers` > 1, else in this
    process on `threads` threads, each running torch on one thread (decoding, the STFT, the mel product and
    deflate release the GIL, and threads start at no cost where a process takes seconds)."""
    jobs = [job for _, job in tasks]
    if workers > 1:
        # spawn, not fork: the caller (train.py) may already hold torch threads, which do not survive a fork
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            yield from pool.imap(_convert, jobs, chunksize=2)
        return
    if threads <= 1 or len(jobs) <= 1:
        yield from map(_convert, jobs)
        return
    import torch

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(min(threads, len(jobs))) as pool:
            yield from pool.map(_convert, jobs)
    finally:
        torch.set_num_threads(torch_threads)


def _duration(source: Path) -> float | None:
    info = audio_info(source)
    return info and info[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitaudio.melify", description=__doc__.split("\n\n")[0],
                                     epilog="Mel options left out are derived from the audio's most common sample "
                                            "rate and median clip length: 22,050 Hz, 2048-point windows every 512 "
                                            "samples, 128 bands and the full band for clips of 3 s or more; 10 ms "
                                            "hops, 32 ms windows and 64 bands at the file's rate (at most 22,050 "
                                            "Hz) for shorter clips. melify.json records what was used.",
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("src", type=Path, help="folder of class folders of audio (e.g. data/gtzan), or a CSV/JSON "
                                               "Lines manifest with columns path,label[,group][,split]")
    parser.add_argument("dst", type=Path, help="output folder for the PNGs and melify.json")
    helps = {"sample_rate": "audio is resampled to this rate (Hz)", "n_fft": "STFT window length in samples",
             "hop_length": "samples between frames", "n_mels": "mel bands (image height)",
             "fmin": "lowest mel band edge (Hz) (default: 0)",
             "fmax": "highest mel band edge (Hz) (default: half the sample rate)",
             "top_db": "dB floor below each clip's maximum (default: 80)"}
    for f in fields(MelConfig):
        kind = int if f.type == "int" else float
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, metavar=kind.__name__.upper(),
                            help=helps[f.name] + ("" if "default" in helps[f.name] else
                                                  " (default: derived from the audio, see below)"))
    parser.add_argument("--workers", type=int, default=None, help="parallel conversions (default: all cores): "
                                                                  f"processes from {2 * CLIPS_PER_WORKER_MIN} clips "
                                                                  "on, threads of this process below")
    parser.add_argument("--overwrite", action="store_true", help="convert again everything, whatever DST holds")
    parser.add_argument("--shard", metavar="I/N", help="convert only the I-th of N parts of SRC (runs on several "
                                                       "machines into one DST); then run once without --shard to "
                                                       "merge their records")
    args = parser.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in fields(MelConfig) if getattr(args, f.name) is not None}
    try:
        shard = Shard.parse(args.shard) if args.shard else None
        config = replace(mel_config_of_audio(args.src), **given)
        report = melify(args.src, args.dst, config, workers=args.workers, overwrite=args.overwrite, shard=shard)
    except (VitaudioError, ValueError) as err:  # ValueError: MelConfig's own checks of the flags
        print(f"melify: error: {err}", file=sys.stderr)
        return 2
    print(f"{report.summary()} (see {args.dst / (shard.records_name if shard else MANIFEST)})")
    return 0 if report.n_ok or (shard and not report.records) else 1  # a shard may hold no clip of a small SRC


if __name__ == "__main__":
    sys.exit(main())
