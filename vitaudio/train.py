"""`python train.py [--root data/gtzan]` (or `python -m vitaudio.train`): train a spectrogram ViT, test it once.

ROOT holds audio class folders (melify runs first into `ROOT.mel-<hash>/` next to it, reused next time) or
melify output. Without ROOT the built-in synthetic demo set is made in data/demo and used. The run directory
gets config.json, split.json, metrics.jsonl, best.pt, last.pt, and after training the test split's
test_report.json, test_predictions.csv, confusion_matrix.png and curves.png, scored once with best.pt.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import Compose

from .checkpoint import load_checkpoint, save_checkpoint
from .data import (MelClips, RandomCrop, SegmentRule, Segmented, SpecAugment, collate_segments, mel_stats,
                   read_mel_config, source_paths)
from .engine import evaluate, resolve_device, train_one_epoch
from .features import MelConfig
from .melify import MANIFEST, melify
from .model import PRESETS, ViT, vit_config
from .plots import plot_confusion_matrix, plot_curves
from .report import classification_report, write_predictions
from .splits import SPLITS, check_split, make_split, read_groups, read_split_file, write_split_file

DEMO_ROOT = Path("data/demo")


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as config.json and inside every checkpoint."""

    root: str | None = None  # audio class folders or melify output; None = the demo set in data/demo
    model: str = "tiny"  # ViT preset (model.PRESETS)
    epochs: int = 30  # most epochs to train; early stopping may end sooner
    batch_size: int = 32
    lr: float = 5e-4  # AdamW peak learning rate, reached after the warm-up
    weight_decay: float = 0.05
    warmup_epochs: int = 3  # linear warm-up from lr / 100; ReduceLROnPlateau takes over after it
    plateau_patience: int = 3  # epochs without a better val clip accuracy before the lr is cut
    plateau_factor: float = 0.3  # the cut
    patience: int = 10  # early stopping: epochs without a better val clip accuracy
    segment_seconds: float = 3.0  # training crop and evaluation segment length
    label_smoothing: float = 0.1
    mixup: float = 0.0  # Beta(alpha, alpha) mixup of training batches; 0 = off
    grad_clip: float = 1.0  # max gradient norm
    device: str = "auto"  # auto | cpu | cuda
    amp: bool | None = None  # mixed precision; None = on for CUDA
    workers: int | None = None  # data-loading processes; None = 0 on CPU, up to 8 on CUDA
    out: str | None = None  # the run directory; None = runs/<timestamp>
    seed: int = 0  # model init, crops, masks, batch order
    split_seed: int = 0  # the train/val/test split, kept apart from `seed` so runs can share a split
    split_file: str | None = None  # JSON {"train": [...], ...} or CSV clip,split
    groups: str | None = None  # CSV clip,group; None = ROOT/metadata.csv when it has those columns


def prepare_mel_root(root: Path | None, workers: int | None) -> Path:
    """The melify output folder for `root`: root itself, or its cache `ROOT.mel-<hash>` (made or completed now)."""
    if root is None:
        root = DEMO_ROOT
        if not (root / "metadata.csv").exists():
            from .demo import make_demo_dataset

            print(f"making the synthetic demo set in {root}")
            make_demo_dataset(root)
    if (root / MANIFEST).exists():
        return root
    config = MelConfig()
    mel_root = root.parent / f"{root.name}.mel-{config.fingerprint()}"
    report = melify(root, mel_root, config, workers=workers)
    print(f"melify {root} -> {mel_root}: {report.summary()}")
    if not report.n_ok:
        raise SystemExit(f"no clip of {root} could be converted: see {mel_root / MANIFEST}")
    return mel_root


