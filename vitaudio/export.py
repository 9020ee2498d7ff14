"""`python -m vitaudio.export CHECKPOINT --format onnx|torch-export|safetensors --out PATH`: a model for other runtimes.

The exported model maps log-mel dB segments `mel_db` (B, 1, n_mels, T) -> logits (B, n_classes), any batch size
and any number of frames T (dynamic axes); the checkpoint's standardisation is applied inside it. A model with a
clip-context token (the presets' default) takes a second input `context_db` (B, 2 * n_mels).

`FILE.json` (the sidecar) holds the class names, the task (with a tagger's pooling and thresholds), the
normalisation (for reference: already inside the model) and, under `recipe`, the whole way from audio to a clip's
scores, in numbers and in words; scoring a clip so is what `vitaudio.inference.pipeline` does:
1. audio: mono (the mean of the channels), float32, resampled to `sample_rate` (soxr, HQ); audio shorter than
   `n_fft` samples is refused as too short, and so is all-zero audio.
2. log-mel (`vitaudio.features.log_mel`, every `MelConfig` field in the sidecar): periodic Hann window of `n_fft`,
   `hop_length`, centred STFT padded with zeros, power spectrum, Slaney mel filters (librosa's defaults) from `fmin`
   to `fmax`, 10 * log10(max(power, 1e-10)), minus the clip's maximum, floored at -top_db: (n_mels, n_frames),
   n_frames = 1 + n_samples // hop_length.
3. a clip shorter than one segment (`segment.frames`) is padded at the end with its minimum dB value to one segment.
4. `context_db`: of the whole clip's dB mel (a short one padded as in 3), each band's mean over time, then each
   band's population std over time: 2 * n_mels values, the same row for every segment of the clip.
5. segments of `segment.frames` frames starting at 0, hop, 2 * hop, ... while start + frames <= n_frames, plus
   one last segment aligned to the clip's end (start n_frames - frames) when the tail is not covered.
6. clip scores: the mean of the segments' logits, then softmax over the classes. A multi-label tagger's sidecar
   says so (`"task": "multi_label"`) and holds its `pooling` (the clip's logits are the "mean" or the "max" of its
   segments') and `thresholds` (one per class): its scores are each class's sigmoid, and a clip is tagged with
   every class whose score reaches its threshold (`score >= threshold`).

`torch-export` writes a `torch.export` program (.pt2; TorchScript's successor, load with `torch.export.load`);
`onnx` writes one self-contained ONNX file for onnxruntime and needs the export extra:
`pip install "vitaudio[export]"` (in a clone of vitaudio: `pip install -e ".[export]"`).
After writing, the file is loaded back and compared with the checkpoint's model on random input of two lengths.

`safetensors` writes no graph but the weights, in the format model hubs share: `--out DIR` becomes a folder laid
out like a Hugging Face model repository, DIR/model.safetensors (the state dict) and DIR/config.json (the
checkpoint's header: model and mel config, classes, normalisation, segments), read with no pickle at all.
`pipeline`, predict, evaluate, serve and `train.py --init-from` take such a folder in place of a checkpoint.
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
from .checkpoint import load_checkpoint, save_pretrained
from .cli_help import DefaultsHelpFormatter
from .data import MULTI_LABEL, SINGLE_LABEL, SegmentRule, Standardize
from .errors import VitaudioError
from .features import MelConfig, band_stats
from .inference import AudioClassifier
from .model import ViT

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2", "safetensors": ""}  # the suffix of the default --out
PARITY_TOLERANCE = 1e-4  # max |logit difference| between the exported and the checkpoint's model
EXPORT_EXTRA_HINT = ('the onnx format needs the export extra: pip install "vitaudio[export]" '
                     '(in a clone of vitaudio: pip install -e ".[export]")')


class ExportError(VitaudioError, RuntimeError):
    """A checkpoint cannot be exported in the asked format here; the message says what to do."""


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


def recipe(mel_config: MelConfig, rule: SegmentRule, clip_context: bool, *, pooling: str = "mean",
           thresholds: list[float] | None = None) -> dict:
    """Audio -> a clip's scores, step by step, as `vitaudio.inference` does it: the sidecar's `recipe`; with
    `thresholds`, a tagger's (sigmoid scores, `pooling` of the segments' logits, tags)."""
    frames, hop = rule.frames, rule.hop_frames
    return {
        "audio": {
            "channels": "mono: the mean of the file's channels", "dtype": "float32",
            "sample_rate": mel_config.sample_rate, "resampler": "soxr, quality HQ",
            "min_samples": mel_config.n_fft, "shorter": "refused as too short",
            "all_zero": "refused: nothing to classify",
            "words": f"Decode to float32 samples, average the channels to mono, resample to "
                     f"{mel_config.sample_rate} Hz (soxr HQ); audio shorter than {mel_config.n_fft} samples "
                     f"(n_fft) is refused as too short.",
        },
        "log_mel": {
            "function": "vitaudio.features.log_mel", "mel_config": mel_config.to_dict(),
            "window": "hann", "window_periodic": True, "center": True, "center_pad": "zeros",
            "spectrum": "power", "mel_scale": "slaney", "mel_norm": "slaney", "amin": 1e-10,
            "db": "10 * log10(max(mel_power, amin)) - max over the whole clip", "floor_db": -mel_config.top_db,
            "shape": ["n_mels", "n_frames"], "n_frames": "1 + n_samples // hop_length",
            "words": f"Log-mel of the whole clip: centred STFT (periodic Hann window of n_fft={mel_config.n_fft}, "
                     f"hop_length={mel_config.hop_length}, edges padded with zeros), power spectrum, "
                     f"n_mels={mel_config.n_mels} Slaney mel filters (librosa.filters.mel defaults) from "
                     f"fmin={mel_config.fmin:g} Hz to fmax={mel_config.max_frequency:g} Hz, "
                     f"10 * log10(max(power, 1e-10)), minus the clip's maximum, floored at "
                     f"-top_db={-mel_config.top_db:g} dB: (n_mels, n_frames) dB, row 0 the lowest band, "
                     f"n_frames = 1 + n_samples // hop_length.",
        },
        "short_clip": {
            "pad_to_frames": frames, "pad_side": "end", "pad_value": "min_db_of_clip",
            "words": f"A clip of fewer than {frames} frames is padded at the end, in every band, with the "
                     f"clip's minimum dB value (over all bands and frames) to {frames} frames.",
        },
        "context_db": ({
            "of": "the whole clip's dB mel, after the short-clip padding",
            "values": ["mean over time of each band", "population std (ddof 0) over time of each band"],
            "shape": ["batch", 2 * mel_config.n_mels], "same_for_every_segment": True,
            "words": f"context_db: of the whole clip's dB mel (a short clip padded first), the mean over time of "
                     f"each of the {mel_config.n_mels} bands, then the population std over time of each band "
                     f"({2 * mel_config.n_mels} values); every segment of the clip gets this same row.",
        } if clip_context else None),
        "segments": {
            "frames": frames, "hop_frames": hop,
            "starts": "0, hop_frames, 2 * hop_frames, ... while start + frames <= n_frames; then "
                      "n_frames - frames if the last start + frames < n_frames",
            "last_aligned_to_end": True,
            "words": f"Segments of {frames} frames (mel_db input (S, 1, n_mels, {frames})) start at frames 0, "
                     f"{hop}, {2 * hop}, ... while start + {frames} <= n_frames; when that leaves the clip's tail "
                     f"uncovered, one more segment starts at n_frames - {frames}, aligned to the clip's end "
                     f"(it may overlap the one before). A padded short clip is one segment.",
        },
        "clip_score": clip_score(pooling, thresholds),
    }


def clip_score(pooling: str = "mean", thresholds: list[float] | None = None) -> dict:
    """The recipe's last step: segment logits -> a clip's scores (softmax), or a tagger's scores and tags."""
    if thresholds is None:
        return {"logits": "mean over the clip's segments", "scores": "softmax over the classes",
                "words": "The clip's logits are the mean of its segments' logits; its scores are their softmax."}
    return {"logits": f"{pooling} over the clip's segments", "scores": "sigmoid of each class's logit",
            "thresholds": thresholds, "tagged": "score >= thresholds[class]",
            "words": f"The clip's logits are the {pooling} of its segments' logits, class by class; each class's "
                     f"score is the sigmoid of its logit, and the clip is tagged with every class whose score "
                     f"reaches that class's threshold (score >= thresholds[class], in the order of classes)."}


