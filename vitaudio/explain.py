"""What a trained ViT looks at and how it places clips: attention rollout and clip embeddings of mels.

Attention rollout (Abnar & Zuidema, 2020): in every block, average the heads, add the identity (the residual
connection) and renormalise the rows; multiply the blocks' matrices from the first to the last. Row i of the
product says how much each input patch flows into token i at the output. With a class token the relevance of the
patches is the class token's row; with mean pooling the classifier sees the mean of all output tokens, so the
relevance is the mean of the rows. Either way only the patch columns are kept (not the context token's). The
weights come from `ViT.forward_attention`, the explicit softmax path; the normal forward keeps
`scaled_dot_product_attention`, which returns no weights.
"""
from __future__ import annotations

import numpy as np
import torch

from .data import clip_context, cut_segments
from .inference import AudioClassifier
from .model import ViT, ViTConfig, ViTEnsemble


def attention_rollout(model: ViT | ViTEnsemble, mel: torch.Tensor | np.ndarray,
                      context: torch.Tensor | None = None) -> np.ndarray:
    """One standardised model input (n_mels, T), (1, n_mels, T) or (1, 1, n_mels, T), and its clip's context
    (2 * n_mels,) or None (the input is its own clip) -> relevance (F', T') of its patches, >= 0, summing to 1.
    An ensemble's relevance is the mean of its members'."""
    if isinstance(model, ViTEnsemble):
        return np.mean([attention_rollout(member, mel, context) for member in model.members], axis=0)
    mel = torch.as_tensor(mel, dtype=torch.float32)
    if mel.ndim not in (2, 3, 4) or (mel.ndim > 2 and mel.shape[0] != 1):
        raise ValueError(f"Expected one input (n_mels, T), (1, n_mels, T) or (1, 1, n_mels, T), "
                         f"got shape {tuple(mel.shape)}.")
    mel = mel.reshape(1, 1, *mel.shape[-2:])  # -> (1, 1, n_mels, T)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # dropout and stochastic depth off: the rollout of the model that predicts
    try:
        with torch.no_grad():
            context = None if context is None else context.reshape(1, -1).to(device)  # (2M,) -> (1, 2M)
            weights = model.forward_attention(mel.to(device), context)  # depth x (1, H, N, N), N = prefix + patches
    finally:
        model.train(was_training)
    n_tokens = weights[0].shape[-1]
    identity = torch.eye(n_tokens, device=device)
    rollout = identity
    for block_weights in weights:
        mixed = block_weights[0].float().mean(dim=0) + identity  # (H, N, N) -> (N, N), plus the residual path
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout
    prefix = model.num_prefix_tokens
    if model.config.pool == "cls":
        relevance = rollout[0, prefix:]  # the class token's row, over the patches: (N_patches,)
    else:
        relevance = rollout.mean(dim=0)[prefix:]  # mean pooling: the mean of the rows, over the patches
    relevance = relevance / relevance.sum()  # with a class token part of its row goes to itself
    grid = model.patch_embed.grid_size(mel.shape[-1])
    return relevance.reshape(grid).cpu().numpy()  # (F' * T',) -> (F', T'), row-major like the patches


def relevance_map(relevance: np.ndarray, config: ViTConfig, n_frames: int) -> np.ndarray:
    """Patch relevance (F', T') -> (n_mels, n_frames): each pixel gets the mean over the patches that cover it
    (overlapping patches share pixels); NaN where no patch reaches (trailing frames)."""
    (patch_f, patch_t), (stride_f, stride_t) = config.patch_size, config.patch_stride
    total = np.zeros((config.n_mels, n_frames))
    count = np.zeros((config.n_mels, n_frames))
    for (row, col), value in np.ndenumerate(relevance):
        covered = (slice(row * stride_f, row * stride_f + patch_f), slice(col * stride_t, col * stride_t + patch_t))
        total[covered] += value
        count[covered] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


def segment_rollout(clf: AudioClassifier, mel_db: np.ndarray, segment: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One evaluation segment of a clip's dB mel (n_mels, n_frames) -> that segment's dB mel (n_mels, L) and its
    rollout relevance spread over it (n_mels, L), L = the checkpoint's segment frames."""
    mel = torch.from_numpy(np.ascontiguousarray(mel_db, dtype=np.float32)).unsqueeze(0)  # (M, T) -> (1, M, T)
    segments_db = cut_segments(mel, clf.segment_rule)  # (S, 1, M, L), cut exactly as evaluation cuts
    if not -len(segments_db) <= segment < len(segments_db):
        raise IndexError(f"segment {segment} of a clip with {len(segments_db)} segments")
    context = clip_context(clf.standardize(mel), clf.segment_rule)  # scored as inference scores it: the whole clip's
    relevance = attention_rollout(clf.model, clf.standardize(segments_db[segment]), context)  # cut, then standardise
    segment_db = segments_db[segment, 0].numpy()  # (1, M, L) -> (M, L)
    return segment_db, relevance_map(relevance, clf.model.config, segment_db.shape[-1])


def embed_mels(clf: AudioClassifier, mels: list[np.ndarray]) -> np.ndarray:
    """Clip embeddings (N, D) of dB mels (n_mels, n_frames), as `AudioClassifier.embed` computes them from audio."""
    if not mels:
        return np.zeros((0, clf.model.embed_dim), np.float32)
    return clf.embed([clf.prepare_mel(mel_db, f"mel {i}") for i, mel_db in enumerate(mels)])
