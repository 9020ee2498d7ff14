"""Checkpoints: everything needed to score audio again, saved atomically, loaded without running pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)`
reads it: `model` (state dict), `model_config`, `mel_config`, `classes`, `normalization` {mean, std},
`segment` {frames, hop_frames}, `members` (the ensemble's size; absent = 1, a single ViT), `architecture`
("cnn" for a `--teacher cnn` run's teacher; absent = ViT), plus training state
(`epoch`, `optimizer`, `scheduler`, `train_config`, ...). `checkpoint_header` builds all but the weights and the
training state: the one place that says what a checkpoint holds.
"""
from __future__ import annotations

import pickle
from dataclasses import asdict
from pathlib import Path

import torch

from .data import SegmentRule, Standardize
from .errors import VitaudioError
from .features import MelConfig
from .files import atomic_path
from .model import ConvNet, ViT, ViTConfig, ViTEnsemble, build_model

FORMAT = "vitaudio-checkpoint-1"
REQUIRED_KEYS = ("model", "model_config", "mel_config", "classes", "normalization", "segment")
HEADER_KEYS = (*REQUIRED_KEYS[1:], "members", "train_config", "architecture")  # what checkpoint_header writes


class CheckpointError(VitaudioError, ValueError):
    """A file is not a usable vitaudio checkpoint; the message names the file and what is wrong."""


def checkpoint_header(model_config: ViTConfig, mel_config: MelConfig, classes: list[str], normalization: Standardize,
                      segment: SegmentRule, *, train_config: dict | None = None, members: int = 1,
                      architecture: str = "vit") -> dict:
    """How to rebuild the model and feed it: a checkpoint without its weights and training state."""
    header = {"model_config": asdict(model_config), "mel_config": mel_config.to_dict(), "classes": list(classes),
              "normalization": asdict(normalization), "segment": segment.to_dict()}
    if train_config is not None:
        header["train_config"] = train_config
    if members > 1:
        header["members"] = members
    if architecture != "vit":
        header["architecture"] = architecture
    return header


def header_of(checkpoint: dict) -> dict:
    """The `checkpoint_header` part of a loaded checkpoint."""
    return {key: checkpoint[key] for key in HEADER_KEYS if key in checkpoint}


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """torch.save, atomically: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp_path:
        torch.save({"format": FORMAT, **checkpoint}, tmp_path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", *,
                    required: tuple[str, ...] = REQUIRED_KEYS) -> dict:
    """Load and check a checkpoint with `weights_only=True`; raise CheckpointError naming the file otherwise.
    `required`: the keys it must hold (by default all that inference needs)."""
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
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: vitaudio checkpoint lacks {', '.join(missing)}")
    return checkpoint


def model_from_checkpoint(checkpoint: dict) -> ViT | ViTEnsemble | ConvNet:
    """The checkpoint's model with its weights: one ViT, an ensemble of "members" ViTs, or a teacher CNN."""
    if checkpoint.get("architecture") == "cnn":
        model = ConvNet(n_classes=len(checkpoint["classes"]))
    else:
        model = build_model(ViTConfig(**checkpoint["model_config"]), int(checkpoint.get("members", 1)))
    model.load_state_dict(checkpoint["model"])
    return model


def load_initial_weights(model: ViT, source: dict, source_path: str, classes: list[str], member: int = 0) -> None:
    """Fine-tuning: load a trained model's weights into `model`, keeping its new head when the classes differ.
    From an ensemble, member k starts from the source's member k (modulo its size)."""
    weights = source["model"]
    n_source = int(source.get("members", 1))
    if n_source > 1:
        prefix = f"members.{member % n_source}."
        weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    if source["classes"] != classes:
        weights = {k: v for k, v in weights.items() if not k.startswith("head.fc.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {"head.fc.weight", "head.fc.bias"}:
        raise CheckpointError(f"{source_path}: weights do not fit the model (missing {missing}, "
                              f"unexpected {unexpected})")
