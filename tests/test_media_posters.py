"""Video and PDF posters (veza/media/posters.py, issue 16), on real files
generated here: videos encoded with PyAV (its wheel's FFmpeg encoders),
PDFs saved by Pillow or written by hand, and hostile variants made by
patching their bytes. No mocks; nothing is downloaded.

Every hostile input must end in a poster or in UnsupportedImage with a
reason, in this process, never in a crash or a hang of the caller."""

from __future__ import annotations

import os
import random
import struct
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image

from veza.images import UnsupportedImage
from veza.media.posters import (
    MAX_DECODED_FRAMES,
    POSTER_BOX,
    Poster,
    pdf_poster,
    video_poster,
)

# One colour a second: the poster's colour says which second it came from.
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30)]
RED, GREEN = COLOURS[0], COLOURS[1]


def encode(
    path: Path,
    container: str,
    codec: str,
    *,
    size: tuple[int, int] = (320, 256),
    seconds: float = 3,
    fps: int = 10,
    gop: int | None = None,
    movflags: str | None = None,
) -> Path:
    """A video of `seconds` at `fps`, one colour a second (COLOURS)."""
    options = {"movflags": movflags} if movflags else {}
    codec_options = {"deadline": "realtime", "cpu-used": "8"} if codec.startswith("libvpx") else {}
    if gop is not None:
        # No keyframe but every `gop` frames: no scene-cut ones when the colour changes.
        codec_options["sc_threshold"] = "1000000000"
    with av.open(str(path), "w", format=container, options=options) as out:
        stream = out.add_stream(codec, rate=fps, options=codec_options)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for i in range(int(seconds * fps)):
            image = Image.new("RGB", size, COLOURS[int(i / fps) % len(COLOURS)])
            frame = av.VideoFrame.from_image(image)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def close_to(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def refused(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(UnsupportedImage) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(caught.value)


def patched(path: Path, old: bytes, new: bytes, *, count: int = 1) -> Path:
    data = path.read_bytes()
    assert data.count(old) >= count, f"{old!r} not in {path.name}"
    path.write_bytes(data.replace(old, new))
    return path


# ------------------------------------------------------------------ videos that work


@pytest.mark.parametrize(
    ("name", "container", "codec", "kind", "codec_name"),
    [
        ("h264.mp4", "mp4", "libx264", "mp4", "h264"),
        ("mpeg4.mp4", "mp4", "mpeg4", "mp4", "mpeg4"),
        ("hevc.mp4", "mp4", "libx265", "mp4", "hevc"),
        ("h264.mov", "mov", "libx264", "mov", "h264"),
        ("vp8.webm", "webm", "libvpx", "webm", "vp8"),
        ("vp9.webm", "webm", "libvpx-vp9", "webm", "vp9"),
        ("av1.webm", "webm", "libsvtav1", "webm", "av1"),
    ],
)
def test_video_poster_is_the_frame_at_one_second(
    tmp_path: Path, name: str, container: str, codec: str, kind: str, codec_name: str
) -> None:
    path = encode(tmp_path / name, container, codec, seconds=3)
    poster = video_poster(path)
    assert isinstance(poster, Poster)
    assert poster.image.mode == "RGB"
    assert poster.image.size == (320, 256)
    assert close_to(poster.image.getpixel((160, 128)), GREEN), poster.image.getpixel((160, 128))
    assert poster.meta["container"] == kind
    assert poster.meta["codec"] == codec_name
    assert (poster.meta["width"], poster.meta["height"]) == (320, 256)
    assert poster.meta["duration_s"] == pytest.approx(3.0, abs=0.15)
    assert poster.meta["poster_at_s"] == pytest.approx(1.0, abs=0.15)


def test_a_two_second_video_poster_comes_from_one_second(tmp_path: Path) -> None:
    poster = video_poster(encode(tmp_path / "v.mp4", "mp4", "libx264", seconds=2, gop=100))
    assert close_to(poster.image.getpixel((10, 10)), GREEN)
    assert poster.meta["poster_at_s"] == pytest.approx(1.0, abs=0.15)


def test_a_video_shorter_than_a_second_gives_its_middle(tmp_path: Path) -> None:
    poster = video_poster(encode(tmp_path / "v.mp4", "mp4", "libx264", seconds=0.6, fps=10))
    assert close_to(poster.image.getpixel((10, 10)), RED)
    assert poster.meta["poster_at_s"] == pytest.approx(0.3, abs=0.15)


def test_a_big_video_is_scaled_down_to_the_box_keeping_its_ratio(tmp_path: Path) -> None:
    path = encode(tmp_path / "v.mp4", "mp4", "libx264", size=(1920, 1080), seconds=1.5)
    poster = video_poster(path)
    assert poster.image.size == (POSTER_BOX, 720)
    assert (poster.meta["width"], poster.meta["height"]) == (1920, 1080)


def test_a_rotated_video_poster_is_shown_upright(tmp_path: Path) -> None:
    # A phone's portrait video: 64x32 pixels stored, the track header's
    # matrix (tkhd) turning them 90 degrees clockwise for display. The
    # left half (red) is then the top.
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        for i in range(20):
            image = Image.new("RGB", (64, 32), RED)
            image.paste(GREEN, (32, 0, 64, 32))
            frame = av.VideoFrame.from_image(image)
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = bytearray(path.read_bytes())
    matrix = data.index(b"tkhd") + 4 + 40  # after version..volume: a b u c d v x y w
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    poster = video_poster(path)
    assert poster.image.size == (32, 64)
    assert close_to(poster.image.getpixel((16, 5)), RED)
    assert close_to(poster.image.getpixel((16, 58)), GREEN)
    # The metadata keeps the stored size.
    assert (poster.meta["width"], poster.meta["height"]) == (64, 32)


# ------------------------------------------------------------------ hostile videos


def test_random_bytes_named_mp4_are_never_decoded(tmp_path: Path) -> None:
    path = tmp_path / "random.mp4"
    path.write_bytes(random.Random(16).randbytes(64 * 1024))
    assert refused(video_poster, path) == "not an MP4, MOV or WebM video"


def test_a_format_outside_the_allow_list_is_never_opened(tmp_path: Path) -> None:
    # A real video, in a container FFmpeg reads but the allow-list does not name.
    path = encode(tmp_path / "v.avi", "avi", "mpeg4")
    assert refused(video_poster, path) == "not an MP4, MOV or WebM video"


def test_a_codec_outside_the_allow_list_is_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "mjpeg.mov"
    with av.open(str(path), "w", format="mov") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuvj420p"
        for i in range(5):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 64), RED))
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    assert refused(video_poster, path) == "video codec mjpeg is not allowed"


