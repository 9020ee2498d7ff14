"""Training and inference speed of vitaudio's ViT against timm's VisionTransformer of identical dimensions.

    python bench/train_bench.py                      # tiny preset, CPU, batch 32, 3 s mel segments
    python bench/train_bench.py --model small --device cuda --amp

Both models see the same input (B, 1, n_mels, frames) and have the same width, depth, heads, MLP ratio, patch
size, mean pooling and stochastic depth; each measurement is the median of `--repeats` timed runs, the two
models alternating within one process so that machine noise hits both alike. timm is in the `bench` extra.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=128, help="segment length (128 frames ~ 3 s)")
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    args = parser.parse_args()
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
