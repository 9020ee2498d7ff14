"""One model's training run: its data (the demo set or melify output), split, normalisation, model and loaders,
`engine.fit`, and the test split scored once with the best weights."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler, WeightedRandomSampler

from .checkpoint import checkpoint_header, load_checkpoint, load_initial_weights, save_checkpoint
from .config import TrainConfig
from .data import (
    MULTI_LABEL,
    MelClips,
    SegmentRule,
    Standardize,
    TrainAugment,
    WithoutLabels,
    mel_digest,
    mel_stats,
    read_mel_config,
    segment_loader,
    source_paths,
    train_batches,
)
from .distributed import DistContext, barrier, broadcast
from .engine import (
    LOWEST_VAL_LOSS,
    LoopConfig,
    evaluate,
    fit,
    inverse_frequency_weights,
    warmup_then_cosine,
    warmup_then_plateau,
)
from .errors import ConfigError
from .features import MelConfig
from .files import write_text_atomic
from .melify import cached_melify
from .model import ConvNet, ViT, ViTConfig, ViTEnsemble, vit_config
from .plots import plot_curves
from .report import scores_line, write_test_outputs
from .rundir import make_run_dir, read_metrics, read_saved_config, seed_everything
from .scoring import POOLINGS
from .splits import check_split, make_split, read_groups, read_split_file, write_split_file
from .store import MelStore
from .tagging import tune_thresholds
from .tensorboard_log import TensorBoardLog

DEMO_ROOT = Path("data/demo")
DEFAULT_SEGMENT_SECONDS = 3.0  # music: ~3 s of context per prediction, then a clip's segments are averaged
MIN_TIME_PATCHES = 8  # a shorter segment gets patches overlapping by half in time (patch_time_stride)
BALANCE_RATIO = 2.0  # --balance auto compensates when the largest training class has more than this x the smallest's
# What it compensates with. With half the classes cut to a fifth of their training clips (bench/accuracy.py
# --imbalance 0.2), the weighted loss raised balanced accuracy by 3-5 points and macro-F1 by 5-7 on each of three
# styles_dev folds; on words_dev it and the sampler both found the small classes more often and the large ones less,
# within noise of each other. The weighted loss is also the simpler one: every clip every epoch, no extra random
# draws, the same under torchrun.
AUTO_BALANCE = "weights"
BALANCERS = {"sampler": "class-balanced sampling", "weights": "class-weighted loss"}


@dataclass
class RunData:
    """What a run trains on and how its inputs are made: the same on every rank, fixed for the whole run."""

    mel_root: Path
    classes: list[str]
    split: dict[str, list[str]]  # clip keys per split
    mel_config: MelConfig
    standardize: Standardize
    rule: SegmentRule
    model_config: ViTConfig
    multi_label: bool = False  # a tagger: multi-hot targets, sigmoid scores (`data.MelClips`)


def prepare_data(config: TrainConfig, mel_config: MelConfig | None = None) -> Path:
    """Make the demo set when no root is given, and melify the root when it holds audio (with `mel_config`, by
    default the parameters derived from the audio); -> the mel root."""
    if config.root is None and not (DEMO_ROOT / "metadata.csv").exists():
        from .demo import make_demo_dataset

        print(f"making the synthetic demo set in {DEMO_ROOT}")
        make_demo_dataset(DEMO_ROOT, workers=os.cpu_count() or 1)
    return cached_melify(Path(config.root or DEMO_ROOT), mel_config, config.workers)


def clip_groups(config: TrainConfig, data_root: Path, clips: MelClips) -> dict[str, str] | None:
    """Clip key -> group from --groups, the manifest's group column or ROOT/metadata.csv; None where there is
    none."""
    if not config.groups and clips.labels is not None:
        return clips.labels.groups
    groups_csv = Path(config.groups) if config.groups else data_root / "metadata.csv"
    groups = read_groups(groups_csv) if groups_csv.is_file() else None
    if config.groups and groups is None:
        raise ConfigError(f"--groups {groups_csv}: needs columns clip,group")
    return groups


def choose_split(config: TrainConfig, clips: MelClips, data_root: Path) -> dict[str, list[str]]:
    """The split file if one is given, else the manifest's split column, else a seeded split grouped by clip group
    where groups are known."""
    given = clips.labels.given_split() if clips.labels is not None and not config.split_file else None
    if config.split_file:
        split = read_split_file(Path(config.split_file))
        source = config.split_file
    elif given is not None:
        split, no_split = given
        source = f"the split column of {data_root}"
        if no_split:
            print(f"{source}: {len(no_split)} clips have no split and are left out, e.g. {no_split[0]}")
    else:
        groups = clip_groups(config, data_root, clips)
        split = make_split(clips.keys, clips.targets, groups, seed=config.split_seed)
        source = f"the split of {data_root} (split seed {config.split_seed}, {'grouped' if groups else 'by clip'})"
    check_split(split, set(clips.keys), source)
    if not split["test"]:
        raise ConfigError(f"{source}: the test split is empty; the data set is too small to split 80/10/10")
    return split


def rotated_split(split: dict[str, list[str]], clips: MelClips, groups: dict[str, str] | None, member: int,
                  seed: int) -> dict[str, list[str]]:
    """Member `member`'s split under --rotate-val: the same test clips, and a val split of the same size drawn
    afresh (grouped, stratified) from the train and val clips, the rest to train. Member 0 keeps `split`."""
    if member == 0:
        return split
    pool = sorted(split["train"] + split["val"])
    label_of = dict(zip(clips.keys, clips.targets))
    share = len(split["val"]) / len(pool)
    drawn = make_split(pool, [label_of[k] for k in pool], groups, fractions=(1 - share, share, 0.0),
                       seed=seed * 1000 + member)
    return {"train": drawn["train"], "val": drawn["val"], "test": split["test"]}


def run_data(config: TrainConfig, mel_root: Path, source: dict | None, resume: Path | None,
             device: torch.device = torch.device("cpu"), member: int = 0) -> RunData:
    """A new run's data, split (member `member`'s, under --rotate-val), normalisation and model shape, checked; or
    those a resumed run saved."""
    if resume:
        return saved_run_data(resume, mel_root)
    mel_config = read_mel_config(mel_root)
    all_clips = MelClips(mel_root, multi_label=config.multi_label or None)
    if all_clips.multi_label and not config.multi_label:
        print(f"multi-label tagging: some clips of {mel_root} have two labels or more (sigmoid scores, binary "
              f"cross-entropy, a threshold per class tuned on validation)")
    data_root = Path(config.root) if config.root else DEMO_ROOT
    split = choose_split(config, all_clips, data_root)
    # Statistics and segment length of the shared split, so that every member of an ensemble sees inputs alike.
    train_clips = MelClips(mel_root, split["train"])
    standardize = mel_stats(train_clips)
    frames = segment_frames(config.segment_seconds, mel_config, train_clips)
    if config.rotate_val:
        split = rotated_split(split, all_clips, clip_groups(config, data_root, all_clips), member,
                              config.split_seed)
    overrides = dict(n_mels=mel_config.n_mels, n_classes=len(all_clips.classes), patchout=config.patchout)

    def model_config_for(n_frames: int) -> ViTConfig:
        """The model for segments of n_frames: the source's when fine-tuning (its patches unless strides are
        given), else the preset with the patch stride the segment calls for."""
        base = ViTConfig(**source["model_config"]) if source else vit_config(config.model)
        time_stride = config.time_stride or (base.patch_stride[1] if source else patch_time_stride(
            n_frames, base.patch_size[1], base.stem_reduction))
        try:
            return replace(base, patch_stride=(config.freq_stride or base.patch_stride[0], time_stride),
                           **overrides)
        except ValueError as err:  # a given stride the patches and stem do not allow
            raise ConfigError(f"time_stride {config.time_stride}, freq_stride {config.freq_stride}: {err}") from None

    model_config = model_config_for(frames)
    if frames < model_config.patch_size[1]:
        raise ConfigError(f"--segment-seconds {config.segment_seconds} gives {frames} frames, fewer than one "
                          f"patch ({model_config.patch_size[1]} frames)")
    check_memory(model_config_for, frames, config, mel_config.frames_per_second, device)
    if len(all_clips.classes) < 2:
        raise ConfigError(f"{mel_root} holds one class ({', '.join(all_clips.classes)}): a classifier needs at "
                          f"least two class folders, each with clips of its class")
    return RunData(mel_root, all_clips.classes, split, mel_config, standardize, SegmentRule(frames, frames),
                   model_config, all_clips.multi_label)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for training on `device`: the GPU's free memory, or the host's MemAvailable; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    line = next((line for line in meminfo.splitlines() if line.startswith("MemAvailable:")), None)
    return int(line.split()[1]) * 1024 if line else None


def check_memory(model_config_for: Callable[[int], ViTConfig], frames: int, config: TrainConfig,
                 frames_per_second: float, device: torch.device) -> None:
    """Refuse, before anything is written, segments whose training step would not fit in the free memory, and
    say the longest that would (`model_config_for(frames)`: the model a segment of that length gets)."""
    free = available_memory(device)
    needed = model_config_for(frames).training_bytes(frames, config.batch_size)
    if free is None or needed <= 0.8 * free:
        return
    fits, patch_width = frames, model_config_for(frames).patch_size[1]
    while fits > patch_width and model_config_for(fits).training_bytes(fits, config.batch_size) > 0.8 * free:
        fits = int(fits * 0.8)
    seconds = config.segment_seconds or round(frames / frames_per_second, 2)
    raise ConfigError(f"--segment-seconds {seconds:g}: a training step of {config.batch_size} "
                      f"crops of {frames} frames would hold about {needed / 1e9:.1f} GB, more than the "
                      f"{free / 1e9:.1f} GB free on {device.type}: use at most --segment-seconds "
                      f"{fits / frames_per_second:.0f}, or a smaller --batch-size")


def segment_frames(segment_seconds: float | None, mel_config: MelConfig, train_clips: MelClips) -> int:
    """Frames per segment: `segment_seconds` when given, else 3 s, or the median training clip if shorter (a
    one-second word is one segment, not a third of one padded with silence)."""
    if segment_seconds is not None:
        return round(segment_seconds * mel_config.frames_per_second)
    default = round(DEFAULT_SEGMENT_SECONDS * mel_config.frames_per_second)
    return min(default, int(np.median(train_clips.frame_counts())))


def patch_time_stride(frames: int, patch_width: int, reduction: int) -> int:
    """Frames between the starts of neighbouring patches in time: the patch width, or half of it (at least the
    stem's `reduction`) when a segment would be fewer than MIN_TIME_PATCHES patches long. A one-second word is
    then 12 overlapping patches instead of 6 side by side: the order of its sounds is what tells words apart."""
    if frames >= MIN_TIME_PATCHES * patch_width:
        return patch_width
    return max(reduction, patch_width // 2)


def saved_run_data(run_dir: Path, mel_root: Path | None = None) -> RunData:
    """The RunData a run saved in its config.json and split.json (`mel_root` where its mels are now)."""
    saved = read_saved_config(run_dir)
    return RunData(Path(mel_root or saved["mel_root"]), saved["classes"], read_split_file(run_dir / "split.json"),
                   MelConfig(**saved["mel"]), Standardize(**saved["normalization"]), SegmentRule(**saved["segment"]),
                   ViTConfig(**saved["model"]), saved.get("task") == MULTI_LABEL)


def write_run_files(run_dir: Path, config: TrainConfig, data: RunData) -> None:
    """split.json and config.json: what --resume and the reports read."""
    paths = source_paths(data.mel_root)
    write_split_file(run_dir / "split.json", data.split,
                     {k: paths.get(k, f"{k}.png") for k in MelClips(data.mel_root).keys})
    # the segment length as used, derived or given, so that a resumed run and a reader see the same number
    segment_seconds = round(data.rule.frames / data.mel_config.frames_per_second, 4)
    write_text_atomic(run_dir / "config.json", json.dumps(
        {"train": asdict(replace(config, segment_seconds=segment_seconds)), "model": asdict(data.model_config),
         "mel": data.mel_config.to_dict(),
         "segment": data.rule.to_dict(), "normalization": asdict(data.standardize), "classes": data.classes,
         "mel_root": str(data.mel_root), **({"task": MULTI_LABEL} if data.multi_label else {})}, indent=1))


def make_optimizer(model: torch.nn.Module, config: TrainConfig, *, steps_per_epoch: int):
    """AdamW, and its schedule: a per-step linear warm-up from lr / 100, then ReduceLROnPlateau on val clip loss
    or a cosine decay over the run's epochs (`config.schedule`)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.schedule == "cosine":
        return optimizer, warmup_then_cosine(optimizer, steps_per_epoch=steps_per_epoch,
                                             warmup_epochs=config.warmup_epochs, epochs=config.epochs)
    return optimizer, warmup_then_plateau(optimizer, steps_per_epoch=steps_per_epoch,
                                          warmup_epochs=config.warmup_epochs, criterion=LOWEST_VAL_LOSS,
                                          factor=config.plateau_factor, patience=config.plateau_patience)


def loop_config(config: TrainConfig, amp: bool = False) -> LoopConfig:
    """The loop of train.py's recipe: the best epoch has the lowest val clip loss. A cosine schedule runs all its
    epochs: early stopping would end it while the lr is still high."""
    patience = config.patience if config.schedule == "plateau" else config.epochs
    return LoopConfig(epochs=config.epochs, patience=patience, criterion=LOWEST_VAL_LOSS,
                      label_smoothing=config.label_smoothing, mixup=config.mixup, grad_clip=config.grad_clip, amp=amp,
                      ema_epochs=config.ema_epochs, distill=config.distill, cutmix=config.cutmix)


def class_balance(config: TrainConfig, classes: list[str], train_labels: list[int] | None, *, distributed: bool,
                  log: bool) -> str:
    """How training makes up for unequal classes, as --balance says: "sampler", "weights" or "none" (auto:
    AUTO_BALANCE when the largest class has more than BALANCE_RATIO x the training clips of the smallest, else
    none); one log line says so when it is on. `train_labels` None: multi-label clips, which are not balanced."""
    if train_labels is None:
        if config.balance in BALANCERS and log:
            print(f"--balance {config.balance}: not applied, multi-label clips have no one class to balance by")
        return "none"
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=len(classes))  # (n_classes,)
    present = np.flatnonzero(counts)
    if len(present) == 0:
        return "none"
    largest, smallest = present[counts[present].argmax()], present[counts[present].argmin()]
    ratio = counts[largest] / counts[smallest]
    balance = config.balance
    if balance == "auto":
        balance = AUTO_BALANCE if ratio > BALANCE_RATIO else "none"
    fallback = ""
    if balance == "sampler" and distributed:  # DistributedSampler already picks each process's share of the clips
        balance, fallback = "weights", " (class-balanced sampling is not sharded across processes)"
    if balance != "none" and log:
        print(f"classes differ in size up to {ratio:.1f}x ({classes[largest]} {counts[largest]}, {classes[smallest]} "
              f"{counts[smallest]} training clips): {BALANCERS[balance]}{fallback} (--balance none to turn off)")
    return balance


