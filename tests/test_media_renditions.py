"""Renditions (issue 16): the sizes of RENDITION_SIZES from one decode,
never upscaled; the formats read (TIFF, HEIC, AVIF besides the web's);
outputs that carry pixels only; the placeholder; the API's ?size=; and the
backfill of files processed before renditions."""

from __future__ import annotations

import io

import blurhash
import pillow_heif
import pytest
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

from tests.factories import make_user
from tests.maintenance_helpers import run_task
from tests.test_media_animation import durations
from tests.uploads import animated_gif, encoded, gradient, long_animation, row, upload


@pytest.fixture
def user(db, clamd_server) -> int:
    return make_user(db)


def process(file_id: int) -> None:
    from veza.files import pipeline

    pipeline.run_all(file_id)


def stored(key: str) -> Image.Image:
    from veza.storage import get_storage

    image = Image.open(get_storage().root / key)
    image.load()
    return image


def made(file: dict) -> list[tuple[int, int, int]]:
    return [(r["size"], r["width"], r["height"]) for r in file["metadata"]["renditions"]]


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (3000, 2000, [(400, 400, 267), (1280, 1280, 853)]),
        (1000, 500, [(400, 400, 200), (1280, 1000, 500)]),  # the original size, not enlarged
        (300, 200, [(400, 300, 200)]),  # too small for two: one, under the smallest size
        (400, 100, [(400, 400, 100)]),
    ],
)
def test_each_size_is_made_once_never_upscaled(db, user, width, height, expected):
    file_id = upload(db, user, encoded(gradient(width, height), "JPEG"), "p.jpg", "image/jpeg")
    process(file_id)

    file = row(db, file_id)
    assert file["processing_status"] == "completed"
    assert made(file) == expected
    assert file["metadata"]["rendition_sizes"] == [400, 1280]
    for rendition in file["metadata"]["renditions"]:
        image = stored(rendition["key"])
        assert (image.format, image.size) == ("WEBP", (rendition["width"], rendition["height"]))
        assert rendition["bytes"] > 0
    assert file["thumbnail_path"] == file["metadata"]["renditions"][0]["key"]


def test_the_placeholder_is_a_blurhash_and_the_colour_of_the_largest_area(db, user):
    picture = Image.new("RGB", (900, 600), (20, 40, 200))
    picture.paste((250, 250, 250), (0, 0, 200, 100))  # a small white patch
    file_id = upload(db, user, encoded(picture, "PNG"), "sky.png", "image/png")
    process(file_id)

    placeholder = row(db, file_id)["metadata"]["placeholder"]
    assert blurhash.is_valid_blurhash(placeholder["blurhash"])
    red, green, blue = (int(placeholder["dominant_color"][i : i + 2], 16) for i in (1, 3, 5))
    assert blue > 180
    assert max(red, green) < 80


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def jpeg_with_everything() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)  # GPS latitude
    return encoded(
        gradient(1600, 1000),
        "JPEG",
        exif=exif,
        xmp=b"<x:xmpmeta>where I live</x:xmpmeta>",
        icc_profile=SRGB,
    )


def png_with_text() -> bytes:
    text = PngInfo()
    text.add_text("Comment", "drawn at home, 12 Main St")
    return encoded(gradient(1600, 1000), "PNG", pnginfo=text, icc_profile=SRGB)


def heic(image: Image.Image) -> bytes:
    out = io.BytesIO()
    pillow_heif.from_pillow(image).save(out, quality=80)
    return out.getvalue()


def multi_page_tiff() -> bytes:
    out = io.BytesIO()
    first, second = gradient(1600, 1000), Image.new("RGB", (1600, 1000), (0, 255, 0))
    first.save(out, "TIFF", save_all=True, append_images=[second], compression="tiff_lzw")
    return out.getvalue()


def assert_pixels_only(image: Image.Image) -> None:
    """A rendition as it must go out: WebP, and nothing but its pixels."""
    assert image.format == "WEBP"
    assert not image.getexif()
    for chunk in ("exif", "xmp", "icc_profile"):
        assert chunk not in image.info, chunk


