"""Checkpoints: everything needed to score audio again, saved atomically, loaded without running pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)`
reads it: `model` (state dict), `model_config`, `mel_config`, `classes`, `normalization` {mean, std},
`segment` {frames, hop_frames}, `members` (the ensemble's size; absent = 1, a single ViT), plus training state
(`epoch`, `optimizer`, `scheduler`, `train_config`, ...).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from .model import ViT, ViTConfig, ViTEnsemble, build_model

FORMAT = "vitaudio-checkpoint-1"
REQUIRED_KEYS = ("model", "model_config", "mel_config", "classes", "normalization", "segment")


class CheckpointError(ValueError):
    """A file is not a usable vitaudio checkpoint; the message names the file and what is wrong."""


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"format": FORMAT, **checkpoint}, tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and check a checkpoint with `weights_only=True`; raise CheckpointError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors and plain data, "
                              f"which could run code ({str(err).splitlines()[0]})") from None
    except Exception as err:  # on arbitrary bytes the unpickler raises KeyError, ValueError, EOFError, ...
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or corrupt ({err})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vitaudio checkpoint (make one with `python train.py`)")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: vitaudio checkpoint lacks {', '.join(missing)}")
    return checkpoint


def model_from_checkpoint(checkpoint: dict) -> ViT | ViTEnsemble:
    """The checkpoint's model with its weights: one ViT, or an ensemble of "members" ViTs."""
    model = build_model(ViTConfig(**checkpoint["model_config"]), int(checkpoint.get("members", 1)))
    model.load_state_dict(checkpoint["model"])
    return model
