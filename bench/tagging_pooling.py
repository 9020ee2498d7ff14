"""How a tagger's clip scores should pool its segments' logits: mean against max, measured on a trained run.

    python bench/tagging_pooling.py runs/demo_tags        # a run of `train.py --root data/demo_tags/manifest.csv`

Training picks the pooling of higher validation mAP and stores it in best.pt; this scores the run's validation and
test splits both ways, for every member and for the ensemble, from the same weights in the same process, and
prints the mAP and the chance level (the mean label prevalence of the split: what a tagger scoring at random
reaches in expectation).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vitaudio.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from vitaudio.data import MelClips, segment_loader  # noqa: E402
from vitaudio.engine import evaluate  # noqa: E402
from vitaudio.run import saved_run_data  # noqa: E402
from vitaudio.rundir import member_dirs  # noqa: E402
from vitaudio.scoring import POOLINGS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a tagger's run directory (its best.pt and split.json)")
    args = parser.parse_args()
    data = saved_run_data(args.run_dir)
    if not data.multi_label:
        sys.exit(f"{args.run_dir} is not a multi-label run")
    loaders = {split: segment_loader(MelClips(data.mel_root, data.split[split], multi_label=True), data.rule,
                                     data.standardize, batch_size=8) for split in ("val", "test")}
    checkpoint = load_checkpoint(args.run_dir / "best.pt")
    members = int(checkpoint.get("members", 1))
    models = {"ensemble" if members > 1 else "model": model_from_checkpoint(checkpoint)}
    if members > 1:
        for member, member_dir in enumerate(member_dirs(args.run_dir, members)):
            models[f"member {member}"] = model_from_checkpoint(load_checkpoint(member_dir / "best.pt"))
    print(f"{args.run_dir}: {len(data.classes)} classes; stored pooling {checkpoint['pooling']}")
    print("| model | split | clips | chance | " + " | ".join(f"mAP {p}" for p in POOLINGS) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in POOLINGS) + " |")
    for name, model in models.items():
        for split, loader in loaders.items():
            results = {p: evaluate(model, loader, device=torch.device("cpu"), pooling=p) for p in POOLINGS}
            labels = results["mean"].labels
            chance = float(labels.mean())  # the mean prevalence over clips and classes
            print(f"| {name} | {split} | {len(labels)} | {chance:.3f} | " +
                  " | ".join(f"{results[p].map:.3f}" for p in POOLINGS) + " |")


if __name__ == "__main__":
    main()
