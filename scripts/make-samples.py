#!/usr/bin/env python3
"""Make the demo's sample images in samples/ (committed; rerun after changing this file).

Drawn from code, so they carry no one's copyright and stay small (each < 200 KB):
- photo-exif-rotated.jpg: 1600x1200 as stored, EXIF Orientation 6 (display: rotate 90 degrees
  clockwise). It reads correctly, arrow up, only when the orientation is applied: its thumbnail
  must come out portrait (192x256).
- logo-alpha.png: RGBA with transparent corners and a half-transparent ring.
- landscape.webp: lossy WebP.
- spinner.gif: animated GIF, 12 frames.
- city at night.jpg: a key with spaces (S3 events URL-encode them as "+").

Usage: .venv/bin/python scripts/make-samples.py [OUT_DIR]   (Pillow: the dev extra)
"""

import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "samples")
MAX_BYTES = 200 * 1024
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW_TO_DISPLAY = 6


def gradient(width: int, height: int, top: tuple, bottom: tuple) -> Image.Image:
    """A vertical gradient, built from one column so it costs nothing to draw."""
    column = Image.new("RGB", (1, height))
    for y in range(height):
        t = y / (height - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        column.putpixel((0, y), colour)
    return column.resize((width, height))


def photo_exif_rotated() -> Image.Image:
    """Drawn upright as 1200x1600, stored turned a quarter left, tagged 'turn right to view'."""
    upright = gradient(1200, 1600, (40, 110, 200), (250, 190, 120))
    draw = ImageDraw.Draw(upright)
    draw.ellipse((820, 140, 1080, 400), fill=(255, 236, 150))  # sun, top right
    draw.polygon([(0, 1600), (0, 1150), (350, 900), (700, 1200), (1200, 950), (1200, 1600)],
                 fill=(60, 90, 60))  # hills at the bottom
    draw.polygon([(600, 250), (420, 600), (540, 600), (540, 900), (660, 900), (660, 600),
                  (780, 600)], fill=(200, 30, 40))  # arrow pointing up
    return upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise


def logo_alpha() -> Image.Image:
    image = Image.new("RGBA", (800, 600), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((150, 50, 650, 550), fill=(30, 144, 255, 128))  # half-transparent ring
    draw.ellipse((250, 150, 550, 450), fill=(0, 0, 0, 0))
    draw.rectangle((330, 230, 470, 370), fill=(255, 140, 0, 255))
    return image


def landscape() -> Image.Image:
    image = gradient(1200, 800, (135, 206, 235), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i in range(6):
        x = 80 + i * 190
        draw.polygon([(x, 800), (x + 95, 420 + 30 * (i % 3)), (x + 190, 800)],
                     fill=(34 + 20 * i, 100, 60))
    return image


def spinner_frames(count: int = 12, size: int = 240) -> list[Image.Image]:
    frames = []
    for n in range(count):
        frame = Image.new("P", (size, size), 0)
        frame.putpalette([255, 255, 255, 220, 20, 60, 200, 200, 200] + [0] * 759)
        draw = ImageDraw.Draw(frame)
        draw.ellipse((20, 20, size - 20, size - 20), outline=2, width=12)
        angle = 2 * math.pi * n / count
        cx = size / 2 + (size / 2 - 26) * math.cos(angle)
        cy = size / 2 + (size / 2 - 26) * math.sin(angle)
        draw.ellipse((cx - 18, cy - 18, cx + 18, cy + 18), fill=1)
        frames.append(frame)
    return frames


def city_at_night() -> Image.Image:
    image = gradient(1024, 768, (10, 10, 40), (40, 30, 80))
    draw = ImageDraw.Draw(image)
    for i in range(14):
        x = 20 + i * 72
        top = 300 + (i * 137) % 300
        draw.rectangle((x, top, x + 60, 768), fill=(25, 25, 35))
        for wy in range(top + 15, 740, 40):
            draw.rectangle((x + 12, wy, x + 24, wy + 14), fill=(250, 220, 120))
            draw.rectangle((x + 36, wy, x + 48, wy + 14), fill=(250, 220, 120))
    return image


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW_TO_DISPLAY
    photo_exif_rotated().save(OUT / "photo-exif-rotated.jpg", quality=85, exif=exif)
    logo_alpha().save(OUT / "logo-alpha.png", optimize=True)
    landscape().save(OUT / "landscape.webp", quality=80)
    first, *rest = spinner_frames()
    first.save(OUT / "spinner.gif", save_all=True, append_images=rest, duration=80, loop=0)
    city_at_night().save(OUT / "city at night.jpg", quality=85)
    for path in sorted(OUT.iterdir()):
        if path.suffix in (".jpg", ".png", ".webp", ".gif"):
            size = path.stat().st_size
            print(f"{path.name}\t{size} bytes")
            if size > MAX_BYTES:
                print(f"{path.name} is over {MAX_BYTES} bytes", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