FORMATS = {
    "photo.jpg": jpeg_with_everything(),
    "drawing.png": png_with_text(),
    "still.webp": encoded(gradient(1600, 1000), "WEBP", exif=Image.Exif().tobytes()),
    "still.gif": encoded(gradient(1600, 1000).convert("P"), "GIF"),
    "old.bmp": encoded(gradient(1600, 1000), "BMP"),
    "scan.tiff": multi_page_tiff(),
    "phone.heic": heic(gradient(1600, 1000)),
    "modern.avif": encoded(gradient(1600, 1000), "AVIF", quality=70),
}


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_read_gives_renditions_that_carry_pixels_only(db, user, name):
    file_id = upload(db, user, FORMATS[name], name, "application/octet-stream")
    process(file_id)

    file = row(db, file_id)
    assert file["processing_status"] == "completed", file["metadata"].get("failure_reason")
    smallest, largest = file["metadata"]["renditions"]
    assert (smallest["width"], largest["width"]) == (400, 1280)
    for rendition in (smallest, largest):
        assert_pixels_only(stored(rendition["key"]))
    # The left half of the gradient is red (a TIFF's first page, not its second).
    red, green, blue = stored(smallest["key"]).convert("RGB").getpixel((50, 100))
    assert red > 200
    assert max(green, blue) < 70


def api_samples(tmp) -> dict[str, bytes]:
    """One upload of each kind the renditions step reads, 2000x1500 where
    the format lets the test choose."""
    from tests.test_media_posters import encode, write_pdf

    picture = gradient(2000, 1500)
    return {
        "a.jpg": encoded(picture, "JPEG"),
        "a.png": encoded(picture, "PNG"),
        "a.webp": encoded(picture, "WEBP"),
        "a.tiff": encoded(picture, "TIFF"),
        "a.heic": heic(picture),
        "a.avif": encoded(picture, "AVIF", quality=60),
        "a.mp4": encode(tmp / "a.mp4", "mp4", "libx264", size=(1920, 1080), seconds=2).read_bytes(),
        "a.webm": encode(
            tmp / "a.webm", "webm", "libvpx-vp9", size=(1920, 1080), seconds=2
        ).read_bytes(),
        "a.pdf": write_pdf(tmp / "a.pdf", size=(1000, 750)).read_bytes(),
    }


@pytest.mark.slow  # real Celery workers
def test_every_kind_gets_renditions_through_the_api_which_serves_the_nearest_size(
    api, db, clamd_server, relay, tmp_path
):
    from tests.conftest import start_worker, wait_for

    owner = api.register()
    room = api.room(owner)
    uuids = {}
    worker = start_worker("files", queues="files,scan")
    try:
        for name, content in api_samples(tmp_path).items():
            sent = api.post(
                f"/rooms/{room}/files",
                owner,
                content_type="multipart/form-data",
                data={"file": (io.BytesIO(content), name, "application/octet-stream")},
            )
            assert sent.status_code == 202, sent.json
            uuids[name] = sent.json["uuid"]

        def statuses() -> set[str]:
            return {api.get(f"/files/{u}", owner).json["processing_status"] for u in uuids.values()}

        wait_for(lambda: statuses() == {"completed"}, timeout=180, what="every upload processed")
    finally:
        worker.stop()

    for name, uuid in uuids.items():
        file = api.get(f"/files/{uuid}", owner).json
        assert [r["size"] for r in file["metadata"]["renditions"]] == [400, 1280], name
        assert "key" not in file["metadata"]["renditions"][0]  # where it is stored is ours
        assert set(file["metadata"]["placeholder"]) == {"blurhash", "dominant_color"}, name
        # 840 is as near 400 as 1280: a tie goes to the larger.
        for asked, width in ((None, 400), ("100", 400), ("840", 1280), ("5000", 1280)):
            answer = api.get(
                f"/files/{uuid}/thumbnail" + (f"?size={asked}" if asked else ""), owner
            )
            assert answer.status_code == 200, (name, asked, answer.json)
            assert answer.headers["Content-Type"] == "image/webp"
            assert Image.open(io.BytesIO(answer.data)).width == width, (name, asked)
    video = api.get(f"/files/{uuids['a.webm']}", owner).json
    assert (video["mime_type"], video["metadata"]["renditions"][1]["height"]) == ("video/webm", 720)
    for bad in ("abc", "0", "-5", "100000"):
        refused = api.get(f"/files/{uuids['a.jpg']}/thumbnail?size={bad}", owner)
        assert refused.status_code == 422, bad
        assert refused.json["error"]["code"] == "validation_failed"