def test_a_truncated_mp4_is_refused(tmp_path: Path) -> None:
    # The muxer writes the index (moov) last: half a file has none.
    path = encode(tmp_path / "v.mp4", "mp4", "libx264")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert refused(video_poster, path).startswith("corrupt or truncated video")


def test_a_truncated_fast_start_mp4_is_refused(tmp_path: Path) -> None:
    # With the index first, the cut is in the frames the index points to.
    path = encode(tmp_path / "v.mp4", "mp4", "libx264", movflags="faststart", seconds=3)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    assert refused(video_poster, path).startswith("corrupt or truncated video")


def test_a_truncated_webm_is_refused(tmp_path: Path) -> None:
    path = encode(tmp_path / "v.webm", "webm", "libvpx-vp9", seconds=3)
    path.write_bytes(path.read_bytes()[:300])
    assert refused(video_poster, path).startswith("corrupt or truncated video")


def test_huge_declared_dimensions_are_refused_before_decoding(tmp_path: Path) -> None:
    # WebM's PixelWidth (0xB0) and PixelHeight (0xBA) rewritten to 20000:
    # 400 megapixels declared, never allocated.
    path = encode(tmp_path / "v.webm", "webm", "libvpx-vp9", size=(320, 256))
    patched(path, b"\xb0\x82\x01\x40", b"\xb0\x82\x4e\x20")
    patched(path, b"\xba\x82\x01\x00", b"\xba\x82\x4e\x20")
    assert refused(video_poster, path) == "video is 20000x20000, over the 33177600 pixel limit"


def test_a_frame_bigger_than_the_limit_is_refused(tmp_path: Path) -> None:
    # A real 8K-and-a-bit video (over 7680x4320 in pixels). FFmpeg reads no
    # size from MPEG-4 part 2's header in MP4 without decoding: the decoded
    # frame's size is checked (the memory cap bounds that decode).
    path = encode(tmp_path / "v.mp4", "mp4", "mpeg4", size=(7696, 4320), seconds=0.2)
    reason = refused(video_poster, path)
    assert reason == "video frame is 7696x4320, over the 33177600 pixel limit"


def test_a_big_h264_frame_is_refused_from_its_header(tmp_path: Path) -> None:
    path = encode(tmp_path / "v.mp4", "mp4", "libx264", size=(7696, 4320), seconds=0.1)
    assert refused(video_poster, path) == "video is 7696x4320, over the 33177600 pixel limit"