def export_program(module: MelClassifier, example: tuple[Tensor, ...]) -> torch.export.ExportedProgram:
    """torch.export with dynamic batch and time axes."""
    if not hasattr(torch.export, "Dim") or not hasattr(torch.export.Dim, "DYNAMIC"):
        raise ExportError(f"exporting needs torch >= 2.6 (torch.export.Dim.DYNAMIC), this is {torch.__version__}")
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


def require_onnx() -> None:
    """Raise ExportError with the install command unless the export extra (onnx, onnxscript, onnxruntime) imports."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  torch's dynamo ONNX exporter needs it
    except ImportError as err:
        raise ExportError(EXPORT_EXTRA_HINT) from err


def write_onnx(program: torch.export.ExportedProgram, out: Path, input_names: list[str]):
    """Save as one ONNX file; return a runner (inputs as numpy arrays) -> logits numpy through onnxruntime."""
    require_onnx()
    import onnxruntime

    torch.onnx.export(program, f=str(out), input_names=input_names, output_names=["logits"], external_data=False,
                      verbose=False)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda *inputs: session.run(["logits"], dict(zip(input_names, inputs)))[0]


def write_torch_export(program: torch.export.ExportedProgram, out: Path):
    """Save a .pt2 program; return a runner that loads it back."""
    torch.export.save(program, str(out))
    loaded = torch.export.load(str(out)).module()
    return lambda *inputs: loaded(*map(torch.from_numpy, inputs)).detach().numpy()


def export_safetensors(checkpoint: Path, out: Path) -> dict:
    """Write the model directory `out` (model.safetensors + config.json) and read it back; return its summary
    {"files", "classes", "task", "n_tensors", "n_parameters", "identical"}: identical = every tensor read back equals
    the checkpoint's, bit for bit. config.json holds the whole header, a tagger's task, pooling and thresholds too."""
    source = load_checkpoint(checkpoint)
    save_pretrained(source, out)
    written = load_checkpoint(out)
    identical = (written["model"].keys() == source["model"].keys()
                 and all(torch.equal(written["model"][name], tensor) for name, tensor in source["model"].items()))
    return {"files": sorted(p.name for p in out.iterdir()), "classes": written["classes"],
            "task": written.get("task", SINGLE_LABEL),
            "n_tensors": len(written["model"]), "n_parameters": sum(t.numel() for t in written["model"].values()),
            "identical": identical}


def export(checkpoint: Path, out: Path, fmt: str, *, seed: int = 0) -> dict:
    """Write the exported model and its sidecar; return the sidecar (with the parity check's numbers). For
    `safetensors`, write the model directory `out` and return `export_safetensors`'s summary instead.

    Raises CheckpointError for a file that is not a usable checkpoint, ExportError when the format cannot be
    written here (the onnx format without the export extra installed, a torch without torch.export.Dim.DYNAMIC).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(sorted(FORMATS))}")
    if fmt == "safetensors":
        return export_safetensors(checkpoint, out)
    if fmt == "onnx":
        require_onnx()  # before the minutes of loading and tracing
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

    has_context = len(module.input_names) > 1
    thresholds = classifier.thresholds  # None for a single-label classifier
    sidecar = {
        "format": "vitaudio-export-1", "vitaudio_version": __version__, "export_format": fmt,
        "checkpoint": str(checkpoint), "model_file": out.name,
        "input": {"name": "mel_db", "shape": ["batch", 1, mel_config.n_mels, "frames"],
                  "min_frames": min_frames(program),
                  "meaning": "log-mel dB segments (recipe.log_mel, recipe.short_clip, recipe.segments); "
                             "standardisation is applied inside the model"},
        "inputs": module.input_names,
        "context_input": ({"name": "context_db", "shape": ["batch", 2 * mel_config.n_mels],
                           "meaning": "the clip's band stats of its dB mel (recipe.context_db)"}
                          if has_context else None),
        "output": {"name": "logits", "shape": ["batch", len(classifier.classes)]},
        "classes": classifier.classes, **task_fields(classifier), "mel_config": mel_config.to_dict(),
        "normalization": {**asdict(classifier.standardize), "applied_inside_model": True},
        "segment": rule.to_dict(),
        "clip_score": (f"{classifier.pooling} of the logits of the clip's segments, then each class's sigmoid; "
                       f"tagged where the score >= the class's threshold" if thresholds else
                       "mean of the logits of the clip's segments, then softmax"),
        "recipe": recipe(mel_config, rule, has_context, pooling=classifier.pooling, thresholds=thresholds),
        "parity": {"tolerance": PARITY_TOLERANCE, "checks": parity},
    }
    sidecar_path(out).write_text(json.dumps(sidecar, indent=1))
    return sidecar


