"""The project's own look inside what clamd said OK to, for what clamd could
not have read: clamd answers OK for content it did not unpack (a zip member
compressed with LZMA, a zstd stream, a 7z member packed with bzip2), so an
OK is only a verdict on what it could open.

`unscannable_reason(path)` walks the containers Python can read itself
(zip, tar, gzip, bzip2, xz; 7z headers with py7zr in veza/files/sevenzip.py),
nested up to clamd's own limits, and names the first thing in them that
clamd could not have inspected:

- a sniffed format clamd does not unpack (NOT_UNPACKED);
- a zip member that is encrypted (ZipCrypto or AES), or compressed with a
  method outside ZIP_METHODS; a zip, tar or compressed stream that cannot
  be read (corrupt, truncated);
- a 7z archive with an encrypted header or members, or a coder outside
  sevenzip.CLAMD_METHODS;
- nesting deeper than MAX_NESTING, more than MAX_MEMBERS members, or more
  than MAX_EXPANDED_BYTES once expanded (clamd's MaxRecursion, MaxFiles,
  MaxScanSize in deploy/clamd.conf).

Memory: members are sniffed from their first SNIFF_BYTES; a nested
container is copied to an anonymous temporary file (in memory up to
SPOOL_IN_MEMORY), within the expanded-bytes budget.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Protocol

import magic

from veza.files import sevenzip

# clamd's limits in deploy/clamd.conf (MaxRecursion, MaxFiles, MaxScanSize).
MAX_NESTING = 17
MAX_MEMBERS = 10_000
MAX_EXPANDED_BYTES = 110 * 1024 * 1024
SNIFF_BYTES = 8192
SPOOL_IN_MEMORY = 1024 * 1024
COPY_CHUNK = 256 * 1024

# Sniffed (libmagic) types of formats clamd does not unpack, so that what
# they hold reaches it unread (zstd and lz4 tested: tests/test_files_inspection.py),
# and encrypted formats nobody without the key can read.
NOT_UNPACKED = frozenset(
    {
        "application/zstd",
        "application/x-zstd",
        "application/x-lz4",
        "application/x-lzip",
        "application/x-lzma",
        "application/x-lzop",
        "application/x-lrzip",
        "application/x-compress",
        "application/x-archive",
        "application/vnd.debian.binary-package",
        "application/x-rpm",
        "application/x-lha",
        "application/x-lzh-compressed",
        "application/x-arc",
        "application/x-zoo",
        "application/x-snappy-framed",
        "application/encrypted",
        "application/pgp-encrypted",
    }
)
# Zip compression methods clamd unpacks and Python can read too: stored,
# deflate, bzip2. LZMA (14), zstd (93), xz (95), PPMd (98) reach clamd
# unread; AES (99) is encryption.
ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
}
ZIP_METHOD_NAMES = {6: "implode", 9: "deflate64", 14: "LZMA", 93: "zstd", 95: "xz", 98: "PPMd"}
ZIP_AES = 99

# What the standard library reads; a member's own read errors.
READ_ERRORS = (
    OSError,
    EOFError,
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


class _Found(Exception):
    """Something clamd could not have inspected: the message says what."""


class _Budget:
    def __init__(self) -> None:
        self.members = 0
        self.expanded = 0

    def member(self) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise _Found(f"more than {MAX_MEMBERS} archive members")

    def expand(self, size: int) -> None:
        self.expanded += size
        if self.expanded > MAX_EXPANDED_BYTES:
            raise _Found(f"expands beyond the scanner's limit of {MAX_EXPANDED_BYTES // 2**20} MiB")


def unscannable_reason(path: Path) -> str | None:
    """Why clamd could not have inspected this file whole, or None."""
    with open(path, "rb") as content:
        try:
            _inspect(content, None, 0, _Budget())
        except _Found as exc:
            return str(exc)
    return None


def _inspect(content: IO[bytes], name: str | None, depth: int, budget: _Budget) -> None:
    head = content.read(SNIFF_BYTES)
    content.seek(0)
    what = f"archive member {name}" if name else "the file"
    sniffed = magic.from_buffer(head, mime=True)
    if sniffed in NOT_UNPACKED:
        raise _Found(f"{what} is {sniffed}, a format the scanner does not unpack")
    walk = _walker(head, sniffed)
    if walk is not None:
        _walk(walk, content, what, depth, budget)
    elif depth == 0 and _has_appended_zip(content):
        # A zip after other content (a self-extractor, a picture with an
        # archive appended): clamd finds such zips, and so must we.
        _walk(_zip_members, content, "the zip appended to the file", depth, budget)


def _walk(
    walk: Callable[[IO[bytes], _Budget], Members],
    content: IO[bytes],
    what: str,
    depth: int,
    budget: _Budget,
) -> None:
    if depth >= MAX_NESTING:
        raise _Found(f"archives nested deeper than the scanner's limit of {MAX_NESTING}")
    try:
        for member_name, member in walk(content, budget):
            with member as nested:
                _inspect(nested, member_name, depth + 1, budget)
    except _Found:
        raise
    except READ_ERRORS as exc:
        raise _Found(f"{what} is a corrupt or unreadable archive ({exc})") from exc


def _has_appended_zip(content: IO[bytes]) -> bool:
    """Whether a zip's central directory ends the file and opens: only then
    is it walked (a stray end-of-directory signature in other data is not
    an archive)."""
    try:
        if not zipfile.is_zipfile(content):
            return False
        with zipfile.ZipFile(content) as archive:
            return bool(archive.infolist())
    except READ_ERRORS:
        return False
    finally:
        content.seek(0)


Members = Iterator[tuple[str, "_SpooledMember"]]


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...

    def close(self) -> None: ...


def _walker(head: bytes, sniffed: str) -> Callable[[IO[bytes], _Budget], Members] | None:
    """How to list the members of this container, if it is one we read."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_members
    if head.startswith(sevenzip.SIGNATURE):
        return _7z_check
    if sniffed == "application/x-tar":
        return _tar_members
    for magic_bytes, opener in _STREAMS:
        if head.startswith(magic_bytes):
            return functools.partial(_stream_member, opener=opener)
    return None


