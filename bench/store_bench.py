"""Training's data path on a data set larger than it should hold: memory and epoch times of each way to read clips.

    python bench/store_bench.py [--clips 20000] [--seconds 10] [--epochs 2]

Writes N random 16-bit mel PNGs of `seconds` (128 bands, 43 frames a second, as melify makes them from music) into
a temporary melify-like folder, then, each in a fresh process, reads every clip through the training batches
(`data.train_batches`: random crop, SpecAugment, clip context, a batch at a time) for `epochs` epochs, three ways:
(store) `MelClips(stored=True)`: the memory-mapped store, built from the PNGs first (its build time is reported);
(ram) the store refused, so each image is kept after its first decoding (what training in one process did before
the store); (png) every PNG decoded every time (what loader workers do without the store). It reports each
epoch's wall time and the peak anonymous resident memory (`RssAnon` of /proc/self/status: the process's own
memory, the page cache excluded). A benchmark: it prints numbers and asserts nothing.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vitaudio.features import encode_png16  # noqa: E402

N_MELS, FRAMES_PER_SECOND, SEGMENT_FRAMES, CLASSES = 128, 43, 129, 10
MODES = {"store": "memory-mapped store (MelClips(stored=True))",
         "ram": "decoded once, kept in RAM (no store)",
         "png": "every PNG decoded every epoch"}


def rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_set(root: Path, n_clips: int, seconds: float) -> None:
    """n_clips PNGs root/class<k>/clip<i>.png of smooth random dB values (realistic PNG sizes)."""
    rng = np.random.default_rng(0)
    frames = int(seconds * FRAMES_PER_SECOND)
    base = np.cumsum(rng.integers(-300, 301, size=(N_MELS, frames)), axis=1)  # (M, T) random walk per band
    for i in range(n_clips):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        image = (base + rng.integers(0, 4000, size=(N_MELS, 1)) + 30000).clip(0, 65535).astype(np.uint16)
        (folder / f"clip{i:05d}.png").write_bytes(encode_png16(np.roll(image, i, axis=1)))


def one_mode(root: Path, mode: str, epochs: int) -> dict:
    """In this (fresh) process: the epochs of `mode`'s data path; -> times and peak RssAnon."""
    import torch

    import vitaudio.data as data
    from vitaudio.data import MelClips, Standardize, TrainAugment, train_batches

    torch.set_num_threads(1)
    if mode == "ram":
        data.MelStore.open = classmethod(lambda cls, root, **kwargs: None)  # as where it cannot be written
    start = time.perf_counter()
    clips = MelClips(root, stored=mode != "png", images=True)
    build = time.perf_counter() - start
    loader = train_batches(clips, TrainAugment(SEGMENT_FRAMES, Standardize(-40.0, 20.0)), torch.device("cpu"),
                           batch_size=32, shuffle=True)
    result = {"mode": mode, "build_s": build, "epoch_s": [], "rss_start": rss_anon_mib(), "rss_peak": 0.0}
    for _ in range(epochs):
        start = time.perf_counter()
        for step, _batch in enumerate(loader):
            if step % 20 == 0:
                result["rss_peak"] = max(result["rss_peak"], rss_anon_mib())
        result["epoch_s"].append(time.perf_counter() - start)
        result["rss_peak"] = max(result["rss_peak"], rss_anon_mib())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--one", nargs=2, metavar=("ROOT", "MODE"), help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_mode(Path(args.one[0]), args.one[1], args.epochs)))
        return
    with tempfile.TemporaryDirectory(prefix="store_bench_", dir=os.environ.get("STORE_BENCH_DIR")) as tmp:
        root = Path(tmp) / "mels"
        start = time.perf_counter()
        write_set(root, args.clips, args.seconds)
        size = sum(p.stat().st_size for p in root.rglob("*.png")) / 2**30
        values = args.clips * N_MELS * int(args.seconds * FRAMES_PER_SECOND) * 2 / 2**30
        print(f"{args.clips} clips of {args.seconds:g} s ({N_MELS} x {int(args.seconds * FRAMES_PER_SECOND)}): "
              f"{size:.2f} GiB of PNGs, {values:.2f} GiB of values, written in {time.perf_counter() - start:.0f} s; "
              f"{os.cpu_count()} cores, 1 torch thread, batch 32, {args.epochs} epochs\n")
        rows = []
        for mode in args.modes:
            done = subprocess.run([sys.executable, __file__, "--epochs", str(args.epochs), "--one", str(root), mode],
                                  capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append([MODES[mode], f"{result['build_s']:.1f}",
                         " / ".join(f"{s:.1f}" for s in result["epoch_s"]),
                         f"{result['rss_start']:.0f}", f"{result['rss_peak']:.0f}"])
        header = ["clips read from", "set-up s (store build)", "epoch s (1st / later)", "RssAnon MiB at start",
                  "RssAnon MiB peak"]
        lines = [header, ["---"] * len(header), *rows]
        print("\n".join("| " + " | ".join(line) + " |" for line in lines))


if __name__ == "__main__":
    main()