def task_fields(classifier: AudioClassifier) -> dict:
    """What a runtime needs to turn logits into the same answer: {"task", "pooling", "thresholds"}, the
    checkpoint header's keys; a single-label classifier's task is "single_label", its thresholds None."""
    return {"task": classifier.task, "pooling": classifier.pooling,
            "thresholds": classifier.thresholds}


def sidecar_path(out: Path) -> Path:
    """model.onnx -> model.onnx.json."""
    return out.with_name(out.name + ".json")


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option's help ends with its default."""
    parser = argparse.ArgumentParser(prog="python -m vitaudio.export", description=__doc__.split("\n\n")[0],
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a train.py checkpoint, e.g. runs/<time>/best.pt, or a model "
                                                      "folder of model.safetensors and config.json")
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx",
                        help="onnx: one ONNX file for onnxruntime (needs the export extra); torch-export: a "
                             "torch.export .pt2 program; safetensors: a model folder of model.safetensors and "
                             "config.json, as model hubs share them (default: onnx)")
    parser.add_argument("--out", type=Path, help="output file; its sidecar is written next to it as FILE.json "
                                                 "(default: the checkpoint's path with .onnx or .pt2); for "
                                                 "safetensors, the model folder (default: the checkpoint's path "
                                                 "without its suffix)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or args.checkpoint.with_suffix(FORMATS[args.format])
    try:
        written = export(args.checkpoint, out, args.format)
    except (VitaudioError, RuntimeError) as err:  # CheckpointError, ExportError, ...; torch's own RuntimeErrors
        print(f"export: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if args.format == "safetensors":
        kind = "tags (a multi-label tagger)" if written["task"] == MULTI_LABEL else "classes"
        print(f"wrote {out}/ ({', '.join(written['files'])}): {written['n_tensors']} tensors, "
              f"{written['n_parameters'] / 1e6:.2f} M parameters, {len(written['classes'])} {kind}")
        if not written["identical"]:
            print("export: read-back check FAILED: the written weights differ from the checkpoint's", file=sys.stderr)
            return 1
        print("read-back check passed: every tensor equals the checkpoint's")
        return 0
    sidecar = written
    worst = max(check["max_abs_logit_diff"] for check in sidecar["parity"]["checks"])
    for check in sidecar["parity"]["checks"]:
        print(f"parity: input {tuple(check['shape'])}  max |Δlogit| {check['max_abs_logit_diff']:.2e}")
    tags = "; a tagger: its pooling and thresholds are in the sidecar" if sidecar["task"] == MULTI_LABEL else ""
    print(f"wrote {out} and {sidecar_path(out)} ({args.format}; input (batch, 1, {sidecar['mel_config']['n_mels']}, "
          f"frames >= {sidecar['input']['min_frames']}) dB mels -> logits over {len(sidecar['classes'])} classes"
          f"{tags})")
    if worst >= PARITY_TOLERANCE:
        print(f"export: parity check FAILED: max |Δlogit| {worst:.2e} >= {PARITY_TOLERANCE:.0e}", file=sys.stderr)
        return 1
    print(f"parity check passed: max |Δlogit| {worst:.2e} < {PARITY_TOLERANCE:.0e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
