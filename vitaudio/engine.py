"""The training engine: one epoch of training, clip-level evaluation. No argument parsing, no file layout."""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm


def resolve_device(name: str = "auto", index: int = 0) -> torch.device:
    """"auto" -> cuda when present, else cpu; `index` picks the GPU (torchrun's LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA GPU (use --device auto or cpu)")
    return torch.device("cuda", index) if name == "cuda" else torch.device(name)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA GPUs that support it (fp16 otherwise); nothing on CPU or when disabled."""
    if device.type != "cuda" or not enabled:
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


@dataclass
class TrainStats:
    loss_sum: float  # summed over samples, so that ranks can add theirs up
    n_correct: int
    n_seen: int

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.n_seen, 1)

    @property
    def accuracy(self) -> float:
        return self.n_correct / max(self.n_seen, 1)


def train_one_epoch(model: torch.nn.Module, loader, optimizer: torch.optim.Optimizer, *, device: torch.device,
                    warmup: torch.optim.lr_scheduler.LRScheduler | None = None, amp: bool = False,
                    scaler: torch.amp.GradScaler | None = None, label_smoothing: float = 0.0,
                    mixup_alpha: float = 0.0, grad_clip: float | None = 1.0, epoch: int = 0,
                    progress: bool = True) -> TrainStats:
    """One pass over `loader` of ((mel (B, 1, M, L), context (B, 2M)), labels (B,)) batches. `warmup` is stepped
    after every batch. Mixup mixes the contexts with the same weight as the mels."""
    model.train()
    total_loss, total_correct, total_seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress, unit="batch")
    for step, ((mel, context), labels) in enumerate(bar):
        mel, context = mel.to(device, non_blocking=True), context.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        mix, partner = 1.0, labels
        if mixup_alpha > 0:
            mix = float(torch.distributions.Beta(mixup_alpha, mixup_alpha).sample())
            order = torch.randperm(len(labels), device=device)
            mel, partner = mix * mel + (1 - mix) * mel[order], labels[order]
            context = mix * context + (1 - mix) * context[order]
        with autocast(device, amp):
            logits = model(mel, context)  # (B, n_classes)
            loss = (mix * F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
                    + (1 - mix) * F.cross_entropy(logits, partner, label_smoothing=label_smoothing))
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
        if warmup is not None:
            warmup.step()
        total_loss += loss.item() * len(labels)
        major = labels if mix >= 0.5 else partner  # under mixup, accuracy is counted against the larger share
        total_correct += int((logits.argmax(dim=1) == major).sum())
        total_seen += len(labels)
        bar.set_postfix(loss=f"{total_loss / total_seen:.3f}")
    return TrainStats(loss_sum=total_loss, n_correct=total_correct, n_seen=total_seen)


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    clip_logits: torch.Tensor  # (n_clips, n_classes), mean of each clip's segment logits
    labels: torch.Tensor  # (n_clips,)


@torch.no_grad()
def clip_logits_of(model: torch.nn.Module, segments: torch.Tensor, contexts: torch.Tensor, clip_index: torch.Tensor,
                   n_clips: int, batch_size: int = 256) -> torch.Tensor:
    """Segments (S, 1, M, L) of `n_clips` clips and their contexts (S, 2M) -> clip logits (n_clips, n_classes):
    the mean of segment logits."""
    segment_logits = torch.cat([model(chunk, context).float() for chunk, context in
                                zip(segments.split(batch_size), contexts.split(batch_size))])  # (S, C)
    return mean_per_clip(segment_logits, clip_index, n_clips)


def mean_per_clip(segment_outputs: torch.Tensor, clip_index: torch.Tensor, n_clips: int) -> torch.Tensor:
    """(S, K) outputs of the segments of `n_clips` clips -> (n_clips, K): each clip's mean."""
    sums = segment_outputs.new_zeros(n_clips, segment_outputs.shape[1]).index_add_(0, clip_index, segment_outputs)
    counts = torch.bincount(clip_index, minlength=n_clips).clamp_min(1).unsqueeze(1)  # (n_clips, 1)
    return sums / counts


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, *, device: torch.device, amp: bool = False) -> EvalResult:
    """Clip-level loss and accuracy over a loader of `data.collate_segments` batches."""
    model.eval()
    all_logits, all_labels = [], []
    for segments, contexts, clip_index, labels in loader:
        with autocast(device, amp):
            logits = clip_logits_of(model, segments.to(device, non_blocking=True), contexts.to(device),
                                    clip_index.to(device), len(labels))
        all_logits.append(logits.cpu())
        all_labels.append(labels)
    clip_logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    return EvalResult(loss=float(F.cross_entropy(clip_logits, labels)),
                      accuracy=float((clip_logits.argmax(dim=1) == labels).float().mean()),
                      clip_logits=clip_logits, labels=labels)
