"""The training engine: one epoch of training, clip-level evaluation, and `fit`, the epoch loop that every model
trains with (the ViT, each ensemble member, and the benchmark's other contenders). No argument parsing; the only
files it writes are a run directory's metrics.jsonl, best.pt and last.pt, when it is given one."""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .data import NO_LABEL
from .distributed import DistContext, all_reduce_sum
from .errors import RunDirError
from .rundir import append_metrics, rewind_metrics, rng_state, set_rng_state
from .scoring import autocast, clip_logits_of
from .tagging import mean_average_precision

RESUME_KEYS = ("model", "epoch", "optimizer", "scheduler", "rng", "best_epoch", "record")  # what last.pt holds


@dataclass
class TrainStats:
    loss_sum: float  # summed over samples, so that ranks can add theirs up
    n_correct: float  # of the labelled samples (multi-label: the share of each one's labels that are right)
    n_seen: int
    n_labelled: int  # samples with a label (unlabelled clips have none)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.n_seen, 1)

    @property
    def accuracy(self) -> float:
        return self.n_correct / max(self.n_labelled, 1)


def train_one_epoch(model: torch.nn.Module, loader, optimizer: torch.optim.Optimizer, *, device: torch.device,
                    per_step: torch.optim.lr_scheduler.LRScheduler | None = None, amp: bool = False,
                    scaler: torch.amp.GradScaler | None = None, label_smoothing: float = 0.0,
                    mixup_alpha: float = 0.0, grad_clip: float | None = 1.0, epoch: int = 0,
                    averaged: AveragedModel | None = None, teacher: torch.nn.Module | None = None,
                    distill: float = 0.0, temperature: float = 1.0, cutmix: bool = False,
                    class_weights: Tensor | None = None, progress: bool = True) -> TrainStats:
    """One pass over `loader` of ((mel (B, 1, M, L), context (B, 2M)), labels (B,)) batches. `per_step` (the lr
    schedule's per-batch part) is stepped and `averaged` (the weights' moving average) updated after every batch.
    Mixup mixes the contexts with the same weight as the mels; with `cutmix`, the mels are mixed instead by pasting a
    time span or a mel band (one at random per batch) of the partner's, (1 - mix) of the axis, onto each (CutMix, Yun
    et al., 2019, along one axis as in EfficientAT). With a `teacher`, the loss is (1 - distill) x the labels' loss +
    distill x the KL divergence from the teacher's softened predictions on the same (mixed) inputs (Hinton et al.,
    2015). Samples labelled `data.NO_LABEL` (unlabelled clips) count in the teacher's term alone. `class_weights`
    (n_classes,) weight each labelled sample's term of the labels' loss by its class (see `labels_loss`)."""
    model.train()
    total_loss, total_correct, total_seen, total_labelled = 0.0, 0, 0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress, unit="batch")
    for step, ((mel, context), labels) in enumerate(bar):
        mel, context = mel.to(device, non_blocking=True), context.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        mix, partner = 1.0, labels
        if mixup_alpha > 0:
            mix = float(torch.distributions.Beta(mixup_alpha, mixup_alpha).sample())
            order = torch.randperm(len(labels), device=device)
            mel, partner = (cut_mix(mel, order, mix) if cutmix else mix * mel + (1 - mix) * mel[order]), labels[order]
            context = mix * context + (1 - mix) * context[order]
        with autocast(device, amp):
            logits = model(mel, context)  # (B, n_classes)
            loss = mix * labels_loss(logits, labels, label_smoothing, class_weights) + (1 - mix) * labels_loss(
                logits, partner, label_smoothing, class_weights)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(mel, context).float()  # (B, n_classes)
                soft = soft_targets_loss(logits.float(), teacher_logits, temperature, multi_label=labels.dim() == 2)
                loss = (1 - distill) * loss + distill * temperature**2 * soft
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}, step {step}: "
                                     f"the run is stopped. Try a lower --lr or --no-amp.")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16 autocast needs loss scaling; bf16 and fp32 do not
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if per_step is not None:
            per_step.step()
        if averaged is not None:
            averaged.update_parameters(getattr(model, "module", model))  # DDP wraps the model
        total_loss += loss.item() * len(labels)
        major = labels if mix >= 0.5 else partner  # under mixup, accuracy is counted against the larger share
        if labels.dim() == 2:  # multi-label: the share of the clip's label decisions (score > 0.5) that are right
            labelled = major[:, 0] != NO_LABEL
            right = ((logits.detach() > 0) == (major > 0.5)).float().mean(dim=1)  # (B,)
            total_correct += float(right[labelled].sum())
        else:
            labelled = major != NO_LABEL
            total_correct += int((logits.argmax(dim=1) == major).sum())  # NO_LABEL is never an argmax
        total_seen += len(labels)
        total_labelled += int(labelled.sum())
        bar.set_postfix(loss=f"{total_loss / total_seen:.3f}")
    return TrainStats(loss_sum=total_loss, n_correct=total_correct, n_seen=total_seen, n_labelled=total_labelled)


