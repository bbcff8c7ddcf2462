"""Uploads as the API leaves them (a `files` row with pending statuses and
the content at uploads/<uuid>), and the test images, made here with Pillow
so the suite carries no binary fixtures."""

from __future__ import annotations

import functools
import io
import json
import struct
import subprocess
import tarfile
import tempfile
import uuid
import zipfile
import zlib
from pathlib import Path

from PIL import Image, ImageCms

from tests.clamav import EICAR

SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def upload(
    db,
    user_id: int,
    content: bytes,
    filename: str = "file.bin",
    claimed_mime_type: str = "application/octet-stream",
) -> int:
    """Write the content and its row exactly as the upload API does."""
    from veza.storage import get_storage

    storage = get_storage()
    file_uuid = uuid.uuid4()
    relative = storage.upload_path(file_uuid)
    with storage.atomic_writer(relative) as out:
        out.write(content)
    return db.execute(
        "INSERT INTO files (uuid, filename, original_filename, file_path, file_size, uploaded_by,"
        " metadata) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            file_uuid,
            "upload",
            filename,
            relative,
            len(content),
            user_id,
            json.dumps({"claimed_mime_type": claimed_mime_type}),
        ),
    ).fetchone()[0]


def row(db, file_id: int) -> dict:
    cursor = db.execute("SELECT * FROM files WHERE id = %s", (file_id,))
    names = [column.name for column in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=False))


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image


def jpeg_rotated_with_gps() -> bytes:
    """A landscape 800x400 JPEG whose EXIF says "rotate 90° clockwise to
    view" (orientation 6), with GPS coordinates and a colour profile."""
    exif = Image.Exif()
    exif[0x0112] = 6
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 24.0)
    gps[3], gps[4] = "E", (2.0, 21.0, 3.0)
    return encoded(gradient(800, 400), "JPEG", exif=exif, quality=90, icc_profile=SRGB_PROFILE)


def animated_gif(frames: int = 3) -> bytes:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (120, 80), colours[i % 3]) for i in range(frames)]
    return encoded(images[0], "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)


def long_animation(frames: int, size: int) -> bytes:
    """A GIF of `frames` full-canvas frames that differ by one pixel each:
    a few KB on disk, frames x size² pixels to decode."""
    base = Image.new("P", (size, size), 0)
    images = []
    for i in range(frames):
        frame = base.copy()
        frame.putpixel((i, 0), 1 + i % 2)
        images.append(frame)
    return encoded(images[0], "GIF", save_all=True, append_images=images[1:])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels of greyscale but holds a
    few hundred bytes: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + checksum

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def zip_of_zeros(mib: int) -> bytes:
    """A harmless archive of a few hundred KiB that expands to `mib` MiB."""
    out = io.BytesIO()
    block = bytes(1024 * 1024)
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros.bin", "w") as member,
    ):
        for _ in range(mib):
            member.write(block)
    return out.getvalue()


def eicar_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("readme.txt", "nothing to see here")
        archive.writestr("eicar.com", EICAR)
    return out.getvalue()


# Archives the scanner cannot inspect, and ordinary ones it can: made here
# with the standard library, pyzipper (AES), py7zr (7z) and zip(1)
# (ZipCrypto, which Python cannot write).


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def zipcrypto_zip(members: dict[str, bytes], password: str = "secret") -> bytes:
    """A zip whose members are encrypted with the legacy ZipCrypto, by zip -P."""
    with tempfile.TemporaryDirectory() as work:
        names = []
        for name, content in members.items():
            (Path(work) / name).write_bytes(content)
            names.append(name)
        subprocess.run(
            ["/usr/bin/zip", "-q", "-P", password, "out.zip", *names], cwd=work, check=True
        )
        return (Path(work) / "out.zip").read_bytes()


