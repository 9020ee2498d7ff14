"""Checkpoints: everything needed to score audio again, saved atomically, loaded without running pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)`
reads it: `model` (state dict), `model_config`, `mel_config`, `classes`, `normalization` {mean, std},
`segment` {frames, hop_frames}, `members` (the ensemble's size; absent = 1, a single ViT), `architecture`
("cnn" for a `--teacher cnn` run's teacher; absent = ViT), for a multi-label tagger `task` ("multi_label"; absent =
one class per clip), `pooling` (of segment logits: "mean" or "max") and `thresholds` (one per class, on the sigmoid
score), plus training state
(`epoch`, `optimizer`, `scheduler`, `train_config`, ...). `checkpoint_header` builds all but the weights and the
training state: the one place that says what a checkpoint holds.

A model directory (`save_pretrained`), laid out like a Hugging Face model repository, holds the same without any
pickle: `model.safetensors` (the state dict, an ensemble's "members.K." keys as they are) and `config.json` (the
header, plain JSON, with "format": "vitaudio-pretrained-1"). `load_checkpoint` reads either, into the same dict.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .data import MULTI_LABEL, SegmentRule, Standardize
from .errors import VitaudioError
from .features import MelConfig
from .files import atomic_path
from .model import ConvNet, ViT, ViTConfig, ViTEnsemble, build_model

FORMAT = "vitaudio-checkpoint-1"
REQUIRED_KEYS = ("model", "model_config", "mel_config", "classes", "normalization", "segment")
HEADER_KEYS = (*REQUIRED_KEYS[1:], "members", "train_config", "architecture", "task", "pooling",
               "thresholds")  # what checkpoint_header writes
PRETRAINED_FORMAT = "vitaudio-pretrained-1"
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"  # a model directory's two files
EXPORT_HINT = "write one with `python -m vitaudio.export CHECKPOINT --format safetensors --out DIR`"


class CheckpointError(VitaudioError, ValueError):
    """A file is not a usable vitaudio checkpoint; the message names the file and what is wrong."""


def checkpoint_header(model_config: ViTConfig, mel_config: MelConfig, classes: list[str], normalization: Standardize,
                      segment: SegmentRule, *, train_config: dict | None = None, members: int = 1,
                      architecture: str = "vit", multi_label: bool = False, pooling: str = "mean",
                      thresholds: list[float] | None = None) -> dict:
    """How to rebuild the model and feed it: a checkpoint without its weights and training state. A multi-label
    tagger also says so ("task"), how its clips pool their segments' logits and, once tuned, each class's threshold
    on its sigmoid score."""
    header = {"model_config": asdict(model_config), "mel_config": mel_config.to_dict(), "classes": list(classes),
              "normalization": asdict(normalization), "segment": segment.to_dict()}
    if train_config is not None:
        header["train_config"] = train_config
    if members > 1:
        header["members"] = members
    if architecture != "vit":
        header["architecture"] = architecture
    if multi_label:
        header.update(task=MULTI_LABEL, pooling=pooling, thresholds=thresholds or [0.5] * len(classes))
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
    """Load and check a checkpoint with `weights_only=True`, or a model directory (`load_pretrained`); raise
    CheckpointError naming the file otherwise. `required`: the keys it must hold (by default all that inference
    needs)."""
    path = Path(path)
    if path.is_dir():
        return load_pretrained(path, map_location, required=required)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file or model directory")
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


def save_pretrained(checkpoint: dict | str | Path, model_dir: str | Path) -> Path:
    """Write a checkpoint (loaded, or its path) as a model directory: `model_dir`/model.safetensors + config.json.

    All or nothing: both files are written into a hidden folder beside `model_dir`, which then takes its place, so
    a crash never leaves half a model. An existing `model_dir` may be empty or hold an earlier model's two files,
    which are replaced; anything else in it is refused with a CheckpointError."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(Path(checkpoint))
    model_dir = Path(model_dir)
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"cannot save to {model_dir}: the checkpoint lacks {', '.join(missing)}")
    if model_dir.exists():
        others = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else None
        if others is None or set(others) - {WEIGHTS_FILE, CONFIG_FILE}:
            found = "is a file" if others is None else f"holds other files ({', '.join(others[:5])})"
            raise CheckpointError(f"{model_dir}: {found}; choose a new or empty folder for the model")
    config = {"format": PRETRAINED_FORMAT, "vitaudio_version": __version__, **header_of(checkpoint)}
    try:
        config_text = json.dumps(config, indent=1, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:  # a header holds plain data; NaN statistics are no model
        raise CheckpointError(f"cannot save to {model_dir}: its header is not plain JSON ({err})") from None
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in checkpoint["model"].items()}
    target = model_dir.absolute()  # "." has no name to put a hidden folder beside
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)  # left by a crashed writer of the same pid
    staging.mkdir(parents=True)
    try:
        (staging / CONFIG_FILE).write_text(config_text)
        save_file(weights, staging / WEIGHTS_FILE, metadata={"format": "pt"})  # "pt": what transformers expects
        shutil.copymode(staging / CONFIG_FILE, staging / WEIGHTS_FILE)  # safetensors makes it owner-only (0600)
        _replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def _replace_dir(new_dir: Path, target: Path) -> None:
    """Put `new_dir` where `target` is: readers see the old model, no model for an instant, or the new one."""
    retired = target.with_name(f".{target.name}.{os.getpid()}.old")
    if target.exists():
        os.replace(target, retired)
    try:
        os.replace(new_dir, target)
    except OSError:
        if retired.exists():
            os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def load_pretrained(model_dir: Path, map_location: str | torch.device = "cpu", *,
                    required: tuple[str, ...] = REQUIRED_KEYS) -> dict:
    """A model directory -> the dict `load_checkpoint` returns for a checkpoint file: config.json's keys (the
    header and "format") and "model", the state dict from model.safetensors. Reading it runs no code.
    Raises CheckpointError naming the missing, unreadable or incomplete file and the fix."""
    model_dir = Path(model_dir)
    weights_path, config_path = model_dir / WEIGHTS_FILE, model_dir / CONFIG_FILE
    for path in (weights_path, config_path):
        if not path.is_file():
            run_checkpoint = model_dir / "best.pt"  # a run directory holds a config.json of its own
            fix = (f"pass the run's checkpoint {run_checkpoint} or {EXPORT_HINT}" if run_checkpoint.is_file()
                   else f"a model directory holds {WEIGHTS_FILE} and {CONFIG_FILE}: {EXPORT_HINT}")
            raise CheckpointError(f"{path}: no such file; {fix}")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{config_path}: not valid JSON ({err}); {EXPORT_HINT} again") from None
    if not isinstance(config, dict) or config.get("format") != PRETRAINED_FORMAT:
        raise CheckpointError(f'{config_path}: not a vitaudio model config (it lacks "format": '
                              f'"{PRETRAINED_FORMAT}"); {EXPORT_HINT}')
    missing = [key for key in required if key != "model" and key not in config]
    if missing:
        raise CheckpointError(f"{config_path}: lacks {', '.join(missing)}; {EXPORT_HINT} again")
    try:
        weights = load_file(weights_path, device=str(torch.device(map_location)))
    except Exception as err:  # safetensors raises its own SafetensorError, or OSError, on a bad file
        raise CheckpointError(f"{weights_path}: not a readable safetensors file, truncated or corrupt ({err}); "
                              f"{EXPORT_HINT} again") from None
    return {**config, "model": weights}


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