def cut_mix(mel: Tensor, order: Tensor, mix: float) -> Tensor:
    """(B, 1, M, L) -> the same, with a random span of (1 - mix) of the time or the mel axis (the same span for
    the whole batch) taken from mel[order]."""
    axis = -1 if torch.rand(()) < 0.5 else -2
    size = mel.shape[axis]
    span = round((1 - mix) * size)
    start = int(torch.randint(0, size - span + 1, ()))
    mixed = mel.clone()
    mixed.narrow(axis, start, span).copy_(mel[order].narrow(axis, start, span))
    return mixed


def labels_loss(logits: Tensor, labels: Tensor, label_smoothing: float, class_weights: Tensor | None = None) -> Tensor:
    """Cross-entropy (B, n_classes), (B,) -> (), the mean over the labelled samples (0 when none is); with
    `class_weights` (n_classes,), each sample's term is multiplied by its class's weight (still divided by the
    number of labelled samples, so weights of mean 1 over the training clips keep the loss's scale). Multi-hot
    labels (B, n_classes): binary cross-entropy of each class's sigmoid, the mean over classes and labelled
    samples (no smoothing: a tag's target is already what mixup makes it)."""
    if labels.dim() == 2:
        labelled = labels[:, 0] != NO_LABEL
        per_sample = F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0), reduction="none").mean(dim=1)
        return (per_sample * labelled).sum() / labelled.sum().clamp(min=1)
    labelled = labels != NO_LABEL
    if class_weights is None:
        summed = F.cross_entropy(logits, labels, ignore_index=NO_LABEL, label_smoothing=label_smoothing,
                                 reduction="sum")
    else:
        # per sample, not cross_entropy's `weight`: that one also reweights the smoothing term class by class
        known = labels.clamp(min=0)  # NO_LABEL -> any class; masked out below
        per_sample = F.cross_entropy(logits, known, label_smoothing=label_smoothing, reduction="none")  # (B,)
        summed = (per_sample * class_weights[known] * labelled).sum()
    return summed / labelled.sum().clamp(min=1)


def soft_targets_loss(logits: Tensor, teacher_logits: Tensor, temperature: float, *, multi_label: bool) -> Tensor:
    """The student's divergence from the teacher's softened predictions, (B, n_classes) each -> (): KL of the
    softmaxes (one class per clip), or the binary cross-entropy against the teacher's sigmoids, less its own
    entropy (multi-label: each class a two-way choice), a mean over classes, so both are 0 where they agree."""
    if multi_label:
        student, teacher = logits / temperature, teacher_logits / temperature
        targets = teacher.sigmoid()
        return (F.binary_cross_entropy_with_logits(student, targets) -
                F.binary_cross_entropy_with_logits(teacher, targets))
    targets = (teacher_logits / temperature).softmax(dim=1)  # (B, n_classes)
    return F.kl_div((logits / temperature).log_softmax(dim=1), targets, reduction="batchmean")


