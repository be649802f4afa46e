"""Small test images the tests generate (Pillow is a test-only dependency)."""

import io


def make_image(fmt="JPEG", size=(640, 480), mode="RGB", color=(200, 30, 30), **save):
    """A small generated test image as bytes (Pillow is a test-only dependency)."""
    from PIL import Image

    image = Image.new(mode, size, color)
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()
