"""Melify output as torchvision datasets: training batches augmented on the device, whole clips cut into segments
for evaluation.

Every clip starts as its dB mel `(1, n_mels, n_frames)` (index 0 = lowest band), read through melify's exact
inverse, or, for training, as its uint16 image, which travels to the training device as it is stored. Training
inputs are random time crops of one segment, made and augmented there a batch at a time (`TrainAugment`);
evaluation items are all the segments that cover the clip, and a clip's prediction is the mean of its segment
logits (see `scoring.clip_logits_of`). Each comes with its clip's context, `features.band_stats` of the
standardised clip: of the whole clip for evaluation, of a random stretch of it (at least one segment long) for
training, so that the model learns to use partial context.
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


def uniform_ints(low: int | torch.Tensor, high: int | torch.Tensor) -> torch.Tensor:
    """One integer drawn uniformly from [low, high] (inclusive) per item of `low` and `high` (ints or (B,) long
    tensors, at least one a tensor), from torch's global CPU generator, which last.pt saves."""
    low, high = torch.as_tensor(low), torch.as_tensor(high)
    size = torch.broadcast_shapes(low.shape, high.shape)
    drawn = low + (torch.rand(size, dtype=torch.float64) * (high - low + 1)).long()  # (B,)
    return torch.minimum(drawn, high)


