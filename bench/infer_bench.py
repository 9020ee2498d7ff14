"""Inference latency and throughput of `vitaudio.inference` on 30 s clips, split into feature and model time.

    cd /work/main && .venv/bin/python bench/infer_bench.py [--clips 40] [--models tiny mini] [--repeats 3]
                                                           [--batch-size 32] [--checkpoint runs/x/best.pt]

Writes N seeded 30 s music-like clips (melify_bench's generator; 22,050 Hz 16-bit WAV) to a temp dir and, per
ViT preset, a checkpoint with random weights, the default features and segments (3 s, hop 3 s: a 30 s clip is
11 segments) and train.py's default number of ensemble members ("mini:members=1" for one model); speed does not
depend on the weights (--checkpoint times a real one instead). All timings are
warm (model loaded, one call made first) and the best of --repeats (the machine is shared and noisy):
- one clip: `clf(path)` end to end (decode, log-mel, segments, model, top-5);
- a folder: one by one (`clf(path)` per clip) and batched (`clf(paths)`), in clips/s;
- the split: feature time (`clf.prepare`: decode + log-mel + standardise + cut) and model time (the forward
  passes over those segments, `--batch-size` segments at a time), per clip.
Targets (the inference issue, 2 CPU cores, default model): one clip < 100 ms; a folder >= 20 clips/s.
A benchmark: it prints numbers and asserts nothing.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from melify_bench import SECONDS, make_dataset  # noqa: E402

from vitaudio.checkpoint import checkpoint_header, save_checkpoint  # noqa: E402
from vitaudio.config import TrainConfig  # noqa: E402
from vitaudio.data import SegmentRule, Standardize  # noqa: E402
from vitaudio.features import MelConfig  # noqa: E402
from vitaudio.inference import AudioClassifier  # noqa: E402
from vitaudio.model import ViTEnsemble, build_model, vit_config  # noqa: E402

LATENCY_TARGET, THROUGHPUT_TARGET = 0.100, 20  # seconds for one clip; clips/s over a folder


def random_checkpoint(path: Path, model: str, n_classes: int = 10) -> Path:
    """A train.py-style checkpoint with random weights, default features, 3 s segments. `model` is a preset
    name, optionally with ViTConfig overrides or a number of members: "tiny", "tiny:depth=6", "mini:members=1"."""
    mel_config = MelConfig()
    frames = round(3.0 * mel_config.frames_per_second)
    preset, _, overrides = model.partition(":")
    changes = {key: int(value) for key, value in (item.split("=") for item in overrides.split(",") if item)}
    members = changes.pop("members", TrainConfig.members)
    config = vit_config(preset, n_mels=mel_config.n_mels, n_classes=n_classes, **changes)
    header = checkpoint_header(config, mel_config, [f"class{i}" for i in range(n_classes)],
                               Standardize(mean=-40.0, std=20.0), SegmentRule(frames=frames, hop_frames=frames),
                               members=members)
    save_checkpoint(path, {**header, "model": build_model(config, members).state_dict()})
    return path


def best_time(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gflops_per_clip(clf: AudioClassifier, n_segments: int, n_frames: int) -> tuple[int, float]:
    """(tokens per clip, forward GFLOPs per clip): 2 FLOPs per multiply-add of the stem convolutions, the patch
    projection, the attention and MLP matmuls ((4 + 2 * mlp_ratio) * D^2 per token and block) and the attention
    scores (2 N D); an ensemble costs its members' sum."""
    members = clf.model.members if isinstance(clf.model, ViTEnsemble) else [clf.model]
    config = clf.model.config
    grid = members[0].patch_embed.grid_size(n_frames)
    tokens = grid[0] * grid[1]
    dim = config.dim
    stem_macs, (height, width), in_channels = 0, (config.n_mels, n_frames), 1
    for channels in config.stem_channels:  # 3x3 stride-2 padded convolutions
        height, width = (height + 1) // 2, (width + 1) // 2
        stem_macs += height * width * 9 * in_channels * channels
        in_channels = channels
    projection = in_channels * config.patch_size[0] * config.patch_size[1] // 4 ** len(config.stem_channels) * dim
    per_token = projection + config.depth * ((4 + 2 * config.mlp_ratio) * dim**2 + 2 * tokens * dim)
    return tokens * n_segments, 2 * (per_token * tokens + stem_macs) * n_segments * len(members) / 1e9


