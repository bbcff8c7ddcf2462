"""Animated renditions (veza/media/animation.py), on animations Pillow
writes here: GIF, APNG and WebP, read back with Pillow."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from PIL.PngImagePlugin import Blend, Disposal

from veza.media.animation import (
    MIN_FRAMES_KEPT,
    AnimationBudget,
    AnimationInfo,
    NoAnimation,
    OverBudget,
    animated_webps,
    is_animated,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def encoded(frames: list[Image.Image], fmt: str, **params) -> bytes:
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], **params)
    return out.getvalue()


def opened(content: bytes) -> Image.Image:
    """As the caller opens an upload: through the allow-list."""
    return Image.open(io.BytesIO(content), formats=["GIF", "PNG", "WEBP"])


def animated_webp(image, box, out, budget=None) -> AnimationInfo:
    """One box's animation, written to `out`."""
    [data], info = animated_webps(image, [box], budget)
    out.write(data)
    return info


def rendition(
    content: bytes, box=(400, 400), budget: AnimationBudget | None = None
) -> tuple[AnimationInfo, Image.Image]:
    out = io.BytesIO()
    with opened(content) as image:
        info = animated_webp(image, box, out, budget)
    webp = Image.open(io.BytesIO(out.getvalue()))
    assert webp.format == "WEBP"
    return info, webp


def durations(webp: Image.Image) -> list[int]:
    found = []
    for index in range(webp.n_frames):
        webp.seek(index)
        webp.load()  # WebP sets a frame's duration as it decodes it
        found.append(webp.info["duration"])
    return found


def colours(count: int, size=(48, 27)) -> list[Image.Image]:
    """`count` frames, each its own flat colour (GIF writers merge equal frames)."""
    return [
        Image.new("RGB", size, (index * 37 % 256, index * 11 % 256, 200)) for index in range(count)
    ]


def pixel(webp: Image.Image, frame: int, xy: tuple[int, int]) -> tuple[int, ...]:
    webp.seek(frame)
    return webp.convert("RGBA").getpixel(xy)


