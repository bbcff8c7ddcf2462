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
from veza.media import animation, posters
from veza.media.placeholder import placeholder


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


# What the renditions step reads: the images of the allow-list, videos and
# PDFs (their posters: veza/media/posters.py).
RENDERED_TYPES = images.ALLOWED_MIME_TYPES | posters.VIDEO_MIME_TYPES | posters.PDF_MIME_TYPES


def render(source: Path, mime_type: str, sizes: tuple[int, ...]) -> Rendered:
    """The renditions of a file of a type on RENDERED_TYPES (the sniffed
    type picks the decoder: nothing else is ever opened)."""
    if mime_type in posters.VIDEO_MIME_TYPES:
        return render_poster(posters.video_poster(source), "video", sizes)
    if mime_type in posters.PDF_MIME_TYPES:
        return render_poster(posters.pdf_poster(source), "pdf", sizes)
    return render_image(source, sizes)


def render_poster(poster: posters.Poster, kind: str, sizes: tuple[int, ...]) -> Rendered:
    """The renditions of a video's or a PDF's poster (within POSTER_BOX,
    so sizes above it repeat the largest and are left out). What the
    headers said is kept under `kind`, with the poster's PDQ hash: the
    blocklist is matched against posters too."""
    frame = poster.image
    if max(frame.size) > max(sizes):
        frame = frame.copy()
        frame.thumbnail((max(sizes), max(sizes)), reducing_gap=images.REDUCING_GAP)
    stills, smallest = still_ladder(frame, sizes)
    pdq = images.perceptual_hash(smallest)
    return Rendered(
        source={kind: {**poster.meta, "pdq": pdq.hex, "pdq_quality": pdq.quality}},
        renditions=stills,
        placeholder=placeholder(smallest),
        pdq=pdq,
    )


def render_image(source: Path, sizes: tuple[int, ...]) -> Rendered:
    """The renditions of an image file: stills of its first frame, and of
    an animation, animated ones too, within its budget; over it, the stills
    only, with the reason (`animation_skipped`)."""
    notes: dict[str, object] = {}
    animated: list[Rendition] = []
    with images.opened(source) as (image, header):
        if animation.is_animated(image):
            try:
                animated, played = animated_ladder(image, sizes)
                notes["animation"] = played.as_metadata()
            except animation.NoAnimation as exc:
                notes["animation_skipped"] = str(exc)
            except images.DECODER_ERRORS as exc:
                # Whatever else the frames meet: the still is still made
                # (and meets it too, if the first frame is the trouble).
                notes["animation_skipped"] = f"no animation: {exc}"
        frame = images.first_frame(image, max(sizes))
    stills, smallest = still_ladder(frame, sizes)
    pdq = images.perceptual_hash(smallest)
    info = ImageInfo(*header, pdq=pdq)
    return Rendered(
        source={"image": info.as_metadata()},
        renditions=stills + animated,
        placeholder=placeholder(smallest),
        pdq=pdq,
        notes=notes,
    )


def animated_ladder(
    image: Image.Image, sizes: tuple[int, ...]
) -> tuple[list[Rendition], animation.AnimationInfo]:
    """Animated WebPs at each size, from one decode of each frame; a size
    the source is too small to fill is left out, as for the stills."""
    made, played = animation.animated_webps(image, [(size, size) for size in sizes])
    by_dimensions: dict[tuple[int, int], Rendition] = {}
    for size, data in sorted(zip(sizes, made, strict=True), reverse=True):
        width, height = Image.open(io.BytesIO(data)).size  # the header: nothing decoded
        by_dimensions[width, height] = Rendition(size, width, height, animated=True, data=data)
    return sorted(by_dimensions.values(), key=lambda rendition: rendition.size), played


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
    still.save(out, "WEBP", quality=images.WEBP_QUALITY)
    return out.getvalue()
