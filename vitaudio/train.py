"""`python train.py [--root data/gtzan]` (or `vitaudio train`): train a spectrogram ViT, test it once.

ROOT holds audio class folders (converted once by melify, the output reused next time) or melify output.
Without ROOT the built-in synthetic demo set is made in data/demo and used. The run directory gets config.json,
split.json, metrics.jsonl, best.pt, last.pt, and after training the test split's test_report.json,
test_predictions.csv, confusion_matrix.png and curves.png, scored once with the best weights. With `--members K`
(the default: 2) K such runs are made one after another in member0/, member1/, ... of the run directory, which
then gets the ensemble's best.pt and its test outputs.

`--resume DIR` continues an interrupted run; `--init-from CKPT` fine-tunes a trained model on new classes;
`torchrun --nproc_per_node=N train.py ...` trains with DistributedDataParallel (--batch-size is per process).
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .config import TrainConfig, parse_args
from .distributed import init_distributed, shutdown
from .ensemble import train_ensemble
from .errors import VitaudioError
from .run import train_model
from .rundir import default_run_dir, has_resume_state
from .scoring import resolve_device


def train(config: TrainConfig, resume: Path | None = None, *, stop: Callable[[int], bool] | None = None) -> Path:
    """Run one training as `config` says (or continue the run in `resume`); return the run directory.

    `stop(epoch)`, asked before every epoch of every member, ends that member's training when it returns True
    (`engine.fit`'s hook: a time budget, for example). A new run that fails before its first epoch leaves no
    run directory behind, so the same command can be run again.
    """
    config.check()
    new_out = None  # the folder a new run starts in, when it holds nothing yet
    if resume is None:
        config = replace(config, out=config.out or str(default_run_dir()))
        new_out = Path(config.out)
        if new_out.exists() and any(new_out.iterdir()):
            new_out = None  # refused by make_run_dir below; not ours to clean
    existed = new_out is not None and new_out.exists()
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    ctx = init_distributed(device)
    try:
        run_dir = (train_model(config, resume, device, ctx, stop=stop) if config.models_trained == 1
                   else train_ensemble(config, resume, device, ctx, stop=stop))
        if ctx.enabled:
            print(f"rank {ctx.rank}/{ctx.world_size} done", file=sys.stderr)
        return run_dir
    except VitaudioError:
        if new_out is not None and ctx.is_main and new_out.exists() and not has_resume_state(new_out):
            discard(new_out, keep_folder=existed)  # nothing trained yet: leave --out as it was
        raise
    finally:
        shutdown(ctx)


def discard(folder: Path, *, keep_folder: bool) -> None:
    """Delete `folder` (or only what is in it)."""
    if not keep_folder:
        shutil.rmtree(folder)
        return
    for path in folder.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    try:
        config, resume = parse_args(argv)
        train(config, resume)
    except VitaudioError as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
