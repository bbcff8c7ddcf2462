"""Uploads as the API leaves them (a `files` row with pending statuses and
the content at uploads/<uuid>), and the test images, made here with Pillow
so the suite carries no binary fixtures."""

from __future__ import annotations

import io
import json
import struct
import uuid
import zipfile
import zlib

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
    from veza.storage import storage

    file_uuid = uuid.uuid4()
    relative = storage.upload_path(file_uuid)
    path = storage.absolute(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
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
