"""Opening untrusted images with Pillow, and decoding their first frame
(veza/media/renditions.py makes the renditions from it).

Defences, in the order they act:
- only the allow-listed decoders are tried (`Image.open(formats=...)`), and
  the pipeline opens only sniffed types on ALLOWED_MIME_TYPES;
- the pixel count is read from the header and checked before any decoding
  (an animation's frames have a budget of their own: veza/media/animation.py);
- so is the memory the decode will take (THUMBNAIL_DECODE_BUDGET_MIB),
  computed from the header's size and mode after JPEG's reduced-scale
  draft: a 200 KB PNG can declare 7000x7000 RGBA, ~374 MiB to decode;
- Pillow's own DecompressionBombError (and every decoder error: truncated,
  corrupt) becomes UnsupportedImage, which the pipeline records as a failure.

Formats: JPEG, PNG (and APNG), GIF, WebP, BMP, TIFF (its first page),
HEIC and HEIF (libheif, through pillow-heif) and AVIF (Pillow's own).

Speed: JPEG is decoded at a reduced scale (`draft`), and `reducing_gap`
lets Pillow shrink by an integer factor before the final resample.
Privacy: a decoded frame carries nothing but pixels: orientation is applied
to them, colours are converted to sRGB from an embedded profile, and the
EXIF (GPS), XMP and the profile itself (whose text tags can hold anything)
are left behind.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pdqhash
import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from veza.settings import get_settings

ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")
# Sniffed MIME types that mean "one of the allowed formats".
ALLOWED_MIME_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/apng",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/x-ms-bmp",
        "image/tiff",
        "image/heic",
        "image/heif",
        "image/heic-sequence",
        "image/heif-sequence",
        "image/avif",
    }
)
# HEIC and HEIF open as Pillow's format "HEIF", decoded by libheif.
pillow_heif.register_heif_opener()
MAX_PIXELS = 50_000_000
REDUCING_GAP = 2.0
# Every rendition's, still or animated (veza/media/).
WEBP_QUALITY = 80
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

# Pillow's own bomb check, lined up with ours: it warns above this and
# raises above twice this.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


# Bytes per pixel of a decoded image in Pillow's memory, by mode (RGB is
# stored in four bytes, like RGBA); modes not listed are taken at 4.
BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 4, "PA": 4, "I;16": 2, "I;16B": 2}
WORKING_BYTES_PER_PIXEL = 4  # the RGB or RGBA copy, and the alpha premultiplied copy


class UnsupportedImage(Exception):
    """Not an image we will decode: the message says why."""


@dataclass(frozen=True)
class PerceptualHash:
    """Meta's PDQ hash of an image (what the moderation blocklist matches,
    veza/files/blocklist.py), as 64 hex digits in PDQ's own order: those of
    the image as it is, then of its seven other rotations and flips, and
    PDQ's quality (0-100: how much structure the image has to hash; a flat
    image's hash says little)."""

    variants: tuple[str, ...]
    quality: int

    @property
    def hex(self) -> str:
        return self.variants[0]


# PDQ's own advice: a hash of quality under 50 is too weak to match on.
PDQ_MIN_QUALITY = 50


class Header(NamedTuple):
    """What an image's header says it is, before any pixel is decoded."""

    width: int
    height: int
    format: str
    frame_count: int


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    frame_count: int
    pdq: PerceptualHash

    def as_metadata(self) -> dict[str, object]:
        return {
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "frame_count": self.frame_count,
            "pdq": self.pdq.hex,
            "pdq_quality": self.pdq.quality,
        }


# What Pillow's decoders raise on truncated, corrupt or hostile data.
DECODER_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    ZeroDivisionError,
    struct.error,
)


