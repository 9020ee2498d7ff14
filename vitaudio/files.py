"""Writing files so that a crash, a kill or a full disk never leaves half of one behind; the fingerprint of a set of
files."""
from __future__ import annotations

import hashlib
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside `path` to write to; it replaces `path` when the block succeeds and is
    removed when it fails, so readers see the old file or the whole new one. The name ends in `.tmp` (writers
    that guess the format from the suffix need to be told it); `.{name}.{host}-{pid}-{random}.tmp` keeps concurrent
    writers apart, also processes of several machines writing to one shared folder."""
    path = Path(path)
    tmp_path = path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """`Path.write_text`, atomically."""
    with atomic_path(path) as tmp_path:
        tmp_path.write_text(text)


def data_fingerprint(root: Path, audio_paths: list[str]) -> str:
    """12 hex digits of a SHA-1 over the audio files (root-relative paths, in order, and their bytes): two builds
    of a data set share it only when every file is identical."""
    digest = hashlib.sha1()
    for relative in sorted(audio_paths):
        digest.update(relative.encode() + b"\0")
        with open(root / relative, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:12]
