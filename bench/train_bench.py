"""Training speed: the ViT against timm's of identical dimensions, and whole training against a pinned commit.

    python bench/train_bench.py                      # tiny preset, CPU, batch 32, 3 s mel segments
    python bench/train_bench.py --model small --device cuda --amp
    python bench/train_bench.py --whole [--root MELS] [--baseline 5b8c746] [--threads 1 2] [--device cuda]

`--whole` profiles train.py itself (the default recipe, one member) on `--root` (melify output; default: 256
generated clips of 30 s): for each thread count, a run of `--epochs` epochs in a fresh process, once with this
tree and once with the `--baseline` commit (checked out into a temporary git worktree), in the same invocation.
It reports samples/s per second of epoch wall time (validation included; the first epoch is left out), the
shares of the epoch spent loading batches, in the forward pass, the backward pass, the optimizer step and
validation, the FLOPs of one training sample (torch.utils.flop_counter) and the GFLOP/s the forward and backward
passes achieved, and the ratio of samples/s to the baseline's.

Both models see the same input (B, 1, n_mels, frames) and have the same width, depth, heads, MLP ratio, patch
size, mean pooling and stochastic depth; each measurement is the median of `--repeats` timed runs, the two
models alternating within one process so that machine noise hits both alike. timm is in the `bench` extra.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("VITAUDIO_TREE", str(REPO)))  # --whole runs a baseline's tree this way
from vitaudio.model import ViT, vit_config  # noqa: E402
from vitaudio.scoring import autocast, resolve_device  # noqa: E402


def timm_twin(config) -> torch.nn.Module:
    """timm's VisionTransformer with the dimensions of a vitaudio ViTConfig."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=(config.n_mels, 128), patch_size=config.patch_size[0], in_chans=1,
                             num_classes=config.n_classes, embed_dim=config.dim, depth=config.depth,
                             num_heads=config.heads, mlp_ratio=config.mlp_ratio, class_token=False,
                             global_pool="avg", drop_path_rate=config.drop_path, dynamic_img_size=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model, batch: torch.Tensor, labels: torch.Tensor, steps: int, amp: bool) -> float:
    """Samples per second of forward + backward + AdamW step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    sync(batch.device)
    start = time.perf_counter()
    for _ in range(steps):
        with autocast(batch.device, amp):
            loss = torch.nn.functional.cross_entropy(model(batch), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(batch.device)
    return steps * len(batch) / (time.perf_counter() - start)


@torch.inference_mode()
def time_inference(model, clip_segments: torch.Tensor, clips: int, amp: bool) -> float:
    """30 s clips per second: each clip is a batch of its segments, logits averaged."""
    model.eval()
    sync(clip_segments.device)
    start = time.perf_counter()
    for _ in range(clips):
        with autocast(clip_segments.device, amp):
            model(clip_segments).float().mean(dim=0)
    sync(clip_segments.device)
    return clips / (time.perf_counter() - start)


def generated_mels(folder: Path, n_clips: int = 256, seconds: float = 30.0) -> Path:
    """A melify-like folder of n_clips random-walk 16-bit mels (128 bands, 10 classes) with its melify.json."""
    import numpy as np

    from vitaudio.features import MelConfig, encode_png16

    config, rng = MelConfig(), np.random.default_rng(0)
    frames = config.n_frames(int(seconds * config.sample_rate))
    for i in range(n_clips):
        image = np.cumsum(rng.integers(-300, 301, size=(config.n_mels, frames)), axis=1) + 30000
        path = folder / f"class{i % 10}" / f"clip{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png16(image.clip(0, 65535).astype(np.uint16)))
    (folder / "melify.json").write_text(json.dumps({"mel_config": config.to_dict(), "files": []}))
    return folder


class PhaseClock:
    """Seconds spent, over a whole training, in each phase of the loop, by hooks on what the loop calls: the
    training loader's batches and their augmentation, the model's forward (in training mode), Tensor.backward,
    optimizer steps and `engine.evaluate` (validation). CUDA work is synchronised at each boundary so that it is
    counted where it is launched."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.started = device, dict.fromkeys(
            ("data", "forward", "backward", "optimizer", "validation"), 0.0), {}
        self.in_validation = False

    def start(self, phase: str) -> None:
        sync(self.device)
        self.started[phase] = time.perf_counter()

    def stop(self, phase: str) -> None:
        sync(self.device)
        self.seconds[phase] += time.perf_counter() - self.started.pop(phase)

    def install(self) -> None:
        import torch.optim.optimizer as optimizer
        import torch.utils.data.dataloader as dataloader

        import vitaudio.engine as engine

        clock, next_batch = self, dataloader._BaseDataLoaderIter.__next__

        def timed_next(iterator):
            if clock.in_validation:
                return next_batch(iterator)
            clock.start("data")
            try:
                return next_batch(iterator)
            finally:
                clock.stop("data")

        dataloader._BaseDataLoaderIter.__next__ = timed_next
        import vitaudio.data as data

        if hasattr(data, "TrainBatches"):  # since the batches are augmented on the device, after the loader
            prepare = data.TrainBatches.prepare

            def timed_prepare(batches, batch):
                clock.start("data")
                try:
                    return prepare(batches, batch)
                finally:
                    clock.stop("data")

            data.TrainBatches.prepare = timed_prepare
        evaluate, backward = engine.evaluate, torch.Tensor.backward

        def timed_evaluate(*args, **kwargs):
            clock.start("validation")
            clock.in_validation = True
            try:
                return evaluate(*args, **kwargs)
            finally:
                clock.in_validation = False
                clock.stop("validation")

        engine.evaluate = timed_evaluate

        def timed_backward(tensor, *args, **kwargs):
            clock.start("backward")
            try:
                return backward(tensor, *args, **kwargs)
            finally:
                clock.stop("backward")

        torch.Tensor.backward = timed_backward
        top_level = ("ViT", "ViTEnsemble")
        torch.nn.modules.module.register_module_forward_pre_hook(
            lambda module, args: clock.start("forward") if type(module).__name__ in top_level and module.training
            else None)
        torch.nn.modules.module.register_module_forward_hook(
            lambda module, args, out: clock.stop("forward") if type(module).__name__ in top_level
            and module.training else None)
        optimizer.register_optimizer_step_pre_hook(lambda *args: clock.start("optimizer"))
        optimizer.register_optimizer_step_post_hook(lambda *args: clock.stop("optimizer"))


