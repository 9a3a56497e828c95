"""Content-addressed image files: ``{root}/{variant}/{ab}/{cd}/{sha256}.jpg``.

A file's name is the SHA-256 of its bytes, so storing the same image twice
(a redelivered snapshot) writes nothing new, and a file is never changed once
written. Each variant has its own tree: originals (admins only) can live on a
volume with tighter permissions than the privacy versions and thumbnails.

Files are written to a temporary name and renamed into place, so a reader
never sees half a file; a crash between the file and the SQL row leaves an
unreferenced file that the next store of the same bytes adopts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from enum import StrEnum
from pathlib import Path


class Variant(StrEnum):
    """Which image of a snapshot."""

    ORIGINAL = "original"  # the bytes the robot sent: admins only
    PRIVACY = "privacy"  # faces and people blurred
    THUMBNAIL = "thumbnail"  # small, made from the privacy version


def sha256_hex(data: bytes) -> str:
    """The file name of ``data``."""
    return hashlib.sha256(data).hexdigest()


class ImageFiles:
    """The file tree under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: set[Path] = set()  # directories known to exist: no mkdir per file

    def path(self, variant: Variant, sha256: str) -> Path:
        """Where the file of that variant and hash lives (whether or not it exists)."""
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / variant.value / sha256[:2] / sha256[2:4] / f"{sha256}.jpg"

    def put(self, variant: Variant, data: bytes) -> str:
        """Store ``data`` (if not there yet); returns its SHA-256."""
        digest = sha256_hex(data)
        target = self.path(variant, digest)
        if target.exists():
            return digest
        if target.parent not in self._made:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(target.parent)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            Path(temporary).replace(target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                Path(temporary).unlink()
            raise
        return digest

    def delete(self, variant: Variant, sha256: str) -> bool:
        """Remove a file; False if it was not there."""
        try:
            self.path(variant, sha256).unlink()
        except FileNotFoundError:
            return False
        return True