def legacy(db, file_id: int) -> str:
    """Make a processed file look as it did before renditions: one 400 px
    thumbnail under the old name, no renditions in its metadata."""
    from veza.storage import get_storage

    file = row(db, file_id)
    old = f"thumbs/{file['file_hash']}.webp"
    with get_storage().atomic_writer(old) as out:
        out.write(encoded(gradient(400, 300), "WEBP"))
    db.execute(
        "UPDATE files SET thumbnail_path = %s, metadata = metadata - 'renditions'"
        " - 'rendition_sizes' - 'placeholder' WHERE id = %s",
        (old, file_id),
    )
    return old


def test_the_backfill_renders_old_files_and_files_of_types_read_since(db, user, environment):
    from veza.files import pipeline

    old_photo = upload(db, user, encoded(gradient(2000, 1000), "JPEG"), "old.jpg", "image/jpeg")
    process(old_photo)
    old_key = legacy(db, old_photo)
    old_tiff = upload(db, user, multi_page_tiff(), "old.tiff", "image/tiff")
    for step in (pipeline.hash_upload, pipeline.sniff, pipeline.scan):
        step(old_tiff)
    pipeline.fail(old_tiff, "thumbnail", "unsupported image format image/tiff")
    text = upload(db, user, b"just words", "notes.txt", "text/plain")
    process(text)

    assert run_task("maintenance.backfill_renditions", dry_run=True)["counts"] == {
        "renditions_made": 2
    }
    assert row(db, old_photo)["thumbnail_path"] == old_key  # a dry run changes nothing

    done = run_task("maintenance.backfill_renditions")
    assert done["counts"] == {"renditions_made": 2, "renditions_failed": 0}
    for file_id in (old_photo, old_tiff):
        file = row(db, file_id)
        assert file["processing_status"] == "completed"
        assert "failure_reason" not in file["metadata"]
        assert made(file)[0][:2] == (400, 400)
    assert run_task("maintenance.backfill_renditions")["counts"]["renditions_made"] == 0

    # New sizes: the next backfill makes them.
    environment(RENDITION_SIZES="200,800,1600")
    assert run_task("maintenance.backfill_renditions")["counts"]["renditions_made"] == 2
    assert made(row(db, old_photo)) == [(200, 200, 100), (800, 800, 400), (1600, 1600, 800)]


def test_rendition_sizes_are_read_as_a_sorted_ladder(environment):
    from veza.settings import InvalidSettings, get_settings

    environment(RENDITION_SIZES=" 1280, 400,400 ")
    assert get_settings().rendition_sizes == (400, 1280)
    for bad in ("0", "400,abc", "1,2,3,4,5,6", "9000"):
        with pytest.raises(InvalidSettings, match="RENDITION_SIZES"):
            environment(RENDITION_SIZES=bad)


@pytest.mark.slow  # real Celery workers
def test_an_animation_gets_animated_and_still_renditions_and_the_api_serves_both(
    api, db, clamd_server, relay
):
    from tests.conftest import start_worker, wait_for

    owner = api.register()
    room = api.room(owner)
    worker = start_worker("files", queues="files,scan")
    try:
        sent = api.post(
            f"/rooms/{room}/files",
            owner,
            content_type="multipart/form-data",
            data={"file": (io.BytesIO(animated_gif(3)), "wave.gif", "image/gif")},
        )
        assert sent.status_code == 202, sent.json
        uuid = sent.json["uuid"]
        wait_for(
            lambda: api.get(f"/files/{uuid}", owner).json["processing_status"] == "completed",
            timeout=120,
            what="the GIF to be processed",
        )
    finally:
        worker.stop()

    metadata = api.get(f"/files/{uuid}", owner).json["metadata"]
    assert [(r["size"], r["animated"]) for r in metadata["renditions"]] == [
        (400, False),
        (400, True),
    ]
    animated = Image.open(io.BytesIO(api.get(f"/files/{uuid}/thumbnail", owner).data))
    assert (animated.format, animated.n_frames) == ("WEBP", 3)
    assert durations(animated) == [100, 100, 100]
    still = Image.open(io.BytesIO(api.get(f"/files/{uuid}/thumbnail?still=1", owner).data))
    assert getattr(still, "n_frames", 1) == 1
    for rendition in (animated, still):
        assert_pixels_only(rendition)