def inverse_frequency_weights(labels: list[int], n_classes: int) -> list[float]:
    """Per-class weights N / (K n_c) for N labelled clips of K classes present, n_c of class c: their mean over
    the clips is 1, and each class's clips weigh N / K in all (1 for a class without clips)."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=n_classes)  # (n_classes,)
    present = int((counts > 0).sum())
    return [len(labels) / (present * int(n)) if n else 1.0 for n in counts]


@dataclass
class EvalResult:
    loss: float
    accuracy: float  # multi-label: the share of clip x class decisions (sigmoid > 0.5) that are right
    clip_logits: torch.Tensor  # (n_clips, n_classes), each clip's segment logits pooled
    labels: torch.Tensor  # (n_clips,) class indices, or (n_clips, n_classes) multi-hot
    map: float | None = None  # multi-label: mean average precision over the classes present


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, *, device: torch.device, amp: bool = False,
             pooling: str = "mean") -> EvalResult:
    """Clip-level loss and accuracy (and mAP, multi-label) over a loader of `data.collate_segments` batches,
    each clip's logits its segments' mean or max (`pooling`)."""
    model.eval()
    all_logits, all_labels = [], []
    for segments, contexts, clip_index, labels in loader:
        with autocast(device, amp):
            logits = clip_logits_of(model, segments.to(device, non_blocking=True), contexts.to(device),
                                    clip_index.to(device), len(labels), pooling=pooling)
        all_logits.append(logits.cpu())
        all_labels.append(labels)
    clip_logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    if labels.dim() == 2:
        return EvalResult(loss=float(F.binary_cross_entropy_with_logits(clip_logits, labels)),
                          accuracy=float(((clip_logits > 0) == (labels > 0.5)).float().mean()),
                          clip_logits=clip_logits, labels=labels,
                          map=mean_average_precision(clip_logits.sigmoid(), labels))
    return EvalResult(loss=float(F.cross_entropy(clip_logits, labels)),
                      accuracy=float((clip_logits.argmax(dim=1) == labels).float().mean()),
                      clip_logits=clip_logits, labels=labels)


@dataclass(frozen=True)
class Criterion:
    """Which epoch is the best, and the validation number the lr plateau watches."""

    metric: str  # "loss": the lowest val clip loss; "accuracy": the highest val accuracy, ties to the lower loss

    def __post_init__(self):
        if self.metric not in ("loss", "accuracy"):
            raise ValueError(f"Criterion metric must be 'loss' or 'accuracy', not {self.metric!r}")

    @property
    def mode(self) -> str:
        """ReduceLROnPlateau's mode for the watched number."""
        return "min" if self.metric == "loss" else "max"

    def watched(self, val: EvalResult) -> float:
        return val.loss if self.metric == "loss" else val.accuracy

    def score(self, val: EvalResult) -> list[float]:
        """Higher is better."""
        return [-val.loss] if self.metric == "loss" else [val.accuracy, -val.loss]


LOWEST_VAL_LOSS, HIGHEST_VAL_ACCURACY = Criterion("loss"), Criterion("accuracy")


@dataclass
class Schedule:
    """The learning rate over a run: `per_step` stepped after every batch (a warm-up, or a warm-up and a decay over
    the whole run), and `plateau`, where there is one, stepped once an epoch after the first `warmup_epochs` on the
    criterion's number."""

    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
    per_step: torch.optim.lr_scheduler.LRScheduler | None = None
    warmup_epochs: int = 0


def warmup_then_plateau(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, warmup_epochs: int,
                        criterion: Criterion, factor: float, patience: int) -> Schedule:
    """A linear warm-up from lr / 100 over `warmup_epochs`, then ReduceLROnPlateau on the criterion's number."""
    warmup = (torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01,
                                                total_iters=max(1, warmup_epochs * steps_per_epoch))
              if warmup_epochs else None)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=criterion.mode, factor=factor,
                                                         patience=patience)
    return Schedule(plateau, warmup, warmup_epochs)


def warmup_then_cosine(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, warmup_epochs: int, epochs: int,
                       floor: float = 0.01) -> Schedule:
    """A linear warm-up from lr / 100 over `warmup_epochs`, then a cosine decay, step by step, to lr x `floor` at
    the end of epoch `epochs` (Loshchilov and Hutter, 2017, without restarts; as DeiT and EfficientAT train)."""
    warmup_steps = warmup_epochs * steps_per_epoch
    decay_steps = max(1, epochs * steps_per_epoch - warmup_steps)

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return 0.01 + 0.99 * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return Schedule(per_step=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor), warmup_epochs=warmup_epochs)