def linear_taps(positions: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fractional source positions (B, N) into axes of `size` (B,) items -> (left index, right index, weight of the
    right one), each (B, N), as F.interpolate's linear modes take them (clamped to the axis)."""
    positions = positions.clamp(min=0)
    left = torch.minimum(positions.floor().long(), size[:, None] - 1)
    right = torch.minimum(left + 1, size[:, None] - 1)
    return left, right, (positions - left).clamp(0, 1)


def gather_linear(values: torch.Tensor, left: torch.Tensor, right: torch.Tensor, weight: torch.Tensor,
                  dim: int) -> torch.Tensor:
    """values (B, M, T) sampled linearly along `dim` (1: mel, 2: time) at (B, N) taps -> (B, N, T) or (B, M, N)."""
    if dim == 1:  # (B, N) -> (B, N, 1), broadcast over time
        left, right, weight = left[:, :, None], right[:, :, None], weight[:, :, None]
        left, right = left.expand(-1, -1, values.shape[2]), right.expand(-1, -1, values.shape[2])
    else:  # (B, N) -> (B, 1, N), broadcast over the bands
        left, right, weight = left[:, None], right[:, None], weight[:, None]
        left, right = left.expand(-1, values.shape[1], -1), right.expand(-1, values.shape[1], -1)
    return values.gather(dim, left) * (1 - weight) + values.gather(dim, right) * weight


def in_spans(size: int, starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, K) starts and lengths of K spans per item -> (B, size) bool: the positions inside any of them."""
    position = torch.arange(size, device=starts.device)[None, :, None]  # (1, size, 1)
    return ((position >= starts[:, None]) & (position < (starts + lengths)[:, None])).any(dim=-1)


def to_device(drawn: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """CPU tensors of B rows each -> the same on `device`, sent in one copy (float64 holds every integer drawn
    exactly), so that a batch's draws cost the GPU one transfer, not one wait for each."""
    flat = [value.reshape(len(value), -1).double() for value in drawn.values()]  # (B, ...) -> (B, k)
    packed = torch.cat(flat, dim=1)  # (B, sum of k)
    if device.type == "cuda":
        packed = packed.pin_memory()
    parts = packed.to(device, non_blocking=True).split([part.shape[1] for part in flat], dim=1)
    return {name: part.reshape(value.shape).to(value.dtype) for (name, value), part in zip(drawn.items(), parts)}


class TrainAugment:
    """Training inputs, made a batch at a time on the batch's device: dB mels (B, M, T) of clips `n_frames` (B,)
    long (the batch padded to its longest) -> (crops (B, 1, M, frames), contexts (B, 2M)).

    Each crop is a random window of its clip (padded first with the clip's lowest value where the clip is shorter;
    a clip no longer than a segment is rolled in time by up to a quarter of it instead, as a one-second word is),
    standardised, raised or lowered by up to `gain_db` dB, `frames` x a factor in [1 / (1 + time_stretch),
    1 + time_stretch] long and resampled to `frames` (tempo), shifted along the mel axis by up to `band_shift` x M
    bands (pitch), its mel range narrowed at each end by up to `band_crop` x M bands and stretched back over M (a
    random fmin and fmax, EfficientAT), then masked by SpecAugment (`masks` + `masks` masks of up to `mask_width`
    of each axis, set to 0, the mean). The context is the band stats of a random stretch of the standardised clip,
    from `frames` frames to all of it, so that the model learns to use partial context; the gain moves its band
    means too. Every draw is one per clip, made on the CPU from torch's global generator (which last.pt saves) and
    sent to the device in one copy: a resumed run draws what an uninterrupted one would.
    """

    def __init__(self, frames: int, standardize: Standardize, *, band_shift: float = 0.0, time_stretch: float = 0.0,
                 gain_db: float = 0.0, band_crop: float = 0.0, masks: int = 2, mask_width: float = 0.15):
        if not 0 <= band_crop < 0.5:
            raise ValueError(f"band_crop must be in [0, 0.5) (a share of the bands cut at each end), got {band_crop}")
        self.frames, self.standardize = frames, standardize
        self.band_shift, self.time_stretch, self.gain_db, self.band_crop = band_shift, time_stretch, gain_db, band_crop
        self.masks, self.mask_width = masks, mask_width

    def draw(self, n_frames: torch.Tensor, n_mels: int) -> dict[str, torch.Tensor]:
        """Every random choice for clips of `n_frames` (B,) frames: name -> (B,) or (B, masks) CPU tensor."""
        batch, frames = len(n_frames), self.frames
        lengths = n_frames.clamp(min=frames)  # a clip shorter than a segment is padded to one
        zeros = torch.zeros(batch, dtype=torch.long)
        window = torch.full((batch,), frames)  # frames of clip each crop covers, resampled to `frames`
        if self.time_stretch:
            factor = torch.exp((torch.rand(batch, dtype=torch.float64) * 2 - 1) * math.log1p(self.time_stretch))
            window = (frames * factor).round().long().clamp(min=1)
        stretch = uniform_ints(frames, lengths)  # frames of context, from one segment to all
        drawn = {"n_frames": n_frames, "window": window, "stretch": stretch,
                 "stretch_start": uniform_ints(0, lengths - stretch),
                 "crop_start": uniform_ints(0, torch.maximum(lengths, window) - window),
                 "roll": torch.where(n_frames <= frames, uniform_ints(zeros - frames // 4, frames // 4), 0),
                 "gain": (torch.rand(batch, dtype=torch.float64) * 2 - 1) * self.gain_db / self.standardize.std,
                 "shift": uniform_ints(zeros - int(self.band_shift * n_mels), int(self.band_shift * n_mels))}
        most = int(self.band_crop * n_mels)
        drawn["low"] = uniform_ints(zeros, most)
        drawn["kept"] = n_mels - drawn["low"] - uniform_ints(zeros, most)  # bands kept, stretched over all M
        for axis, size in (("band", n_mels), ("frame", frames)):
            spans = uniform_ints(zeros[:, None].expand(-1, self.masks), int(size * self.mask_width))  # (B, masks)
            drawn[f"{axis}_mask_span"], drawn[f"{axis}_mask_start"] = spans, uniform_ints(0, size - spans)
        return drawn

    def __call__(self, mel_db: torch.Tensor, n_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, n_mels, width = mel_db.shape
        cpu_draws = self.draw(n_frames.cpu(), n_mels)
        padded_width = max(width, self.frames, int(cpu_draws["window"].max()))
        draws = to_device(cpu_draws, mel_db.device)

        # Statistics and crops of the dB values, standardised after: (x - mean) / std of the whole batch would
        # cost a full-size temporary, and every full-size pass counts on a CPU.
        mel_db = mel_db.float()
        time = torch.arange(padded_width, device=mel_db.device)
        if int(cpu_draws["n_frames"].min()) < padded_width:  # some clip ends early: pad it with its lowest value
            inside = time < draws["n_frames"][:, None]  # (B, W)
            mel_db = F.pad(mel_db, (0, padded_width - width))  # (B, M, W)
            lowest = mel_db.masked_fill(~inside[:, None], math.inf).amin(dim=(1, 2))  # (B,)
            mel_db = torch.where(inside[:, None], mel_db, lowest[:, None, None])
        stretch_end = draws["stretch_start"] + draws["stretch"]
        in_stretch = (time >= draws["stretch_start"][:, None]) & (time < stretch_end[:, None])  # (B, W)
        band_mean, band_std = band_stats(mel_db[:, None], frame_mask=in_stretch).split(n_mels, dim=1)  # (B, M) each
        context = torch.cat([self.standardize(band_mean), band_std / self.standardize.std], dim=1)  # (B, 2M)

        crop = self.standardize(self.crop(mel_db, draws["crop_start"], draws["window"], draws["roll"]))  # (B, M, L)
        if self.gain_db:  # a level change is one offset in dB: of the crop, and of its context's band means
            offset = draws["gain"].float()  # (B,) in standardised units
            crop = crop + offset[:, None, None]
            context = context + torch.cat([offset[:, None].expand(-1, n_mels), torch.zeros_like(context[:, n_mels:])],
                                          dim=1)
        crop = self.mel_range(self.shift(crop, draws["shift"]), draws["low"], draws["kept"])
        masked = in_spans(n_mels, draws["band_mask_start"], draws["band_mask_span"])[:, :, None] | \
            in_spans(self.frames, draws["frame_mask_start"], draws["frame_mask_span"])[:, None, :]  # (B, M, frames)
        return crop.masked_fill(masked, 0.0)[:, None], context  # (B, M, frames) -> (B, 1, M, frames)

    def crop(self, mel: torch.Tensor, start: torch.Tensor, window: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
        """(B, M, W) padded clips -> (B, M, frames): `window` (B,) frames from `start` (B,), resampled linearly to
        `frames` (F.interpolate's taps, align_corners=False), then rolled in time by `roll` (B,) frames."""
        out = torch.arange(self.frames, device=mel.device)  # (frames,)
        scale = window[:, None].double() / self.frames  # (B, 1)
        left, right, weight = linear_taps((out + 0.5) * scale - 0.5, window)  # (B, frames) each, within the window
        order = (out - roll[:, None]) % self.frames  # (B, frames): output frame j shows crop frame j - roll
        left, right, weight = left.gather(1, order), right.gather(1, order), weight.gather(1, order)
        return gather_linear(mel, start[:, None] + left, start[:, None] + right, weight.float(), dim=2)

    def shift(self, crop: torch.Tensor, bands: torch.Tensor) -> torch.Tensor:
        """(B, M, L) moved up (`bands` (B,) > 0) or down along the mel axis, the bands left empty set to the lowest
        value of the crop."""
        if not int(self.band_shift * crop.shape[1]):
            return crop
        n_mels = crop.shape[1]
        rows = torch.arange(n_mels, device=crop.device) - bands[:, None]  # (B, M): the band each one shows
        inside = ((rows >= 0) & (rows < n_mels))[:, :, None]  # (B, M, 1)
        shown = crop.gather(1, rows.clamp(0, n_mels - 1)[:, :, None].expand_as(crop))  # (B, M, L)
        return torch.where(inside, shown, crop.amin(dim=(1, 2), keepdim=True))

    def mel_range(self, crop: torch.Tensor, low: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """(B, M, L): bands [low, low + kept) (each (B,)) stretched linearly over all M (as F.interpolate's
        bilinear mode with align_corners=True), as a mel filterbank with a random fmin and fmax would place them."""
        if not int(self.band_crop * crop.shape[1]):
            return crop
        n_mels = crop.shape[1]
        scale = (kept[:, None] - 1).double() / max(n_mels - 1, 1)  # (B, 1)
        positions = torch.arange(n_mels, device=crop.device) * scale  # (B, M) within the kept bands
        left, right, weight = linear_taps(positions, kept)
        return gather_linear(crop, low[:, None] + left, low[:, None] + right, weight.float(), dim=1)


def stack_targets(targets: list) -> torch.Tensor:
    """Items' targets -> (B,) class indices, or (B, n_classes) multi-hot."""
    return torch.stack(targets) if torch.is_tensor(targets[0]) else torch.tensor(targets)


def collate_images(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[(uint16 image (M, T_i), target)] -> (images (B, M, max T_i) uint16, zero-padded; n_frames (B,); targets:
    (B,) class indices or (B, n_classes) multi-hot). The images stay 2 bytes a value until the device."""
    n_frames = [image.shape[-1] for image, _ in batch]
    images = np.zeros((len(batch), batch[0][0].shape[0], max(n_frames)), dtype=np.uint16)
    for i, (image, _) in enumerate(batch):
        images[i, :, :image.shape[-1]] = image
    return torch.from_numpy(images), torch.tensor(n_frames), stack_targets([target for _, target in batch])


class TrainBatches:
    """A DataLoader of `collate_images` batches -> ((crops (B, 1, M, frames), contexts (B, 2M)), targets) on
    `device`: the images are copied there as uint16 and augmented there as one batch (`augment`)."""

    def __init__(self, loader: torch.utils.data.DataLoader, augment: TrainAugment, device: torch.device):
        self.loader, self.augment, self.device = loader, augment, device

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def sampler(self):
        return self.loader.sampler

    def __iter__(self):
        for batch in self.loader:
            yield self.prepare(batch)

    def prepare(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
        """One loader batch -> the model's training inputs and targets, on the device."""
        images, n_frames, targets = batch
        mel_db = png_to_db(images.to(self.device, non_blocking=True))  # (B, M, T) uint16 -> float32 dB
        return self.augment(mel_db, n_frames), targets.to(self.device, non_blocking=True)


def train_batches(dataset: torch.utils.data.Dataset, augment: TrainAugment, device: torch.device, **loader_args
                  ) -> TrainBatches:
    """Training batches of `dataset`'s images (MelClips(images=True), or a concatenation of such), augmented on
    `device`; `loader_args` go to the DataLoader (batch size, sampler, workers, ...)."""
    return TrainBatches(torch.utils.data.DataLoader(dataset, collate_fn=collate_images, **loader_args), augment,
                        device)


def clip_context(mel: torch.Tensor, rule: SegmentRule) -> torch.Tensor:
    """A standardised clip (1, M, T) -> its context (2M,): band stats of the clip as its segments cover it."""
    return band_stats(pad_frames(mel, rule.frames).unsqueeze(0))[0]  # (1, 1, M, T') -> (2M,)


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
    clip; loader workers do not, as each would fill a copy every epoch anew). `images` gives the uint16 images
    themselves, for `collate_images` and `TrainAugment`, which make them training inputs on the device.
    """

    def __init__(self, root: Path, keys: list[str] | None = None, classes: list[str] | None = None,
                 *, stored: bool = False, multi_label: bool | None = None, images: bool = False):
        self.root_path, self.fixed_classes, self.as_images = Path(root), classes, images
        self.labels = read_labels(self.root_path)
        # None: as the labels say; True: multi-hot targets also for one label per clip (tagging data)
        self.multi_label = multi_label if multi_label is not None else bool(self.labels and self.labels.multi_label)
        self.store = MelStore.open(self.root_path) if stored else None
        self.decoded: dict[str, np.ndarray] | None = {} if stored and not self.store else None  # path -> image
        wanted = None if keys is None else set(keys)

        def is_clip(path: str) -> bool:
            relative = Path(path).relative_to(self.root_path)
            return (relative.suffix == ".png" and not any(p.startswith(".") for p in relative.parts)
                    and (wanted is None or clip_key(relative.as_posix()) in wanted))

        super().__init__(str(root), loader=self.load, is_valid_file=is_clip, allow_empty=True,
                         target_transform=self.multi_hot if self.multi_label else None)

    def load(self, path: str) -> torch.Tensor | np.ndarray:
        """The clip's (1, n_mels, n_frames) float32 dB tensor, or with `images` its (n_mels, n_frames) uint16
        image as stored (top row = highest band): from the store, or decoded (once when `stored`)."""
        relative = Path(path).relative_to(self.root_path).as_posix()
        if self.store is not None and relative in self.store:
            image = self.store.image(relative)
        elif self.decoded is not None and torch.utils.data.get_worker_info() is None:
            if path not in self.decoded:
                self.decoded[path] = read_png16(Path(path))
            image = self.decoded[path]
        else:
            image = read_png16(Path(path))
        return image if self.as_images else torch.from_numpy(png_to_db(image)).unsqueeze(0)  # (M, T) -> (1, M, T)

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
    return segments, contexts, clip_index, stack_targets([item[2] for item in batch])


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
