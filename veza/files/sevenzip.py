"""Whether clamd could read a 7z archive, told from its header alone (read
with py7zr, without a password; nothing is extracted): the coders
(compression methods, filters, encryption) of its folders.

clamd (ClamAV 1.4's 7z reader) decodes only COPY, LZMA, LZMA2 and the x86
and ARM branch filters; a member packed with bzip2, deflate, PPMd, zstd,
brotli or another filter is passed as OK unread, and AES means encrypted
(tested: tests/test_files_inspection.py).
"""

from __future__ import annotations

import io
import lzma
import struct
from typing import IO, Any

import py7zr
from py7zr.archiveinfo import Folder, HeaderStreamsInfo, SignatureHeader
from py7zr.compressor import SupportedMethods
from py7zr.exceptions import ArchiveError
from py7zr.properties import COMPRESSION_METHOD, MAGIC_7Z, PROPERTY

SIGNATURE = MAGIC_7Z
# The coders clamd decodes (see the module's docstring).
CLAMD_METHODS = frozenset(
    {
        COMPRESSION_METHOD.COPY,
        COMPRESSION_METHOD.LZMA,
        COMPRESSION_METHOD.LZMA2,
        COMPRESSION_METHOD.P7Z_BCJ,
        COMPRESSION_METHOD.BCJ_ARM,
    }
)
AES = COMPRESSION_METHOD.CRYPT_AES256_SHA256
# py7zr reads a header whole and builds about 20 bytes of Python objects per
# byte of it (measured: 100,000 members, a 2.9 MiB header, 61 MiB at peak),
# and allows a decoded header of 256 MiB. 4 MiB holds MAX_MEMBERS members
# with 200-character paths, and bounds py7zr to about 100 MiB; it is checked
# before py7zr reads the header, raw and, when packed, decoded.
MAX_HEADER_BYTES = 4 * 1024 * 1024
# What py7zr raises on a corrupt header besides its own errors: a bad field
# kind is a TypeError, a short read a struct error, and so on.
CORRUPT = (
    ArchiveError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    EOFError,
    struct.error,
    lzma.LZMAError,
)
SIGNATURE_HEADER_BYTES = 32


def unscannable_reason(content: IO[bytes]) -> str | None:
    """Why clamd could not have read this 7z archive, or None."""
    try:
        header_folders = _packed_header_folders(content)
        content.seek(0)
        with py7zr.SevenZipFile(content) as archive:
            streams = archive.header.main_streams
            member_folders: list[Folder] = streams.unpackinfo.folders if streams else []
    except py7zr.PasswordRequired:
        return "encrypted 7z archive: the 7z header is encrypted"
    except CORRUPT as exc:
        return f"unreadable 7z archive: {exc}"
    coders = [coder for folder in header_folders + member_folders for coder in folder.coders]
    if any(coder["method"] == AES for coder in coders):
        return "encrypted 7z archive members"
    for coder in coders:
        if coder["method"] not in CLAMD_METHODS:
            return f"7z members packed with {_name(coder)}, which the scanner does not unpack"
    return None


def _packed_header_folders(content: IO[bytes]) -> list[Folder]:
    """The folders the header is packed in (none when it is not), once its
    sizes are within MAX_HEADER_BYTES."""
    content.seek(0)
    signature = SignatureHeader.retrieve(io.BytesIO(content.read(SIGNATURE_HEADER_BYTES)))
    if signature.nextheadersize > MAX_HEADER_BYTES:
        raise py7zr.Bad7zFile(f"7z header of {signature.nextheadersize} bytes")
    content.seek(SIGNATURE_HEADER_BYTES + signature.nextheaderofs)
    header = io.BytesIO(content.read(signature.nextheadersize))
    if header.read(1) != PROPERTY.ENCODED_HEADER:
        return []
    folders: list[Folder] = HeaderStreamsInfo.retrieve(header).unpackinfo.folders
    decoded = sum(folder.unpacksizes[-1] for folder in folders if folder.unpacksizes)
    if decoded > MAX_HEADER_BYTES:
        raise py7zr.Bad7zFile(f"7z header of {decoded} bytes")
    return folders


def _name(coder: dict[str, Any]) -> str:
    """py7zr's name for a coder, in the lower case of the other reasons."""
    method: bytes = coder["method"]
    for known in SupportedMethods.methods:
        if known["id"] == method:
            return str(known["name"]).lower()
    return f"method {method.hex()}"
