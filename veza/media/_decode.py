"""The child program of veza/media/posters.py: decodes one video frame or
renders one PDF page into raw RGB, under an address-space cap.

It is run as a script by path (`python -I .../_decode.py KIND SOURCE OUT
LIMITS`), never imported by the worker: it imports nothing of ours, so it
works whichever copy of veza is installed, and a decoder that crashes,
loops or allocates without bound takes only this process with it. The
parent (posters.py) holds the limits and passes them as JSON; this program
prints one JSON line: {"ok": true, "width", "height", "meta"} with the
pixels in OUT, or {"ok": false, "reason"}.

The decoder libraries are imported *before* the cap is set, so the cap is
a budget for the decoding itself, on top of the interpreter and the
libraries' mappings (FFmpeg's are large and mostly never touched).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
from pathlib import Path
from typing import Any

import av
import av.error
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

# The frame a poster is taken from, in seconds (the middle of shorter videos).
POSTER_AT_S = 1.0
# Packets the decoder may refuse, in a row, before the video counts as corrupt.
MAX_BAD_PACKETS = 50


class Refused(Exception):
    """The input is refused: the message is the reason the parent records."""


class Undecodable(Refused):
    """Decoding or rendering failed: a corrupt file, or the memory cap (the
    decoders do not always say ENOMEM when an allocation fails)."""


def _cap_address_space(cap_bytes: int) -> int:
    """Sets RLIMIT_AS to what is mapped now plus `cap_bytes`; returns it."""
    with open("/proc/self/statm", encoding="ascii") as f:
        in_use = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = in_use + cap_bytes
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def _came_near(limit: int, cap_bytes: int) -> bool:
    """Whether the address space came within a quarter of the cap of the
    limit (VmPeak): a decoder failure then is taken for the cap, not for a
    corrupt file. A heuristic for the reason only: either way it is refused."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmPeak:"):
                peak = int(line.split()[1]) * 1024
                return limit - peak < cap_bytes // 4
    return False


def _fit(width: int, height: int, box: int) -> tuple[int, int]:
    """The size within a box x box square, keeping the ratio, never upscaled."""
    if width <= box and height <= box:
        return width, height
    ratio = box / max(width, height)
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


# ------------------------------------------------------------------ video


def _declared_duration(container: Any, stream: Any) -> float | None:
    """The longest duration the headers declare: the container's and the
    stream's may disagree (a lying header), and the limit holds for both."""
    found = []
    if container.duration is not None and container.duration > 0:
        found.append(container.duration / av.time_base)
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        found.append(float(stream.duration * stream.time_base))
    return max(found) if found else None


def _frame_at(container: Any, stream: Any, target: float, max_frames: int) -> Any:
    """The first frame at or after `target` seconds; else the last decoded,
    after `max_frames` frames or at the end of the stream."""
    if target > 0:
        # Not seekable (no index, a broken one): decode from the start.
        with contextlib.suppress(av.error.FFmpegError):
            container.seek(round(target * av.time_base), backward=True, any_frame=False)
    last = None
    decoded = 0
    bad_packets = 0
    last_error: Exception | None = None
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError as exc:
            bad_packets += 1
            last_error = exc
            if bad_packets > MAX_BAD_PACKETS:
                break
            continue
        bad_packets = 0
        for frame in frames:
            decoded += 1
            last = frame
            if frame.time is None or frame.time >= target - 1e-3 or decoded >= max_frames:
                return frame
    if last is None:
        detail = f": {last_error}" if last_error is not None else ""
        raise Undecodable(f"corrupt or truncated video: no frame could be decoded{detail}")
    return last


def _rotated(image: Image.Image, degrees_ccw: int) -> Image.Image:
    """The frame as it is meant to be shown (phones store portrait video
    sideways, with a display matrix)."""
    turn = round(degrees_ccw / 90) % 4
    if turn == 1:
        return image.transpose(Image.Transpose.ROTATE_90)
    if turn == 2:
        return image.transpose(Image.Transpose.ROTATE_180)
    if turn == 3:
        return image.transpose(Image.Transpose.ROTATE_270)
    return image


