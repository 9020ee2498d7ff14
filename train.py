"""Train a spectrogram ViT: `python train.py --root data/gtzan` (no --root: the built-in demo set).

A thin entry point; the same command is `python -m vitaudio.train` for installed users. See vitaudio/train.py.
"""
import sys

from vitaudio.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
