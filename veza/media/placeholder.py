"""What a client shows while a rendition loads: a BlurHash string (a few
dozen characters that decode to a blurred picture) and the dominant colour,
both from the smallest rendition shrunk to PLACEHOLDER_BOX: a handful of
pixels is all either needs, so they cost a fraction of a millisecond
(docs/benchmarks.md has the share of the pipeline)."""

from __future__ import annotations

import blurhash
from PIL import Image

PLACEHOLDER_BOX = 32
# BlurHash components along the long and the short side: 4x3 is the
# format's own suggestion for a photo.
LONG_COMPONENTS, SHORT_COMPONENTS = 4, 3
# Transparent areas show the chat's usual light background.
BACKGROUND = (255, 255, 255)


def placeholder(still: Image.Image) -> dict[str, str]:
    """{"blurhash": ..., "dominant_color": "#rrggbb"} of an RGB or RGBA still."""
    small = still.copy()
    small.thumbnail((PLACEHOLDER_BOX, PLACEHOLDER_BOX))
    if small.mode == "RGBA":
        flat = Image.new("RGB", small.size, BACKGROUND)
        flat.paste(small, mask=small.getchannel("A"))
        small = flat
    landscape = small.width >= small.height
    x, y = (LONG_COMPONENTS, SHORT_COMPONENTS) if landscape else (SHORT_COMPONENTS, LONG_COMPONENTS)
    color = dominant_color(small)
    # blurhash.encode closes the image it is given: last.
    return {
        "blurhash": blurhash.encode(small, x_components=x, y_components=y),
        "dominant_color": color,
    }


def dominant_color(small: Image.Image) -> str:
    """The most common of the image's five median-cut colours: the colour
    of the largest area, not the average (a red dot on white is white)."""
    quantized = small.quantize(colors=5, method=Image.Quantize.MEDIANCUT)
    counts = quantized.getcolors() or []
    _, index = max(counts)
    assert isinstance(index, int)  # a palette image counts palette indexes
    palette = quantized.getpalette() or []
    red, green, blue = palette[3 * index : 3 * index + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"
