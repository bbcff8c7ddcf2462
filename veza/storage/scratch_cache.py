"""Copies of stored objects kept on this machine's scratch disk, so that the
steps of one file on one machine (hash, sniff, scan, thumbnail: up to four
tasks, often in different pool processes) fetch its bytes from the bucket
once, not four times.

Every path in the store is written once with content that never changes
(an upload's uuid is new, a blob is named by its hash, a thumbnail by its
source's hash), so a copy is never stale; a copy of something deleted since
is never read either, because the steps look the content up in the bucket
before they ask for it. The cache is only ever a shortcut.

Shared by the pool processes of a machine without a lock: entries appear by
rename and are read through a hard link of the reader's own, so an entry
evicted while in use stays readable by whoever holds the link. Its size is
bounded (S3_SCRATCH_CACHE_MIB), oldest entries going first: a process
measures the cache (a walk: a stat per entry) each time it has added a
sixteenth of the bound since it last did, so the cache may pass its bound
by a sixteenth per process between two measures.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

# The cache is measured each time a process has added 1/MEASURE_EVERY of its bound.
MEASURE_EVERY = 16


class ScratchCache:
    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        self._added_since_measured = 0

    def _entry(self, relative: str) -> Path:
        return self.root / relative

    def copy_to(self, relative: str, target: Path) -> bool:
        """Put the cached copy of `relative` at `target` (a hard link, so
        nothing is copied); False if there is none."""
        if not self.limit_bytes:
            return False
        linked = target.with_name(f"{target.name}.{uuid.uuid4().hex}")
        try:
            os.link(self._entry(relative), linked)
        except FileNotFoundError:
            return False
        os.replace(linked, target)
        return True

    def keep(self, source: Path, relative: str) -> None:
        """Remember `source`'s bytes as `relative`'s, then make room."""
        if not self.limit_bytes:
            return
        entry = self._entry(relative)
        entry.parent.mkdir(parents=True, exist_ok=True)
        linked = entry.with_name(f"{entry.name}.{uuid.uuid4().hex}")
        os.link(source, linked)
        os.replace(linked, entry)
        self._added_since_measured += entry.stat().st_size
        if self._added_since_measured * MEASURE_EVERY >= self.limit_bytes:
            self._added_since_measured = 0
            self._evict()

    def alias(self, relative: str, other: str) -> None:
        """`other` holds the same bytes as `relative` (a blob made from an
        upload): the copy serves both."""
        with contextlib.suppress(FileNotFoundError):
            self.keep(self._entry(relative), other)

    def drop(self, relative: str) -> None:
        self._entry(relative).unlink(missing_ok=True)

    def _evict(self) -> None:
        entries = []
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                path = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    status = path.stat()
                    entries.append((status.st_mtime, status.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.limit_bytes:
                return
            path.unlink(missing_ok=True)
            total -= size
