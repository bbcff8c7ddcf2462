"""The renditions of an upload: WebP images at each of RENDITION_SIZES
(long sides), from one decode, never upscaled, with a placeholder and the
PDQ hash (veza/files/blocklist.py) from the smallest.

The ladder: the source is decoded once, within the largest size (JPEG
decodes at a reduced scale, `draft`); that is the largest rendition, and
each smaller one is reduced from the one above it, never from the source
again. A size the source is too small to fill would repeat the one below
it, so it is not made: a 300 px image has one rendition, at 300 px, under
the smallest size. `GET /files/{uuid}/thumbnail?size=` falls back to the
nearest size that exists.

Everything here is pure: the renditions come back as bytes (a 1,280 px
WebP is a few hundred KB), and the pipeline step (veza/files/pipeline.py)
writes them. Decoding errors are UnsupportedImage (veza/images.py); an
error while writing is the storage's, never the image's.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from veza import images
from veza.images import ImageInfo, PerceptualHash
from veza.media.placeholder import placeholder

WEBP_QUALITY = 80


@dataclass(frozen=True)
class Rendition:
    size: int  # the long side it was made for (its own may be smaller)
    width: int
    height: int
    animated: bool
    data: bytes

    def as_metadata(self, key: str) -> dict[str, object]:
        return {
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "animated": self.animated,
            "bytes": len(self.data),
            "key": key,
        }


@dataclass(frozen=True)
class Rendered:
    """What an upload's renditions step found and made: what the source is
    (`source`, by kind: {"image": {...}}), the renditions, smallest first,
    the placeholder and the PDQ hash."""

    source: dict[str, dict[str, object]]
    renditions: list[Rendition]
    placeholder: dict[str, str]
    pdq: PerceptualHash
    notes: dict[str, object] = field(default_factory=dict)


def render_image(source: Path, sizes: tuple[int, ...]) -> Rendered:
    """The renditions of an image file (its first frame)."""
    with images.opened(source) as (image, header):
        frame = images.first_frame(image, max(sizes))
    stills, smallest = still_ladder(frame, sizes)
    pdq = images.perceptual_hash(smallest)
    info = ImageInfo(*header, pdq=pdq)
    return Rendered(
        source={"image": info.as_metadata()},
        renditions=stills,
        placeholder=placeholder(smallest),
        pdq=pdq,
    )


def perceptual_hash_of(source: Path, sizes: tuple[int, ...]) -> PerceptualHash:
    """The PDQ hash of an image file as its upload gets it (from the same
    smallest still), so that a file an operator blocks matches its uploads."""
    return render_image(source, sizes).pdq


def still_ladder(frame: Image.Image, sizes: tuple[int, ...]) -> tuple[list[Rendition], Image.Image]:
    """WebP stills of a frame already within the largest size, smallest
    first, and the smallest as an image (for the placeholder and PDQ)."""
    by_dimensions: dict[tuple[int, int], tuple[int, Image.Image]] = {}
    current = frame
    for size in sorted(sizes, reverse=True):
        if max(current.size) > size:
            current = current.copy()
            current.thumbnail((size, size), reducing_gap=images.REDUCING_GAP)
        by_dimensions[current.size] = (size, current)  # a smaller size wins a tie
    ladder = sorted(by_dimensions.values(), key=lambda made: made[0])
    stills = [
        Rendition(size, image.width, image.height, animated=False, data=_webp(image))
        for size, image in ladder
    ]
    return stills, ladder[0][1]


def _webp(still: Image.Image) -> bytes:
    """No exif=, xmp= or icc_profile=: the frame carries pixels only
    (images.first_frame), and a WebP without a profile is sRGB."""
    out = io.BytesIO()
    still.save(out, "WEBP", quality=WEBP_QUALITY)
    return out.getvalue()
