"""Every image of a melify output in one memory-mapped file, so that training reads a clip as a slice of it.

`MelStore.open(mel_root)` builds `mel_root/.store/values-<fingerprint>.u16` (each PNG's uint16 values, row-major,
one image after another) and `index-<fingerprint>.json` (each PNG's offset and shape) from the PNGs once, and
reuses them while no PNG has changed: the fingerprint is a hash of every PNG's path, size and modification time,
so a melify run that adds or rewrites images makes the next open build a new store. Older stores are removed a
day after they were built, not at once: a training that started before the change goes on reading its own.

Reading a clip then costs a copy of its values and no PNG decoding; the values live in the kernel's page cache,
not in the process's own memory, so a data set larger than RAM trains, and DataLoader workers share one copy.
Where the store cannot be written (a read-only melify output), `open` returns None and the caller decodes PNGs.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .features import read_png16
from .files import atomic_path, write_text_atomic

STORE_DIR = ".store"  # in a melify output; hidden, so that datasets never take it for a class
STALE_AFTER_S = 24 * 3600  # an older store of changed PNGs is removed this long after it was built


def png_files(mel_root: Path) -> list[tuple[str, os.stat_result]]:
    """(path relative to mel_root, its stat) of every PNG outside hidden folders, sorted by path."""
    found = []
    for folder, subfolders, names in os.walk(mel_root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in names:
            if name.endswith(".png") and not name.startswith("."):
                path = os.path.join(folder, name)
                found.append((os.path.relpath(path, mel_root).replace(os.sep, "/"), os.stat(path)))
    return sorted(found)


def fingerprint(files: list[tuple[str, os.stat_result]]) -> str:
    """12 hex digits that change whenever a PNG is added, removed or rewritten."""
    digest = hashlib.sha1()
    for relative, stat in files:
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


class MelStore:
    """The uint16 images of a melify output, memory-mapped: `image(relative png path)` -> (n_mels, n_frames), as
    `features.read_png16` returns it. Pickles as its file names (a DataLoader worker maps the file itself)."""

    def __init__(self, values_path: Path, index: dict[str, list[int]]):
        self.values_path, self.index = Path(values_path), index  # relative path -> [offset, n_mels, n_frames]
        self._values: np.memmap | None = None

    @classmethod
    def open(cls, mel_root: Path, *, progress: bool = True) -> MelStore | None:
        """The store of `mel_root`'s PNGs, built now unless an up-to-date one exists; None when mel_root holds no
        PNG or the store cannot be written there (read-only)."""
        mel_root = Path(mel_root)
        files = png_files(mel_root)
        if not files:
            return None
        key = fingerprint(files)
        folder = mel_root / STORE_DIR
        values_path, index_path = folder / f"values-{key}.u16", folder / f"index-{key}.json"
        if not index_path.is_file():  # the index is written last: with it, the values are whole
            try:
                cls._build(mel_root, files, values_path, index_path, progress)
            except OSError as err:
                print(f"data: cannot write a store of {mel_root}'s images ({err.strerror or err}); decoding the "
                      f"PNGs instead", file=sys.stderr)
                return None
            cls._remove_stale(folder, key)
        return cls(values_path, json.loads(index_path.read_text()))

    @staticmethod
    def _remove_stale(folder: Path, key: str) -> None:
        """Remove the stores of earlier PNGs built more than STALE_AFTER_S ago (a training may still read one)."""
        now = time.time()
        for path in folder.iterdir():
            try:
                if key not in path.name and not path.name.startswith(".") and \
                        now - path.stat().st_mtime > STALE_AFTER_S:
                    path.unlink()
            except FileNotFoundError:  # another process removed it first
                pass

    @staticmethod
    def _build(mel_root: Path, files: list, values_path: Path, index_path: Path, progress: bool) -> None:
        """Decode every PNG once into values_path, then write index_path (both atomically)."""
        values_path.parent.mkdir(exist_ok=True)
        index, offset = {}, 0
        with atomic_path(values_path) as tmp_path, open(tmp_path, "wb") as out:
            for relative, _ in tqdm(files, desc="mel store", unit="clip", disable=not progress, file=sys.stderr,
                                    leave=False):
                image = read_png16(mel_root / relative)  # (n_mels, n_frames) uint16
                out.write(image.astype("<u2").tobytes())
                index[relative] = [offset, *image.shape]
                offset += image.size
        write_text_atomic(index_path, json.dumps(index))

    def __contains__(self, relative: str) -> bool:
        return relative in self.index

    def image(self, relative: str) -> np.ndarray:
        """A PNG's (n_mels, n_frames) uint16 values: a read-only view into the mapped file."""
        if self._values is None:
            try:
                self._values = np.memmap(self.values_path, dtype="<u2", mode="r")
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.values_path}, the store of this training's clips, was removed "
                                        f"while it trained; run it again (--resume) to build a new one") from None
        offset, n_mels, n_frames = self.index[relative]
        return self._values[offset:offset + n_mels * n_frames].reshape(n_mels, n_frames)

    def __getstate__(self) -> dict:
        return {"values_path": self.values_path, "index": self.index, "_values": None}