@contextmanager
def decoding() -> Iterator[None]:
    """Pillow's errors on hostile data, as UnsupportedImage with the reason.
    Only decoding goes inside: a full disk while writing is no fault of
    the image."""
    try:
        # Pillow warns between its pixel limit and twice it: we refuse
        # those ourselves, in _checked_header, so the warning is noise.
        with warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning):
            yield
    except UnsupportedImage:
        raise
    except Image.DecompressionBombError as exc:
        raise UnsupportedImage(f"too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedImage("not a JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC or AVIF image") from exc
    except DECODER_ERRORS as exc:
        raise UnsupportedImage(f"corrupt or truncated image: {exc}") from exc


@contextmanager
def opened(source: Path) -> Iterator[tuple[Image.Image, Header]]:
    """The image, opened through the allow-list, with its header checked:
    nothing decoded yet."""
    with decoding():
        image = Image.open(source, formats=ALLOWED_FORMATS)
    with image:
        with decoding():
            header = _checked_header(image)
        yield image, header


def first_frame(image: Image.Image, box: int) -> Image.Image:
    """The first frame within box x box (never upscaled), upright, in sRGB,
    RGB or RGBA, and nothing but its pixels."""
    with decoding():
        image.seek(0)
        image.draft("RGB", (box, box))  # JPEG only: decode at 1/2..1/8 scale
        _check_decode_budget(image)
        profile = image.info.get("icc_profile")
        frame: Image.Image = image
        if image.mode == "CMYK" and profile:
            frame = _to_srgb(image, profile)  # before anything: CMYK has no naive RGB
            profile = None
        elif image.mode not in ("RGB", "RGBA"):
            # Before resizing: palette images would otherwise resample
            # by nearest neighbour.
            has_alpha = "A" in image.getbands() or "transparency" in image.info
            frame = image.convert("RGBA" if has_alpha else "RGB")
        frame.thumbnail((box, box), reducing_gap=REDUCING_GAP)
        frame = ImageOps.exif_transpose(frame)
        if profile:
            frame = _to_srgb(frame, profile)
    bare = frame.copy()
    bare.info = {}  # no EXIF, XMP or profile: pixels only
    return bare


def _to_srgb(frame: Image.Image, profile: bytes) -> Image.Image:
    """The frame's colours, from its embedded profile to sRGB (what a
    rendition without a profile is taken to be); alpha is left as it is.
    A profile LittleCMS cannot read is ignored: the pixels are kept as they
    are rather than the image refused."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if frame.mode == "RGBA":
            alpha = frame.getchannel("A")
            converted = ImageCms.profileToProfile(frame.convert("RGB"), source, SRGB)
            assert converted is not None  # inPlace=False returns the image
            converted.putalpha(alpha)
            return converted
        converted = ImageCms.profileToProfile(frame, source, SRGB, outputMode="RGB")
        assert converted is not None
        return converted
    except (ImageCms.PyCMSError, OSError, ValueError):
        return frame if frame.mode in ("RGB", "RGBA") else frame.convert("RGB")


def perceptual_hash(still: Image.Image) -> PerceptualHash:
    """PDQ of the smallest rendition's still: PDQ shrinks to 64x64 first,
    so hashing 400 px rather than the original changes a few bits at most
    (PDQ_MATCH_THRESHOLD allows 31), for a fraction of the time. The
    bits come as a vector, most significant first: packed, they are PDQ's
    hex."""
    pixels = np.asarray(still.convert("RGB"))
    vectors, quality = pdqhash.compute_dihedral(pixels)
    return PerceptualHash(
        variants=tuple(np.packbits(bits.astype(np.uint8)).tobytes().hex() for bits in vectors),
        quality=int(quality),
    )


def _checked_header(image: Image.Image) -> Header:
    """The header's dimensions and frame count, refused above the limits
    before a single pixel is decoded."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise UnsupportedImage(f"{width}x{height} is over the {MAX_PIXELS} pixel limit")
    # Counted from frame headers, not decoded. An animation's frames
    # together have a budget of their own (veza/media/animation.py): over
    # it, the first frame alone is decoded, for the still.
    frame_count = getattr(image, "n_frames", 1)
    image.seek(0)
    # Image.open sets the format of every image it reads; Pillow types it
    # as optional because an image made in memory has none.
    assert image.format is not None
    return Header(width=width, height=height, format=image.format, frame_count=frame_count)


def decode_cost(image: Image.Image) -> int:
    """The bytes decoding and shrinking this image will hold at its peak,
    from its (drafted) size and mode: the decoded pixels, the RGB(A) copy
    when its mode needs converting, and the premultiplied copy Pillow makes
    to resample an image with alpha. Measured within 6 % for RGB, RGBA, L
    and P PNGs of 7000x7000 (docs/files.md)."""
    width, height = image.size
    per_pixel = BYTES_PER_PIXEL.get(image.mode, 4)
    if image.mode not in ("RGB", "RGBA"):
        per_pixel += WORKING_BYTES_PER_PIXEL
    if "A" in image.getbands() or "transparency" in image.info:
        per_pixel += WORKING_BYTES_PER_PIXEL
    return width * height * per_pixel


def _check_decode_budget(image: Image.Image) -> None:
    budget_mib = get_settings().thumbnail_decode_budget_mib
    cost = decode_cost(image)
    if budget_mib and cost > budget_mib * 2**20:
        width, height = image.size
        raise UnsupportedImage(
            f"no thumbnail: decoding {width}x{height} {image.mode} takes"
            f" {cost / 2**20:.0f} MiB, over the {budget_mib} MiB budget"
        )
