"""`python train.py [--root data/gtzan]` (or `python -m vitaudio.train`): train a spectrogram ViT, test it once.

ROOT holds audio class folders (melify runs first into `ROOT.mel-<hash>/` next to it, reused next time) or
melify output. Without ROOT the built-in synthetic demo set is made in data/demo and used. The run directory
gets config.json, split.json, metrics.jsonl, best.pt, last.pt, and after training the test split's
test_report.json, test_predictions.csv, confusion_matrix.png and curves.png, scored once with best.pt.
With `--members K` (the default: 2) K such runs, seeds SEED, SEED + 1, ..., are made one after another in
member0/, member1/, ... of the run directory, which then gets the ensemble's best.pt (the members' best weights)
and its test outputs.

`--resume DIR` continues an interrupted run; `--init-from CKPT` fine-tunes a trained model on new classes;
`torchrun --nproc_per_node=N train.py ...` trains with DistributedDataParallel (--batch-size is per process).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from .checkpoint import REQUIRED_KEYS, load_checkpoint, save_checkpoint
from .data import (MelClips, SegmentRule, Standardize, mel_stats, read_mel_config, segment_loader, source_paths,
                   train_transform)
from .distributed import DistContext, all_reduce_sum, barrier, broadcast, init_distributed, shutdown
from .engine import evaluate, resolve_device, train_one_epoch
from .evaluate import write_test_outputs
from .features import MelConfig
from .melify import cached_melify
from .model import PRESETS, ViT, ViTConfig, ViTEnsemble, vit_config
from .plots import plot_curves
from .splits import check_split, make_split, read_groups, read_split_file, write_split_file

DEMO_ROOT = Path("data/demo")


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as config.json and inside every checkpoint."""

    root: str | None = None  # audio class folders or melify output; None = the demo set in data/demo
    model: str = "mini"  # ViT preset (model.PRESETS); mini meets the CPU inference targets and beat tiny on real music
    epochs: int = 150  # total epochs (also when resuming); early stopping may end sooner
    batch_size: int = 32  # per process
    lr: float = 1e-3  # AdamW peak learning rate, reached after the warm-up
    weight_decay: float = 0.05
    warmup_epochs: int = 3  # linear warm-up from lr / 100; ReduceLROnPlateau takes over after it
    plateau_patience: int = 8  # epochs without a lower val clip loss before the lr is cut
    plateau_factor: float = 0.3  # the cut
    patience: int = 20  # early stopping: epochs without a lower val clip loss
    segment_seconds: float = 3.0  # training crop and evaluation segment length
    label_smoothing: float = 0.1
    mixup: float = 0.3  # Beta(alpha, alpha) mixup of training batches; 0 = off
    grad_clip: float = 1.0  # max gradient norm
    device: str = "auto"  # auto | cpu | cuda
    amp: bool | None = None  # mixed precision; None = on for CUDA
    workers: int | None = None  # data-loading processes; None = 0 on CPU, up to 8 on CUDA
    out: str | None = None  # the run directory; None = runs/<timestamp>
    seed: int = 0  # model init, crops, masks, batch order
    split_seed: int = 0  # the train/val/test split, kept apart from `seed` so runs can share a split
    split_file: str | None = None  # JSON {"train": [...], ...} or CSV clip,split
    groups: str | None = None  # CSV clip,group; None = ROOT/metadata.csv when it has those columns
    init_from: str | None = None  # checkpoint to fine-tune from (head re-initialised when classes differ)
    members: int = 2  # models trained one after another, seeds seed, seed + 1, ...; they predict by their mean logits


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
        raise SystemExit(f"{run_dir} is not empty: choose a new --out directory, or continue it with --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def prepare_data(config: TrainConfig, mel_config: MelConfig) -> Path:
    """Make the demo set when no root is given, and melify the root when it holds audio; -> the mel root."""
    if config.root is None and not (DEMO_ROOT / "metadata.csv").exists():
        from .demo import make_demo_dataset

        print(f"making the synthetic demo set in {DEMO_ROOT}")
        make_demo_dataset(DEMO_ROOT, workers=os.cpu_count() or 1)
    return cached_melify(Path(config.root or DEMO_ROOT), mel_config, config.workers)


def rng_state() -> dict:
    """Every random generator a run draws from, as plain tensors (loadable with weights_only=True)."""
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2]), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def initial_weights(model: ViT, source: dict, checkpoint_path: str, classes: list[str], member: int = 0) -> None:
    """Fine-tuning: load a trained model's weights, keeping this model's new head when the classes differ. From an
    ensemble, ensemble member k starts from the source's member k (modulo its size)."""
    weights = source["model"]
    n_source = int(source.get("members", 1))
    if n_source > 1:
        prefix = f"members.{member % n_source}."
        weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    if source["classes"] != classes:
        weights = {k: v for k, v in weights.items() if not k.startswith("head.fc.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {"head.fc.weight", "head.fc.bias"}:
        raise SystemExit(f"{checkpoint_path}: weights do not fit the model (missing {missing}, "
                         f"unexpected {unexpected})")
    print(f"initialised from {checkpoint_path}" + ("" if source["classes"] == classes else
                                                   f" with a new head for {len(classes)} classes"))


def train(config: TrainConfig, resume: Path | None = None) -> Path:
    """Run one training as `config` says (or continue the run in `resume`); return the run directory."""
    if config.members < 1:
        raise SystemExit(f"--members {config.members}: must be at least 1")
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    ctx = init_distributed(device)
    try:
        run_dir = (_train(config, resume, device, ctx) if config.members == 1
                   else _train_ensemble(config, resume, device, ctx))
        if ctx.enabled:
            print(f"rank {ctx.rank}/{ctx.world_size} done", file=sys.stderr)
        return run_dir
    finally:
        shutdown(ctx)


def _train_ensemble(config: TrainConfig, resume: Path | None, device: torch.device, ctx: DistContext) -> Path:
    """Train the members one after another, each a whole one-model run in its own folder (a finished one is not
    trained again on resume), then save their ensemble as best.pt and test it once."""
    if ctx.is_main:
        run_dir = resume or make_run_dir(config.out)
        if not resume:  # what --resume reads; completed with the model, mel and data sections at the end
            (run_dir / "config.json").write_text(json.dumps({"train": asdict(config)}, indent=1))
    run_dir = broadcast(run_dir if ctx.is_main else None, ctx)
    for member, member_dir in enumerate(member_dirs(run_dir, config.members)):
        member_config = replace(config, members=1, seed=config.seed + member, out=str(member_dir))
        started = (member_dir / "last.pt").exists()
        if ctx.is_main and not started:
            shutil.rmtree(member_dir, ignore_errors=True)  # interrupted before its first epoch: nothing to keep
        barrier(ctx)
        if ctx.is_main:
            print(f"member {member + 1} of {config.members} (seed {member_config.seed}) in {member_dir}")
        _train(member_config, member_dir if started else None, device, ctx, member=member)
    if ctx.is_main:
        saved = combine_members(run_dir, config)
        mel_root, split = Path(saved["mel_root"]), read_split_file(run_dir / "split.json")
        test_loader = segment_loader(MelClips(mel_root, split["test"]), SegmentRule(**saved["segment"]),
                                     Standardize(**saved["normalization"]), batch_size=eval_batch_size(config),
                                     workers=loader_workers(config, device), pin_memory=device.type == "cuda")
        test_best(ViTEnsemble(ViTConfig(**saved["model"]), config.members).to(device), run_dir, mel_root,
                  saved["classes"], device=device, amp=amp_enabled(config, device), loader=test_loader)
    barrier(ctx)
    return run_dir


def member_dirs(run_dir: Path, members: int) -> list[Path]:
    """Where each member's own run is: the run directory itself for one model, else member0/, member1/, ..."""
    return [run_dir] if members == 1 else [run_dir / f"member{member}" for member in range(members)]


def combine_members(run_dir: Path, config: TrainConfig) -> dict:
    """Write the ensemble's config.json, split.json, metrics.jsonl (every member's epochs) and best.pt (every
    member's best weights) from its trained members; return the config."""
    dirs = member_dirs(run_dir, config.members)
    saved = {**json.loads((dirs[0] / "config.json").read_text()), "train": asdict(config)}
    (run_dir / "config.json").write_text(json.dumps(saved, indent=1))
    shutil.copyfile(dirs[0] / "split.json", run_dir / "split.json")
    records = [{"member": member, **json.loads(line)} for member, member_dir in enumerate(dirs)
               for line in (member_dir / "metrics.jsonl").read_text().splitlines()]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    bests = [load_checkpoint(member_dir / "best.pt") for member_dir in dirs]
    weights = {f"members.{member}.{name}": value for member, best in enumerate(bests)
               for name, value in best["model"].items()}  # ViTEnsemble's state dict
    save_checkpoint(run_dir / "best.pt", {**{key: bests[0][key] for key in REQUIRED_KEYS if key != "model"},
                                          "train_config": asdict(config), "members": config.members,
                                          "model": weights, "member_epochs": [best["epoch"] for best in bests]})
    return saved


def _train(config: TrainConfig, resume: Path | None, device: torch.device, ctx: DistContext,
           member: int = 0) -> Path:
    """One model's run; `member` picks which member of an ensemble checkpoint --init-from starts it from."""
    seed_everything(config.seed)
    amp = amp_enabled(config, device)
    workers = loader_workers(config, device)
    source = load_checkpoint(Path(config.init_from)) if config.init_from else None
    mel_config = MelConfig(**source["mel_config"]) if source else MelConfig()
    if ctx.is_main:  # rank 0 alone writes files; the others wait for its results
        run_dir = resume or make_run_dir(config.out)
        mel_root = prepare_data(config, mel_config)
    run_dir, mel_root = broadcast((run_dir, mel_root) if ctx.is_main else None, ctx)
    mel_config = read_mel_config(mel_root)
    all_clips = MelClips(mel_root)
    classes = all_clips.classes
    data_root = Path(config.root) if config.root else DEMO_ROOT

    if resume:
        saved = json.loads((run_dir / "config.json").read_text())
        split = read_split_file(run_dir / "split.json")
        standardize = Standardize(**saved["normalization"])
        model_config = ViTConfig(**saved["model"])
    else:
        split = choose_split(config, all_clips, data_root)
        standardize = mel_stats(MelClips(mel_root, split["train"]))
        overrides = dict(n_mels=mel_config.n_mels, n_classes=len(classes))
        model_config = (ViTConfig(**{**source["model_config"], **overrides}) if source
                        else vit_config(config.model, **overrides))
    frames = round(config.segment_seconds * mel_config.frames_per_second)
    rule = SegmentRule(frames=frames, hop_frames=frames)
    if frames < model_config.patch_size[1]:
        raise SystemExit(f"--segment-seconds {config.segment_seconds} gives {frames} frames, fewer than one "
                         f"patch ({model_config.patch_size[1]} frames)")
    if ctx.is_main and not resume:
        paths = source_paths(mel_root)
        write_split_file(run_dir / "split.json", split, {k: paths.get(k, f"{k}.png") for k in all_clips.keys})
        (run_dir / "config.json").write_text(json.dumps(
            {"train": asdict(config), "model": asdict(model_config), "mel": mel_config.to_dict(),
             "segment": rule.to_dict(), "normalization": asdict(standardize), "classes": classes,
             "mel_root": str(mel_root)}, indent=1))

    # Decoded clips stay in RAM when this process loads them; workers would each fill a copy, every epoch anew.
    pin, in_memory = device.type == "cuda", workers == 0
    train_set = MelClips(mel_root, split["train"], transform=train_transform(frames, standardize), in_memory=in_memory)
    sampler = DistributedSampler(train_set, shuffle=True, seed=config.seed) if ctx.enabled else None
    # Fresh loader workers every epoch, seeded from the main generator that last.pt saves: a resumed run draws the
    # same crops and masks as an uninterrupted one (persistent workers would carry their own RNG states along).
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
                              num_workers=workers, pin_memory=pin,
                              drop_last=len(train_set) > config.batch_size * ctx.world_size)
    eval_batch = eval_batch_size(config)
    val_loader = segment_loader(MelClips(mel_root, split["val"], in_memory=in_memory), rule, standardize,
                                batch_size=eval_batch, workers=workers, pin_memory=pin)

    model = ViT(model_config).to(device)
    if source and not resume:
        initial_weights(model, source, config.init_from, classes, member)
    optimizer, warmup, plateau = make_optimizer(model, config, steps_per_epoch=len(train_loader))
    scaler = torch.amp.GradScaler("cuda") if amp and pin and not torch.cuda.is_bf16_supported() else None
    start_epoch, best_loss, best_epoch = 1, float("inf"), 0  # the best epoch has the lowest val clip loss
    if resume:
        last = load_checkpoint(run_dir / "last.pt")  # on the CPU: RNG states must stay CPU byte tensors, and
        # load_state_dict moves the weights and the optimizer state to the model's device
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        warmup.load_state_dict(last["warmup"])
        if last["scheduler"]["mode"] != plateau.mode:  # runs before the lr plateau watched val loss
            raise SystemExit(f"{run_dir}: this run was started by an older vitaudio whose lr schedule watched val "
                             f"accuracy, so it can't be resumed; start a new run (--init-from its best.pt to reuse "
                             f"the weights).")
        plateau.load_state_dict(last["scheduler"])
        set_rng_state(last["rng"])
        start_epoch, best_loss, best_epoch = last["epoch"] + 1, last["best_val_loss"], last["best_epoch"]
        if ctx.is_main:
            rewind_metrics(run_dir / "metrics.jsonl", last["record"])
    trained = DistributedDataParallel(model) if ctx.enabled else model
    if ctx.is_main:
        print(f"model {config.model}: {model.num_params() / 1e6:.2f} M parameters; {len(classes)} classes; "
              f"clips train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])}; "
              f"device {device}{' + AMP' if amp else ''}"
              f"{f' x {ctx.world_size} processes' if ctx.enabled else ''}; run {run_dir}"
              + (f"; resuming at epoch {start_epoch}" if resume else ""))
    checkpoint_base = {"model_config": asdict(model_config), "mel_config": mel_config.to_dict(), "classes": classes,
                       "normalization": asdict(standardize), "segment": rule.to_dict(), "train_config": asdict(config)}
    if resume and start_epoch - 1 - best_epoch >= config.patience:
        start_epoch = config.epochs + 1  # it had stopped early: not one more epoch, only the test again

    for epoch in range(start_epoch, config.epochs + 1):
        start = time.time()
        if sampler is not None:
            sampler.set_epoch(epoch)
        stats = train_one_epoch(trained, train_loader, optimizer, device=device, warmup=warmup, amp=amp, scaler=scaler,
                                label_smoothing=config.label_smoothing, mixup_alpha=config.mixup,
                                grad_clip=config.grad_clip, epoch=epoch, progress=ctx.is_main)
        loss_sum, n_correct, n_seen = all_reduce_sum([stats.loss_sum, stats.n_correct, stats.n_seen], ctx)
        val = evaluate(model, val_loader, device=device, amp=amp)  # every rank: same weights, same result
        if epoch > config.warmup_epochs:
            plateau.step(val.loss)
        improved = val.loss < best_loss
        if improved:
            best_loss, best_epoch = val.loss, epoch
        if ctx.is_main:
            record = {"epoch": epoch, "train_loss": loss_sum / n_seen, "train_acc": n_correct / n_seen,
                      "val_loss": val.loss, "val_acc": val.accuracy, "lr": optimizer.param_groups[0]["lr"],
                      "seconds": time.time() - start}
            checkpoint = {**checkpoint_base, "model": model.state_dict(), "epoch": epoch,
                          "optimizer": optimizer.state_dict(), "warmup": warmup.state_dict(),
                          "scheduler": plateau.state_dict(), "rng": rng_state(), "best_val_loss": best_loss,
                          "best_epoch": best_epoch}
            with open(run_dir / "metrics.jsonl", "a") as file:
                file.write(json.dumps(record) + "\n")
            if improved:
                save_checkpoint(run_dir / "best.pt", checkpoint)
            save_checkpoint(run_dir / "last.pt", {**checkpoint, "record": record})  # last: it defines the resume point
            print(f"epoch {epoch:3d}/{config.epochs}  train loss {record['train_loss']:.3f} "
                  f"acc {record['train_acc']:.3f}  val loss {val.loss:.3f} acc {val.accuracy:.3f}  "
                  f"lr {record['lr']:.1e}  {record['seconds']:.1f} s" + ("  *" if improved else ""), flush=True)
        if epoch - best_epoch >= config.patience:
            if ctx.is_main:
                print(f"early stop: no lower val loss for {config.patience} epochs")
            break

    if ctx.is_main:
        test_loader = segment_loader(MelClips(mel_root, split["test"]), rule, standardize, batch_size=eval_batch,
                                     workers=workers, pin_memory=pin)
        test_best(model, run_dir, mel_root, classes, device=device, amp=amp, loader=test_loader)
    barrier(ctx)
    return run_dir


def loader_workers(config: TrainConfig, device: torch.device) -> int:
    """--workers as given; by default none on the CPU (the clips are decoded once, in RAM), up to 8 for CUDA."""
    if config.workers is not None:
        return config.workers
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


def eval_batch_size(config: TrainConfig) -> int:
    """Clips per validation and test batch: each clip is many segments, so a quarter of the training batch."""
    return max(1, config.batch_size // 4)


def amp_enabled(config: TrainConfig, device: torch.device) -> bool:
    """--amp as given; by default on for CUDA."""
    return device.type == "cuda" if config.amp is None else config.amp


def make_optimizer(model: torch.nn.Module, config: TrainConfig, *, steps_per_epoch: int):
    """AdamW, its per-step linear warm-up from lr / 100, and ReduceLROnPlateau on val clip loss after it."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01,
                                               total_iters=max(1, config.warmup_epochs * steps_per_epoch))
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.plateau_factor,
                                                         patience=config.plateau_patience)
    return optimizer, warmup, plateau


def rewind_metrics(path: Path, last_record: dict) -> None:
    """metrics.jsonl up to the epoch of last.pt, whose own line comes from last.pt: a run killed mid-epoch or
    between the writes of an epoch continues with exactly one line per completed epoch."""
    lines = [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] < last_record["epoch"]]
    tmp_path = path.with_name(f".{path.name}.tmp")
    tmp_path.write_text("".join(line + "\n" for line in [*lines, json.dumps(last_record)]))
    os.replace(tmp_path, path)


def test_best(model: ViT | ViTEnsemble, run_dir: Path, mel_root: Path, classes: list[str], *,
              device: torch.device, amp: bool, loader: DataLoader) -> dict:
    """Score the test split once with best.pt and write the test report, predictions and pictures."""
    best = load_checkpoint(run_dir / "best.pt", map_location=device)
    model.load_state_dict(best["model"])
    result = evaluate(model, loader, device=device, amp=amp)
    paths = source_paths(mel_root)
    report = write_test_outputs(run_dir, result, [paths.get(k, k) for k in loader.dataset.clips.keys], classes)
    report["best_epoch"] = best["epoch"] if "epoch" in best else best["member_epochs"]  # an ensemble: one per member
    (run_dir / "test_report.json").write_text(json.dumps(report, indent=1))
    plot_curves([json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()],
                run_dir / "curves.png")
    print(f"test accuracy {report['accuracy']:.3f} (macro F1 {report['macro_f1']:.3f}) on {report['n_clips']} "
          f"clips, best epoch {report['best_epoch']}; run saved in {run_dir}")
    return report


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, Path | None]:
    """Flags -> (config, run directory to resume or None). A resumed run keeps its config but --epochs."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python train.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="audio class folders or melify output (default: the demo set)")
    parser.add_argument("--model", choices=sorted(PRESETS), default=defaults.model)
    parser.add_argument("--epochs", type=int, help=f"total epochs (default {defaults.epochs}; a resumed run's own)")
    for name in ("batch_size", "lr", "segment_seconds", "mixup", "patience", "seed", "split_seed", "members"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(defaults, name)),
                            default=getattr(defaults, name))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=defaults.device)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision (default: on for CUDA)")
    parser.add_argument("--workers", type=int, help="data-loading (and melify) processes")
    parser.add_argument("--out", help="run directory (default: runs/<timestamp>); must be new or empty")
    parser.add_argument("--split-file", help='JSON {"train": [...], "val": [...], "test": [...]} or CSV clip,split')
    parser.add_argument("--groups", help="CSV clip,group for grouped splits (default: ROOT/metadata.csv)")
    parser.add_argument("--init-from", help="checkpoint to fine-tune from")
    parser.add_argument("--resume", type=Path, help="continue the interrupted run in this directory")
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    if resume:
        has_last = (resume / "last.pt").exists() or any(resume.glob("member*/last.pt"))  # one model, an ensemble
        if not (resume / "config.json").exists() or not has_last:
            parser.error(f"{resume} has no last.pt to resume from")
        saved = json.loads((resume / "config.json").read_text())["train"]
        # runs from before --members had one model
        return TrainConfig(**{"members": 1, **saved, "epochs": args["epochs"] or saved["epochs"]}), resume
    args["epochs"] = args["epochs"] or defaults.epochs
    return TrainConfig(**{f.name: args[f.name] for f in fields(TrainConfig) if f.name in args}), None


def main(argv: list[str] | None = None) -> None:
    config, resume = parse_args(argv)
    train(config, resume)


if __name__ == "__main__":
    main(sys.argv[1:])