def video(source: Path, limits: dict[str, Any]) -> tuple[Image.Image, dict[str, object]]:
    options = {
        # No decoder at all while FFmpeg probes the streams (its parsers
        # still read the codecs' headers): the sizes checked below are what
        # the headers declare, and no frame is decoded before the checks.
        "codec_whitelist": "none",
        # Only local files, whatever a reference inside the file names.
        "protocol_whitelist": "file",
    }
    try:
        container = av.open(str(source), format=limits["demuxer"], options=options)
    except av.error.FFmpegError as exc:
        raise Undecodable(f"corrupt or truncated video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise Refused("no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.codec.canonical_name
        if codec not in limits["codecs"]:
            raise Refused(f"video codec {codec} is not allowed")
        width, height = stream.codec_context.width, stream.codec_context.height
        max_pixels = limits["max_pixels"]
        # 0x0: a header FFmpeg does not read without decoding (MPEG-4 part 2
        # in MP4); then only the decoded frame's size is checked, below.
        if width * height > max_pixels:
            raise Refused(f"video is {width}x{height}, over the {max_pixels} pixel limit")
        duration = _declared_duration(container, stream)
        if duration is not None and duration > limits["max_duration_s"]:
            raise Refused(
                f"video too long: {_hours(duration)} over the "
                f"{_hours(limits['max_duration_s'])} limit"
            )
        # One thread: no thread stacks or malloc arenas against the cap.
        stream.codec_context.thread_count = 1
        target = 0.0 if duration is None else min(POSTER_AT_S, duration / 2)
        frame = _frame_at(container, stream, target, limits["max_frames"])
        if frame.width * frame.height > max_pixels:
            # The stream's own headers said more than the container's, or
            # the container said nothing.
            raise Refused(
                f"video frame is {frame.width}x{frame.height}, over the {max_pixels} pixel limit"
            )
        size = _fit(frame.width, frame.height, limits["box"])
        image = frame.to_image(width=size[0], height=size[1], interpolation="AREA", threads=1)
        image = _rotated(image, frame.rotation)
        meta: dict[str, object] = {
            "container": limits["container"],
            "codec": codec,
            "width": width or frame.width,
            "height": height or frame.height,
            "duration_s": None if duration is None else round(duration, 3),
            "poster_at_s": None if frame.time is None else round(float(frame.time), 3),
        }
        return image.convert("RGB"), meta


# ------------------------------------------------------------------ PDF


def pdf(source: Path, limits: dict[str, Any]) -> tuple[Image.Image, dict[str, object]]:
    try:
        document = pdfium.PdfDocument(source)
    except pdfium.PdfiumError as exc:
        if exc.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            raise Refused("PDF is encrypted: it needs a password to open") from exc
        if exc.err_code == pdfium_c.FPDF_ERR_SUCCESS:
            # PDFium refuses a document whose page tree has no page, and
            # gives no error code for it.
            raise Refused("PDF has no pages (PDFium found none)") from exc
        raise Undecodable(f"corrupt or truncated PDF: {exc}") from exc
    with document:
        page_count = len(document)
        if page_count <= 0:
            raise Refused("PDF has no pages")
        try:
            page = document[0]
        except pdfium.PdfiumError as exc:
            raise Undecodable(f"corrupt or truncated PDF: page 1: {exc}") from exc
        width, height = page.get_size()
        if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
            raise Refused("PDF page 1 has no size")
        max_points = limits["max_page_points"]
        if max(width, height) > max_points:
            raise Refused(
                f"PDF page 1 is {width:.0f}x{height:.0f} pt, over the {max_points} pt limit"
            )
        box = limits["box"]
        scale = min(box / max(width, height), limits["max_scale"])
        bitmap = page.render(scale=scale, may_draw_forms=False)
        image = bitmap.to_pil().convert("RGB")
        if max(image.size) > box:
            # Rounding in PDFium: a pixel over, at most.
            image = image.resize(_fit(image.width, image.height, box), Image.Resampling.LANCZOS)
        meta: dict[str, object] = {
            "page_count": page_count,
            "width_pt": round(width, 2),
            "height_pt": round(height, 2),
        }
        return image, meta


# ------------------------------------------------------------------ main


DECODERS = {"video": video, "pdf": pdf}


def main(argv: list[str]) -> int:
    kind, source, out, limits_json = argv
    limits = json.loads(limits_json)
    cap_bytes = limits["memory_cap_bytes"]
    limit = _cap_address_space(cap_bytes)
    over_cap = f"poster decoding went over the {cap_bytes // (1024 * 1024)} MiB memory cap"
    try:
        image, meta = DECODERS[kind](Path(source), limits)
        Path(out).write_bytes(image.tobytes())
        answer: dict[str, object] = {
            "ok": True,
            "width": image.width,
            "height": image.height,
            "meta": meta,
        }
    except MemoryError:  # av.error.MemoryError (ENOMEM) is one too
        answer = {"ok": False, "reason": over_cap}
    except Undecodable as exc:
        answer = {"ok": False, "reason": over_cap if _came_near(limit, cap_bytes) else str(exc)}
    except Refused as exc:  # a header over a limit, outside the allow-list
        answer = {"ok": False, "reason": str(exc)}
    except av.error.FFmpegError as exc:
        reason = f"corrupt or truncated video: {exc}"
        answer = {"ok": False, "reason": over_cap if _came_near(limit, cap_bytes) else reason}
    except pdfium.PdfiumError as exc:
        reason = f"corrupt or truncated PDF: {exc}"
        answer = {"ok": False, "reason": over_cap if _came_near(limit, cap_bytes) else reason}
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a refusal with its reason, never a crash of the worker
        reason = f"poster decoding failed: {type(exc).__name__}: {exc}"
        answer = {"ok": False, "reason": over_cap if _came_near(limit, cap_bytes) else reason}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
