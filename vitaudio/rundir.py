"""A run directory: making it, the RNG state that makes a resumed run exact, and its metrics.jsonl.

Layout: config.json, split.json, metrics.jsonl (one JSON line per epoch), best.pt, last.pt (with the training
state `--resume` needs), and the test outputs; an ensemble's members each get such a directory, member0/, ...
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from .errors import RunDirError
from .files import write_text_atomic

METRICS = "metrics.jsonl"


def default_run_dir() -> Path:
    """runs/<timestamp>: where a run goes without --out."""
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def make_run_dir(out: str | Path | None) -> Path:
    """`out`, or a `default_run_dir()`, created; refused when it already holds files."""
    run_dir = Path(out) if out else default_run_dir()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunDirError(f"{run_dir} is not empty: choose a new --out directory, or continue it with --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def member_dirs(run_dir: Path, members: int, *, teacher: bool = False) -> list[Path]:
    """Where each member's own run is: the run directory itself for one model alone, else member0/, member1/, ...
    (also for one member with a `teacher`, trained in teacher/)."""
    if members == 1 and not teacher:
        return [run_dir]
    return [run_dir / f"member{member}" for member in range(members)]


def has_resume_state(run_dir: Path) -> bool:
    """True when `run_dir` holds a config.json and a last.pt (its own, or a member's) to continue from."""
    return (run_dir / "config.json").exists() and ((run_dir / "last.pt").exists()
                                                   or any(run_dir.glob("member*/last.pt")))


def read_saved_config(run_dir: Path) -> dict:
    """config.json of a run, with an error that names the file when it cannot be read."""
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunDirError(f"{path} cannot be read ({err}): this run cannot be resumed; start a new one") from None


def rng_state() -> dict:
    """Every random generator a run draws from, as plain tensors (loadable with weights_only=True)."""
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2]), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / METRICS, "a") as file:
        file.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def rewind_metrics(run_dir: Path, last_record: dict) -> None:
    """metrics.jsonl up to the epoch of last.pt, whose own line comes from last.pt: a run killed mid-epoch or
    between the writes of an epoch continues with exactly one line per completed epoch."""
    kept = [record for record in read_metrics(run_dir) if record["epoch"] < last_record["epoch"]]
    write_text_atomic(run_dir / METRICS, "".join(json.dumps(record) + "\n" for record in [*kept, last_record]))
