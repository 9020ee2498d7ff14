"""Score audio with a trained checkpoint: `pipeline("runs/x/best.pt")("song.wav")` -> [{"label", "score"}, ...].
A model directory (model.safetensors + config.json, `vitaudio.save_pretrained`) serves in place of the checkpoint.

Every clip takes the evaluation's path, reusing its functions: decode (`audio.load_audio`) -> log-mel dB of the
whole clip (`features.log_mel`, the function melify made the training images with) -> standardise with the
training statistics (`data.Standardize`) -> cut into the checkpoint's segments (`data.cut_segments`), each scored
with the whole clip's context (`data.clip_context`) -> segment logits -> their mean (`scoring.pool_per_clip`).
Scores are the softmax of the clip logits over all classes. A multi-label tagger's scores are each class's sigmoid,
its clip logits the mean or the max of its segments' (as its checkpoint says), and each result says whether the
label passes its class's threshold: `{"label", "score", "tagged"}`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .audio import AUDIO_EXTENSIONS, AudioDecodeError, audio_info, load_audio, overflow_reason, resample, too_short
from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from .data import MULTI_LABEL, SINGLE_LABEL, SegmentRule, Standardize, clip_context, cut_segments, stack_clips
from .errors import VitaudioError
from .features import MelConfig, log_mel
from .model import ViT, ViTEnsemble
from .scoring import POOLINGS, pool_per_clip, resolve_device
from .tagging import apply_thresholds

# What one input may be: a path, the bytes of a file, samples at the model's rate, {"sampling_rate", "array"}.
AudioInput = str | Path | bytes | np.ndarray | dict
# A 2-D array's shorter axis is its channels when it is at most this long: (2, S) and (S, 2) are both stereo.
MAX_CHANNELS = 8


class InputError(VitaudioError, ValueError):
    """An input cannot be scored; the message names it and says what to pass instead."""


@dataclass
class PreparedClip:
    """One input, decoded and cut into model inputs."""

    name: str  # the path, or "input <i>" for bytes, arrays and dicts
    segments: Tensor  # (S, 1, n_mels, segment frames), standardised, on the model's device
    context: Tensor  # (2 * n_mels,): the whole clip's band stats, which every segment is scored with
    starts: list[int]  # first frame of each segment
    n_frames: int  # mel frames of the whole clip, before any padding
    duration: float  # seconds of audio


class AudioClassifier:
    """A ViT (or an ensemble of them) with everything its checkpoint says about features, normalisation, segments
    and class names."""

    def __init__(self, model: ViT | ViTEnsemble, *, classes: list[str], mel_config: MelConfig,
                 standardize: Standardize, segment_rule: SegmentRule, device: torch.device | str = "cpu",
                 batch_size: int = 32, thresholds: list[float] | None = None, pooling: str = "mean"):
        if len(classes) != model.config.n_classes:
            raise ValueError(f"{len(classes)} class names for a model with {model.config.n_classes} outputs")
        if thresholds is not None and len(thresholds) != len(classes):
            raise ValueError(f"{len(thresholds)} thresholds for {len(classes)} classes")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: choose from {', '.join(POOLINGS)}")
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]  # set: a tagger
        self.pooling = pooling  # of segment logits into a clip's
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.classes, self.mel_config = list(classes), mel_config
        self.standardize, self.segment_rule = standardize, segment_rule
        self.batch_size = batch_size  # segments per forward pass

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", batch_size: int = 32) -> AudioClassifier:
        """Load a `train.py` checkpoint or a model directory (never running pickled code); CheckpointError names
        the file otherwise."""
        path, device = Path(path), resolve_device(device)
        try:
            checkpoint = load_checkpoint(path)  # refuses foreign, truncated and code-carrying files
        except CheckpointError:
            if _is_audio(path):  # arguments swapped: the unpickler's own words would say "corrupt"
                raise CheckpointError(f"{path}: is an audio file, not a checkpoint: pass the checkpoint "
                                      f"(runs/x/best.pt) first, then the audio") from None
            raise
        mel_dict = checkpoint["mel_config"] if isinstance(checkpoint["mel_config"], dict) else {}
        missing = sorted({f.name for f in fields(MelConfig)} - set(mel_dict))
        if missing:
            raise CheckpointError(f"{path}: its mel_config lacks {', '.join(missing)}, so it does not say how its "
                                  f"features were made; retrain with the current train.py")
        try:
            mel_config = MelConfig(**checkpoint["mel_config"])
            model = model_from_checkpoint(checkpoint)
            normalization, segment = checkpoint["normalization"], checkpoint["segment"]
            standardize = Standardize(mean=float(normalization["mean"]), std=float(normalization["std"]))
            segment_rule = SegmentRule(frames=int(segment["frames"]), hop_frames=int(segment["hop_frames"]))
            if model.config.n_mels != mel_config.n_mels:
                raise ValueError(f"model n_mels {model.config.n_mels} != mel_config n_mels {mel_config.n_mels}")
            tagger = checkpoint.get("task") == MULTI_LABEL
            return cls(model, classes=checkpoint["classes"], mel_config=mel_config, standardize=standardize,
                       segment_rule=segment_rule, device=device, batch_size=batch_size,
                       thresholds=checkpoint["thresholds"] if tagger else None,
                       pooling=checkpoint.get("pooling", "mean"))
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            reason = " ".join((str(err).strip() or repr(err)).split())[:300]  # load_state_dict's is many lines
            message = f"{path}: not a usable vitaudio checkpoint ({type(err).__name__}: {reason})"
            raise CheckpointError(message) from None

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str = "auto", batch_size: int = 32) -> AudioClassifier:
        """Load a model directory written by `vitaudio.save_pretrained` (model.safetensors + config.json); a
        checkpoint file works too: both go through `checkpoint.load_checkpoint`."""
        return cls.from_checkpoint(model_dir, device=device, batch_size=batch_size)

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @property
    def multi_label(self) -> bool:
        """Whether this is a tagger: sigmoid scores, any number of labels per clip."""
        return self.thresholds is not None

    @property
    def task(self) -> str:
        """"multi_label" for a tagger, else "single_label"."""
        return MULTI_LABEL if self.multi_label else SINGLE_LABEL

    def __repr__(self) -> str:
        members = f" in {len(self.model.members)} members" if isinstance(self.model, ViTEnsemble) else ""
        return (f"AudioClassifier({len(self.classes)} {'tags' if self.multi_label else 'classes'}, "
                f"{self.model.num_params() / 1e6:.2f} M parameters"
                f"{members}, {self.segment_rule.frames / self.mel_config.frames_per_second:.2f} s segments, "
                f"{self.device})")

    def __call__(self, inputs: AudioInput | list[AudioInput], top_k: int | None = 5, *, batch_size: int | None = None,
                 return_segments: bool = False):
        """Top-k [{"label", "score"}] of one input, or a list of them for a list of inputs; `top_k` None: every
        class. A tagger gives [{"label", "score", "tagged"}], every label that passes its threshold and the others
        up to k, sorted by score.

        With return_segments, each result is {"predictions": [...], "segments": [{"start", "end", "predictions"}]}
        (times in seconds): a timeline of what each segment alone predicts (a tagger's: sound events, at the
        resolution of a segment).
        """
        results = list(self.stream(_as_list(inputs), top_k, batch_size=batch_size, return_segments=return_segments))
        return results if isinstance(inputs, (list, tuple)) else results[0]

    def stream(self, inputs: Iterable[AudioInput], top_k: int | None = 5, *, batch_size: int | None = None,
               return_segments: bool = False, skip_errors: bool = False) -> Iterator:
        """Results one by one, in input order, scored in batches; with skip_errors an input that cannot be
        decoded yields its AudioDecodeError / InputError instead of stopping the run."""
        k = len(self.classes) if top_k is None else min(top_k, len(self.classes))
        if k < 1:
            raise ValueError(f"top_k must be >= 1 or None (all classes), got {top_k}")
        for item in self._scored(inputs, self.model, batch_size, skip_errors, self.pooling):
            if isinstance(item, Exception):
                yield item
                continue
            clip, clip_logits, segment_logits = item
            predictions = self._ranked(clip_logits, k)
            if return_segments:
                yield {"predictions": predictions, "segments": self._timeline(clip, segment_logits, k)}
            else:
                yield predictions

    def logits(self, inputs: AudioInput | list[AudioInput], *, batch_size: int | None = None) -> np.ndarray:
        """Clip logits: (n_classes,) for one input, (N, n_classes) for a list."""
        return self._clip_outputs(inputs, self.model, batch_size, self.pooling)

    def embed(self, inputs: AudioInput | list[AudioInput], *, batch_size: int | None = None) -> np.ndarray:
        """Clip embeddings, the mean of the segments' pooled `forward_features`: (D,) or (N, D), D =
        `model.embed_dim` (an ensemble's members' embeddings side by side).

        A single ViT's classifier is linear on them: clip logits = model.head.fc(clip embedding).
        """
        def pooled(segments: Tensor, contexts: Tensor) -> Tensor:  # (S, 1, M, L), (S, 2M) -> (S, D)
            return self.model.forward_head(self.model.forward_features(segments, contexts), pre_logits=True)

        return self._clip_outputs(inputs, pooled, batch_size)

    def mel_db(self, item: AudioInput) -> np.ndarray:
        """The features of one input: (n_mels, n_frames) dB, as melify stores them (before PNG quantisation)."""
        name = _name(item, 0)
        return self._mel_db(self._samples(item, name), name)[0].cpu().numpy()

    def prepare(self, item: AudioInput | PreparedClip, index: int = 0) -> PreparedClip:
        """Decode one input and cut it into standardised segments (no model call); a PreparedClip passes as is,
        so every scoring method also takes `prepare_mel`'s clips."""
        if isinstance(item, PreparedClip):
            return item
        name = _name(item, index)
        samples = self._samples(item, name)
        return self.prepare_mel(self._mel_db(samples, name)[0], name, duration=len(samples) / self.sample_rate)

    def prepare_mel(self, mel_db: np.ndarray | Tensor, name: str = "mel", *,
                    duration: float | None = None) -> PreparedClip:
        """A clip's dB mel (n_mels, n_frames), as `mel_db` returns it and melify stores it, cut into standardised
        segments (no model call); duration defaults to the frames' span."""
        mel = torch.as_tensor(mel_db, dtype=torch.float32, device=self.device)
        if mel.ndim != 2 or mel.shape[0] != self.mel_config.n_mels:
            raise InputError(f"{name}: expected a dB mel (n_mels={self.mel_config.n_mels}, n_frames), "
                             f"got shape {tuple(mel.shape)}")
        if not torch.isfinite(mel).all():
            raise InputError(f"{name}: the dB mel holds NaN or infinite values")
        mel = self.standardize(mel.unsqueeze(0))  # (M, T) -> (1, M, T)
        n_frames = mel.shape[-1]
        return PreparedClip(name=name, segments=cut_segments(mel, self.segment_rule),
                            context=clip_context(mel, self.segment_rule), starts=self.segment_rule.starts(n_frames),
                            n_frames=n_frames,
                            duration=n_frames / self.mel_config.frames_per_second if duration is None else duration)

    def _samples(self, item: AudioInput, name: str) -> np.ndarray:
        """Any accepted input -> (n_samples,) float32 at the model's sample rate."""
        if isinstance(item, (str, Path)):
            return load_audio(item, self.sample_rate)
        if isinstance(item, (bytes, bytearray, memoryview)):
            try:
                return load_audio(bytes(item), self.sample_rate)
            except AudioDecodeError as err:  # it says "<audio bytes>": say which input
                raise AudioDecodeError(name, err.reason) from None
        if isinstance(item, np.ndarray):
            return _mono(item, name)
        if isinstance(item, dict):
            array = item.get("array", item.get("raw"))
            if array is None or "sampling_rate" not in item:
                raise InputError(f"{name}: a dict input needs 'sampling_rate' and 'array' (or 'raw'); "
                                 f"it has {sorted(item)}")
            return resample(_mono(np.asarray(array), name), int(item["sampling_rate"]), self.sample_rate)
        raise InputError(f"{name}: cannot score a {type(item).__name__}; pass a path, the bytes of an audio file, "
                         f"a numpy array of samples at {self.sample_rate} Hz or {{'sampling_rate': ..., 'array': ...}}")

    def _mel_db(self, samples: np.ndarray, name: str) -> Tensor:
        """(n_samples,) -> (1, n_mels, n_frames) dB on the model's device."""
        short = too_short(len(samples), self.mel_config.n_fft, self.sample_rate)  # melify's rule: never trained on
        if short:
            raise InputError(f"{name}: {short}; the model cannot classify it")
        if not samples.any():
            raise InputError(f"{name}: silent: every sample is zero, there is nothing to classify")
        mel_db = log_mel(torch.from_numpy(samples).to(self.device), self.mel_config)
        if not torch.isfinite(mel_db).all():
            raise InputError(f"{name}: {overflow_reason(samples)}")
        return mel_db.unsqueeze(0)  # (M, T) -> (1, M, T)

    def _scored(self, inputs: Iterable[AudioInput], head: Callable[[Tensor, Tensor], Tensor], batch_size: int | None,
                skip_errors: bool, pooling: str = "mean") -> Iterator:
        """Yield (clip, clip output (K,), segment outputs (S, K)) per input, in order, scoring clips in batches
        of about `batch_size` segments, a clip's output its segments' pooled; a failed input yields its exception
        when skip_errors."""
        batch_size = batch_size or self.batch_size
        pending, n_segments = [], 0
        for index, item in enumerate(inputs):
            try:
                clip = self.prepare(item, index)
                n_segments += len(clip.segments)
            except (AudioDecodeError, InputError) as err:
                if not skip_errors:
                    raise
                clip = err
            pending.append(clip)
            if n_segments >= batch_size:
                yield from self._score_batch(pending, head, batch_size, skip_errors, pooling)
                pending, n_segments = [], 0
        yield from self._score_batch(pending, head, batch_size, skip_errors, pooling)

    @torch.inference_mode()
    def _score_batch(self, pending: list, head: Callable[[Tensor, Tensor], Tensor], batch_size: int,
                     skip_errors: bool, pooling: str) -> Iterator:
        """Score the prepared clips of `pending` together; a clip whose outputs are not finite is an InputError
        (NaN scores are no answer, and not JSON)."""
        clips = [clip for clip in pending if isinstance(clip, PreparedClip)]
        if clips:
            segments, contexts, clip_index = stack_clips([clip.segments for clip in clips],
                                                         [clip.context for clip in clips])  # (sum S_i, ...)
            segment_outputs = torch.cat([head(chunk, context).float() for chunk, context in
                                         zip(segments.split(batch_size), contexts.split(batch_size))])  # (sum S_i, K)
            clip_outputs = pool_per_clip(segment_outputs, clip_index, len(clips), pooling)  # (n_clips, K), as
            # evaluation pools them
            per_segment = segment_outputs.cpu().split([len(clip.segments) for clip in clips])
            scored = iter(zip(clips, clip_outputs.cpu(), per_segment))
        for clip in pending:
            if isinstance(clip, Exception):
                yield clip
                continue
            prepared, clip_output, clip_segment_outputs = next(scored)
            if torch.isfinite(clip_output).all() and torch.isfinite(clip_segment_outputs).all():
                yield prepared, clip_output, clip_segment_outputs
                continue
            error = InputError(f"{clip.name}: the model's outputs for it are not finite (NaN or infinite) though its "
                               f"features are: the checkpoint's weights may hold NaN; use an earlier checkpoint")
            if not skip_errors:
                raise error
            yield error

    def _clip_outputs(self, inputs, head: Callable[[Tensor, Tensor], Tensor], batch_size: int | None,
                      pooling: str = "mean") -> np.ndarray:
        outputs = np.stack([clip_output.numpy() for _, clip_output, _ in
                            self._scored(_as_list(inputs), head, batch_size, skip_errors=False, pooling=pooling)])
        return outputs if isinstance(inputs, (list, tuple)) else outputs[0]

    def _timeline(self, clip: PreparedClip, segment_logits: Tensor, k: int) -> list[dict[str, Any]]:
        """Segment logits (S, n_classes) -> [{"start", "end" (seconds, ms precision), "predictions"}]."""
        fps, frames = self.mel_config.frames_per_second, self.segment_rule.frames
        return [{"start": round(start / fps, 3), "end": round(min((start + frames) / fps, clip.duration), 3),
                 "predictions": self._ranked(logits, k)} for start, logits in zip(clip.starts, segment_logits)]

    def _ranked(self, logits: Tensor, k: int) -> list[dict[str, Any]]:
        """(n_classes,) logits -> the k most probable [{"label", "score"}], softmax over all classes; a tagger's
        [{"label", "score", "tagged"}]: sigmoid scores, every label that passes its threshold and the others up to
        k, sorted by score."""
        if not self.multi_label:
            scores, indices = logits.softmax(dim=0).topk(k)
            return [{"label": self.classes[i], "score": float(s)} for s, i in zip(scores.tolist(), indices.tolist())]
        scores = logits.sigmoid().tolist()
        ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
        tagged = apply_thresholds([scores], self.thresholds)[0].tolist()  # the reports' rule: score >= threshold
        shown = [i for rank, i in enumerate(ranked) if rank < k or tagged[i]]
        return [{"label": self.classes[i], "score": scores[i], "tagged": tagged[i]} for i in shown]