@dataclass
class LoopConfig:
    """How `fit` trains: the length of the run and the training step's options."""

    epochs: int  # the last epoch (also when resuming)
    patience: int  # early stopping: epochs without a better criterion score
    criterion: Criterion = LOWEST_VAL_LOSS
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(alpha, alpha) mixup of training batches; 0 = off
    grad_clip: float | None = None  # max gradient norm
    amp: bool = False  # mixed precision: bf16 autocast (fp16 on CUDA GPUs without bf16)
    ema_epochs: float = 0.0  # score and keep an exponential moving average of the weights over ~this many epochs
    distill: float = 0.0  # weight of the teacher's soft targets in the loss, when `fit` is given a teacher
    temperature: float = 2.0  # softening of teacher and student predictions for distillation
    cutmix: bool = False  # mix batches by pasting a time span or mel band instead of blending (train_one_epoch)
    pooling: str = "mean"  # of segment logits into a clip's, in validation (scoring.POOLINGS)
    class_weights: list[float] | None = None  # per class, on each labelled sample's loss; None = all 1


@dataclass
class FitResult:
    best_epoch: int  # 0 when no epoch was trained
    last_epoch: int  # the last epoch trained (earlier runs of a resumed run included)
    stopped_by: str  # "epochs", "early stop" or "stop hook"