def test_a_declared_duration_over_the_limit_is_refused(tmp_path: Path) -> None:
    # A 3 s WebM whose Segment Info Duration (0x4489, a double in ms) says 10 h.
    path = encode(tmp_path / "v.webm", "webm", "libvpx-vp9", seconds=3)
    patched(
        path,
        b"\x44\x89\x88" + struct.pack(">d", 3000.0),
        b"\x44\x89\x88" + struct.pack(">d", 10 * 3600 * 1000.0),
    )
    assert refused(video_poster, path) == "video too long: 10 h over the 4 h limit"


def test_a_lying_header_that_says_shorter_gives_a_poster(tmp_path: Path) -> None:
    # An MP4 of 60 s whose movie and media headers (mvhd, mdhd) say 1 s:
    # the poster is taken from the middle of the second it claims.
    path = encode(tmp_path / "v.mp4", "mp4", "mpeg4", size=(64, 64), seconds=60, fps=2)
    data = bytearray(path.read_bytes())
    for box in (b"mvhd", b"mdhd"):
        at = (
            data.index(box) + 4
        )  # version(1) flags(3) created(4) modified(4) timescale(4) duration(4)
        assert data[at] == 0
        timescale = struct.unpack(">I", data[at + 12 : at + 16])[0]
        data[at + 16 : at + 20] = struct.pack(">I", timescale)
    path.write_bytes(bytes(data))
    poster = video_poster(path)
    assert poster.meta["duration_s"] == 1.0
    assert poster.meta["poster_at_s"] == 0.5
    assert close_to(poster.image.getpixel((10, 10)), RED)


def test_zero_duration_frames_give_a_poster(tmp_path: Path) -> None:
    # Every sample of the MP4's time-to-sample table (stts) lasts 0 ticks:
    # all 30 frames at time 0.
    path = encode(tmp_path / "v.mp4", "mp4", "mpeg4", size=(64, 64), seconds=3)
    data = bytearray(path.read_bytes())
    at = data.index(b"stts") + 4
    entries = struct.unpack(">I", data[at + 4 : at + 8])[0]
    for i in range(entries):
        delta = at + 8 + 8 * i + 4
        data[delta : delta + 4] = b"\0\0\0\0"
    path.write_bytes(bytes(data))
    poster = video_poster(path)
    assert poster.image.size == (64, 64)
    assert poster.meta["poster_at_s"] == 0.0


def test_many_frames_are_decoded_up_to_the_bound(tmp_path: Path) -> None:
    # 3000 frames in 3 s and a single keyframe: reaching 1 s would take
    # 1000 decoded frames; the poster is the last of MAX_DECODED_FRAMES.
    path = encode(
        tmp_path / "v.mp4", "mp4", "libx264", size=(32, 32), seconds=3, fps=1000, gop=100_000
    )
    poster = video_poster(path)
    assert poster.image.size == (32, 32)
    at = poster.meta["poster_at_s"]
    assert isinstance(at, float)
    assert at == pytest.approx((MAX_DECODED_FRAMES - 1) / 1000, abs=0.01)


# ------------------------------------------------------------------ the child's bounds


def child_processes() -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


def test_the_timeout_kills_the_child(tmp_path: Path) -> None:
    path = encode(tmp_path / "v.mp4", "mp4", "libx264")
    before = child_processes()
    assert refused(video_poster, path, timeout_s=0.01) == "poster timed out after 0.01 s"
    assert refused(pdf_poster, write_pdf(tmp_path / "p.pdf"), timeout_s=0.01) == (
        "poster timed out after 0.01 s"
    )
    assert child_processes() == before
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("veza-poster-*/poster.rgb"))


def test_the_memory_cap_refuses(tmp_path: Path) -> None:
    path = encode(tmp_path / "v.mp4", "mp4", "libx264", size=(1920, 1080), seconds=1.5)
    reason = refused(video_poster, path, memory_cap_bytes=1024 * 1024)
    assert "1 MiB memory cap" in reason
    page = write_pdf(tmp_path / "p.pdf", size=(1000, 1000))
    assert "1 MiB memory cap" in refused(pdf_poster, page, memory_cap_bytes=1024 * 1024)


# ------------------------------------------------------------------ PDFs


