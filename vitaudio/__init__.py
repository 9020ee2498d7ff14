"""vitaudio: spectrogram Vision Transformers for audio classification.

The public API is re-exported lazily (PEP 562): `import vitaudio` is instant, and `python -m vitaudio.melify`
never pays for the model code.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AudioDecodeError": "audio", "load_audio": "audio",
    "MelConfig": "features", "log_mel": "features", "read_mel_png": "features", "write_mel_png": "features",
    "melify": "melify",
    "make_demo_dataset": "demo",
    "ViT": "model", "ViTConfig": "model", "vit_config": "model",
    "save_pretrained": "checkpoint",
    "pipeline": "inference", "AudioClassifier": "inference",
    "load_dataset": "explore", "load_run": "explore", "attention_rollout": "explain",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
