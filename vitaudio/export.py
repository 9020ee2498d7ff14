"""`python -m vitaudio.export CHECKPOINT --format onnx|torch-export --out FILE`: a model for other runtimes.

The exported model maps log-mel dB segments `mel_db` (B, 1, n_mels, T) -> logits (B, n_classes), any batch size
and any number of frames T (dynamic axes); the checkpoint's standardisation is applied inside it, so it takes the
dB mels that `vitaudio.features.log_mel` makes. A model with a clip-context token (the presets' default) takes a
second input `context_db` (B, 2 * n_mels): per mel band, the mean over time, then the standard deviation over
time (population), of the whole clip's dB mel (padded like a short segment), the same row for every segment of a
clip. `FILE.json` (the sidecar) holds the class names, mel config, normalisation (for reference: already inside
the model), segment rule and inputs. To score a clip as `vitaudio.inference` does: log_mel of the whole clip, its
context_db, cut it into segments of `segment.frames` frames every `segment.hop_frames` (the last one aligned to
the clip's end, a short clip padded with its minimum), run them, average the logits.

`torch-export` writes a `torch.export` program (.pt2; TorchScript's successor, load with `torch.export.load`);
`onnx` writes one self-contained ONNX file for onnxruntime and needs `pip install 'vitaudio[export]'`.
After writing, the file is loaded back and compared with the checkpoint's model on random input of two lengths.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from . import __version__
from .checkpoint import CheckpointError
from .data import Standardize
from .inference import AudioClassifier
from .model import ViT, band_stats

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}
PARITY_TOLERANCE = 1e-4  # max |logit difference| between the exported and the checkpoint's model


class MelClassifier(nn.Module):
    """The exported graph: log-mel dB (B, 1, n_mels, T) [and the clip's dB band stats (B, 2 * n_mels)] ->
    standardise -> ViT -> logits (B, n_classes)."""

    def __init__(self, model: ViT, standardize: Standardize):
        super().__init__()
        self.model, self.mean, self.std = model, standardize.mean, standardize.std
        self.input_names = ["mel_db", "context_db"] if model.config.clip_context else ["mel_db"]

    def forward(self, mel_db: Tensor, context_db: Tensor | None = None) -> Tensor:
        context = None
        if context_db is not None:  # band stats of the standardised clip: means shift and scale, stds only scale
            n_mels = self.model.config.n_mels
            context = torch.cat([(context_db[:, :n_mels] - self.mean) / self.std, context_db[:, n_mels:] / self.std], 1)
        return self.model((mel_db - self.mean) / self.std, context)


def export_program(module: MelClassifier, example: tuple[Tensor, ...]) -> torch.export.ExportedProgram:
    """torch.export with dynamic batch and time axes."""
    if not hasattr(torch.export, "Dim") or not hasattr(torch.export.Dim, "DYNAMIC"):
        raise RuntimeError(f"exporting needs torch >= 2.6 (torch.export.Dim.DYNAMIC), this is {torch.__version__}")
    batch, frames = torch.export.Dim.DYNAMIC, torch.export.Dim.DYNAMIC
    dynamic = {"mel_db": {0: batch, 3: frames}, "context_db": {0: batch}}
    return torch.export.export(module, example, dynamic_shapes={name: dynamic[name] for name in module.input_names})


def min_frames(program: torch.export.ExportedProgram) -> int:
    """The fewest frames the exported program accepts (torch.export may guard on more than one time patch)."""
    mel_node = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == "mel_db")
    frames = mel_node.meta["val"].shape[3]
    if isinstance(frames, int):
        return frames
    return int(program.range_constraints[frames.node.expr].lower)


def write_onnx(program: torch.export.ExportedProgram, out: Path, input_names: list[str]):
    """Save as one ONNX file; return a runner (inputs as numpy arrays) -> logits numpy through onnxruntime."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  the dynamo exporter needs it; imported here to fail early and clearly
    except ImportError as err:
        raise RuntimeError(f"ONNX export needs the export extra: pip install 'vitaudio[export]' ({err})") from None
    torch.onnx.export(program, f=str(out), input_names=input_names, output_names=["logits"], external_data=False,
                      verbose=False)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda *inputs: session.run(["logits"], dict(zip(input_names, inputs)))[0]


def write_torch_export(program: torch.export.ExportedProgram, out: Path):
    """Save a .pt2 program; return a runner that loads it back."""
    torch.export.save(program, str(out))
    loaded = torch.export.load(str(out)).module()
    return lambda *inputs: loaded(*map(torch.from_numpy, inputs)).detach().numpy()


def export(checkpoint: Path, out: Path, fmt: str, *, seed: int = 0) -> dict:
    """Write the exported model and its sidecar; return the sidecar (with the parity check's numbers)."""
    classifier = AudioClassifier.from_checkpoint(checkpoint, device="cpu")
    module = MelClassifier(classifier.model, classifier.standardize).eval()
    rule, mel_config = classifier.segment_rule, classifier.mel_config
    generator = torch.Generator().manual_seed(seed)

    def random_inputs(batch: int, frames: int) -> tuple[Tensor, ...]:  # dB in [-top_db, 0], as log_mel makes them
        mel_db = -mel_config.top_db * torch.rand(batch, 1, mel_config.n_mels, frames, generator=generator)
        clip_db = -mel_config.top_db * torch.rand(batch, 1, mel_config.n_mels, 3 * frames, generator=generator)
        return (mel_db, band_stats(clip_db))[:len(module.input_names)]

    program = export_program(module, random_inputs(2, rule.frames))
    out.parent.mkdir(parents=True, exist_ok=True)
    run = (write_onnx(program, out, module.input_names) if fmt == "onnx" else write_torch_export(program, out))

    parity = []
    for batch, frames in ((2, rule.frames), (1, 2 * rule.frames + 13)):  # two lengths: the time axis is dynamic
        inputs = random_inputs(batch, frames)
        with torch.inference_mode():
            expected = module(*inputs).numpy()
        difference = float(np.abs(run(*(x.numpy() for x in inputs)) - expected).max())
        parity.append({"shape": list(inputs[0].shape), "max_abs_logit_diff": difference})

    sidecar = {
        "format": "vitaudio-export-1", "vitaudio_version": __version__, "export_format": fmt,
        "checkpoint": str(checkpoint), "model_file": out.name,
        "input": {"name": "mel_db", "shape": ["batch", 1, mel_config.n_mels, "frames"],
                  "min_frames": min_frames(program),
                  "meaning": "log-mel dB from vitaudio.features.log_mel (relative to the clip's maximum, "
                             "floored at -top_db); standardisation is applied inside the model"},
        "inputs": module.input_names,
        "context_input": ({"name": "context_db", "shape": ["batch", 2 * mel_config.n_mels],
                           "meaning": "per mel band of the whole clip's dB mel (padded to one segment if shorter): "
                                      "the mean over time, then the population std over time; the same row for "
                                      "every segment of the clip"} if len(module.input_names) > 1 else None),
        "output": {"name": "logits", "shape": ["batch", len(classifier.classes)]},
        "classes": classifier.classes, "mel_config": mel_config.to_dict(),
        "normalization": {**asdict(classifier.standardize), "applied_inside_model": True},
        "segment": rule.to_dict(), "clip_score": "mean of the logits of the clip's segments, then softmax",
        "parity": {"tolerance": PARITY_TOLERANCE, "checks": parity},
    }
    sidecar_path(out).write_text(json.dumps(sidecar, indent=1))
    return sidecar


def sidecar_path(out: Path) -> Path:
    """model.onnx -> model.onnx.json."""
    return out.with_name(out.name + ".json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitaudio.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a train.py checkpoint, e.g. runs/<time>/best.pt")
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx")
    parser.add_argument("--out", type=Path, help="output file (default: the checkpoint's name with .onnx / .pt2)")
    args = parser.parse_args(argv)
    out = args.out or args.checkpoint.with_suffix(FORMATS[args.format])
    try:
        sidecar = export(args.checkpoint, out, args.format)
    except (CheckpointError, RuntimeError) as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    worst = max(check["max_abs_logit_diff"] for check in sidecar["parity"]["checks"])
    for check in sidecar["parity"]["checks"]:
        print(f"parity: input {tuple(check['shape'])}  max |Δlogit| {check['max_abs_logit_diff']:.2e}")
    print(f"wrote {out} and {sidecar_path(out)} ({args.format}; input (batch, 1, {sidecar['mel_config']['n_mels']}, "
          f"frames >= {sidecar['input']['min_frames']}) dB mels -> logits over {len(sidecar['classes'])} classes)")
    if worst >= PARITY_TOLERANCE:
        print(f"export: parity check FAILED: max |Δlogit| {worst:.2e} >= {PARITY_TOLERANCE:.0e}", file=sys.stderr)
        return 1
    print(f"parity check passed: max |Δlogit| {worst:.2e} < {PARITY_TOLERANCE:.0e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