def balanced_sampler(train_labels: list[int], class_weights: list[float], n_unlabelled: int = 0
                     ) -> WeightedRandomSampler:
    """An epoch of len(train_labels) + n_unlabelled draws with replacement: a labelled clip with its class's weight,
    an unlabelled one (after them, as in the ConcatDataset) with 1, so that each class is drawn alike and the
    unlabelled pool keeps its share. It draws from torch's global generator, which last.pt saves: a resumed run
    draws the same clips."""
    clip_weights = [class_weights[label] for label in train_labels] + [1.0] * n_unlabelled
    return WeightedRandomSampler(clip_weights, num_samples=len(clip_weights), replacement=True)


def train_model(config: TrainConfig, resume: Path | None, device: torch.device, ctx: DistContext, *,
                member: int = 0, stop: Callable[[int], bool] | None = None,
                teacher: torch.nn.Module | None = None, architecture: str = "vit") -> Path:
    """One model's run (or its continuation from `resume`), tested at the end; -> its run directory. `member`
    picks which member of an ensemble checkpoint --init-from starts it from; `stop` and `teacher` go to
    `engine.fit`. `architecture` "cnn" trains a `ConvNet` (a teacher) on the same inputs instead of the ViT."""
    seed_everything(config.seed)
    amp, workers = config.amp_on(device), config.loader_workers(device)
    source = load_checkpoint(Path(config.init_from)) if config.init_from else None
    if ctx.is_main:  # rank 0 alone writes files; the others wait for its results
        mel_root = prepare_data(config, MelConfig(**source["mel_config"]) if source else None)
        data = run_data(config, mel_root, source, resume, device, member)
        # clips the teacher labels as it teaches: (their melify root, the keys kept)
        pool = unlabelled_pool(config, data) if teacher is not None and config.unlabelled else None
        run_dir = resume or make_run_dir(config.out)
        if not resume:
            write_run_files(run_dir, config, data)
        for root in [data.mel_root] + ([pool[0]] if pool else []):
            MelStore.open(root)  # built once here, before the other ranks map it
    run_dir, data, pool = broadcast((run_dir, data, pool) if ctx.is_main else None, ctx)

    pin = device.type == "cuda"
    frames = data.rule.frames
    augment = dict(band_shift=config.band_shift, time_stretch=config.time_stretch, gain_db=config.gain_db,
                   band_crop=config.band_crop)
    train_set = MelClips(data.mel_root, data.split["train"], stored=True, multi_label=data.multi_label, images=True)
    train_labels = None if train_set.multi_label else train_set.targets
    balance = class_balance(config, data.classes, train_labels, distributed=ctx.enabled, log=ctx.is_main)
    class_weights = inverse_frequency_weights(train_labels, len(data.classes)) if balance != "none" else None
    n_unlabelled = 0
    if pool is not None:
        unlabelled = MelClips(pool[0], pool[1], stored=True, images=True)
        no_label = WithoutLabels(unlabelled, len(data.classes) if data.multi_label else None)
        train_set, n_unlabelled = ConcatDataset([train_set, no_label]), len(unlabelled)
    if ctx.enabled:
        sampler = DistributedSampler(train_set, shuffle=True, seed=config.seed)
    elif balance == "sampler":
        sampler = balanced_sampler(train_labels, class_weights, n_unlabelled)
    else:
        sampler = None
    # Workers only read images; every random draw (order, crops, masks) is made in this process from the
    # generator that last.pt saves, so a resumed run draws what an uninterrupted one would.
    train_loader = train_batches(train_set, TrainAugment(frames, data.standardize, **augment), device,
                                 batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
                                 num_workers=workers, pin_memory=pin,
                                 drop_last=len(train_set) > config.batch_size * ctx.world_size)
    val_loader = segment_loader(MelClips(data.mel_root, data.split["val"], stored=True,
                                         multi_label=data.multi_label), data.rule,
                                data.standardize, batch_size=config.eval_batch_size, workers=workers, pin_memory=pin)

    cnn = architecture == "cnn"
    # channels-last convolution weights: the stem's convolutions run 1.1-1.2x faster a step on CPU (RESULTS.md)
    model = (ConvNet(n_classes=len(data.classes)) if cnn else ViT(data.model_config)).to(
        device, memory_format=torch.channels_last)
    if source and not resume and not cnn:
        load_initial_weights(model, source, config.init_from, data.classes, member)
        print(f"initialised from {config.init_from}" + ("" if source["classes"] == data.classes else
                                                        f" with a new head for {len(data.classes)} classes"))
    optimizer, schedule = make_optimizer(model, config, steps_per_epoch=len(train_loader))
    if ctx.is_main:
        print(f"model {'cnn' if cnn else config.model}: {model.num_params() / 1e6:.2f} M parameters; "
              f"{len(data.classes)} classes; "
              f"clips train {len(data.split['train'])}"
              f"{f' + {n_unlabelled} unlabelled' if n_unlabelled else ''}, val {len(data.split['val'])}, test "
              f"{len(data.split['test'])}; device {device}{' + AMP' if amp else ''}"
              f"{f' x {ctx.world_size} processes' if ctx.enabled else ''}; run {run_dir}")
    header = checkpoint_header(data.model_config, data.mel_config, data.classes, data.standardize, data.rule,
                               train_config=asdict(config), architecture=architecture, multi_label=data.multi_label)
    board = TensorBoardLog(run_dir, data.classes) if config.log == "tensorboard" and ctx.is_main else None
    loop = replace(loop_config(config, amp), class_weights=class_weights if balance == "weights" else None)
    with board or nullcontext():  # the event file is closed also when training fails
        result = fit(model, train_loader, val_loader, optimizer, schedule, loop, device=device, run_dir=run_dir,
                     header=header, resume=resume is not None, dist=ctx, stop=stop,
                     on_epoch=board.log_epoch if board else None, teacher=teacher and teacher.to(device))
    if ctx.is_main:
        test_model(model, run_dir, data, config, device, best_epoch=result.best_epoch)
    barrier(ctx)
    return run_dir