def bench_model(clf: AudioClassifier, paths: list[Path], repeats: int, batch_size: int) -> dict:
    one = paths[0]
    clf(one)  # warm: the mel filter bank, torch kernels
    prepared = [clf.prepare(path) for path in paths]
    segments = torch.cat([clip.segments for clip in prepared])  # (sum S, 1, M, L)

    @torch.inference_mode()
    def forward(segments: torch.Tensor) -> None:
        for chunk in segments.split(batch_size):
            clf.model(chunk)

    n_segments = len(prepared[0].segments)
    tokens, gflops = gflops_per_clip(clf, n_segments, clf.segment_rule.frames)
    model_s = best_time(lambda: forward(segments), repeats) / len(paths)
    return {
        "params": clf.model.num_params() / 1e6, "segments": n_segments, "tokens": tokens, "gflops": gflops,
        "latency": best_time(lambda: clf(one), repeats),
        "latency_features": best_time(lambda: clf.prepare(one), repeats),
        "latency_model": best_time(lambda: forward(prepared[0].segments), repeats),
        "one_by_one": len(paths) / best_time(lambda: [clf(path) for path in paths], repeats),
        "batched": len(paths) / best_time(lambda: clf(paths, batch_size=batch_size), repeats),
        "features_per_clip": best_time(lambda: [clf.prepare(path) for path in paths], repeats) / len(paths),
        "model_per_clip": model_s, "gflop_per_s": gflops / model_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=40, help="30 s clips in the folder")
    parser.add_argument("--models", nargs="+", default=["tiny", "mini"],
                        help='ViT presets (model.PRESETS), optionally with integer overrides: "tiny:depth=6"')
    parser.add_argument("--checkpoint", type=Path, help="time this checkpoint instead of random presets")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="segments per forward pass")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_dataset(tmp / "clips", args.clips, seed=0)
        runs = ([(args.checkpoint.name, args.checkpoint)] if args.checkpoint else
                [(name, random_checkpoint(tmp / f"model{i}.pt", name)) for i, name in enumerate(args.models)])
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{torch.backends.cpu.get_cpu_capability()}; {args.clips} clips of {SECONDS} s; "
              f"batch {args.batch_size} segments; best of {args.repeats}")
        print("| model | params | segments/clip | tokens/clip | GFLOP/clip | one clip: total (features + model) "
              "| folder one by one | folder batched | batched per clip: features + model | model GFLOP/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        verdicts = []
        for name, checkpoint in runs:
            clf = AudioClassifier.from_checkpoint(checkpoint, device="cpu", batch_size=args.batch_size)
            r = bench_model(clf, paths, args.repeats, args.batch_size)
            print(f"| {name} | {r['params']:.2f} M | {r['segments']} | {r['tokens']} | {r['gflops']:.2f} "
                  f"| {1e3 * r['latency']:.0f} ms ({1e3 * r['latency_features']:.0f} + "
                  f"{1e3 * r['latency_model']:.0f}) | {r['one_by_one']:.1f} clips/s | {r['batched']:.1f} clips/s "
                  f"| {1e3 * r['features_per_clip']:.0f} + {1e3 * r['model_per_clip']:.0f} ms "
                  f"| {r['gflop_per_s']:.0f} |", flush=True)
            verdicts.append(f"{name}: one clip {1e3 * r['latency']:.0f} ms, target < {1e3 * LATENCY_TARGET:.0f} ms "
                            f"{_verdict(LATENCY_TARGET / r['latency'])}; folder {r['batched']:.1f} clips/s, "
                            f"target >= {THROUGHPUT_TARGET} {_verdict(r['batched'] / THROUGHPUT_TARGET)}")
        print("\n".join(verdicts))


def _verdict(ratio: float) -> str:
    """ratio = target-side / measured-side, > 1 when the target is met."""
    return "met" if ratio >= 1 else f"missed by {1 / ratio:.2f}x"


if __name__ == "__main__":
    main()
