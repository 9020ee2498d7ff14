"""Leak-free train/val/test splits of clips, grouped by source work when groups are known.

A clip is named by its key `<class>/<stem>` (`blues/blues.00029`), so the same split applies to an audio root
(`blues/blues.00029.wav`) and to its melify output (`blues/blues.00029.png`). Split files and the run's
`split.json` list root-relative clip paths: `{"train": ["blues/blues.00029.wav", ...], "val": [...], "test": [...]}`;
a CSV with columns `clip,split` is read too.
"""
from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import VitaudioError
from .files import write_text_atomic

SPLITS = ("train", "val", "test")


class SplitError(VitaudioError, ValueError):
    """A split file or a groups file does not fit the data; the message names the file and the clip."""


def clip_key(clip_path: str) -> str:
    """Root-relative clip path -> key without extension: 'blues/blues.00029.wav' -> 'blues/blues.00029'."""
    return PurePosixPath(clip_path.replace("\\", "/")).with_suffix("").as_posix()


def read_groups(csv_path: Path) -> dict[str, str] | None:
    """Clip key -> group from a CSV with columns `clip,group`; None when the file lacks those columns."""
    with open(csv_path, newline="") as file:
        rows = csv.DictReader(file)
        if not {"clip", "group"} <= set(rows.fieldnames or ()):
            return None
        return {clip_key(row["clip"]): row["group"] for row in rows}


def make_split(keys: list[str], labels: list[int | tuple[int, ...]], groups: dict[str, str] | None = None,
               fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[str]]:
    """Split clip keys into train/val/test, stratified by label and never putting one group in two splits.

    Without groups every clip is its own group. Groups are dealt out class by class (a group counts for its
    most common label) in a seeded random order, each to the split with the largest relative shortfall against its
    target share of that class, so that a class of a few large groups still reaches val and test. A clip of
    several labels (a tuple of class indices) counts for the rarest of them, so that rare labels reach every split
    where they can (stratification by the rarest label).
    """
    if groups is not None:
        missing = [k for k in keys if k not in groups]
        if missing:
            raise SplitError(f"{len(missing)} clips have no group in the groups file, e.g. {missing[0]!r}")
    group_of = {k: groups[k] if groups is not None else k for k in keys}
    label_sets = [label if isinstance(label, tuple) else (label,) for label in labels]
    clips_per_label = Counter(label for label_set in label_sets for label in label_set)
    rarest = [min(label_set, key=lambda label: (clips_per_label[label], label)) for label_set in label_sets]
    clips_of_group: dict[str, list[str]] = defaultdict(list)
    label_votes: dict[str, list[int]] = defaultdict(list)
    for key, label in sorted(zip(keys, rarest)):
        clips_of_group[group_of[key]].append(key)
        label_votes[group_of[key]].append(label)
    groups_of_label: dict[int, list[str]] = defaultdict(list)
    for group in sorted(clips_of_group):
        groups_of_label[int(np.bincount(label_votes[group]).argmax())].append(group)

    rng = np.random.default_rng(seed)
    split: dict[str, list[str]] = {name: [] for name in SPLITS}
    for label in sorted(groups_of_label):
        class_groups = groups_of_label[label]
        targets = np.asarray(fractions) * sum(len(clips_of_group[g]) for g in class_groups)  # clips per split
        taken = np.zeros(len(SPLITS))
        for i in rng.permutation(len(class_groups)):
            clips = clips_of_group[class_groups[i]]
            shortfall = np.divide(targets - taken, targets, out=np.full(len(SPLITS), -np.inf), where=targets > 0)
            target = int(np.argmax(shortfall))
            split[SPLITS[target]].extend(clips)
            taken[target] += len(clips)
    return {name: sorted(clips) for name, clips in split.items()}


def read_split_file(path: Path) -> dict[str, list[str]]:
    """Read a JSON `{"train": [...], "val": [...], "test": [...]}` or CSV `clip,split` file -> keys per split."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        split = {name: [] for name in SPLITS}
        with open(path, newline="") as file:
            for row in csv.DictReader(file):
                if row.get("split") not in split:
                    raise SplitError(f"{path}: split must be one of {SPLITS}, got {row.get('split')!r} "
                                     f"(the CSV needs columns clip,split)")
                split[row["split"]].append(row["clip"])
    else:
        split = json.loads(path.read_text())
        if not isinstance(split, dict) or not set(split) <= set(SPLITS):
            raise SplitError(f"{path}: expected a JSON object with keys {SPLITS}")
    return {name: sorted(clip_key(c) for c in split.get(name, [])) for name in SPLITS}


def check_split(split: dict[str, list[str]], known_keys: set[str], source: str) -> None:
    """Raise ValueError when splits overlap or name clips the data root does not have."""
    seen: dict[str, str] = {}
    for name in SPLITS:
        for key in split[name]:
            if key in seen:
                raise SplitError(f"{source}: clip {key!r} is in both {seen[key]} and {name}")
            seen[key] = name
    unknown = sorted(set(seen) - known_keys)
    if unknown:
        raise SplitError(f"{source}: {len(unknown)} clips are not in the data root, e.g. {unknown[0]!r}")
    if not split["train"] or not split["val"]:
        raise SplitError(f"{source}: the train and val splits must not be empty")


def write_split_file(path: Path, split: dict[str, list[str]], path_of_key: dict[str, str]) -> None:
    """Write the split as JSON with root-relative clip paths (the audio file names where known), atomically: a
    reader (another run sharing the split) sees no file or the whole of it."""
    write_text_atomic(Path(path), json.dumps({name: [path_of_key[k] for k in split[name]] for name in SPLITS},
                                             indent=1))
