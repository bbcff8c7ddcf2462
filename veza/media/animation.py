"""Animated renditions: an animated GIF, APNG or animated WebP becomes an
animated WebP within a box, under a budget.

The caller has opened the image through the allow-list and checked its
header (veza/images.py); this module only decodes frames, fits them and
encodes them, one at a time: a frame is decoded (Pillow's seek() gives each
GIF, APNG and WebP frame composited on the canvas: disposal, transparency,
blending), fitted within the box, handed to libwebp's animation encoder and
let go, so memory holds one frame and the encoded output, not the animation.

Budget (AnimationBudget; over it means a still only, with the reason):
- frames beyond max_frames are dropped, not decoded (the first ones kept,
  never fewer than MIN_FRAMES_KEPT), and the rendition says so;
- the source pixels the kept frames decode to (canvas width x height x
  frames) over max_total_pixels: OverBudget, from the header, before
  anything is decoded;
- the wall clock over max_seconds, checked between frames: OverBudget.

Timing: each frame keeps its duration, except that one of 10 ms or less
plays for 100 ms, as browsers play such GIF and APNG frames (and Chromium
any animation's): the rendition looks as the original did, and a 0 ms
animation does not become a flicker that spins the viewer's CPU. Looping:
the number of plays is kept (a GIF's Netscape count is repetitions after
the first play, WebP's and APNG's count plays; a GIF without one plays once).

A frame that does not decode (a truncated or corrupt file) ends the
animation there: the frames before it are kept if there are at least two,
and the rendition records why it stops short; otherwise NoAnimation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import ExifTags, Image, _webp

from veza.images import DECODER_ERRORS, WEBP_QUALITY

# Formats that can hold an animation among those the allow-list decodes.
ANIMATED_FORMATS = ("GIF", "PNG", "WEBP")

# 300 frames is 10 s at 30 fps, or 30 s at a GIF's usual 10 fps: a reaction
# clip, not a film. Longer sources keep their first 300 frames.
MAX_FRAMES = 300
# Dropping frames never leaves fewer than this: an animation of two frames
# cut from hundreds reads as a glitch, three still shows the motion.
MIN_FRAMES_KEPT = 3
# The decoding work over all frames kept: 200 Mpx, e.g. 300 frames of
# 816x816 or 96 of 1920x1080; Pillow composites GIF frames at roughly 100-200 Mpx/s, so this
# stays within a couple of seconds of decoding (docs/files.md).
MAX_TOTAL_PIXELS = 200_000_000
# Wall clock for decoding, fitting and encoding all frames. The 100-frame
# 480x270 benchmark GIF takes well under a second; 20 s leaves room for a
# slow or busy worker, and a caller's task limit stays the backstop.
MAX_SECONDS = 20.0

# Browsers play a GIF or APNG frame of 10 ms or less (most often 0: "as fast
# as possible") for 100 ms; we write that duration into the rendition.
BROWSER_MIN_FRAME_MS = 10
BROWSER_DEFAULT_FRAME_MS = 100

# libwebp's effort, 0 (fastest) to 6. On the benchmark GIF (bench/animation.py,
# docs/files.md) 4 (vipsthumbnail's default too) writes the smallest file,
# 9 % under 2's and 27 % under 0's, for 1.4x 2's time and still under
# vipsthumbnail's: the rendition is encoded once and served many times.
WEBP_METHOD = 4
# Keyframe spacing, as gif2webp and Pillow choose for lossy animations.
WEBP_KMIN = 3
WEBP_KMAX = 5
# The WebP loop count is 16 bits; 0 is "forever".
WEBP_MAX_LOOP = 0xFFFF

REDUCING_GAP = 2.0
# WebP container: the VP8X flag that says frames hold transparency.
VP8X_ALPHA_FLAG = 0x10

# EXIF orientation -> the transpose that makes the pixels upright (as
# ImageOps.exif_transpose does for a still).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_QUARTER_TURNS = frozenset(
    {
        Image.Transpose.TRANSPOSE,
        Image.Transpose.TRANSVERSE,
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_270,
    }
)


class NoAnimation(Exception):
    """No animated rendition for this image: make the still only, and record
    the message (it says why)."""


class OverBudget(NoAnimation):
    """The animation is over its AnimationBudget: the message says how."""


@dataclass(frozen=True)
class AnimationBudget:
    max_frames: int = MAX_FRAMES
    max_total_pixels: int = MAX_TOTAL_PIXELS
    max_seconds: float = MAX_SECONDS


@dataclass(frozen=True)
class AnimationInfo:
    """What was written: the frames kept of the source's, the rendition's
    play time (one loop) and size, and why frames were left out, if any."""

    frames_kept: int
    frames_total: int
    duration_ms_total: int
    width: int
    height: int
    dropped_reason: str | None

    def as_metadata(self) -> dict[str, object]:
        return {
            "frames_kept": self.frames_kept,
            "frames_total": self.frames_total,
            "duration_ms": self.duration_ms_total,
            "width": self.width,
            "height": self.height,
            "dropped_reason": self.dropped_reason,
        }


def is_animated(image: Image.Image) -> bool:
    """A GIF, APNG or WebP of more than one frame (frames are counted from
    their headers, not decoded)."""
    return image.format in ANIMATED_FORMATS and getattr(image, "n_frames", 1) > 1


def animated_webps(
    image: Image.Image,
    boxes: Sequence[tuple[int, int]],
    budget: AnimationBudget | None = None,
) -> tuple[list[bytes], AnimationInfo]:
    """`image`, opened and header-checked by the caller and animated, as an
    animated WebP within each of `boxes` (never upscaled), from one decode
    of each frame: it is fitted to the largest box, then reduced from there
    to each smaller one, as the stills are. The WebPs, in the order of
    `boxes`, and what the largest one holds.

    Raises OverBudget (before anything is decoded when the header tells)
    or NoAnimation."""
    budget = budget or AnimationBudget()
    started = time.monotonic()
    if not is_animated(image):
        raise ValueError(f"not an animation: a {image.format} of one frame")
    frames_total: int = image.n_frames  # type: ignore[attr-defined]  # checked above
    frames = min(frames_total, max(budget.max_frames, MIN_FRAMES_KEPT))
    width, height = image.size
    pixels = width * height * frames
    if pixels > budget.max_total_pixels:
        raise OverBudget(
            f"animation over budget: {frames} frames of {width}x{height} decode to"
            f" {_pixels(pixels)}, over {_pixels(budget.max_total_pixels)}"
        )
    dropped_reason = (
        f"kept the first {frames} of {frames_total} frames (max_frames {budget.max_frames})"
        if frames < frames_total
        else None
    )
    upright = _upright(image)
    if upright in _QUARTER_TURNS:
        width, height = height, width
    sizes = [_fitted((width, height), box) for box in boxes]
    largest_first = sorted(set(sizes), key=lambda size: size[0] * size[1], reverse=True)
    loop = _webp_loop(image)
    encoders = {
        size: _webp.WebPAnimEncoder(size, 0, loop, False, WEBP_KMIN, WEBP_KMAX, False, False)
        for size in largest_first
    }
    timestamp = 0.0
    kept = 0
    has_alpha = False
    try:
        for index in range(frames):
            elapsed = time.monotonic() - started
            if index and elapsed > budget.max_seconds:
                raise OverBudget(
                    f"animation over budget: {index} of {frames} frames took"
                    f" {elapsed:.1f} s, over {budget.max_seconds:g} s"
                )
            try:
                frame, duration = _frame(image, index)
            except DECODER_ERRORS as exc:
                if index < 2:
                    raise NoAnimation(
                        f"no animation: frame {index + 1} of {frames_total} does not decode: {exc}"
                    ) from exc
                dropped_reason = (
                    f"kept the first {index} of {frames_total} frames: frame {index + 1}"
                    f" does not decode (truncated or corrupt): {exc}"
                )
                break
            if upright is not None:
                frame = frame.transpose(upright)
            has_alpha = has_alpha or frame.mode == "RGBA"
            for size in largest_first:
                if frame.size != size:
                    frame = frame.resize(size, Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)
                encoders[size].add(
                    frame.getim(), round(timestamp), False, WEBP_QUALITY, 100, WEBP_METHOD
                )
            timestamp += duration
            kept += 1
    finally:
        # The caller makes its still next; a rewind reads no pixels. One
        # that fails must not hide why we stopped: the still will meet it.
        with contextlib.suppress(*DECODER_ERRORS):
            image.seek(0)
    made = {
        size: _assembled(encoder, round(timestamp), has_alpha) for size, encoder in encoders.items()
    }
    largest = largest_first[0]
    info = AnimationInfo(
        frames_kept=kept,
        frames_total=frames_total,
        duration_ms_total=round(timestamp),
        width=largest[0],
        height=largest[1],
        dropped_reason=dropped_reason,
    )
    return [made[size] for size in sizes], info


def _assembled(encoder: Any, end_ms: int, has_alpha: bool) -> bytes:
    """The animation's bytes: no colour profile, EXIF or XMP (the frames
    are taken as sRGB, as the stills are once converted)."""
    encoder.add(None, end_ms, False, WEBP_QUALITY, 100, 0)
    data: bytes | None = encoder.assemble(b"", b"", b"")
    if data is None:
        raise OSError("libwebp returned no animation")
    return _with_alpha_flag(data) if has_alpha else data


def _frame(image: Image.Image, index: int) -> tuple[Image.Image, float]:
    """Frame `index`, composited, in RGB or RGBA, and its duration in ms."""
    image.seek(index)
    frame: Image.Image = image
    if image.mode not in ("RGB", "RGBA"):
        # Before resizing: a palette image would resample by nearest neighbour.
        frame = image.convert("RGBA" if image.has_transparency_data else "RGB")
    else:
        image.load()
    duration = float(image.info.get("duration") or 0)
    if duration <= BROWSER_MIN_FRAME_MS:
        duration = BROWSER_DEFAULT_FRAME_MS
    return frame, duration


def _upright(image: Image.Image) -> Image.Transpose | None:
    """The transpose that applies the EXIF orientation (a WebP's or PNG's),
    as ImageOps.exif_transpose does for the still: the rendition carries no
    EXIF, so the pixels must be upright."""
    try:
        # A PNG's eXIf chunk after the image data is found by decoding frame 0.
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except DECODER_ERRORS as exc:
        raise NoAnimation(f"no animation: frame 1 does not decode: {exc}") from exc
    return _UPRIGHT.get(orientation)


def _with_alpha_flag(data: bytes) -> bytes:
    """The animation with its VP8X header's alpha flag set. libwebp crops a
    frame to the rectangle it paints and sets the flag only when a frame it
    writes holds alpha: a GIF whose transparent parts are never painted
    comes out without it, and readers that believe the flag (Pillow among
    them) show those parts black instead of transparent."""
    # RIFF header (12 bytes), then the VP8X chunk: tag, size, flags byte.
    if data[12:16] != b"VP8X":
        return data
    return data[:20] + bytes([data[20] | VP8X_ALPHA_FLAG]) + data[21:]


def _webp_loop(image: Image.Image) -> int:
    """The WebP loop count (plays; 0 forever) that plays as the source does."""
    loop = image.info.get("loop")
    if image.format == "GIF":
        # Netscape's count is repetitions after the first play; without it
        # a GIF plays once.
        loop = 1 if loop is None else (0 if loop == 0 else loop + 1)
    return min(int(loop or 0), WEBP_MAX_LOOP)


def _fitted(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """`size` scaled to fit within `box`, aspect kept, never upscaled."""
    width, height = size
    scale = min(box[0] / width, box[1] / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _pixels(count: int) -> str:
    """A pixel count as a reason reads it: 1.27 Gpx, 400 Mpx, 6.22 Mpx, 50000 px."""
    if count >= 1e9:
        return f"{count / 1e9:.3g} Gpx"
    return f"{count / 1e6:.3g} Mpx" if count >= 1e6 else f"{count} px"
