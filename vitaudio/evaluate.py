"""`python -m vitaudio.evaluate CHECKPOINT ROOT [--split-file F]`: score a checkpoint on a folder of clips.

ROOT holds audio class folders or is a manifest of audio (converted with the checkpoint's mel parameters, or an
earlier conversion reused), or is melify output. All clips are scored, or only the `--split` (default test) of
`--split-file`. Writes the same test_report.json, test_predictions.csv and confusion_matrix.png (a tagger's:
per_class_ap.png, at its thresholds) as training does, into `--out` or a new `eval-<ROOT name>/` folder next to the
checkpoint (`eval-<ROOT name>-2/`, ... when it exists), and prints it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import load_checkpoint, model_from_checkpoint
from .cli_help import DefaultsHelpFormatter
from .data import MULTI_LABEL, MelClips, SegmentRule, Standardize, read_labels, segment_loader, source_paths
from .engine import evaluate
from .errors import VitaudioError
from .features import MelConfig
from .melify import LayoutError, cached_melify, subfolders
from .report import scores_line, write_test_outputs
from .scoring import resolve_device
from .splits import SPLITS, read_split_file


def evaluate_checkpoint(checkpoint_path: Path, root: Path, *, split_file: Path | None = None, split: str = "test",
                        out: Path | None = None, device: str = "auto", batch_size: int = 8,
                        workers: int | None = None) -> dict:
    """Score `checkpoint_path` (a checkpoint file or a model directory) on the clips of `root` (or of one split of
    `split_file`); return the report."""
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    classes = checkpoint["classes"]
    mel_root = cached_melify(Path(root), MelConfig(**checkpoint["mel_config"]), workers)
    labels = read_labels(mel_root)
    names = set(labels.classes) if labels else {p.name for p in subfolders(mel_root)}
    unknown = sorted(names - set(classes))
    if unknown:
        raise LayoutError(f"{root} has {'labels' if labels else 'class folders'} the checkpoint does not know: "
                          f"{', '.join(unknown)} (its classes: {', '.join(classes)})")
    keys = read_split_file(split_file)[split] if split_file else None
    tagger = checkpoint.get("task") == MULTI_LABEL
    clips = MelClips(mel_root, keys, classes=classes, multi_label=tagger)
    if not len(clips):
        raise LayoutError(f"no clips to score in {mel_root}" + (f" for the {split} split of {split_file}"
                                                                if split_file else ""))
    torch_device = resolve_device(device)
    model = model_from_checkpoint(checkpoint).to(torch_device)
    loader = segment_loader(clips, SegmentRule(**checkpoint["segment"]), Standardize(**checkpoint["normalization"]),
                            batch_size=batch_size)
    tagging = {"pooling": checkpoint["pooling"], "thresholds": checkpoint["thresholds"]} if tagger else {}
    result = evaluate(model, loader, device=torch_device, pooling=tagging.get("pooling", "mean"))
    out_dir = Path(out) if out else new_eval_dir(checkpoint_path.parent, Path(root).name)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = source_paths(mel_root)
    report = write_test_outputs(out_dir, result.clip_logits, result.labels, [paths.get(k, k) for k in clips.keys],
                                classes, checkpoint=str(checkpoint_path), root=str(root), **tagging)
    print(f"{scores_line(report)} on {report['n_clips']} clips; reports in {out_dir}")
    return report


def new_eval_dir(parent: Path, root_name: str) -> Path:
    """parent/eval-<root name>/, or eval-<root name>-2/, -3/, ... when it exists: a second evaluation never
    overwrites the reports of the first."""
    candidate, n = parent / f"eval-{root_name}", 1
    while candidate.exists():
        n += 1
        candidate = parent / f"eval-{root_name}-{n}"
    return candidate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitaudio.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a train.py checkpoint, e.g. runs/x/best.pt, or a model "
                                                      "folder of model.safetensors and config.json")
    parser.add_argument("root", type=Path, help="audio class folders, a CSV/JSON Lines manifest of audio "
                                                "(path,label[,group][,split]) or melify output")
    parser.add_argument("--split-file", type=Path, help="score only one split of this JSON/CSV split file")
    parser.add_argument("--split", choices=SPLITS, default="test", help="which split of --split-file")
    parser.add_argument("--out", type=Path, help="folder for the reports (default: a new eval-<ROOT name>/ next to "
                                                 "the checkpoint; -2, -3, ... when that exists)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA if any")
    parser.add_argument("--workers", type=int, help="melify processes (default: all cores)")
    args = parser.parse_args(argv)
    try:
        evaluate_checkpoint(args.checkpoint, args.root, split_file=args.split_file, split=args.split, out=args.out,
                            device=args.device, workers=args.workers)
    except VitaudioError as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