def test_an_animation_over_budget_gets_its_still_only_with_the_reason(db, user):
    file_id = upload(db, user, long_animation(51, 2000), "long.gif", "image/gif")
    process(file_id)

    file = row(db, file_id)
    assert file["processing_status"] == "completed"
    assert "animation over budget: 51 frames of 2000x2000" in file["metadata"]["animation_skipped"]
    assert [r["animated"] for r in file["metadata"]["renditions"]] == [False, False]


def test_a_video_and_a_pdf_get_renditions_of_their_posters(db, user, tmp_path):
    from tests.test_media_posters import encode, write_pdf

    video = encode(tmp_path / "clip.mp4", "mp4", "libx264", size=(1920, 1080), seconds=2)
    pdf = write_pdf(tmp_path / "slides.pdf", size=(1000, 600), pages=3)
    video_id = upload(db, user, video.read_bytes(), "clip.mp4", "video/mp4")
    pdf_id = upload(db, user, pdf.read_bytes(), "slides.pdf", "application/pdf")
    process(video_id)
    process(pdf_id)

    clip, slides = row(db, video_id), row(db, pdf_id)
    assert made(clip) == [(400, 400, 225), (1280, 1280, 720)]
    assert {key: clip["metadata"]["video"][key] for key in ("codec", "width", "height")} == {
        "codec": "h264",
        "width": 1920,
        "height": 1080,
    }
    assert clip["metadata"]["video"]["duration_s"] == pytest.approx(2, abs=0.2)
    # The second second's colour: the poster comes from 1 s in.
    assert stored(clip["thumbnail_path"]).convert("RGB").getpixel((200, 100))[1] > 150
    assert [r["size"] for r in slides["metadata"]["renditions"]] == [400, 1280]
    assert slides["metadata"]["pdf"]["page_count"] == 3
    for file in (clip, slides):
        assert file["processing_status"] == "completed"
        assert set(file["metadata"]["placeholder"]) == {"blurhash", "dominant_color"}
        for rendition in file["metadata"]["renditions"]:
            assert_pixels_only(stored(rendition["key"]))


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def video_bytes(tmp) -> bytes:
    from tests.test_media_posters import encode

    return encode(tmp / "v.mp4", "mp4", "libx264", seconds=2).read_bytes()


def pdf_bytes(tmp) -> bytes:
    from tests.test_media_posters import write_pdf

    return write_pdf(tmp / "d.pdf").read_bytes()


# Each new format cut short (and noise), through the whole pipeline: the
# reason each one's failure records. The decoders' own hostile cases (lying
# headers, huge declared sizes, frame floods, zero durations, timeouts,
# memory caps) are in test_media_posters.py and test_media_animation.py.
HOSTILE = {
    "cut.mp4": (lambda tmp: half(video_bytes(tmp)), "corrupt or truncated video"),
    "cut.pdf": (lambda tmp: pdf_bytes(tmp)[:300], "corrupt or truncated PDF"),
    "cut.heic": (lambda tmp: heic(gradient(800, 600))[:2000], "corrupt or truncated image"),
    "cut.avif": (lambda tmp: encoded(gradient(800, 600), "AVIF")[:500], "corrupt or truncated"),
    "cut.tiff": (lambda tmp: multi_page_tiff()[:3000], "not a JPEG, PNG, GIF, WebP, BMP, TIFF"),
    "noise.webm": (lambda tmp: bytes(range(256)) * 40, "unsupported image format"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_samples_end_failed_with_their_reason_and_no_rendition(db, user, tmp_path, name):
    make, reason = HOSTILE[name]
    file_id = upload(db, user, make(tmp_path), name, "application/octet-stream")
    process(file_id)

    file = row(db, file_id)
    assert (file["processing_status"], file["metadata"]["failed_step"]) == ("failed", "thumbnail")
    assert file["metadata"]["failure_reason"].startswith(reason), file["metadata"]
    assert file["virus_scan_status"] == "clean"  # served as a download, never previewed
    assert file["thumbnail_path"] is None
    assert "renditions" not in file["metadata"]
