"""Melify output as torchvision datasets: random crops and SpecAugment for training, whole clips cut into
segments for evaluation.

Every item starts as the clip's dB mel `(1, n_mels, n_frames)` (index 0 = lowest band), read through melify's
exact inverse. Training items are random time crops of one segment; evaluation items are all the segments
that cover the clip, and a clip's prediction is the mean of its segment logits (see `scoring.clip_logits_of`). Each
comes with its clip's context, `features.band_stats` of the standardised clip: of the whole clip for evaluation, of
a random stretch of it (at least one segment long) for training, so that the model learns to use partial context.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.datasets import DatasetFolder

from .features import MelConfig, band_stats, png_to_db, read_mel_png, read_png16
from .manifest import LABELS_CSV, Manifest, read_manifest
from .melify import MANIFEST, LayoutError, subfolders
from .splits import clip_key
from .store import MelStore

NO_LABEL = -1  # the label of an unlabelled clip (every entry of its target, multi-label): only a teacher teaches
SINGLE_LABEL, MULTI_LABEL = "single_label", "multi_label"  # a model's task: one class per clip, or any number of
# labels (a checkpoint says "task" only for the second)


@dataclass(frozen=True)
class SegmentRule:
    """How a clip is cut into model inputs; stored in the checkpoint so inference cuts clips the same way."""

    frames: int  # frames per segment (training crop length)
    hop_frames: int  # frames between the starts of consecutive evaluation segments
    # The last segment is aligned to the clip's end, so the tail is covered (it may overlap the one before);
    # a clip shorter than one segment becomes one segment padded at the end with its quietest value.

    def starts(self, n_frames: int) -> list[int]:
        """First frame of each segment covering a clip of `n_frames` frames."""
        if n_frames <= self.frames:
            return [0]
        starts = list(range(0, n_frames - self.frames + 1, self.hop_frames))
        if starts[-1] + self.frames < n_frames:
            starts.append(n_frames - self.frames)
        return starts

    def to_dict(self) -> dict:
        return asdict(self)


def pad_frames(mel_db: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(..., M, T) -> (..., M, max(T, n_frames)), padding the end with the clip's lowest dB value."""
    missing = n_frames - mel_db.shape[-1]
    if missing <= 0:
        return mel_db
    return torch.nn.functional.pad(mel_db, (0, missing), value=float(mel_db.min()))


def cut_segments(mel_db: torch.Tensor, rule: SegmentRule) -> torch.Tensor:
    """(1, M, T) -> (S, 1, M, rule.frames): the segments that cover the whole clip."""
    mel_db = pad_frames(mel_db, rule.frames)
    return torch.stack([mel_db[..., s:s + rule.frames] for s in rule.starts(mel_db.shape[-1])])


@dataclass(frozen=True)
class Standardize:
    """(x - mean) / std with the train split's statistics; stored in the checkpoint."""

    mean: float
    std: float

    def __call__(self, mel_db: torch.Tensor) -> torch.Tensor:
        return (mel_db - self.mean) / self.std


class RandomCrop:
    """(1, M, T) -> (1, M, frames): a random window in time (the clip padded first if it is shorter)."""

    def __init__(self, frames: int):
        self.frames = frames

    def __call__(self, mel_db: torch.Tensor) -> torch.Tensor:
        mel_db = pad_frames(mel_db, self.frames)
        start = int(torch.randint(0, mel_db.shape[-1] - self.frames + 1, ()))
        return mel_db[..., start:start + self.frames]


class SpecAugment:
    """Frequency and time masking (Park et al., 2019) on a standardised (1, M, T) mel; masks are set to 0 = mean."""

    def __init__(self, freq_masks: int = 2, freq_width: float = 0.15, time_masks: int = 2, time_width: float = 0.15):
        self.freq_masks, self.freq_width = freq_masks, freq_width  # widths: at most this share of the axis
        self.time_masks, self.time_width = time_masks, time_width

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        mel = mel.clone()
        for axis, count, width in ((-2, self.freq_masks, self.freq_width), (-1, self.time_masks, self.time_width)):
            size = mel.shape[axis]
            for _ in range(count):
                span = int(torch.randint(0, int(size * width) + 1, ()))
                start = int(torch.randint(0, size - span + 1, ()))
                mel.narrow(axis, start, span).zero_()
        return mel


