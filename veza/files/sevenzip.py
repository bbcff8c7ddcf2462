"""Just enough of the 7z format to tell whether clamd could read an archive:
the coders (compression methods, filters, encryption) of its folders,
read from the header without a password.

clamd (ClamAV 1.4's 7z reader) decodes only COPY, LZMA, LZMA2 and the x86
and ARM branch filters; a member packed with bzip2, deflate, PPMd, zstd,
brotli or another filter is passed as OK unread, and AES means encrypted
(tested: tests/test_files_inspection.py). The layout is 7-Zip's
7zFormat.txt: a 32-byte signature header pointing at the next header,
which is either the header itself (kHeader) or a packed header
(kEncodedHeader) whose own coders say how it is packed.
"""

from __future__ import annotations

import lzma
import struct
from typing import IO

SIGNATURE = b"7z\xbc\xaf\x27\x1c"
AES = bytes.fromhex("06f10701")
COPY, LZMA, LZMA2 = b"\x00", bytes.fromhex("030101"), b"\x21"
# The coders clamd decodes (see the module's docstring).
CLAMD_CODERS = {
    COPY: "copy",
    LZMA: "LZMA",
    LZMA2: "LZMA2",
    bytes.fromhex("03030103"): "x86 BCJ",
    bytes.fromhex("03030501"): "ARM BCJ",
}
# Names of the coders clamd passes unread, for the reason a person reads.
REFUSED_CODER_NAMES = {
    bytes.fromhex("040202"): "bzip2",
    bytes.fromhex("040108"): "deflate",
    bytes.fromhex("040109"): "deflate64",
    bytes.fromhex("030401"): "PPMd",
    bytes.fromhex("04f71101"): "zstd",
    bytes.fromhex("04f71102"): "brotli",
    bytes.fromhex("03"): "delta",
    bytes.fromhex("0303011b"): "BCJ2",
}


def coder_name(method: bytes) -> str:
    return CLAMD_CODERS.get(method) or REFUSED_CODER_NAMES.get(method) or f"method {method.hex()}"


# A header larger than this is refused rather than read into memory.
MAX_HEADER_BYTES = 16 * 1024 * 1024

K_END, K_HEADER, K_ARCHIVE_PROPERTIES, K_ADDITIONAL_STREAMS = 0x00, 0x01, 0x02, 0x03
K_MAIN_STREAMS, K_PACK_INFO, K_UNPACK_INFO, K_SUBSTREAMS = 0x04, 0x06, 0x07, 0x08
K_SIZE, K_CRC, K_FOLDER, K_CODERS_UNPACK_SIZE, K_ENCODED_HEADER = 0x09, 0x0A, 0x0B, 0x0C, 0x17


class Unreadable(Exception):
    """The archive is not one this module can read: the message says why."""