def write_pdf(
    path: Path, *, size: tuple[int, int] = (612, 792), resolution: float = 72.0, pages: int = 1
) -> Path:
    """A PDF of `pages` pages, page 1 red, the others green; at 72 dpi a
    pixel is a point."""
    first = Image.new("RGB", size, RED)
    rest = [Image.new("RGB", size, GREEN) for _ in range(pages - 1)]
    first.save(path, "PDF", resolution=resolution, save_all=True, append_images=rest)
    return path


def hand_written_pdf(path: Path, objects: list[bytes], trailer: bytes) -> Path:
    """A PDF from its objects, with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d %s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        trailer,
        xref,
    )
    path.write_bytes(bytes(out))
    return path


def test_pdf_poster_is_page_one(tmp_path: Path) -> None:
    poster = pdf_poster(write_pdf(tmp_path / "p.pdf", pages=3))
    assert poster.image.mode == "RGB"
    # A Letter page, its long side rendered to the box.
    assert poster.image.size[0] == pytest.approx(989, abs=1)
    assert poster.image.size[1] == POSTER_BOX
    assert close_to(poster.image.getpixel((400, 600)), RED)
    assert poster.meta == {"page_count": 3, "width_pt": 612.0, "height_pt": 792.0}


def test_a_small_pdf_page_is_rendered_at_no_more_than_four_times(tmp_path: Path) -> None:
    poster = pdf_poster(write_pdf(tmp_path / "p.pdf", size=(100, 50)))
    assert poster.image.size == (400, 200)


def test_a_200_inch_page_is_rendered_within_the_box(tmp_path: Path) -> None:
    # 100 px at 0.5 dpi: a 200 x 200 inch page, the most PDF allows.
    poster = pdf_poster(write_pdf(tmp_path / "p.pdf", size=(100, 100), resolution=0.5))
    assert poster.meta["width_pt"] == 14400
    assert poster.image.size == (POSTER_BOX, POSTER_BOX)


def test_a_page_over_200_inches_is_refused(tmp_path: Path) -> None:
    path = hand_written_pdf(
        tmp_path / "huge.pdf",
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200000 200000] >>",
        ],
        b"/Root 1 0 R",
    )
    reason = refused(pdf_poster, path)
    assert reason == "PDF page 1 is 200000x200000 pt, over the 14400 pt limit"


def test_a_pdf_without_pages_is_refused(tmp_path: Path) -> None:
    path = hand_written_pdf(
        tmp_path / "empty.pdf",
        [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"],
        b"/Root 1 0 R",
    )
    assert refused(pdf_poster, path).startswith("PDF has no pages")


def test_an_encrypted_pdf_is_refused(tmp_path: Path) -> None:
    # RC4 40-bit (V 1, R 2) with a user password: /U is not what the empty
    # password gives, so the document cannot be opened without one.
    rng = random.Random(16)
    o, u = rng.randbytes(32).hex().encode(), rng.randbytes(32).hex().encode()
    path = hand_written_pdf(
        tmp_path / "secret.pdf",
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
            b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -4 >>" % (o, u),
        ],
        b"/Root 1 0 R /Encrypt 4 0 R /ID [<%s> <%s>]" % (b"ab" * 16, b"ab" * 16),
    )
    assert refused(pdf_poster, path) == "PDF is encrypted: it needs a password to open"


def test_a_truncated_pdf_is_refused(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "p.pdf")
    path.write_bytes(path.read_bytes()[:200])
    assert refused(pdf_poster, path).startswith("corrupt or truncated PDF")


def test_a_pdf_cut_in_half_is_refused(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "p.pdf", pages=4)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert refused(pdf_poster, path).startswith("corrupt or truncated PDF")


def test_a_pdf_of_many_pages_gives_page_one(tmp_path: Path) -> None:
    poster = pdf_poster(write_pdf(tmp_path / "p.pdf", size=(50, 50), pages=2000))
    assert poster.meta["page_count"] == 2000
    assert poster.image.size == (200, 200)


def test_random_bytes_named_pdf_are_never_rendered(tmp_path: Path) -> None:
    path = tmp_path / "random.pdf"
    path.write_bytes(random.Random(16).randbytes(4096).replace(b"%PDF-", b""))
    assert refused(pdf_poster, path) == "not a PDF"


def test_a_video_is_not_a_pdf_nor_a_pdf_a_video(tmp_path: Path) -> None:
    assert refused(pdf_poster, encode(tmp_path / "v.mp4", "mp4", "mpeg4")) == "not a PDF"
    assert refused(video_poster, write_pdf(tmp_path / "p.pdf")) == "not an MP4, MOV or WebM video"