class CropWithContext:
    """Training items: dB mel (1, M, T) -> (a random crop (1, M, frames) (a clip no longer than that: rolled in time
    by up to a quarter of it, as a one-second word is), raised or lowered by up to `gain_db` dB, standardised,
    shifted along the mel axis by up to `band_shift` x M bands and stretched in time by a factor in
    [1 / (1 + time_stretch), 1 + time_stretch] (pitch and tempo, as seen in a mel image), its mel range narrowed at
    each end by up to `band_crop` x M bands and stretched back to M (a random fmin and fmax, as seen in a mel
    image), then masked by SpecAugment; the context (2M,): band stats of a random stretch of the standardised
    clip, from `frames` frames to all)."""

    def __init__(self, frames: int, standardize: Standardize, *, band_shift: float = 0.0, time_stretch: float = 0.0,
                 gain_db: float = 0.0, band_crop: float = 0.0):
        self.frames, self.standardize = frames, standardize
        self.band_shift, self.time_stretch, self.gain_db, self.band_crop = band_shift, time_stretch, gain_db, band_crop
        self.mask = SpecAugment()

    def __call__(self, mel_db: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mel = self.standardize(pad_frames(mel_db, self.frames))  # (1, M, T), T >= frames
        n_frames = mel.shape[-1]
        length = int(torch.randint(self.frames, n_frames + 1, ()))
        start = int(torch.randint(0, n_frames - length + 1, ()))
        context = band_stats(mel[None, ..., start:start + length])[0]  # (1, 1, M, length) -> (2M,)
        crop = self.stretched_crop(mel)
        if n_frames <= self.frames:  # a clip no longer than a segment: no random crop moves it, so roll it instead
            crop = crop.roll(int(torch.randint(-(self.frames // 4), self.frames // 4 + 1, ())), dims=-1)
        if self.gain_db:  # a level change is one offset in dB: of the crop, and of its context's band means
            offset = float(torch.empty(()).uniform_(-self.gain_db, self.gain_db)) / self.standardize.std
            n_mels = mel.shape[-2]
            crop, context = crop + offset, context + torch.cat([torch.full((n_mels,), offset), torch.zeros(n_mels)])
        return self.mask(self.mel_range(self.shift(crop))), context

    def stretched_crop(self, mel: torch.Tensor) -> torch.Tensor:
        """(1, M, T) -> (1, M, frames): a random window of frames x factor frames, resampled to `frames`."""
        factor = 1.0
        if self.time_stretch:
            factor = math.exp(float(torch.empty(()).uniform_(-1, 1)) * math.log1p(self.time_stretch))
        window = max(1, round(self.frames * factor))
        crop = RandomCrop(window)(mel)  # (1, M, window)
        if window == self.frames:
            return crop
        return F.interpolate(crop, size=self.frames, mode="linear", align_corners=False)  # (1, M, frames)

    def mel_range(self, mel: torch.Tensor) -> torch.Tensor:
        """(1, M, L) -> (1, M, L): bands [low, high) stretched over all M, low and M - high each drawn from
        [0, band_crop x M], as a mel filterbank with a random fmin and fmax would place them (EfficientAT)."""
        most = int(self.band_crop * mel.shape[-2])
        if not most:
            return mel
        low, cut_top = (int(n) for n in torch.randint(0, most + 1, (2,)))
        if low == 0 and cut_top == 0:
            return mel
        kept = mel[:, low:mel.shape[-2] - cut_top]  # (1, M', L)
        # (1, M', L) -> (1, 1, M', L) -> (1, 1, M, L): linear along the mel axis, time untouched
        return F.interpolate(kept[None], size=mel.shape[-2:], mode="bilinear", align_corners=True)[0]

    def shift(self, mel: torch.Tensor) -> torch.Tensor:
        """(1, M, L) -> (1, M, L) moved up or down by up to band_shift x M bands, the bands left empty set to
        the lowest value of the crop."""
        most = int(self.band_shift * mel.shape[-2])
        bands = int(torch.randint(-most, most + 1, ())) if most else 0
        if bands == 0:
            return mel
        shifted = torch.full_like(mel, float(mel.min()))
        if bands > 0:
            shifted[:, bands:] = mel[:, :-bands]
        else:
            shifted[:, :bands] = mel[:, -bands:]
        return shifted


def train_transform(frames: int, standardize: Standardize, *, band_shift: float = 0.0,
                    time_stretch: float = 0.0, gain_db: float = 0.0, band_crop: float = 0.0) -> CropWithContext:
    """The training augmentation: dB mel (1, M, T) -> (random crop (1, M, frames), its level changed by up to
    `gain_db`, standardised, shifted, stretched, its mel range narrowed, masked; context)."""
    return CropWithContext(frames, standardize, band_shift=band_shift, time_stretch=time_stretch, gain_db=gain_db,
                           band_crop=band_crop)


def clip_context(mel: torch.Tensor, rule: SegmentRule) -> torch.Tensor:
    """A standardised clip (1, M, T) -> its context (2M,): band stats of the clip as its segments cover it."""
    return band_stats(pad_frames(mel, rule.frames).unsqueeze(0))[0]  # (1, 1, M, T') -> (2M,)


def load_mel(path: str) -> torch.Tensor:
    """A melify PNG -> (1, n_mels, n_frames) float32 dB tensor."""
    return torch.from_numpy(read_mel_png(Path(path)).copy()).unsqueeze(0)  # (M, T) -> (1, M, T)


def read_labels(mel_root: Path) -> Manifest | None:
    """The labels of a melify output made from a manifest (its labels.csv); None for one of class folders."""
    path = Path(mel_root) / LABELS_CSV
    return read_manifest(path, check_files=False) if path.is_file() else None


class MelClips(DatasetFolder):
    """The melify PNGs of `root` whose clip keys are in `keys` (all when None) -> (mel, target): the class index,
    or for multi-label data a multi-hot (n_classes,) float tensor.

    Labels are the class folders `root/<class>/`, or, for melify output of a manifest, its labels.csv (clips with
    two labels or more anywhere in it make the whole data set multi-label). Class names are sorted over the whole
    root, so every split agrees on class indices; `classes` fixes them instead (a checkpoint's classes, when
    scoring another root with it), and clips with none of those labels are left out. `stored` reads the images
    from the root's memory-mapped store (`store.MelStore`, built from the PNGs on first use) instead of decoding
    PNGs: for training, which reads every clip every epoch; where the store cannot be written, a process that
    loads for itself keeps each image after its first decoding instead (2 bytes per value, ~330 KB per 30 s
    clip; loader workers do not, as each would fill a copy every epoch anew).
    """

    def __init__(self, root: Path, keys: list[str] | None = None, transform=None, classes: list[str] | None = None,
                 *, stored: bool = False, multi_label: bool | None = None):
        self.root_path, self.fixed_classes = Path(root), classes
        self.labels = read_labels(self.root_path)
        # None: as the labels say; True: multi-hot targets also for one label per clip (tagging data)
        self.multi_label = multi_label if multi_label is not None else bool(self.labels and self.labels.multi_label)
        self.store = MelStore.open(self.root_path) if stored else None
        self.images: dict[str, np.ndarray] | None = {} if stored and not self.store else None  # path -> image
        wanted = None if keys is None else set(keys)

        def is_clip(path: str) -> bool:
            relative = Path(path).relative_to(self.root_path)
            return (relative.suffix == ".png" and not any(p.startswith(".") for p in relative.parts)
                    and (wanted is None or clip_key(relative.as_posix()) in wanted))

        super().__init__(str(root), loader=self.load, transform=transform, is_valid_file=is_clip, allow_empty=True,
                         target_transform=self.multi_hot if self.multi_label else None)

    def load(self, path: str) -> torch.Tensor:
        """The clip's (1, n_mels, n_frames) float32 dB tensor: from the store, or decoded (once when `stored`)."""
        relative = Path(path).relative_to(self.root_path).as_posix()
        if self.store is not None and relative in self.store:
            image = self.store.image(relative)
        elif self.images is not None and torch.utils.data.get_worker_info() is None:
            if path not in self.images:
                self.images[path] = read_png16(Path(path))
            image = self.images[path]
        else:
            return load_mel(path)
        return torch.from_numpy(png_to_db(image)).unsqueeze(0)  # (M, T) -> (1, M, T)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        if self.fixed_classes is not None:
            classes = list(self.fixed_classes)
        elif self.labels is not None:
            classes = self.labels.classes
        else:  # the class folders
            classes = [folder.name for folder in subfolders(Path(directory))]
            if not classes:
                raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: i for i, name in enumerate(classes)}

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], extensions=None, is_valid_file=None,
                     allow_empty: bool = False) -> list[tuple[str, int | tuple[int, ...]]]:
        """(path, class index) of every clip in the class folders; for a manifest's images, in its order, with
        the tuple of its class indices when the data set is multi-label."""
        if self.labels is None:
            return super().make_dataset(directory, class_to_idx, extensions, is_valid_file, allow_empty)
        samples = []
        for row in self.labels.rows:
            path = str(self.root_path / f"{row.key}.png")
            indices = tuple(class_to_idx[name] for name in row.labels if name in class_to_idx)
            if indices and is_valid_file(path):
                samples.append((path, indices if self.labels.multi_label else indices[0]))
        return samples

    def multi_hot(self, indices: int | tuple[int, ...]) -> torch.Tensor:
        """Class indices (or one index) -> (n_classes,) float tensor, 1 at each."""
        target = torch.zeros(len(self.classes))
        target[list(indices) if isinstance(indices, tuple) else indices] = 1.0
        return target

    def frame_counts(self) -> list[int]:
        """Frames of every clip, in item order, from the PNG headers (nothing is decoded)."""
        counts = []
        for path, _ in self.samples:
            with Image.open(path) as image:
                counts.append(image.width)
        return counts

    @property
    def keys(self) -> list[str]:
        """Clip key (`<class>/<stem>`, a manifest's `<path without extension>`) of every item, in item order."""
        return [clip_key(Path(path).relative_to(self.root_path).as_posix()) for path, _ in self.samples]


class WithoutLabels(torch.utils.data.Dataset):
    """Unlabelled clips for distillation: item i -> (the clips' item i, NO_LABEL), whatever folder it is in; for a
    multi-label run (`n_classes` given), a (n_classes,) target of NO_LABEL."""

    def __init__(self, clips: MelClips, n_classes: int | None = None):
        self.clips = clips
        self.no_label = NO_LABEL if n_classes is None else torch.full((n_classes,), float(NO_LABEL))

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        return self.clips[index][0], self.no_label


def mel_digest(path: Path) -> str:
    """A hash of a melify PNG's values: the same for the same audio converted with the same parameters, whatever
    the file's name, folder or container."""
    image = read_png16(Path(path))
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


class Segmented(torch.utils.data.Dataset):
    """Wraps MelClips for evaluation: item i -> (segments (S, 1, M, L) standardised, context (2M,), class index)."""

    def __init__(self, clips: MelClips, rule: SegmentRule, standardize: Standardize):
        self.clips, self.rule, self.standardize = clips, rule, standardize

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        mel_db, label = self.clips[index]
        mel = self.standardize(mel_db)
        return cut_segments(mel, self.rule), clip_context(mel, self.rule), label


def stack_clips(segments: list[torch.Tensor], contexts: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clips' segments [(S_i, 1, M, L)] and contexts [(2M,)] -> one batch: segments (sum S_i, 1, M, L), each
    segment's clip context (sum S_i, 2M) and clip index (sum S_i,), for `scoring.mean_per_clip`."""
    clip_index = torch.cat([torch.full((len(clip),), i, device=clip.device) for i, clip in enumerate(segments)])
    return torch.cat(segments), torch.stack(contexts)[clip_index], clip_index  # contexts (B, 2M) -> (sum S_i, 2M)


def collate_segments(batch):
    """[(segments (S_i, 1, M, L), context (2M,), target)] -> `stack_clips` of them and the targets: (B,) class
    indices, or (B, n_classes) multi-hot."""
    segments, contexts, clip_index = stack_clips([item[0] for item in batch], [item[1] for item in batch])
    targets = [item[2] for item in batch]
    targets = torch.stack(targets) if torch.is_tensor(targets[0]) else torch.tensor(targets)  # (B, C) or (B,)
    return segments, contexts, clip_index, targets


def segment_loader(clips: MelClips, rule: SegmentRule, standardize: Standardize, *, batch_size: int,
                   workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Evaluation batches of whole clips: (segments, their contexts, clip index per segment, labels), in clip order."""
    return torch.utils.data.DataLoader(Segmented(clips, rule, standardize), batch_size=batch_size,
                                       num_workers=workers, pin_memory=pin_memory, collate_fn=collate_segments)


def mel_stats(clips: MelClips) -> Standardize:
    """Mean and std of every dB value of the given clips (computed once, on the train split)."""
    total, total_sq, count = 0.0, 0.0, 0
    for path, _ in clips.samples:
        mel_db = read_mel_png(Path(path)).astype(np.float64)
        total, total_sq, count = total + mel_db.sum(), total_sq + np.square(mel_db).sum(), count + mel_db.size
    mean = total / count
    return Standardize(mean=float(mean), std=float(max(np.sqrt(total_sq / count - mean**2), 1e-3)))


def read_mel_config(mel_root: Path) -> MelConfig:
    """The mel parameters a melify output folder was made with (from its melify.json)."""
    manifest = Path(mel_root) / MANIFEST
    if not manifest.exists():
        raise LayoutError(f"{manifest} is missing: {mel_root} is not melify output "
                          f"(run `python -m vitaudio.melify SRC {mel_root}`)")
    return MelConfig(**json.loads(manifest.read_text())["mel_config"])


def source_paths(mel_root: Path) -> dict[str, str]:
    """Clip key -> path of the audio file it was made from (from melify.json), where known: relative to the folder
    of class folders or the manifest's folder (absolute, for a manifest's files elsewhere)."""
    manifest = Path(mel_root) / MANIFEST
    records = json.loads(manifest.read_text()).get("files", []) if manifest.exists() else []
    return {clip_key(r["output"]): r["source"] for r in records}