class Encrypted(Exception):
    """The archive's header or members are encrypted (AES)."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise Unreadable("truncated 7z header")
        self.at += 1
        return self.data[self.at - 1]

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise Unreadable("truncated 7z header")
        self.at += count
        return self.data[self.at - count : self.at]

    def number(self) -> int:
        """7z's variable-length NUMBER: the leading one bits of the first
        byte count the little-endian bytes that follow."""
        first, mask, value = self.byte(), 0x80, 0
        for index in range(8):
            if not first & mask:
                return value | ((first & (mask - 1)) << (8 * index))
            value |= self.byte() << (8 * index)
            mask >>= 1
        return value


class _Folder:
    def __init__(self) -> None:
        self.coders: list[tuple[bytes, bytes]] = []  # (method id, properties)
        self.unpack_sizes: list[int] = []


class _Streams:
    def __init__(self) -> None:
        self.pack_position = 0
        self.pack_sizes: list[int] = []
        self.folders: list[_Folder] = []


def coders(content: IO[bytes]) -> list[bytes]:
    """Every coder id of every folder (members and header), once the
    header is read; Encrypted or Unreadable when it cannot be."""
    content.seek(0)
    start = content.read(32)
    if len(start) < 32 or not start.startswith(SIGNATURE):
        raise Unreadable("not a 7z archive")
    offset, size = struct.unpack_from("<QQ", start, 12)
    if size > MAX_HEADER_BYTES:
        raise Unreadable(f"7z header of {size} bytes")
    content.seek(32 + offset)
    header = content.read(size)
    found: list[bytes] = []
    for _ in range(4):  # an encoded header may encode another one; never more
        reader = _Reader(header)
        kind = reader.byte() if header else K_HEADER
        if kind == K_HEADER:
            return found + _header_coders(reader)
        if kind != K_ENCODED_HEADER:
            raise Unreadable(f"unknown 7z header kind {kind:#x}")
        streams = _streams(reader)
        found += [method for folder in streams.folders for method, _ in folder.coders]
        header = _decoded_header(content, streams)
    raise Unreadable("7z header encoded too many times")


def _header_coders(reader: _Reader) -> list[bytes]:
    if not reader.data:
        return []  # an empty archive
    found: list[bytes] = []
    while (kind := reader.byte()) != K_END:
        if kind == K_ARCHIVE_PROPERTIES:
            while reader.byte() != K_END:
                reader.take(reader.number())
        elif kind in (K_ADDITIONAL_STREAMS, K_MAIN_STREAMS):
            streams = _streams(reader)
            found += [method for folder in streams.folders for method, _ in folder.coders]
        else:
            break  # files info: names and times, nothing about coders
    return found


def _streams(reader: _Reader) -> _Streams:
    streams = _Streams()
    while (kind := reader.byte()) != K_END:
        if kind == K_PACK_INFO:
            _pack_info(reader, streams)
        elif kind == K_UNPACK_INFO:
            _unpack_info(reader, streams)
        elif kind == K_SUBSTREAMS:
            return streams  # sizes of the files in each folder: not needed
        else:
            raise Unreadable(f"unexpected 7z property {kind:#x}")
    return streams


def _pack_info(reader: _Reader, streams: _Streams) -> None:
    streams.pack_position = reader.number()
    count = reader.number()
    while (kind := reader.byte()) != K_END:
        if kind == K_SIZE:
            streams.pack_sizes = [reader.number() for _ in range(count)]
        elif kind == K_CRC:
            _skip_digests(reader, count)
        else:
            raise Unreadable(f"unexpected 7z pack property {kind:#x}")


def _skip_digests(reader: _Reader, count: int) -> None:
    all_defined = reader.byte()
    defined = count
    if not all_defined:
        bits = reader.take((count + 7) // 8)
        defined = sum(b.bit_count() for b in bits)
    reader.take(4 * defined)


def _unpack_info(reader: _Reader, streams: _Streams) -> None:
    if reader.byte() != K_FOLDER:
        raise Unreadable("7z folders missing")
    count = reader.number()
    if reader.byte():
        raise Unreadable("7z folders stored outside the header")
    outputs = [_folder(reader, streams) for _ in range(count)]
    while (kind := reader.byte()) != K_END:
        if kind == K_CODERS_UNPACK_SIZE:
            for folder, out_streams in zip(streams.folders, outputs, strict=True):
                folder.unpack_sizes = [reader.number() for _ in range(out_streams)]
        elif kind == K_CRC:
            _skip_digests(reader, count)
        else:
            raise Unreadable(f"unexpected 7z folder property {kind:#x}")


def _folder(reader: _Reader, streams: _Streams) -> int:
    """Read one folder's coders into `streams`; return its output streams."""
    folder = _Folder()
    inputs = outputs = 0
    for _ in range(reader.number()):
        flags = reader.byte()
        method = reader.take(flags & 0x0F)
        if flags & 0x10:
            inputs, outputs = inputs + reader.number(), outputs + reader.number()
        else:
            inputs, outputs = inputs + 1, outputs + 1
        properties = reader.take(reader.number()) if flags & 0x20 else b""
        if flags & 0x80:
            raise Unreadable("7z alternative coder methods")
        folder.coders.append((method, properties))
    for _ in range(outputs - 1):  # bind pairs
        reader.number()
        reader.number()
    packed = inputs - (outputs - 1)
    if packed > 1:
        for _ in range(packed):
            reader.number()
    streams.folders.append(folder)
    return outputs


def _decoded_header(content: IO[bytes], streams: _Streams) -> bytes:
    """The header packed in an encoded header: AES means encrypted; only
    one LZMA or LZMA2 coder is read, the ways 7-Zip and py7zr pack it."""
    if not streams.folders or not streams.pack_sizes:
        raise Unreadable("7z encoded header without data")
    folder = streams.folders[0]
    methods = [method for method, _ in folder.coders]
    if AES in methods:
        raise Encrypted("the 7z header is encrypted")
    if len(folder.coders) != 1 or methods[0] not in (LZMA, LZMA2):
        raise Unreadable("7z header packed with an unsupported method")
    size = folder.unpack_sizes[-1] if folder.unpack_sizes else 0
    if size > MAX_HEADER_BYTES:
        raise Unreadable(f"7z header of {size} bytes")
    method, properties = folder.coders[0]
    content.seek(32 + streams.pack_position)
    packed = content.read(streams.pack_sizes[0])
    try:
        decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[_filter(method, properties)])
        return decoder.decompress(packed, max_length=size)
    except (lzma.LZMAError, ValueError, IndexError, struct.error) as exc:
        raise Unreadable(f"corrupt 7z header: {exc}") from exc


def _filter(method: bytes, properties: bytes) -> dict[str, int]:
    if method == LZMA2:
        bits = properties[0]
        dict_size = (2 | (bits & 1)) << (bits // 2 + 11) if bits < 40 else 0xFFFFFFFF
        return {"id": lzma.FILTER_LZMA2, "dict_size": dict_size}
    first = properties[0]
    lc, remainder = first % 9, first // 9
    lp, pb = remainder % 5, remainder // 5
    (dict_size,) = struct.unpack_from("<I", properties, 1)
    return {"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": lc, "lp": lp, "pb": pb}