def fit(model: torch.nn.Module, train_loader, val_loader, optimizer: torch.optim.Optimizer, schedule: Schedule,
        loop: LoopConfig, *, device: torch.device, run_dir: Path | None = None, header: dict | None = None,
        resume: bool = False, dist: DistContext = DistContext(), stop: Callable[[int], bool] | None = None,
        on_epoch: Callable[[dict], None] | None = None, teacher: torch.nn.Module | None = None,
        log: bool = True) -> FitResult:
    """Train `model` epoch by epoch and leave it with the best epoch's weights.

    Each epoch trains on `train_loader`, scores `val_loader` clip by clip, steps the schedule and keeps the best
    weights by `loop.criterion`. With `loop.ema_epochs`, what is scored and kept is the moving average of the
    weights, while the trained weights go on learning underneath. Training ends at `loop.epochs`, after
    `loop.patience` epochs without a better score, or when `stop(epoch)` (asked before each epoch) says so. A
    `teacher` (a trained model, kept in eval mode) adds distillation with weight `loop.distill`. With a
    `run_dir`, rank 0 appends each epoch's record to metrics.jsonl and writes best.pt and last.pt (`header` +
    weights + the state `resume=True` continues from, exactly); `on_epoch` gets each record, with the val
    clip logits (n_clips, n_classes) and labels (n_clips,) added as `val_clip_logits` and `val_labels`.
    """
    scaler = (torch.amp.GradScaler("cuda") if loop.amp and device.type == "cuda"
              and not torch.cuda.is_bf16_supported() else None)
    start_epoch, best_score, best_epoch, best_weights = 1, None, 0, None
    averaged = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay(loop.ema_epochs, len(train_loader))),
                              use_buffers=True) if loop.ema_epochs else None)
    scored = model if averaged is None else averaged.module  # the weights validation sees and best.pt keeps
    class_weights = None if loop.class_weights is None else torch.tensor(loop.class_weights, device=device)
    if teacher is not None:
        teacher.eval()
    if resume:
        start_epoch, best_score, best_epoch = _resume(run_dir, model, optimizer, schedule, loop.criterion, dist,
                                                      averaged)
        if log and dist.is_main:
            print(f"resuming at epoch {start_epoch} in {run_dir}")
    trained = DistributedDataParallel(model) if dist.enabled else model
    sampler = train_loader.sampler if isinstance(train_loader.sampler, DistributedSampler) else None
    stopped_by, last_epoch = "epochs", start_epoch - 1
    if resume and last_epoch - best_epoch >= loop.patience:
        stopped_by, start_epoch = "early stop", loop.epochs + 1  # it had stopped early: not one more epoch
    fit_start = time.time()
    for epoch in range(start_epoch, loop.epochs + 1):
        if stop is not None and stop(epoch):
            stopped_by = "stop hook"
            break
        start = time.time()
        if sampler is not None:
            sampler.set_epoch(epoch)
        stats = train_one_epoch(trained, train_loader, optimizer, device=device, per_step=schedule.per_step,
                                amp=loop.amp, scaler=scaler, label_smoothing=loop.label_smoothing,
                                mixup_alpha=loop.mixup, grad_clip=loop.grad_clip, epoch=epoch, averaged=averaged,
                                teacher=teacher if loop.distill else None, distill=loop.distill,
                                temperature=loop.temperature, cutmix=loop.cutmix, class_weights=class_weights,
                                progress=log and dist.is_main)
        loss_sum, n_correct, n_seen, n_labelled = all_reduce_sum(
            [stats.loss_sum, stats.n_correct, stats.n_seen, stats.n_labelled], dist)
        val = evaluate(scored, val_loader, device=device, amp=loop.amp,  # every rank: same weights, same result
                       pooling=loop.pooling)
        if schedule.plateau is not None and epoch > schedule.warmup_epochs:
            schedule.plateau.step(loop.criterion.watched(val))
        score = loop.criterion.score(val)
        improved = best_score is None or score > best_score
        if improved:
            best_score, best_epoch = score, epoch
            best_weights = None if run_dir else copy.deepcopy(scored.state_dict())
        record = {"epoch": epoch, "train_loss": loss_sum / n_seen, "train_acc": n_correct / max(n_labelled, 1),
                  "val_loss": val.loss, "val_acc": val.accuracy, **({} if val.map is None else {"val_map": val.map}),
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - start}
        if run_dir is not None and dist.is_main:
            _save_epoch(run_dir, model, averaged, optimizer, schedule, header or {}, record, best_score, best_epoch,
                        improved)
        if log and dist.is_main:
            seconds_per_epoch = (time.time() - fit_start) / (epoch - start_epoch + 1)
            print(epoch_line(record, loop.epochs, improved) + time_left(epoch, best_epoch, loop, seconds_per_epoch),
                  flush=True)
        last_epoch = epoch
        if on_epoch is not None:  # with the val predictions behind the record's numbers (not in metrics.jsonl)
            on_epoch({**record, "val_clip_logits": val.clip_logits, "val_labels": val.labels})
        if epoch - best_epoch >= loop.patience:
            if log and dist.is_main:
                print(f"early stop: no better val {loop.criterion.metric} for {loop.patience} epochs")
            stopped_by = "early stop"
            break
    if best_weights is not None:
        model.load_state_dict(best_weights)
    elif run_dir is not None and best_epoch:
        model.load_state_dict(load_checkpoint(run_dir / "best.pt", map_location=device, required=("model",))["model"])
    return FitResult(best_epoch=best_epoch, last_epoch=last_epoch, stopped_by=stopped_by)


def time_left(epoch: int, best_epoch: int, loop: LoopConfig, seconds_per_epoch: float) -> str:
    """How long training goes on at most after `epoch`: to the last epoch, or to early stopping unless validation
    improves (which moves it on)."""
    last = min(loop.epochs, best_epoch + loop.patience)
    if last <= epoch:
        return ""
    minutes, seconds = divmod(round(seconds_per_epoch * (last - epoch)), 60)
    return f"  ends by epoch {last} (~{minutes}:{seconds:02d})" + ("" if last == loop.epochs else
                                                                   " unless val improves")


def epoch_line(record: dict, epochs: int, improved: bool) -> str:
    """The log line of an epoch's record; a star marks a new best."""
    return (f"epoch {record['epoch']:3d}/{epochs}  train loss {record['train_loss']:.3f} acc {record['train_acc']:.3f}"
            f"  val loss {record['val_loss']:.3f} acc {record['val_acc']:.3f}"
            + (f" mAP {record['val_map']:.3f}" if "val_map" in record else "") + f"  lr {record['lr']:.1e}  "
            f"{record['seconds']:.1f} s" + ("  *" if improved else ""))


