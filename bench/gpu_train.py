"""One full training at GTZAN size on a GPU, timed: vitaudio's default recipe and the blog's own full-size recipe.

    python bench/gpu_train.py                          # first makes data/gtzan_size: demo styles, 1,002 x 30 s clips
    python bench/gpu_train.py --root data/gtzan        # GTZAN itself, where you have it
    python bench/gpu_train.py --root data/styles_tiny --epochs 1    # smoke test (runs on CPU too)

Both recipes train on one grouped 80/10/10 split (bench/accuracy.py's, written to OUT/split.json) and are tested
once with their best-validation weights:
  vitaudio  `python train.py --root ROOT --split-file OUT/split.json`: the defaults (bf16 autocast and loader
            workers on a GPU, early stopping)
  blog      480x480 RGB matplotlib mel images, ViT-Base (patch 16, dim 768, depth 12), Adam 1e-3, batch 32,
            ReduceLROnPlateau on val accuracy, 30 epochs, fp32: bench/accuracy.py's run_blog at full size
Per recipe it prints, and writes to OUT/gpu_train.json: epochs, wall seconds (set-up to test), seconds per epoch,
training samples per second (train clips x epochs / wall) and the peak of GPU memory torch allocated.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import Bench, blog_images, make_tasks, run_blog  # noqa: E402

from vitaudio.config import TrainConfig  # noqa: E402
from vitaudio.data import MelClips  # noqa: E402
from vitaudio.demo import make_demo_dataset  # noqa: E402
from vitaudio.melify import cached_melify  # noqa: E402
from vitaudio.scoring import resolve_device  # noqa: E402
from vitaudio.train import train  # noqa: E402

GTZAN_SIZE = Path("data/gtzan_size")


def timed(run) -> tuple[object, float, float]:
    """Call `run()` -> (its result, wall seconds, peak GPU memory in GiB; 0 on CPU)."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    result = run()
    if cuda:
        torch.cuda.synchronize()
    return result, time.time() - start, torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0


def row(epochs: int, wall: float, n_train: int, memory_gib: float, accuracy: float, **extra) -> dict:
    return {"epochs": epochs, "wall_s": round(wall, 1), "s_per_epoch": round(wall / epochs, 2),
            "train_samples_per_s": round(n_train * epochs / wall, 1), "peak_gpu_memory_gib": round(memory_gib, 2),
            "test_accuracy": round(accuracy, 3), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help=f"audio class folders (default: {GTZAN_SIZE}, made if missing)")
    parser.add_argument("--recipes", nargs="+", choices=("vitaudio", "blog"), default=["vitaudio", "blog"])
    parser.add_argument("--epochs", type=int, help="cap both recipes' epochs (default: each recipe's own)")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_train"))
    args = parser.parse_args()
    root = args.root or GTZAN_SIZE
    if args.root is None and not (root / "metadata.csv").exists():  # the demo styles at GTZAN's size
        _, seconds, _ = timed(lambda: make_demo_dataset(root, clips_per_class=167, seconds=30.0,
                                                        workers=os.cpu_count() or 1))
        print(f"made {root} in {seconds:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    device = resolve_device("auto")
    mel_root, melify_s, _ = timed(lambda: cached_melify(root))
    bench = Bench(root, mel_root, MelClips(mel_root).classes, args.out, math.inf, device,
                  {"melify (cached)": melify_s})
    task = make_tasks(bench, split_seed=0, folds=0, split_file=None)[0]
    n_train = len(task.split["train"])
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "root": str(root), "clips": {name: len(keys) for name, keys in task.split.items()},
              "prep_s": bench.prep_seconds, "recipes": {}}
    if "blog" in args.recipes:  # rendered before CUDA starts, in one process per core
        bench.images[480] = blog_images(bench, sorted(k for keys in task.split.values() for k in keys), 480)

    if "vitaudio" in args.recipes:
        run_dir = args.out / "vitaudio"
        shutil.rmtree(run_dir, ignore_errors=True)
        config = TrainConfig(root=str(root), split_file=str(task.split_file), out=str(run_dir))
        _, wall, memory = timed(lambda: train(replace(config, epochs=args.epochs or config.epochs)))
        epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        accuracy = json.loads((run_dir / "test_report.json").read_text())["accuracy"]
        report["recipes"]["vitaudio"] = row(len(epochs), wall, n_train, memory, accuracy,
                                            median_epoch_s=round(statistics.median(e["seconds"] for e in epochs), 2))
    if "blog" in args.recipes:
        result, wall, memory = timed(lambda: run_blog(bench, task, seed=0, full_size=True, epochs=args.epochs or 30))
        report["recipes"]["blog"] = row(result.epochs, wall, n_train, memory, result.accuracy)

    report["prep_s"] = {name: round(s, 1) for name, s in bench.prep_seconds.items()}
    (args.out / "gpu_train.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
