"""Bytes in, thumbnail out. No I/O: format allow-list, bomb guard, orientation, colour, alpha.

libvips (pyvips) does the work: shrink-on-load keeps memory bounded, EXIF orientation is applied,
and colour is managed with the embedded ICC profile (or libvips' built-in CMYK profile when a
CMYK image has none) into sRGB.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import pyvips

from imgpipe.errors import PermanentError

# Only these libvips loaders may run; every other one (SVG, PDF, vips, matrix, csv, ...) is blocked.
ALLOWED_LOADERS = (
    "VipsForeignLoadJpeg",
    "VipsForeignLoadPng",
    "VipsForeignLoadNsgif",
    "VipsForeignLoadWebp",
    "VipsForeignLoadTiff",
    "VipsForeignLoadHeif",
)


def _lock_down_libvips() -> None:
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for name in ALLOWED_LOADERS:
        pyvips.operation_block_set(name, False)
    # The service sees each image once: libvips' operation cache would only hold memory.
    pyvips.cache_set_max(0)
    # One libvips thread per image: the consumer runs WORKERS images side by side instead.
    if "VIPS_CONCURRENCY" not in os.environ:
        pyvips.concurrency_set(1)


_lock_down_libvips()

# What each input becomes. JPEG, PNG, WebP and GIF keep their format; the rest become JPEG,
# or PNG when they have transparency.
OUTPUT_FOR_INPUT = {"jpeg": "jpeg", "png": "png", "webp": "webp", "gif": "gif"}
CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
}
ANIMATED_FORMATS = {"gif", "webp"}
CONVERTED_SPACES = {"cmyk", "lab", "labs", "labq"}
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"}


@dataclass(frozen=True)
class Limits:
    max_input_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 100_000_000


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    content_type: str
    width: int
    height: int  # of one frame, for an animation
    frames: int
    source_format: str
    source_width: int
    source_height: int


def sniff_format(data: bytes) -> str:
    """The input's format from its first bytes (never from a file name)."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[4:8] == b"ftyp":
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, 32, 4)}
        if b"avif" in brands or b"avis" in brands:
            return "avif"
        if brands & HEIF_BRANDS:
            return "heic"
    if head[4:12] == b"jP  \r\n\x87\n" or head.startswith(b"\xff\x4f\xff\x51"):
        return "jpeg2000"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"8BPS"):
        return "psd"
    if head.lstrip().startswith((b"<?xml", b"<svg")):
        return "svg"
    return "unknown"


SUPPORTED_INPUTS = {"jpeg", "png", "gif", "webp", "tiff", "avif"}
REFUSED = {
    "unknown": "the input is not a recognised image format",
    "heic": "HEIC (HEVC) input cannot be decoded by this build of libvips",
    "svg": "SVG input is not allowed (untrusted loader)",
}


def make_thumbnail(
    source: bytes | Path,
    size: int,
    *,
    limits: Limits = Limits(),
    jpeg_quality: int = 80,
    webp_quality: int = 80,
) -> Thumbnail:
    """A thumbnail whose longest edge is at most `size`, upright, sRGB, without metadata.

    `source` is the image's bytes, or a local file holding them: libvips streams from a file, so
    a 48-megapixel PNG needs about 60 MB instead of 190 MB from a buffer.
    Raises PermanentError for input that must not or cannot be decoded.
    """
    if isinstance(source, bytes):
        nbytes, head = len(source), source[:32]
    else:
        with open(source, "rb") as f:
            nbytes, head = os.fstat(f.fileno()).st_size, f.read(32)
    if nbytes > limits.max_input_bytes:
        raise PermanentError(
            "too-large", f"{nbytes} bytes is over the limit of {limits.max_input_bytes}"
        )
    fmt = sniff_format(head)
    if fmt not in SUPPORTED_INPUTS:
        why = REFUSED.get(fmt, f"{fmt} input is not allowed")
        raise PermanentError("unsupported-format", why)
    try:
        return _thumbnail(source, fmt, size, limits, jpeg_quality, webp_quality)
    except pyvips.Error as e:
        raise PermanentError(
            "corrupt-image", f"{fmt} could not be decoded: {_first_line(e)}"
        ) from e


def _thumbnail(source, fmt, size, limits, jpeg_quality, webp_quality) -> Thumbnail:
    def open_source():
        if isinstance(source, bytes):
            return pyvips.Source.new_from_memory(source)
        return pyvips.Source.new_from_file(str(source))

    header = pyvips.Image.new_from_source(open_source(), "", access="sequential")
    frames = header.get("n-pages") if "n-pages" in header.get_fields() else 1
    animated = fmt in ANIMATED_FORMATS and frames > 1
    frames = frames if animated else 1
    pixels = header.width * header.height * frames
    if pixels > limits.max_pixels:
        raise PermanentError(
            "too-many-pixels",
            f"{header.width}x{header.height}x{frames} frames = {pixels} pixels is over the "
            f"limit of {limits.max_pixels}",
        )

    options = {"height": size, "size": "down"}  # never enlarge
    if "icc-profile-data" in header.get_fields() or header.interpretation in CONVERTED_SPACES:
        # Colour-manage with the embedded profile (or libvips' CMYK fallback) into sRGB. Only
        # then: an sRGB -> sRGB transform of an untagged image would triple the CPU time.
        options["output_profile"] = "srgb"
    # The loader's own fail_on: thumbnail's fail_on argument does not reach it (8.18).
    load = "fail_on=truncated" + (",n=-1" if animated else "")
    image = pyvips.Image.thumbnail_source(open_source(), size, option_string=load, **options)
    image = _to_8bit_srgb(image)
    out = OUTPUT_FOR_INPUT.get(fmt) or ("png" if image.hasalpha() else "jpeg")
    if out == "jpeg" and image.hasalpha():
        image = image.flatten(background=[255] * (image.bands - 1))

    keep = pyvips.enums.ForeignKeep.NONE
    if out == "jpeg":
        body = image.jpegsave_buffer(Q=jpeg_quality, optimize_coding=True, keep=keep)
    elif out == "png":
        body = image.pngsave_buffer(compression=6, keep=keep)
    elif out == "webp":
        body = image.webpsave_buffer(Q=webp_quality, keep=keep)
    else:
        body = image.gifsave_buffer(keep=keep)

    frame_height = image.get("page-height") if animated else image.height
    return Thumbnail(
        data=body,
        content_type=CONTENT_TYPES[out],
        width=image.width,
        height=frame_height,
        frames=frames,
        source_format=fmt,
        source_width=header.width,
        source_height=header.height,
    )


def _to_8bit_srgb(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB whatever is left of the source's space and depth (Lab, 16-bit)."""
    if image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    return image


def _first_line(error: pyvips.Error) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines[:3])