def ema_decay(epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay of a moving average whose horizon (1 / (1 - decay) steps) is `epochs` epochs."""
    return 1.0 - 1.0 / max(1.0, epochs * steps_per_epoch)


def _save_epoch(run_dir: Path, model: torch.nn.Module, averaged: AveragedModel | None,
                optimizer: torch.optim.Optimizer, schedule: Schedule, header: dict, record: dict,
                best_score: list[float], best_epoch: int, improved: bool) -> None:
    """metrics.jsonl's line, best.pt when the epoch improved (the scored weights: the average when there is one),
    and last.pt, written last: it defines the resume point (`rundir.rewind_metrics` drops lines past it)."""
    state = {"epoch": record["epoch"], "optimizer": optimizer.state_dict(),
             "scheduler": None if schedule.plateau is None else schedule.plateau.state_dict(),
             "rng": rng_state(), "best_score": best_score, "best_epoch": best_epoch}
    if schedule.per_step is not None:
        state["warmup"] = schedule.per_step.state_dict()  # the key's name from when it was only a warm-up
    if best_score and len(best_score) == 1:
        state["best_val_loss"] = -best_score[0]  # how checkpoints of the lowest-val-loss criterion have said it
    checkpoint = {**header, "model": model.state_dict(), **state}
    append_metrics(run_dir, record)
    if improved:
        save_checkpoint(run_dir / "best.pt", checkpoint if averaged is None else
                        {**checkpoint, "model": averaged.module.state_dict()})
    if averaged is not None:
        checkpoint["averaged"] = averaged.state_dict()
    save_checkpoint(run_dir / "last.pt", {**checkpoint, "record": record})


def _resume(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule,
            criterion: Criterion, dist: DistContext, averaged: AveragedModel | None) -> tuple[int, list[float], int]:
    """Load last.pt's weights (and their moving average), optimizer, schedule and RNG state; rewind
    metrics.jsonl to it (rank 0); -> (first epoch to train, best score, best epoch)."""
    # On the CPU: RNG states must stay CPU byte tensors; load_state_dict moves the rest to the model's device.
    last = load_checkpoint(run_dir / "last.pt", required=RESUME_KEYS)
    if (last["scheduler"] is None) != (schedule.plateau is None):
        kinds = ("a decay over its epochs", "ReduceLROnPlateau")
        raise RunDirError(f"{run_dir}: this run's lr schedule was {kinds[last['scheduler'] is not None]}, this "
                          f"recipe's is {kinds[schedule.plateau is not None]}, so it can't be resumed; resume with "
                          f"the run's own --schedule, or start a new run (--init-from its best.pt).")
    if schedule.plateau is not None and last["scheduler"]["mode"] != schedule.plateau.mode:
        raise RunDirError(f"{run_dir}: this run's lr schedule watched val "
                          f"{'loss' if last['scheduler']['mode'] == 'min' else 'accuracy'}, this vitaudio's watches "
                          f"val {criterion.metric}, so it can't be resumed; start a new run (--init-from its best.pt "
                          f"to reuse the weights).")
    model.load_state_dict(last["model"])
    if averaged is not None:
        if "averaged" not in last:
            raise RunDirError(f"{run_dir}: this run kept no moving average of its weights, this vitaudio's recipe "
                              f"does; start a new run (--init-from its best.pt to reuse the weights).")
        averaged.load_state_dict(last["averaged"])
    optimizer.load_state_dict(last["optimizer"])
    if schedule.per_step is not None:
        schedule.per_step.load_state_dict(last["warmup"])
    if schedule.plateau is not None:
        schedule.plateau.load_state_dict(last["scheduler"])
    set_rng_state(last["rng"])
    best_score = last.get("best_score") or [-last["best_val_loss"]]  # runs saved before best_score was
    if dist.is_main:
        rewind_metrics(run_dir, last["record"])
    return last["epoch"] + 1, best_score, last["best_epoch"]
