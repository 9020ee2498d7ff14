"""Running a model on clips: the device, mixed precision, and a clip's score as the mean (or max) of its segments'
logits.

Training's evaluation and inference both score clips through these functions, so they cannot drift apart (the
per-epoch validation runs in bf16 where --amp is on; the test report and inference in fp32).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from .errors import ConfigError


def resolve_device(name: str = "auto", index: int = 0) -> torch.device:
    """"auto" -> cuda when present, else cpu; `index` picks the GPU (torchrun's LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA GPU (use --device auto or cpu)")
    return torch.device("cuda", index) if name == "cuda" else torch.device(name)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CPUs and on CUDA GPUs that support it (fp16 on older GPUs); nothing when disabled."""
    if not enabled or device.type not in ("cpu", "cuda"):
        return nullcontext()
    if device.type == "cpu":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). There bf16 autocast makes an epoch of
    the default model ~1.4-1.5x and scoring ~1.5x faster than fp32 (bench/RESULTS.md); elsewhere bf16 is emulated
    and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's; private, so looked up softly
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


POOLINGS = ("mean", "max")  # how a clip's logits come from its segments'


@torch.no_grad()
def clip_logits_of(model: torch.nn.Module, segments: torch.Tensor, contexts: torch.Tensor, clip_index: torch.Tensor,
                   n_clips: int, batch_size: int = 256, pooling: str = "mean") -> torch.Tensor:
    """Segments (S, 1, M, L) of `n_clips` clips and their contexts (S, 2M) -> clip logits (n_clips, n_classes):
    the mean (or max, `pooling`) of segment logits."""
    segment_logits = torch.cat([model(chunk, context).float() for chunk, context in
                                zip(segments.split(batch_size), contexts.split(batch_size))])  # (S, C)
    return pool_per_clip(segment_logits, clip_index, n_clips, pooling)


def pool_per_clip(segment_outputs: torch.Tensor, clip_index: torch.Tensor, n_clips: int,
                  pooling: str = "mean") -> torch.Tensor:
    """(S, K) outputs of the segments of `n_clips` clips -> (n_clips, K): each clip's mean, or its max (an event
    heard in one segment of a long clip scores as high as in a short one)."""
    if pooling == "max":
        index = clip_index.unsqueeze(1).expand_as(segment_outputs)  # (S,) -> (S, K)
        return segment_outputs.new_full((n_clips, segment_outputs.shape[1]), -torch.inf).scatter_reduce_(
            0, index, segment_outputs, "amax")
    return mean_per_clip(segment_outputs, clip_index, n_clips)


def mean_per_clip(segment_outputs: torch.Tensor, clip_index: torch.Tensor, n_clips: int) -> torch.Tensor:
    """(S, K) outputs of the segments of `n_clips` clips -> (n_clips, K): each clip's mean."""
    sums = segment_outputs.new_zeros(n_clips, segment_outputs.shape[1]).index_add_(0, clip_index, segment_outputs)
    counts = torch.bincount(clip_index, minlength=n_clips).clamp_min(1).unsqueeze(1)  # (n_clips, 1)
    return sums / counts
