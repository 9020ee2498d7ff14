"""`vitaudio COMMAND [ARGS]`: one command for every stage of the data flow, each the same as its module's own
(`vitaudio melify ...` is `python -m vitaudio.melify ...`, `vitaudio train ...` is `python train.py ...`).

One command with subcommands rather than one per stage: the stages' natural names (train, predict, serve) are too
generic to put on a user's PATH, and `vitaudio --help` lists the whole tool in one place.
"""
from __future__ import annotations

import importlib
import sys

from . import __version__

COMMANDS = {  # name -> (module, what it does)
    "demo": ("demo", "make the synthetic demo set (6 music-like styles) in a folder"),
    "melify": ("melify", "convert class folders of audio into 16-bit log-mel PNGs"),
    "train": ("train", "train a spectrogram ViT and test it on held-out clips"),
    "evaluate": ("evaluate", "score a checkpoint on a folder of clips, or one split of a split file"),
    "predict": ("predict", "classify audio files and folders"),
    "export": ("export", "export a checkpoint to ONNX or torch.export"),
    "serve": ("serve", "serve a checkpoint on a local web page and JSON API"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return ("usage: vitaudio COMMAND [ARGS ...]   (vitaudio COMMAND --help for its options)\n\n"
            "Spectrogram Vision Transformers for audio classification.\n\ncommands:\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"vitaudio {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"vitaudio: error: unknown command {argv[0]!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    module = importlib.import_module(f"vitaudio.{COMMANDS[argv[0]][0]}")
    return module.main(argv[1:]) or 0
