"""`python -m vitaudio.predict CHECKPOINT PATH...`: classify audio files, and folders of them (recursively).

Prints a table, or `--format json` ([{"path", "predictions": [{"label", "score"}, ...]}], a failed file as
{"path", "error"}) or `--format csv` (path,rank,label,score). Files that cannot be decoded are reported on
stderr and skipped; the rest are classified, in batches. Exit status: 0 when at least one file was classified.

A multi-label tagger's scores are sigmoids, and each file lists every label that passes its threshold plus the
others up to --top-k: the table marks the tagged labels with `*`, JSON keeps each prediction's "tagged" and CSV
adds a `tagged` column (1 or 0).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from tqdm import tqdm

from .audio import AudioDecodeError, audio_info, find_audio_files
from .cli_help import DefaultsHelpFormatter
from .errors import VitaudioError
from .inference import AudioClassifier, InputError


def collect_files(paths: list[Path]) -> tuple[list[Path], list[dict]]:
    """Files as given and the audio files below folders (sorted, hidden ones skipped), each file once however it
    was named -> (files, error records)."""
    files, errors = [], []
    for path in paths:
        if path.is_dir():
            found = find_audio_files(path)
            if not found:
                print(f"predict: no audio files in {path}", file=sys.stderr)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append({"path": str(path), "error": "no such file or folder"})
    unique = {}  # resolved path -> the path as first named
    for path in files:
        unique.setdefault(path.resolve(), path)
    return list(unique.values()), errors


def within_limit(files: list[Path], max_seconds: float) -> tuple[list[Path], list[dict]]:
    """Files whose header says they last at most `max_seconds`, and error records for the others (checked before
    anything is decoded, so a file of hours never fills the memory)."""
    kept, errors = [], []
    for path in files:
        info = audio_info(path)
        if info and info[1] > max_seconds:
            errors.append({"path": str(path), "error": f"lasts {info[1]:.0f} s, more than --max-seconds "
                                                      f"{max_seconds:g} (about 1 MB of memory per second)"})
        else:
            kept.append(path)
    return kept, errors


def classify(classifier: AudioClassifier, files: list[Path], top_k: int, batch_size: int | None = None,
             progress: bool = True) -> list[dict]:
    """One record per file, in order: {"path", "predictions"} or {"path", "error"}; failures noted on stderr."""
    records = []
    bar = tqdm(total=len(files), desc="predict", unit="file", file=sys.stderr, disable=not progress or len(files) < 2)
    with bar:
        for path, result in zip(files, classifier.stream(files, top_k, batch_size=batch_size, skip_errors=True)):
            if isinstance(result, (AudioDecodeError, InputError)):
                # both errors start with the input's name; the record names the path already
                reason = str(result).removeprefix(f"{path}: ")
                records.append({"path": str(path), "error": reason})
                bar.write(f"predict: skipped {path}: {reason}", file=sys.stderr)
            else:
                records.append({"path": str(path), "predictions": result})
            bar.update()
    return records


def write_table(records: list[dict], out, multi_label: bool = False) -> None:
    """One line per file: its labels and scores, a tagger's tagged labels marked `*`, or its error."""
    width = max([len("path"), *(len(r["path"]) for r in records)])
    scores = "sigmoid score, * = tagged" if multi_label else "softmax score"
    out.write(f"{'path':<{width}}  predictions ({scores})\n")
    for record in records:
        if "error" in record:
            cells = f"error: {record['error']}"
        else:
            cells = "   ".join(f"{p['label']}{'*' if p.get('tagged') else ''} {p['score']:.3f}"
                               for p in record["predictions"])
        out.write(f"{record['path']:<{width}}  {cells}\n")


def write_csv(records: list[dict], out, multi_label: bool = False) -> None:
    """path,rank,label,score rows, and a tagger's `tagged` (1 or 0) after them."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "rank", "label", "score", *(["tagged"] if multi_label else [])])
    for record in records:
        for rank, prediction in enumerate(record.get("predictions", []), start=1):
            tagged = [int(prediction["tagged"])] if multi_label else []
            writer.writerow([record["path"], rank, prediction["label"], f"{prediction['score']:.6f}", *tagged])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitaudio.predict", description=__doc__.split("\n\n")[0],
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a train.py checkpoint, e.g. runs/<time>/best.pt, or a model "
                                                      "folder of model.safetensors and config.json")
    parser.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="audio files or folders of them")
    parser.add_argument("--top-k", type=int, default=5,
                        help="labels per file, capped at the classes; a tagger also lists every tagged label")
    parser.add_argument("--format", choices=["table", "json", "csv"], default="table", help="output format")
    parser.add_argument("--batch-size", type=int, default=32, help="segments per forward pass")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA if any")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="longer files are skipped: scoring holds about 1 MB of memory per second of audio")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k must be >= 1, got {args.top_k}")
    try:
        classifier = AudioClassifier.from_checkpoint(args.checkpoint, device=args.device, batch_size=args.batch_size)
    except VitaudioError as err:
        print(f"predict: error: {err}", file=sys.stderr)
        return 2
    files, missing = collect_files(args.paths)
    files, too_long = within_limit(files, args.max_seconds)
    missing += too_long
    for record in missing:
        print(f"predict: skipped {record['path']}: {record['error']}", file=sys.stderr)
    records = missing + classify(classifier, files, args.top_k)
    if args.format == "json":  # strict JSON: inference refuses what would score NaN, and a NaN must not slip out
        sys.stdout.write(json.dumps(records, indent=1, allow_nan=False) + "\n")
    elif args.format == "csv":
        write_csv(records, sys.stdout, classifier.multi_label)
    else:
        write_table(records, sys.stdout, classifier.multi_label)
    n_ok = sum("predictions" in r for r in records)
    if n_ok < len(records):
        print(f"predict: classified {n_ok} of {len(records)} files", file=sys.stderr)
    return 0 if n_ok else 1


if __name__ == "__main__":
    sys.exit(main())
