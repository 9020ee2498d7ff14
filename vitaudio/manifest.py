"""Manifests: a data set listed in a file instead of laid out as class folders.

A manifest is a CSV file with a header row, or a JSON Lines file (`.jsonl`) of one object per clip, with the fields
`path,label[,group][,split]`:

    path,label,group,split
    audio/take1.wav,jazz,session1,train
    /data/other/take7.flac,rock;live,session4,

`path` is relative to the manifest's folder, or absolute. `label` holds one class name, or several separated by
`;` (multi-label tagging; JSON Lines may give a list). `group` names the source a clip comes from (a recording, a
speaker): no group is split between training and test. `split`, where given, is `train`, `val` or `test` and is
used as it is. A row with a missing file, an empty label, an unknown split name or a path listed before is
reported with its line number and left out; a manifest with no usable row is refused.

A clip's key is its path without its extension, relative to the manifest's folder (absolute paths elsewhere keep
their whole path, without the leading `/`), so keys stay unique whatever the labels; melify mirrors the keys under
its DST and writes `labels.csv` there, a manifest of the images in the same format.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path, PurePosixPath

from .errors import VitaudioError

MANIFEST_SUFFIXES = (".csv", ".jsonl")
LABEL_SEPARATOR = ";"
SPLIT_NAMES = ("train", "val", "test")
LABELS_CSV = "labels.csv"  # melify's manifest of the images it made from a manifest, beside them
FIELDS = ("path", "label", "group", "split")


class ManifestError(VitaudioError, ValueError):
    """A manifest cannot be read, or none of its rows can be used; the message names the file and the fix."""


@dataclass(frozen=True)
class ManifestRow:
    """One usable clip of a manifest."""

    line: int  # where it is in the file (the header is line 1 of a CSV)
    source: Path  # the audio file, resolved against the manifest's folder
    key: str  # the clip's key: its path without extension, relative to the manifest's folder
    labels: tuple[str, ...]  # one class name, or several for multi-label tagging
    group: str | None = None
    split: str | None = None


@dataclass
class Manifest:
    """A manifest's usable rows, and one message per row left out."""

    path: Path
    rows: list[ManifestRow]
    problems: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted({label for row in self.rows for label in row.labels})

    @property
    def multi_label(self) -> bool:
        """Whether any clip has two labels or more."""
        return any(len(row.labels) > 1 for row in self.rows)

    @property
    def groups(self) -> dict[str, str] | None:
        """Clip key -> group where the manifest names groups (a clip without one is a group of its own); else None."""
        if not any(row.group for row in self.rows):
            return None
        return {row.key: row.group or row.key for row in self.rows}

    def given_split(self) -> tuple[dict[str, list[str]], list[str]] | None:
        """The split of the `split` column: (clip keys per split name, keys of the clips it leaves out because
        they have no split); None when no clip has one."""
        if not any(row.split for row in self.rows):
            return None
        split = {name: sorted(row.key for row in self.rows if row.split == name) for name in SPLIT_NAMES}
        return split, [row.key for row in self.rows if not row.split]


def is_manifest(path: Path) -> bool:
    """True for a file named like a manifest (`.csv`, `.jsonl`)."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES


def clip_key_of(path: str, base: Path) -> str:
    """A manifest path -> its clip key: relative to `base` without extension; an absolute path outside `base`
    keeps all of itself but the leading `/`."""
    pure = PurePosixPath(path.replace("\\", "/"))
    if pure.is_absolute():
        try:
            pure = PurePosixPath(Path(path).resolve().relative_to(base.resolve()).as_posix())
        except ValueError:
            pure = PurePosixPath(*pure.parts[1:])
    if any(part == ".." for part in pure.parts):  # a relative path that climbs out of base: name it by where it is
        return clip_key_of(str((base / path).resolve()), base)
    return pure.with_suffix("").as_posix()


def read_manifest(path: Path, *, check_files: bool = True) -> Manifest:
    """Read a CSV or JSON Lines manifest (see the module doc). Rows that cannot be used are left out with a message
    each in `problems`; ManifestError when the file cannot be read, lacks `path` or `label`, or has no usable row.
    `check_files=False` does not ask whether the files exist (a manifest of clips to be made)."""
    path = Path(path)
    base = path.parent
    entries = _read_entries(path)
    rows, problems, seen = [], [], {}
    for line, entry in entries:
        where = f"{path} line {line}"
        file_name = str(entry.get("path") or "").strip()
        labels = _labels(entry.get("label"))
        split = str(entry.get("split") or "").strip() or None
        group = str(entry.get("group") or "").strip() or None
        if not file_name:
            problems.append(f"{where}: no path")
            continue
        source = Path(file_name) if Path(file_name).is_absolute() else base / file_name
        key = clip_key_of(file_name, base)
        if not labels:
            problems.append(f"{where}: {file_name} has no label")
        elif split is not None and split not in SPLIT_NAMES:
            problems.append(f"{where}: {file_name} has split {split!r}; use one of {', '.join(SPLIT_NAMES)} or "
                            f"leave it empty")
        elif key in seen:
            problems.append(f"{where}: {file_name} is listed already, on line {seen[key]}")
        elif check_files and not source.is_file():
            problems.append(f"{where}: {file_name} does not exist (looked for {source})")
        else:
            seen[key] = line
            rows.append(ManifestRow(line, source, key, labels, group, split))
    if not rows:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise ManifestError(f"{path} has no usable row" + (f": {shown}" if problems else "") +
                            ". Each row needs an existing audio file and a label: path,label[,group][,split]")
    return Manifest(path, rows, problems)


def _labels(value) -> tuple[str, ...]:
    """A label field (`"a;b"`, or a JSON list) -> its class names, blanks dropped, in the order given."""
    names = value if isinstance(value, list) else str(value or "").split(LABEL_SEPARATOR)
    return tuple(dict.fromkeys(name for name in (str(n).strip() for n in names) if name))


def _read_entries(path: Path) -> list[tuple[int, dict]]:
    """(line number, field -> value) of every data row of a CSV or JSON Lines manifest."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark, as spreadsheets write, is no field name
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot read the manifest {path}: {err}") from None
    if path.suffix.lower() == ".jsonl":
        entries = []
        for line, row_text in enumerate(text.splitlines(), start=1):
            if not row_text.strip():
                continue
            try:
                entry = json.loads(row_text)
            except ValueError as err:
                raise ManifestError(f"{path} line {line} is not JSON ({err}): a JSON Lines manifest holds one "
                                    f'object per line, e.g. {{"path": "a.wav", "label": "jazz"}}') from None
            if not isinstance(entry, dict):
                raise ManifestError(f"{path} line {line}: expected a JSON object with path and label")
            entries.append((line, entry))
        return entries
    reader = csv.DictReader(text.splitlines())
    columns = {name.strip() for name in reader.fieldnames or ()}
    if not {"path", "label"} <= columns:
        raise ManifestError(f"{path}: the first row must name the columns path,label[,group][,split]; it has "
                            f"{', '.join(sorted(columns)) or 'none'}")
    return [(reader.line_num, {(k or "").strip(): v for k, v in row.items()}) for row in reader]


def manifest_text(rows: list[dict]) -> str:
    """The CSV text of a manifest of `rows` (dicts with path, labels (a tuple), group, split): what melify writes
    as labels.csv."""
    text = StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(FIELDS)
    for row in rows:
        writer.writerow([row["path"], LABEL_SEPARATOR.join(row["labels"]), row.get("group") or "",
                         row.get("split") or ""])
    return text.getvalue()