def close(found: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    """An opaque pixel of about `colour`: the rendition is lossy."""
    return found[3] == 255 and all(abs(a - b) <= 24 for a, b in zip(found, colour, strict=False))


def test_is_animated_is_about_frames_of_gif_apng_and_webp():
    still = Image.new("RGB", (8, 8), RED)
    for fmt in ("GIF", "PNG", "WEBP"):
        with opened(encoded([still], fmt)) as image:
            assert not is_animated(image)
        with opened(encoded([still, Image.new("RGB", (8, 8), BLUE)], fmt)) as image:
            assert is_animated(image), fmt


def test_a_gif_keeps_its_frames_timing_and_loop():
    frames = colours(4)
    info, webp = rendition(encoded(frames, "GIF", duration=[100, 200, 300, 50], loop=0))
    assert webp.n_frames == 4
    assert durations(webp) == [100, 200, 300, 50]
    assert webp.info["loop"] == 0  # forever, as the GIF
    assert info == AnimationInfo(
        frames_kept=4, frames_total=4, duration_ms_total=650, width=48, height=27,
        dropped_reason=None,
    )  # fmt: skip


def test_a_gif_loop_count_is_read_as_browsers_do():
    # Netscape's count is repetitions after the first play; WebP's is plays.
    _, webp = rendition(encoded(colours(3), "GIF", duration=100, loop=2))
    assert webp.info["loop"] == 3
    # Without a Netscape block a GIF plays once.
    _, webp = rendition(encoded(colours(3), "GIF", duration=100))
    assert webp.info["loop"] == 1


def test_frames_fit_within_the_box_and_are_never_upscaled():
    content = encoded(colours(3, size=(480, 270)), "GIF", duration=100, loop=0)
    info, webp = rendition(content, box=(100, 100))
    assert webp.size == (info.width, info.height) == (100, 56)
    info, webp = rendition(content, box=(1280, 1280))
    assert webp.size == (480, 270)
    info, webp = rendition(content, box=(400, 50))
    assert webp.size == (89, 50)


@pytest.mark.parametrize("dispose_frame_1", [False, True])
def test_gif_transparency_and_disposal_are_composited(dispose_frame_1):
    # Frame 0: the left half blue, the right half transparent. Frame 1: a
    # green square, the rest transparent: frame 0 shows through. Frame 2: a
    # red square, drawn over frame 1, or over nothing where frame 1 (the
    # rectangle Pillow writes: where it differs from frame 0, (0, 0)-(18, 20))
    # was cleared to the background. libvips decodes these frames the same.
    palette = [*BLUE, *GREEN, *RED, 0, 0, 0]

    def frame(box: tuple[int, int, int, int], index: int) -> Image.Image:
        image = Image.new("P", (20, 20), 3)
        image.putpalette(palette)
        image.paste(index, box)
        return image

    frames = [frame((0, 0, 10, 20), 0), frame((14, 14, 18, 18), 1), frame((0, 0, 6, 6), 2)]
    disposal = [1, 2 if dispose_frame_1 else 1, 1]
    content = encoded(frames, "GIF", transparency=3, disposal=disposal, duration=100, loop=0)
    _, webp = rendition(content)
    assert close(pixel(webp, 0, (2, 10)), BLUE)
    assert pixel(webp, 0, (15, 5))[3] == 0
    assert close(pixel(webp, 1, (2, 10)), BLUE)  # frame 0 shows through
    assert close(pixel(webp, 1, (15, 15)), GREEN)
    assert pixel(webp, 1, (15, 5))[3] == 0
    assert close(pixel(webp, 2, (2, 2)), RED)
    if dispose_frame_1:
        assert pixel(webp, 2, (15, 15))[3] == 0
        assert pixel(webp, 2, (5, 10))[3] == 0
    else:
        assert close(pixel(webp, 2, (15, 15)), GREEN)
        assert close(pixel(webp, 2, (5, 10)), BLUE)


def test_apng_blend_dispose_and_timing():
    base = Image.new("RGBA", (16, 16), (*RED, 255))
    over = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    over.paste((*GREEN, 255), (0, 0, 4, 4))
    third = Image.new("RGBA", (16, 16), (*BLUE, 255))
    content = encoded(
        [base, over, third],
        "PNG",
        duration=[40, 80, 120],
        loop=3,
        blend=[Blend.OP_SOURCE, Blend.OP_OVER, Blend.OP_SOURCE],
        disposal=[Disposal.OP_NONE] * 3,
    )
    info, webp = rendition(content)
    assert webp.n_frames == 3
    assert durations(webp) == [40, 80, 120]
    assert webp.info["loop"] == 3  # APNG counts plays, as WebP does
    assert close(pixel(webp, 1, (1, 1)), GREEN)
    assert close(pixel(webp, 1, (10, 10)), RED)  # blended over frame 0
    assert close(pixel(webp, 2, (10, 10)), BLUE)
    assert info.duration_ms_total == 240


def test_an_animated_webp_is_rewritten_smaller():
    content = encoded(colours(5, size=(300, 200)), "WEBP", duration=70, loop=5)
    info, webp = rendition(content, box=(150, 150))
    assert (webp.n_frames, webp.size, webp.info["loop"]) == (5, (150, 100), 5)
    assert durations(webp) == [70] * 5
    assert info.frames_kept == 5


def test_frames_beyond_max_frames_are_dropped_keeping_at_least_three():
    content = encoded(colours(10), "GIF", duration=100, loop=0)
    info, webp = rendition(content, budget=AnimationBudget(max_frames=4))
    assert webp.n_frames == info.frames_kept == 4
    assert info.frames_total == 10
    assert info.duration_ms_total == 400
    assert info.dropped_reason == "kept the first 4 of 10 frames (max_frames 4)"
    # The first ones: frame 3 of the source is frame 3 of the rendition.
    assert close(pixel(webp, 3, (5, 5)), (111, 33, 200))

    info, webp = rendition(content, budget=AnimationBudget(max_frames=1))
    assert webp.n_frames == info.frames_kept == MIN_FRAMES_KEPT == 3

    info, webp = rendition(encoded(colours(2), "GIF"), budget=AnimationBudget(max_frames=1))
    assert (webp.n_frames, info.dropped_reason) == (2, None)


def test_over_the_pixel_budget_is_refused_before_decoding():
    content = encoded(colours(10, size=(100, 100)), "GIF", duration=100)
    out = io.BytesIO()
    with (
        opened(content) as image,
        pytest.raises(OverBudget) as refused,
    ):
        animated_webp(image, (400, 400), out, AnimationBudget(max_total_pixels=50_000))
    assert str(refused.value) == (
        "animation over budget: 10 frames of 100x100 decode to 100000 px, over 50000 px"
    )
    assert out.getvalue() == b""
    # Only the frames kept count: 4 of them fit.
    info, _ = rendition(content, budget=AnimationBudget(max_frames=4, max_total_pixels=50_000))
    assert info.frames_kept == 4


def test_the_pixel_budget_reason_reads_in_megapixels():
    content = encoded(colours(3, size=(1920, 1080)), "GIF", duration=100)
    with opened(content) as image, pytest.raises(OverBudget) as refused:
        animated_webp(image, (400, 400), io.BytesIO(), AnimationBudget(max_total_pixels=4_000_000))
    assert str(refused.value) == (
        "animation over budget: 3 frames of 1920x1080 decode to 6.22 Mpx, over 4 Mpx"
    )
    assert isinstance(refused.value, NoAnimation)  # what the caller catches


def test_over_the_wall_clock_budget_is_refused_mid_way():
    content = encoded(colours(5), "GIF", duration=100)
    out = io.BytesIO()
    with opened(content) as image, pytest.raises(OverBudget) as refused:
        animated_webp(image, (400, 400), out, AnimationBudget(max_seconds=0))
    assert str(refused.value).startswith("animation over budget: 1 of 5 frames took ")
    assert str(refused.value).endswith(" s, over 0 s")
    assert out.getvalue() == b""


def test_frames_of_10_ms_or_less_play_for_100_ms_as_in_browsers():
    content = encoded(colours(4), "GIF", duration=[0, 10, 20, 0], loop=0)
    info, webp = rendition(content)
    assert durations(webp) == [100, 100, 20, 100]
    assert info.duration_ms_total == 320


def noise_frames(count: int, size=(64, 64)) -> list[Image.Image]:
    """Frames that compress badly, so that a cut lands inside frame data."""
    return [Image.effect_noise(size, 60 + index).convert("RGB") for index in range(count)]


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
def test_a_truncated_animation_keeps_the_frames_before_the_cut(fmt):
    # (A truncated animated WebP does not open: libwebp's demuxer wants it
    # whole, and the caller's Image.open refuses it.)
    content = encoded(noise_frames(8), fmt, duration=100, loop=0)
    cut = content[: len(content) * 5 // 8]
    with opened(cut) as image:
        frames_total = image.n_frames
    info, webp = rendition(cut)
    assert 2 <= info.frames_kept == webp.n_frames < 8
    assert info.dropped_reason is not None
    assert info.dropped_reason.startswith(f"kept the first {info.frames_kept} of {frames_total}")
    assert "does not decode (truncated or corrupt)" in info.dropped_reason


def test_a_gif_cut_in_its_second_frame_has_no_animation():
    content = encoded(noise_frames(3), "GIF", duration=100, loop=0)
    cut = content[: len(content) * 1 // 2]  # inside frame 1 (of 0, 1, 2)
    with opened(cut) as image:
        if not is_animated(image):
            pytest.skip("Pillow counted one frame: the caller makes a still")
        with pytest.raises(NoAnimation) as refused:
            animated_webp(image, (400, 400), io.BytesIO())
        assert str(refused.value).startswith("no animation: frame 2 of ")
        # The image is rewound for the caller's still.
        assert image.tell() == 0


def test_thousands_of_tiny_frames_keep_the_first_max_frames():
    palette = [*RED, *BLUE]
    frames = []
    for index in range(5000):
        frame = Image.new("P", (1, 1), index % 2)
        frame.putpalette(palette)
        frames.append(frame)
    content = encoded(frames, "GIF", duration=20, loop=0)
    info, webp = rendition(content)
    assert info.frames_total == 5000
    assert info.frames_kept == webp.n_frames == 300
    assert info.dropped_reason == "kept the first 300 of 5000 frames (max_frames 300)"


def test_exif_orientation_is_applied_to_every_frame():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the pixels are displayed turned 90 degrees clockwise
    content = encoded(colours(3, size=(60, 20)), "WEBP", duration=100, exif=exif.tobytes())
    info, webp = rendition(content)
    assert webp.size == (info.width, info.height) == (20, 60)
    assert "exif" not in webp.info or not webp.info["exif"]