def pipeline(checkpoint: str | Path, device: str = "auto", batch_size: int = 32) -> AudioClassifier:
    """`pipeline("runs/x/best.pt")` (or a model directory) -> an AudioClassifier; device "auto" = cuda when present,
    else cpu."""
    return AudioClassifier.from_checkpoint(checkpoint, device=device, batch_size=batch_size)


def _name(item: AudioInput, index: int) -> str:
    """How errors and results name an input: its path, else its position."""
    if isinstance(item, (str, Path)):
        return str(item)
    return f"input {index}" + (" (bytes)" if isinstance(item, (bytes, bytearray, memoryview)) else "")


def _is_audio(path: Path) -> bool:
    """True for a file that is audio by its extension or by what libsndfile reads in it."""
    return path.is_file() and (path.suffix.lower() in AUDIO_EXTENSIONS or audio_info(path) is not None)


def _as_list(inputs) -> list:
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _mono(array: np.ndarray, name: str) -> np.ndarray:
    """Check finite samples, mono (n_samples,) or multichannel in either layout -> (n_samples,) float32.

    (channels, samples), as torchaudio and librosa give them, and (samples, channels), as soundfile gives them,
    are told apart by the channel axis being the shorter one and at most MAX_CHANNELS long; the channels are
    averaged, as `audio.load_audio` does for files."""
    if array.ndim == 2 and min(array.shape) <= MAX_CHANNELS and array.shape[0] != array.shape[1]:
        channel_axis = int(np.argmin(array.shape))
        array = array.astype(np.float32).mean(axis=channel_axis)  # (C, S) or (S, C) -> (S,)
    elif array.ndim != 1:
        raise InputError(f"{name}: expected mono samples (n_samples,) or up to {MAX_CHANNELS} channels as "
                         f"(channels, samples) or (samples, channels), got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"{name}: the array holds no samples")
    samples = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise InputError(f"{name}: the array holds NaN or infinite samples")
    return samples