def aes_zip(members: dict[str, bytes], password: bytes = b"secret") -> bytes:
    import pyzipper

    out = io.BytesIO()
    with pyzipper.AESZipFile(
        out, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as archive:
        archive.setpassword(password)
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def seven_zip(members: dict[str, bytes], **options) -> bytes:
    """A 7z archive (py7zr; options: password, header_encryption, filters)."""
    import py7zr

    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "out.7z"
        with py7zr.SevenZipFile(path, "w", **options) as archive:
            for name, content in members.items():
                archive.writestr(content, name)
        return path.read_bytes()


def tar_gz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


def nested_zips(depth: int) -> bytes:
    """A text file inside `depth` zips, each inside the next."""
    content = zipped({"note.txt": b"at the bottom"})
    for level in range(depth - 1):
        content = zipped({f"level{level}.zip": content})
    return content


def docx() -> bytes:
    """A minimal Word document: a zip with the OOXML structure."""
    return zipped(
        {
            "[Content_Types].xml": (
                b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.'
                b'openxmlformats.org/package/2006/content-types"><Default Extension="rels"'
                b' ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                b'<Default Extension="xml" ContentType="application/xml"/><Override'
                b' PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
                b'officedocument.wordprocessingml.document.main+xml"/></Types>'
            ),
            "_rels/.rels": (
                b'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
                b'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1"'
                b' Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
                b'officeDocument" Target="word/document.xml"/></Relationships>'
            ),
            "word/document.xml": (
                b'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.'
                b'openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>'
                b"Minutes of the meeting</w:t></w:r></w:p></w:body></w:document>"
            ),
        }
    )


def encrypted_pdf() -> bytes:
    """A one-page PDF whose trailer names a Standard security handler."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <"
        + b"00" * 32
        + b"> /U <"
        + b"00" * 32
        + b"> /P -4 >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<0102> <0102>] >>\n" % (
        len(objects) + 1
    )
    return bytes(out + b"startxref\n%d\n%%%%EOF\n" % xref)


def zstd_compressed(content: bytes) -> bytes:
    from backports import zstd

    return zstd.compress(content)


README = b"nothing to see here"


# Made once per test process (the long 7z header takes a second to write);
# callers only read it.
@functools.cache
def unscannable_archives() -> dict[str, bytes]:
    """{name: content}: each must end infected (clamd found the virus) or
    failed as unscannable, never clean."""
    import py7zr

    return {
        "zipcrypto-eicar.zip": zipcrypto_zip({"eicar.com": EICAR}),
        "zipcrypto-harmless.zip": zipcrypto_zip({"readme.txt": README}),
        "aes-eicar.zip": aes_zip({"eicar.com": EICAR}),
        "lzma-eicar.zip": zipped({"eicar.com": EICAR}, zipfile.ZIP_LZMA),
        "lzma-harmless.zip": zipped({"readme.txt": README * 50}, zipfile.ZIP_LZMA),
        "nested-encrypted.zip": zipped({"inner.zip": aes_zip({"eicar.com": EICAR})}),
        "targz-of-lzma-zip.tar.gz": tar_gz(
            {"inner.zip": zipped({"eicar.com": EICAR}, zipfile.ZIP_LZMA)}
        ),
        "encrypted-header.7z": seven_zip(
            {"eicar.com": EICAR}, password="secret", header_encryption=True
        ),
        "encrypted-members.7z": seven_zip({"eicar.com": EICAR}, password="secret"),
        "bzip2-members.7z": seven_zip({"eicar.com": EICAR}, filters=[{"id": py7zr.FILTER_BZIP2}]),
        "truncated.7z": seven_zip({"readme.txt": README})[:-12],
        # A header that decodes to 8 MiB (10,000 members with 400-character
        # names): more than veza/files/sevenzip.py lets py7zr read.
        "long-header.7z": seven_zip({f"{i:05d}-{'n' * 400}": b"" for i in range(10_000)}),
        "eicar.zst": zstd_compressed(EICAR),
        "deep.zip": nested_zips(20),
        "truncated.zip": zipped({"readme.txt": README * 1000})[:-30],
        "encrypted.pdf": encrypted_pdf(),
        # A picture with a zip appended (what self-extractors look like).
        "picture-with-zip.jpg": encoded(gradient(64, 64), "JPEG")
        + zipped({"readme.txt": README}, zipfile.ZIP_LZMA),
        # An ELF cut after its headers: clamd cannot parse it.
        "truncated-program": Path("/bin/ls").read_bytes()[:2000],
    }


def ordinary_archives() -> dict[str, bytes]:
    return {
        "plain.zip": zipped({"readme.txt": README, "data.csv": b"a,b\n1,2\n"}),
        "stored.zip": zipped({"readme.txt": README}, zipfile.ZIP_STORED),
        "plain.tar.gz": tar_gz({"readme.txt": README, "inner.zip": zipped({"a.txt": README})}),
        "plain.7z": seven_zip({"readme.txt": README}),
        "minutes.docx": docx(),
        "nested.zip": nested_zips(5),
    }
