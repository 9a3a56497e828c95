"""Content-addressed image files: ``{root}/{variant}/{ab}/{cd}/{sha256}.jpg``.

A file's name is the SHA-256 of its bytes, so storing the same image twice
(a redelivered snapshot) writes nothing new, and a file is never changed once
written. Each variant has its own tree: originals (admins only) can live on a
volume with tighter permissions than the privacy versions and thumbnails.

Files are written to a temporary name and renamed into place, so a reader
never sees half a file; a crash between the file and the SQL row leaves an
unreferenced file that the next store of the same bytes adopts.

``put(..., sync=False)`` leaves the data in the page cache and ``sync()`` then
makes every such file durable at once (the files, then the directories that
name them, or the renames could be lost): the service writes a whole batch of
snapshots and syncs once before it commits their rows.
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
        self._unsynced: list[Path] = []
        self._unsynced_dirs: set[Path] = set()

    def path(self, variant: Variant, sha256: str) -> Path:
        """Where the file of that variant and hash lives (whether or not it exists)."""
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / variant.value / sha256[:2] / sha256[2:4] / f"{sha256}.jpg"

    def put(self, variant: Variant, data: bytes, *, sync: bool = True) -> str:
        """Store ``data`` (if not there yet); returns its SHA-256.

        With ``sync`` False the file is durable only after the next ``sync()``.
        """
        digest = sha256_hex(data)
        target = self.path(variant, digest)
        # One already there is synced as well: it may be the unsynced leftover of a
        # process that died before its commit (syncing a clean file costs next to nothing).
        if not target.exists():
            self._write(target, data)
        self._unsynced.append(target)
        self._unsynced_dirs.add(target.parent)
        if sync:
            self.sync()
        return digest

    def _write(self, target: Path, data: bytes) -> None:
        if target.parent not in self._made:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(target.parent)
            # The new directories' own entries must reach the disk too.
            self._unsynced_dirs.update(target.parents[:4])
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            Path(temporary).replace(target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                Path(temporary).unlink()
            raise

    def sync(self) -> None:
        """Make every file stored since the last call durable, and the directories naming them."""
        # Files first: a directory entry must not reach the disk before the data it names.
        for path in [*self._unsynced, *sorted(self._unsynced_dirs, reverse=True)]:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # deleted since (a batch rolled back, then retention)
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._unsynced.clear()
        self._unsynced_dirs.clear()

    def delete(self, variant: Variant, sha256: str) -> bool:
        """Remove a file; False if it was not there."""
        try:
            self.path(variant, sha256).unlink()
        except FileNotFoundError:
            return False
        return True