def flops_per_sample(model_config, frames: int, device: torch.device) -> float:
    """FLOPs of one training sample's forward and backward pass (torch.utils.flop_counter, batch of 8)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = ViT(model_config).to(device)
    mel = torch.randn(8, 1, model_config.n_mels, frames, device=device)
    context = torch.randn(8, 2 * model_config.n_mels, device=device)
    with FlopCounterMode(display=False) as counter:
        model(mel, context).sum().backward()
    return counter.get_total_flops() / 8


def whole_child(root: Path, epochs: int, device: str) -> dict:
    """In a fresh process: train.py's default recipe, one member, `epochs` epochs; -> the numbers of one row."""
    from vitaudio.config import TrainConfig
    from vitaudio.train import train

    clock = PhaseClock(resolve_device(device))
    try:
        clock.install()
    except AttributeError as err:  # a tree without the hooked names: epoch times alone
        print(f"no phase times: {err}", file=sys.stderr)
        clock = None
    with tempfile.TemporaryDirectory(prefix="train_bench_") as out:
        config = TrainConfig(root=str(root), members=1, epochs=epochs, patience=epochs, out=out, device=device)
        run_dir = train(config)
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        saved = json.loads((run_dir / "config.json").read_text())
        n_train = len(json.loads((run_dir / "split.json").read_text())["train"])
    result = {"epoch_seconds": [r["seconds"] for r in records], "n_train": n_train, "threads": torch.get_num_threads()}
    if clock is not None:
        from vitaudio.model import ViTConfig

        frames = saved["segment"]["frames"]
        result["phases"] = dict(clock.seconds)  # before the FLOP count's own pass
        result["flops_per_sample"] = flops_per_sample(ViTConfig(**saved["model"]), frames, clock.device)
    return result


def mirror(root: Path, folder: Path) -> Path:
    """`root`'s files as links under `folder`, its hidden folders left out: what an earlier commit sees of a melify
    output without the files later commits add to it (their store, which it would take for a class)."""
    if not folder.exists():
        shutil.copytree(root.resolve(), folder, copy_function=os.symlink, ignore=shutil.ignore_patterns(".*"))
    return folder


