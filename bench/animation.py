"""Animated GIF -> animated WebP (veza/media/animation.py) beside
`vipsthumbnail 'in.gif[n=-1]'`, for the issue 16 benchmark row.

    python3 bench/animation.py

A 100-frame 480x270 GIF (moving shapes over a gradient, 40 ms frames),
fitted within 400 px and 1280 px (never upscaled: 1280 keeps 480x270;
vipsthumbnail is told so with `>`, or it would enlarge to 1280x720);
ours in-process, vipsthumbnail as a whole process. Then each libwebp
method 0..4 within 400 px, with the output size. Times are the best of
a few runs; ratio = ours / vipsthumbnail (goal <= 1.5).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageDraw

from veza.media import animation


def sample_gif(path: Path, frames: int = 100, size: tuple[int, int] = (480, 270)) -> None:
    width, height = size
    background = Image.linear_gradient("L").resize(size).convert("RGB")
    images = []
    for i in range(frames):
        frame = background.copy()
        draw = ImageDraw.Draw(frame)
        x = (i * 7) % width
        draw.ellipse((x - 40, 60, x + 40, 140), fill=(220, 40, 40))
        draw.rectangle((0, height - 60 + (i % 30), width // 2, height), fill=(30, 90, 200))
        draw.text((10, 10), f"frame {i}", fill=(255, 255, 0))
        images.append(frame.quantize(64))
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)


def best_time(fn, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def ours(path: Path, box: int) -> int:
    with Image.open(path, formats=["GIF"]) as image:
        [data], _ = animation.animated_webps(image, [(box, box)])
    return len(data)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="veza-bench-anim-") as tmp:
        source = Path(tmp) / "in.gif"
        sample_gif(source)
        print(f"source: {source.stat().st_size / 1024:.0f} KiB, 100 frames of 480x270")
        for box in (400, 1280):
            out = Path(tmp) / f"vips{box}.webp"
            vips = ["vipsthumbnail", f"{source}[n=-1]", "-s", f"{box}x{box}>", "-o", f"{out}[Q=80]"]
            vips_s = best_time(lambda vips=vips: subprocess.run(vips, check=True))
            ours_s = best_time(lambda box=box: ours(source, box))
            size = ours(source, box)
            print(
                f"box {box:>4}: ours {ours_s * 1000:6.0f} ms ({size / 1024:.0f} KiB, method"
                f" {animation.WEBP_METHOD}), vipsthumbnail {vips_s * 1000:6.0f} ms"
                f" ({out.stat().st_size / 1024:.0f} KiB), ratio {ours_s / vips_s:.2f} [<= 1.5]"
            )
        chosen = animation.WEBP_METHOD
        for method in range(5):
            animation.WEBP_METHOD = method
            seconds = best_time(lambda: ours(source, 400))
            print(f"method {method}: {seconds * 1000:6.0f} ms, {ours(source, 400) / 1024:.0f} KiB")
        animation.WEBP_METHOD = chosen


if __name__ == "__main__":
    main()