class _SpooledMember:
    """A member copied out (to memory, then to an anonymous file) only when
    its first bytes say it is a container or a format to refuse."""

    def __init__(self, source: Callable[[], _Readable], budget: _Budget) -> None:
        self.source, self.budget = source, budget
        self.spool: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        member = self.source()
        try:
            head = member.read(SNIFF_BYTES)
            self.spool.write(head)
            if _walker(head, magic.from_buffer(head, mime=True)) is not None:
                while chunk := member.read(COPY_CHUNK):
                    self.budget.expand(len(chunk))
                    self.spool.write(chunk)
        finally:
            member.close()
        self.spool.seek(0)
        return self.spool

    def __exit__(self, *_exc: object) -> None:
        assert self.spool is not None
        self.spool.close()


def _zip_members(content: IO[bytes], budget: _Budget) -> Members:
    with zipfile.ZipFile(content) as archive:
        for info in archive.infolist():
            budget.member()
            name = _printable(info.filename)
            if info.flag_bits & 0x1 or info.compress_type == ZIP_AES:
                raise _Found(f"encrypted archive member {name}")
            if info.compress_type not in ZIP_METHODS:
                method = ZIP_METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
                raise _Found(
                    f"archive member {name} is compressed with {method},"
                    " which the scanner does not unpack"
                )
            budget.expand(info.file_size)
            if info.is_dir():
                continue
            yield name, _SpooledMember(functools.partial(archive.open, info), budget)


def _tar_members(content: IO[bytes], budget: _Budget) -> Members:
    with tarfile.open(fileobj=content, mode="r:") as archive:
        for info in archive:
            budget.member()
            if not info.isfile():
                continue
            budget.expand(info.size)

            def opened(info: tarfile.TarInfo = info) -> _Readable:
                member = archive.extractfile(info)
                assert member is not None  # a regular file always has content
                return member

            yield _printable(info.name), _SpooledMember(opened, budget)


def _gunzipped(content: IO[bytes]) -> _Readable:
    return gzip.GzipFile(fileobj=content)


_STREAMS: tuple[tuple[bytes, Callable[[IO[bytes]], _Readable]], ...] = (
    (b"\x1f\x8b", _gunzipped),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
)


def _stream_member(
    content: IO[bytes], budget: _Budget, opener: Callable[[IO[bytes]], _Readable]
) -> Members:
    """A compressed stream (gzip, bzip2, xz) holds one member: its content."""
    budget.member()
    yield "(compressed content)", _SpooledMember(functools.partial(opener, content), budget)


def _7z_check(content: IO[bytes], _budget: _Budget) -> Members:
    """7z members are not unpacked here (no decoder for all of 7z's
    coders ships with Python); the header says whether clamd could."""
    if reason := sevenzip.unscannable_reason(content):
        raise _Found(reason)
    yield from ()


def _printable(name: str) -> str:
    """A member's name as it may appear in a reason: no control characters,
    and short."""
    cleaned = "".join(c if c.isprintable() else "?" for c in name)
    return cleaned[:200]
