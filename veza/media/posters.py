"""Posters: a still RGB image and metadata from a video (MP4, MOV, WebM)
or a PDF's first page, for the file pipeline's thumbnail step (issue 16).

    video_poster(path) -> Poster    # a frame about 1 s in
    pdf_poster(path) -> Poster      # page 1, rendered
    Poster(image, meta)             # image: RGB, within POSTER_BOX, never upscaled

Every refusal, whatever its cause (a format outside the allow-list, a
header over a limit, a corrupt or truncated file, an encrypted PDF, the
timeout, the memory cap, a decoder crash), is `veza.images.UnsupportedImage`
with a human reason, which the pipeline records as the file's failure.

Defences, in the order they act:
- the allow-list, on the file's first bytes, here in the worker: an
  ISO-BMFF (MP4/MOV) box, WebM's EBML header or `%PDF-`; anything else is
  never handed to a decoder. FFmpeg is then told which demuxer to use (no
  probing of other formats), to open no decoder while it probes the
  streams, and to read only local files; a stream whose codec is not in
  VIDEO_CODECS is refused before its decoder is opened;
- the decoding runs in a child process (veza/media/_decode.py, run with
  `sys.executable -I`: a plain subprocess, so a Celery prefork child, which
  is daemonic and may not use multiprocessing, can start it), with an
  address-space cap (RLIMIT_AS) and a wall-clock timeout after which it is
  killed; a decoder that crashes takes only the child with it;
- in the child, the headers are checked before any frame is decoded or any
  page rendered: the codec, the declared dimensions and duration of the
  video, the size of the PDF's page 1; the decoded frame's own size is
  checked again (a stream can contradict its container);
- the poster is at most POSTER_BOX pixels on its long side: frames are
  scaled down by FFmpeg's swscale, pages rendered at that size.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from veza.images import UnsupportedImage

# The child program (run by path; it imports nothing of ours).
CHILD = Path(__file__).with_name("_decode.py")

# Sniffed MIME types that mean "a format these posters handle", for the
# pipeline's allow-list next to veza.images.ALLOWED_MIME_TYPES.
VIDEO_MIME_TYPES = frozenset({"video/mp4", "video/quicktime", "video/webm"})
PDF_MIME_TYPES = frozenset({"application/pdf"})

# The long side of a poster, in pixels: the thumbnail step scales it down
# again; a bigger poster only costs the child memory and time.
POSTER_BOX = 1280

# Video codecs allowed (FFmpeg's canonical names): a stream in any other is
# refused before a decoder is opened.
VIDEO_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4")
# 8K UHD: nothing bigger is shot by phones or cameras people share from;
# the decoded frame alone is 50 MiB in YUV 4:2:0, ~100 MiB as RGB.
MAX_VIDEO_PIXELS = 7680 * 4320
# A feature film, a long meeting recording; beyond it, a header is more
# likely a lie than a real file in a chat.
MAX_VIDEO_DURATION_S = 4 * 3600
# Frames decoded to reach the poster's time, from the keyframe before it:
# a 10 s group of pictures at 60 fps. After that the last one decoded is
# the poster (a stream of thousands of tiny frames cannot keep it busy).
MAX_DECODED_FRAMES = 600

# PDF 1.7 (ISO 32000-1, annex C) caps a page at 14,400 units a side: 200 in.
MAX_PDF_PAGE_POINTS = 14_400
# Pages are rendered so their long side fills POSTER_BOX, but at no more
# than 4x 72 dpi (288 dpi): a business card is not blown up to 1280 px.
MAX_PDF_RENDER_SCALE = 4.0

# Wall-clock seconds a child has, from its start (the interpreter and the
# libraries take ~0.5 s) to its answer; then it is killed. A frame 1 s into
# an 8K HEVC video decodes in a few seconds on one core.
VIDEO_TIMEOUT_S = 20.0
PDF_TIMEOUT_S = 20.0
# Address space the decoding may add to the child (RLIMIT_AS), on top of
# the interpreter and the decoder libraries: an 8K frame, its RGB copy,
# the reference frames of the group of pictures, a page's bitmap.
MEMORY_CAP_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Poster:
    """A still image (RGB, within POSTER_BOX) and what the headers said.

    Video meta: container ("mp4", "mov" or "webm"), codec, width, height
    (the stream's declared size, in pixels), duration_s (None when unknown),
    poster_at_s (the frame's time). PDF meta: page_count, width_pt,
    height_pt (page 1, in points)."""

    image: Image.Image
    meta: dict[str, object]


def video_poster(
    path: Path,
    *,
    timeout_s: float = VIDEO_TIMEOUT_S,
    memory_cap_bytes: int = MEMORY_CAP_BYTES,
) -> Poster:
    """The frame about 1 s in (the middle of a shorter video, the first if
    its duration is unknown), or UnsupportedImage with the reason."""
    container = sniff_video(_head(path))
    if container is None:
        raise UnsupportedImage("not an MP4, MOV or WebM video")
    limits: dict[str, object] = {
        "container": container,
        # FFmpeg's "mov" demuxer reads MP4 and MOV; "webm" is its Matroska one.
        "demuxer": "webm" if container == "webm" else "mov",
        "codecs": VIDEO_CODECS,
        "max_pixels": MAX_VIDEO_PIXELS,
        "max_duration_s": MAX_VIDEO_DURATION_S,
        "max_frames": MAX_DECODED_FRAMES,
    }
    return _in_child("video", path, limits, timeout_s, memory_cap_bytes)


def pdf_poster(
    path: Path,
    *,
    timeout_s: float = PDF_TIMEOUT_S,
    memory_cap_bytes: int = MEMORY_CAP_BYTES,
) -> Poster:
    """Page 1, rendered on white, or UnsupportedImage with the reason (a PDF
    that needs a password to open is refused: "PDF is encrypted")."""
    if not is_pdf(_head(path)):
        raise UnsupportedImage("not a PDF")
    limits: dict[str, object] = {
        "max_page_points": MAX_PDF_PAGE_POINTS,
        "max_scale": MAX_PDF_RENDER_SCALE,
    }
    return _in_child("pdf", path, limits, timeout_s, memory_cap_bytes)


# ------------------------------------------------------------------ sniffing

HEAD_BYTES = 1024
# The boxes a QuickTime file may start with when it has no `ftyp`.
QUICKTIME_FIRST_BOXES = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip"})


def sniff_video(head: bytes) -> str | None:
    """ "mp4", "mov" or "webm" from a file's first bytes, or None."""
    if head[4:8] == b"ftyp":
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if head[4:8] in QUICKTIME_FIRST_BOXES:
        return "mov"
    # EBML magic, then the DocType element (0x4282) saying "webm".
    if head.startswith(b"\x1a\x45\xdf\xa3") and b"\x42\x82\x84webm" in head[:64]:
        return "webm"
    return None


def is_pdf(head: bytes) -> bool:
    # Readers accept junk before the header within the first 1024 bytes.
    return b"%PDF-" in head[:HEAD_BYTES]


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(HEAD_BYTES)
    except OSError as exc:
        raise UnsupportedImage(f"unreadable: {exc.strerror}") from exc


# ------------------------------------------------------------------ the child


def _in_child(
    kind: str, path: Path, limits: dict[str, object], timeout_s: float, memory_cap_bytes: int
) -> Poster:
    limits = {**limits, "box": POSTER_BOX, "memory_cap_bytes": memory_cap_bytes}
    with tempfile.TemporaryDirectory(prefix="veza-poster-") as tmp:
        out = Path(tmp) / "poster.rgb"
        command = [
            sys.executable,
            "-I",  # no PYTHON* variables, no user site, no current directory
            str(CHILD),
            kind,
            str(path.resolve()),
            str(out),
            json.dumps(limits),
        ]
        try:
            # run() kills the child (SIGKILL) and reaps it on a timeout, and
            # on any exception while waiting (a Celery soft time limit).
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=tmp,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise UnsupportedImage(f"poster timed out after {timeout_s:g} s") from None
        answer = _answer(done.stdout)
        if answer is None:
            cap_mib = memory_cap_bytes // (1024 * 1024)
            if done.returncode < 0:
                name = signal.Signals(-done.returncode).name
                raise UnsupportedImage(f"poster decoder crashed ({name}; memory cap {cap_mib} MiB)")
            raise UnsupportedImage(
                f"poster decoder failed (exit status {done.returncode}; memory cap {cap_mib} MiB)"
            )
        if not answer.get("ok"):
            raise UnsupportedImage(str(answer.get("reason") or "poster decoder failed"))
        meta = answer.get("meta")
        if not isinstance(meta, dict):
            raise UnsupportedImage("poster decoder answered without metadata")
        return Poster(image=_read_pixels(out, answer), meta=meta)


def _answer(stdout: bytes) -> dict[str, object] | None:
    lines = stdout.strip().splitlines()
    if not lines:
        return None
    try:
        answer = json.loads(lines[-1])
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _read_pixels(out: Path, answer: dict[str, object]) -> Image.Image:
    width, height = answer.get("width"), answer.get("height")
    if not (isinstance(width, int) and isinstance(height, int)):
        raise UnsupportedImage("poster decoder answered without a size")
    if not (0 < width <= POSTER_BOX and 0 < height <= POSTER_BOX):
        raise UnsupportedImage(f"poster decoder answered {width}x{height}")
    data = out.read_bytes()
    if len(data) != width * height * 3:
        raise UnsupportedImage("poster decoder wrote a short image")
    return Image.frombytes("RGB", (width, height), data)