def choose_split(config: TrainConfig, clips: MelClips, data_root: Path) -> dict[str, list[str]]:
    """The split file if one is given, else a seeded split grouped by clip group where groups are known."""
    if config.split_file:
        split = read_split_file(Path(config.split_file))
        source = config.split_file
    else:
        groups_csv = Path(config.groups) if config.groups else data_root / "metadata.csv"
        groups = read_groups(groups_csv) if groups_csv.exists() else None
        if config.groups and groups is None:
            raise SystemExit(f"{groups_csv}: needs columns clip,group")
        split = make_split(clips.keys, clips.targets, groups, seed=config.split_seed)
        source = f"the split of {data_root} (split seed {config.split_seed}, {'grouped' if groups else 'by clip'})"
    check_split(split, set(clips.keys), source)
    if not split["test"]:
        raise SystemExit(f"{source}: the test split is empty; the data set is too small to split 80/10/10")
    return split


def make_run_dir(out: str | None) -> Path:
    run_dir = Path(out) if out else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SystemExit(f"{run_dir} is not empty: choose a new --out directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(config: TrainConfig) -> Path:
    """Run one training as `config` says; return the run directory."""
    seed_everything(config.seed)
    device = resolve_device(config.device)
    amp = device.type == "cuda" if config.amp is None else config.amp
    workers = config.workers if config.workers is not None else (min(8, torch.multiprocessing.cpu_count())
                                                                 if device.type == "cuda" else 0)
    run_dir = make_run_dir(config.out)  # refused before any slow work when it is not new
    data_root = Path(config.root) if config.root else DEMO_ROOT
    mel_root = prepare_mel_root(Path(config.root) if config.root else None, config.workers)
    mel_config = read_mel_config(mel_root)
    all_clips = MelClips(mel_root)
    classes = all_clips.classes
    split = choose_split(config, all_clips, data_root)

    paths = source_paths(mel_root)
    write_split_file(run_dir / "split.json", split, {k: paths.get(k, f"{k}.png") for k in all_clips.keys})
    standardize = mel_stats(MelClips(mel_root, split["train"]))
    frames = round(config.segment_seconds * mel_config.frames_per_second)
    rule = SegmentRule(frames=frames, hop_frames=frames)
    model_config = vit_config(config.model, n_mels=mel_config.n_mels, n_classes=len(classes))
    if frames < model_config.patch_size[1]:
        raise SystemExit(f"--segment-seconds {config.segment_seconds} gives {frames} frames, fewer than one "
                         f"patch ({model_config.patch_size[1]} frames)")
    (run_dir / "config.json").write_text(json.dumps(
        {"train": asdict(config), "model": asdict(model_config), "mel": mel_config.to_dict(), "segment":
         rule.to_dict(), "normalization": asdict(standardize), "classes": classes, "mel_root": str(mel_root)},
        indent=1))

    pin = device.type == "cuda"
    train_set = MelClips(mel_root, split["train"], transform=Compose([RandomCrop(frames), standardize, SpecAugment()]))
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, num_workers=workers,
                              pin_memory=pin, drop_last=len(train_set) > config.batch_size,
                              persistent_workers=workers > 0)

    def eval_loader(name: str) -> DataLoader:
        return DataLoader(Segmented(MelClips(mel_root, split[name]), rule, standardize),
                          batch_size=max(1, config.batch_size // 4), num_workers=workers, pin_memory=pin,
                          collate_fn=collate_segments)

    model = ViT(model_config).to(device)
    print(f"model {config.model}: {model.num_params() / 1e6:.2f} M parameters; {len(classes)} classes; "
          f"clips train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])}; "
          f"device {device}{' + AMP' if amp else ''}; run {run_dir}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup_steps = max(1, config.warmup_epochs * len(train_loader))
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup_steps)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=config.plateau_factor,
                                                         patience=config.plateau_patience)
    scaler = (torch.amp.GradScaler("cuda") if amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
              else None)
    checkpoint_base = {"model_config": asdict(model_config), "mel_config": mel_config.to_dict(), "classes": classes,
                       "normalization": asdict(standardize), "segment": rule.to_dict(), "train_config": asdict(config)}
    val_loader = eval_loader("val")

    best_acc, best_loss, best_epoch = -1.0, float("inf"), 0
    for epoch in range(1, config.epochs + 1):
        start = time.time()
        stats = train_one_epoch(model, train_loader, optimizer, device=device, warmup=warmup, amp=amp, scaler=scaler,
                                label_smoothing=config.label_smoothing, mixup_alpha=config.mixup,
                                grad_clip=config.grad_clip, epoch=epoch)
        val = evaluate(model, val_loader, device=device, amp=amp)
        if epoch > config.warmup_epochs:
            plateau.step(val.accuracy)
        improved = val.accuracy > best_acc or (val.accuracy == best_acc and val.loss < best_loss)
        if improved:
            best_acc, best_loss, best_epoch = val.accuracy, val.loss, epoch
        record = {"epoch": epoch, "train_loss": stats.loss, "train_acc": stats.accuracy, "val_loss": val.loss,
                  "val_acc": val.accuracy, "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - start}
        with open(run_dir / "metrics.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
        checkpoint = {**checkpoint_base, "model": model.state_dict(), "epoch": epoch,
                      "optimizer": optimizer.state_dict(), "warmup": warmup.state_dict(),
                      "scheduler": plateau.state_dict(), "best_val_acc": best_acc, "best_epoch": best_epoch}
        save_checkpoint(run_dir / "last.pt", checkpoint)
        if improved:
            save_checkpoint(run_dir / "best.pt", checkpoint)
        print(f"epoch {epoch:3d}/{config.epochs}  train loss {stats.loss:.3f} acc {stats.accuracy:.3f}  "
              f"val loss {val.loss:.3f} acc {val.accuracy:.3f}  lr {record['lr']:.1e}  {record['seconds']:.1f} s"
              + ("  *" if improved else ""))
        if epoch - best_epoch >= config.patience:
            print(f"early stop: no better val accuracy for {config.patience} epochs")
            break

    test_split(model, run_dir, mel_root, split["test"], classes, device=device, amp=amp, loader=eval_loader("test"))
    return run_dir


def test_split(model: ViT, run_dir: Path, mel_root: Path, test_keys: list[str], classes: list[str], *,
               device: torch.device, amp: bool, loader: DataLoader) -> dict:
    """Score the test split once with best.pt and write the test report, predictions and pictures."""
    best = load_checkpoint(run_dir / "best.pt", map_location=device)
    model.load_state_dict(best["model"])
    result = evaluate(model, loader, device=device, amp=amp)
    report = classification_report(result.clip_logits, result.labels, classes)
    report["best_epoch"] = best["epoch"]
    (run_dir / "test_report.json").write_text(json.dumps(report, indent=1))
    paths = source_paths(mel_root)
    clips = [paths.get(k, k) for k in loader.dataset.clips.keys]
    write_predictions(run_dir / "test_predictions.csv", clips, result.clip_logits, result.labels, classes)
    plot_confusion_matrix(report["confusion_matrix"], classes, run_dir / "confusion_matrix.png")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    plot_curves(metrics, run_dir / "curves.png")
    print(f"test accuracy {report['accuracy']:.3f} (macro F1 {report['macro_f1']:.3f}) on {report['n_clips']} "
          f"clips, best epoch {best['epoch']}; run saved in {run_dir}")
    return report


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python train.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="audio class folders or melify output (default: the demo set)")
    parser.add_argument("--model", choices=sorted(PRESETS), default=defaults.model)
    for name in ("epochs", "batch_size", "lr", "segment_seconds", "mixup", "patience", "seed", "split_seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(defaults, name)),
                            default=getattr(defaults, name))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=defaults.device)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision (default: on for CUDA)")
    parser.add_argument("--workers", type=int, help="data-loading (and melify) processes")
    parser.add_argument("--out", help="run directory (default: runs/<timestamp>); must be new or empty")
    parser.add_argument("--split-file", help='JSON {"train": [...], "val": [...], "test": [...]} or CSV clip,split')
    parser.add_argument("--groups", help="CSV clip,group for grouped splits (default: ROOT/metadata.csv)")
    args = vars(parser.parse_args(argv))
    return TrainConfig(**{f.name: args[f.name] for f in fields(TrainConfig) if f.name in args})


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
