"""Ensembles: `--members K` trains K one-model runs one after another (seeds SEED, SEED + 1, ...) in member0/,
member1/, ... of the run directory, then saves their ensemble (the mean of their logits) as its best.pt and tests
it once. A member that finished is not trained again on `--resume`. With `--distill W`, each member after the
first also learns the soft predictions of the members before it (born-again networks, Furlanello et al., 2018);
with `--teacher cnn` as well, a small CNN is trained first in teacher/ and every member learns from it instead
(DeiT's convolutional teacher, Touvron et al., 2021). What best.pt predicts with is the members alone."""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .checkpoint import header_of, load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DistContext, barrier, broadcast
from .files import write_text_atomic
from .model import ConvNet, ViT, ViTEnsemble, build_model
from .run import saved_run_data, test_model, train_model
from .rundir import make_run_dir, member_dirs, read_metrics


def train_ensemble(config: TrainConfig, resume: Path | None, device: torch.device, ctx: DistContext, *,
                   stop: Callable[[int], bool] | None = None) -> Path:
    """Train the members (each with `engine.fit`'s `stop` hook), combine them, test the ensemble; -> run dir."""
    if ctx.is_main:
        run_dir = resume or make_run_dir(config.out)
        if not resume:  # what --resume reads; completed with the model, mel and data sections at the end
            write_text_atomic(run_dir / "config.json", json.dumps({"train": asdict(config)}, indent=1))
    run_dir = broadcast(run_dir if ctx.is_main else None, ctx)
    start, trained_here = time.time(), 0  # models trained by this process, for the estimate of the time left
    cnn_teacher = train_teacher(config, run_dir, device, ctx, stop=stop) if config.cnn_teacher else None
    trained_here += cnn_teacher is not None
    for member, member_dir in enumerate(member_dirs(run_dir, config.members, teacher=config.cnn_teacher)):
        member_config = replace(config, members=1, seed=config.seed + member, out=str(member_dir))
        started = (member_dir / "last.pt").exists()
        if ctx.is_main and not started:
            shutil.rmtree(member_dir, ignore_errors=True)  # interrupted before its first epoch: nothing to keep
        barrier(ctx)
        if ctx.is_main:
            per_member = (time.time() - start) / trained_here if trained_here else None
            estimate = (f"; {per_member / 60:.1f} min a member so far, so ~"
                        f"{per_member * (config.members - member) / 60:.0f} min to go" if per_member else "")
            print(f"member {member + 1} of {config.members} (seed {member_config.seed}) in {member_dir}{estimate}")
        teacher = cnn_teacher or (members_model(run_dir, member) if config.distill and member else None)
        train_model(member_config, member_dir if started else None, device, ctx, member=member, stop=stop,
                    teacher=teacher)
        trained_here += 1
    if ctx.is_main:
        weights, member_epochs = combine_members(run_dir, config)
        data = saved_run_data(run_dir)
        ensemble = build_model(data.model_config, config.members)
        ensemble.load_state_dict(weights)
        ensemble.to(device)
        test_model(ensemble, run_dir, data, config, device, best_epoch=member_epochs)
    barrier(ctx)
    return run_dir


def train_teacher(config: TrainConfig, run_dir: Path, device: torch.device, ctx: DistContext, *,
                  stop: Callable[[int], bool] | None = None) -> ConvNet:
    """Train (or finish, on --resume) the run's CNN teacher in teacher/, on the members' data, split and inputs;
    -> the teacher with its best weights."""
    teacher_dir = run_dir / "teacher"
    started = (teacher_dir / "last.pt").exists()
    if ctx.is_main:
        if not started:
            shutil.rmtree(teacher_dir, ignore_errors=True)
        print(f"teacher (cnn) in {teacher_dir}")
    barrier(ctx)
    teacher_config = replace(config, members=1, distill=0.0, unlabelled=None, out=str(teacher_dir))
    train_model(teacher_config, teacher_dir if started else None, device, ctx, stop=stop, architecture="cnn")
    return model_from_checkpoint(load_checkpoint(teacher_dir / "best.pt"))


def members_model(run_dir: Path, n_members: int) -> ViT | ViTEnsemble:
    """The first `n_members` trained members of the run in `run_dir`, with their best weights, as one model: the
    teacher of the member after them."""
    bests = [load_checkpoint(run_dir / f"member{member}" / "best.pt") for member in range(n_members)]
    weights = bests[0]["model"] if n_members == 1 else ensemble_weights(bests)
    return model_from_checkpoint({**bests[0], "members": n_members, "model": weights})


def ensemble_weights(member_checkpoints: list[dict]) -> dict:
    """Members' checkpoints -> the state dict of their ViTEnsemble."""
    return {f"members.{member}.{name}": value for member, checkpoint in enumerate(member_checkpoints)
            for name, value in checkpoint["model"].items()}


def combine_members(run_dir: Path, config: TrainConfig) -> tuple[dict, list[int]]:
    """Write the ensemble's config.json, split.json, metrics.jsonl (every member's epochs) and best.pt (every
    member's best weights) from its trained members; -> (the ensemble's state dict, each member's best epoch)."""
    dirs = member_dirs(run_dir, config.members, teacher=config.cnn_teacher)
    saved = json.loads((dirs[0] / "config.json").read_text())
    config = replace(config, segment_seconds=saved["train"]["segment_seconds"])  # as derived for the members
    saved["train"] = asdict(config)
    write_text_atomic(run_dir / "config.json", json.dumps(saved, indent=1))
    shutil.copyfile(dirs[0] / "split.json", run_dir / "split.json")
    records = [{"member": member, **record} for member, member_dir in enumerate(dirs)
               for record in read_metrics(member_dir)]
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(record) + "\n" for record in records))
    bests = [load_checkpoint(member_dir / "best.pt") for member_dir in dirs]
    weights = bests[0]["model"] if config.members == 1 else ensemble_weights(bests)
    member_epochs = [best["epoch"] for best in bests]
    save_checkpoint(run_dir / "best.pt", {**header_of(bests[0]), "train_config": asdict(config),
                                          "members": config.members, "model": weights,
                                          "member_epochs": member_epochs})
    return weights, member_epochs