def whole(args) -> None:
    """Rows of whole-training numbers for this tree and the baseline commit, each thread count, one invocation."""
    with tempfile.TemporaryDirectory(prefix="train_bench_") as tmp_name:
        tmp = Path(tmp_name)
        root = Path(args.root) if args.root else generated_mels(tmp / "mels")
        trees = {"this tree": REPO}
        if args.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tmp / "baseline"),
                            args.baseline], check=True, capture_output=True)
            trees[f"baseline {args.baseline}"] = tmp / "baseline"
        rows = []
        try:
            for threads in args.threads:
                for name, tree in trees.items():
                    env = {**os.environ, "VITAUDIO_TREE": str(tree), "OMP_NUM_THREADS": str(threads)}
                    data = root if tree == REPO else mirror(root, tmp / "baseline-root")
                    done = subprocess.run([sys.executable, __file__, "--whole-child", str(data), "--epochs",
                                           str(args.epochs), "--device", args.device], env=env, check=True,
                                          capture_output=True, text=True)
                    rows.append((name, threads, json.loads(done.stdout.strip().splitlines()[-1])))
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "baseline")],
                               capture_output=True)
    data = args.root or "256 generated 30 s clips"
    print(f"# train.py's default recipe, one member, {args.epochs} epochs on {data} ({args.device}); epoch 1 left "
          f"out of the rates\n")
    header = ["tree", "threads", "epoch s", "samples/s", "x baseline", "data", "forward", "backward", "optimizer",
              "validation", "GFLOP/sample", "GFLOP/s (fwd+bwd)"]
    lines = [header, ["---"] * len(header)]
    base_rate = {}
    for name, threads, result in rows:
        epoch = statistics.mean(result["epoch_seconds"][1:] or result["epoch_seconds"])
        rate = result["n_train"] / epoch
        if name != "this tree":
            base_rate[threads] = rate
        cells = [name, threads, f"{epoch:.1f}", f"{rate:.1f}"]
        cells.append("")
        phases = result.get("phases")
        if phases:
            total = sum(result["epoch_seconds"])
            cells += [f"{100 * phases[k] / total:.0f}%" for k in ("data", "forward", "backward", "optimizer",
                                                                    "validation")]
            compute = phases["forward"] + phases["backward"]
            samples = result["n_train"] * len(result["epoch_seconds"])
            cells += [f"{result['flops_per_sample'] / 1e9:.2f}",
                      f"{result['flops_per_sample'] * samples / compute / 1e9:.1f}"]
        else:
            cells += ["–"] * 7
        lines.append(cells)
    for cells in lines[2:]:  # the ratio, once every baseline row is known
        if cells[0] == "this tree" and cells[1] in base_rate:
            cells[4] = f"{float(cells[3]) / base_rate[cells[1]]:.2f}x"
    print("\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=128, help="segment length (128 frames ~ 3 s)")
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (fp16 on GPUs without bf16)")
    parser.add_argument("--whole", action="store_true", help="profile whole training (see the module doc)")
    parser.add_argument("--root", help="--whole: melify output to train on (default: 256 generated 30 s clips)")
    parser.add_argument("--baseline", default="5b8c746", help="--whole: the commit to compare with ('' = none)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="--whole: torch thread counts")
    parser.add_argument("--epochs", type=int, default=3, help="--whole: epochs per run")
    parser.add_argument("--whole-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.whole_child:
        print(json.dumps(whole_child(Path(args.whole_child), args.epochs, args.device)))
        return
    if args.whole:
        whole(args)
        return
    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = vit_config(args.model, n_mels=128, n_classes=10, stem_channels=())  # the transformer alone (timm: no stem)
    models = {"vitaudio ViT": ViT(config).to(device), "timm VisionTransformer": timm_twin(config).to(device)}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    batch = torch.randn(args.batch_size, 1, 128, args.frames, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    clip_segments = torch.randn(10, 1, 128, args.frames, device=device)  # 30 s = 10 segments of 3 s
    for model in models.values():  # warm-up: allocator, kernels, thread pools
        time_training(model, batch, labels, 2, args.amp)
        time_inference(model, clip_segments, 2, args.amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_rates = {name: [] for name in models}
    infer_rates = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            train_rates[name].append(time_training(model, batch, labels, args.steps, args.amp))
            infer_rates[name].append(time_inference(model, clip_segments, max(4, args.steps), args.amp))

    ours, theirs = "vitaudio ViT", "timm VisionTransformer"
    print(f"# {args.model} preset on {device} ({torch.get_num_threads()} threads)"
          f"{', bf16 autocast' if args.amp else ''}; input (B, 1, 128, {args.frames}); median of {args.repeats}\n")
    print("| model | parameters | train samples/s | inference 30 s clips/s |")
    print("| --- | --- | --- | --- |")
    for name in models:
        print(f"| {name} | {params[name] / 1e6:.2f} M | {statistics.median(train_rates[name]):.1f} | "
              f"{statistics.median(infer_rates[name]):.1f} |")
    train_ratio = statistics.median(train_rates[ours]) / statistics.median(train_rates[theirs])
    infer_ratio = statistics.median(infer_rates[ours]) / statistics.median(infer_rates[theirs])
    print(f"| ratio ours / timm | | {train_ratio:.2f}x | {infer_ratio:.2f}x |")
    if device.type == "cuda":
        print(f"\nGPU memory peak: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    print(f"\ntarget >= 0.95x: train {'met' if train_ratio >= 0.95 else 'MISSED'}, "
          f"inference {'met' if infer_ratio >= 0.95 else 'MISSED'}")


if __name__ == "__main__":
    main()