def unlabelled_pool(config: TrainConfig, data: RunData) -> tuple[Path, list[str]]:
    """The clips of --unlabelled, melified with the run's mel parameters, less those identical to a validation or
    test clip (by `mel_digest`: the same audio, whatever its file is called): unlabelled copies of them would let
    the teacher's view of the held-out clips into training. -> (the pool's melify root, the clip keys kept)."""
    pool_root = cached_melify(Path(config.unlabelled), data.mel_config, config.workers, labelled=False)
    pool = MelClips(pool_root)
    held_out = {mel_digest(Path(path)) for path, _ in
                MelClips(data.mel_root, data.split["val"] + data.split["test"]).samples}
    kept = [key for key, (path, _) in zip(pool.keys, pool.samples) if mel_digest(Path(path)) not in held_out]
    if len(kept) < len(pool):
        print(f"unlabelled: refused {len(pool) - len(kept)} of the {len(pool)} clips of {config.unlabelled}: "
              f"identical to validation or test clips")
    if not kept:
        raise ConfigError(f"--unlabelled {config.unlabelled}: no clip left to learn from")
    return pool_root, kept


def test_model(model: ViT | ViTEnsemble | ConvNet, run_dir: Path, data: RunData, config: TrainConfig,
               device: torch.device, *, best_epoch: int | list[int]) -> dict:
    """Score the test split once with `model` (holding the weights of `best_epoch`, one per member of an ensemble)
    and write the test report, predictions and pictures into `run_dir`."""
    def loader_of(split: str):
        clips = MelClips(data.mel_root, data.split[split], multi_label=data.multi_label)
        return segment_loader(clips, data.rule, data.standardize, batch_size=config.eval_batch_size,
                              workers=config.loader_workers(device), pin_memory=device.type == "cuda")

    tagging = tune_tagger(model, loader_of("val"), run_dir, config, device) if data.multi_label else {}
    loader = loader_of("test")
    # in fp32, as inference scores clips: the report's numbers are the ones a user of best.pt gets
    result = evaluate(model, loader, device=device, pooling=tagging.get("pooling", "mean"))
    paths = source_paths(data.mel_root)
    report = write_test_outputs(run_dir, result.clip_logits, result.labels,
                                [paths.get(k, k) for k in loader.dataset.clips.keys], data.classes,
                                best_epoch=best_epoch, **tagging)
    plot_curves(read_metrics(run_dir), run_dir / "curves.png")
    print(f"test {scores_line(report)} on {report['n_clips']} clips, best epoch {report['best_epoch']}; run saved "
          f"in {run_dir}")
    return report


def tune_tagger(model: torch.nn.Module, val_loader: DataLoader, run_dir: Path, config: TrainConfig,
                device: torch.device) -> dict:
    """A tagger's clip pooling (the one of higher val mAP; mean on a tie) and per-class thresholds (best val F1),
    written into run_dir/best.pt; -> {"pooling", "thresholds"}."""
    results = {pooling: evaluate(model, val_loader, device=device, pooling=pooling)  # fp32, as inference
               for pooling in POOLINGS}
    pooling = max(POOLINGS, key=lambda name: (results[name].map, name == "mean"))
    best = results[pooling]
    thresholds = tune_thresholds(best.clip_logits.sigmoid(), best.labels)
    checkpoint = load_checkpoint(run_dir / "best.pt", required=("model",))
    save_checkpoint(run_dir / "best.pt", {**checkpoint, "pooling": pooling, "thresholds": thresholds})
    print(f"clip scores: the {pooling} of the segments' (val mAP " +
          ", ".join(f"{results[name].map:.3f} by {name}" for name in POOLINGS) +
          "); a threshold per class where its val F1 is best")
    return {"pooling": pooling, "thresholds": thresholds}
