"""The two thumbnail pipelines under test, written the way a careful production service would.

Each takes the encoded bytes and returns (thumbnail bytes, output format). The libraries are
imported lazily so that a memory-measuring child process loads only the one it measures.
"""

from __future__ import annotations

import io

JPEG_QUALITY = 80
ORIENTATION_TAG = 0x0112
# Pillow's resample filters cannot take these modes directly (P and 1 fall back to NEAREST).
_PILLOW_KEEP = {"L", "LA", "RGB", "RGBA"}


def output_format(input_format: str, has_alpha: bool) -> str:
    """One rule for both libraries: PNG when there is alpha or the input was PNG/GIF."""
    if has_alpha or input_format in ("PNG", "GIF"):
        return "PNG"
    return "JPEG"


def target_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Longest edge `size`, never enlarged, rounded like libvips does."""
    scale = min(size / max(width, height), 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


# --------------------------------------------------------------------------- Pillow


def _pillow_normalise(im, keep_cmyk: bool):
    """Bring any decoded mode to L, LA, RGB or RGBA (or CMYK when a profile converts it later)."""

    mode = im.mode
    has_key = "transparency" in im.info
    if mode in _PILLOW_KEEP and not (has_key and mode in ("L", "RGB")):
        return im
    if mode == "CMYK" and keep_cmyk:
        return im
    if mode.startswith("I"):
        # 16-bit grey: scale to 8 bits; a plain convert("L") clips everything above 255 to white.
        im = im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
        return im
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "PA"):
        return im.convert("RGBA" if (has_key or mode == "PA") else "RGB")
    if mode == "L" and has_key:
        return im.convert("LA")
    if mode == "RGB" and has_key:
        return im.convert("RGBA")
    if mode == "F":
        return im.point(lambda v: v * 255).convert("L")
    try:
        return im.convert("RGB")
    except ValueError as e:  # e.g. LAB needs ImageCms; report it as the failure it is
        raise ValueError(f"Pillow cannot convert mode {mode} to RGB: {e}") from e


_SRGB = None


def _pillow_icc_to_srgb(im, icc: bytes | None, cmyk_fallback: bytes | None):
    """Colour-manage the (already small) image from its profile to sRGB with LittleCMS."""
    global _SRGB
    from PIL import ImageCms

    if not icc and im.mode == "CMYK" and cmyk_fallback:
        icc = cmyk_fallback
    if not icc:
        return im.convert("RGB") if im.mode == "CMYK" else im
    if _SRGB is None:
        _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    alpha = None
    if im.mode in ("RGBA", "LA"):
        alpha = im.getchannel("A")
        im = im.convert("RGB" if im.mode == "RGBA" else "L")
    try:
        im = ImageCms.profileToProfile(
            im,
            src,
            _SRGB,
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            outputMode="RGB",
        )
    except ImageCms.PyCMSError:
        # A profile that does not fit the pixels (e.g. an RGB profile on a grey image):
        # ignore it, the way browsers do.
        im = im.convert("RGB") if im.mode == "CMYK" else im
    if alpha is not None:
        im = im.convert("RGB")
        im.putalpha(alpha)
    return im


def pillow_thumbnail(
    data: bytes,
    size: int,
    *,
    draft_factor: float | None = 2.0,
    reducing_gap: float | None = None,
    colour_manage: bool = False,
    cmyk_fallback: bytes | None = None,
    lossless: bool = False,
) -> tuple[bytes, str]:
    """Pillow: open, draft (JPEG), resize with the draft box, EXIF transpose, save.

    draft_factor: ask draft() for at least this multiple of the target size (None: no draft).
    colour_manage: convert embedded ICC profiles to sRGB with ImageCms (Pillow does not by itself).
    lossless: write PNG whatever the input (for quality measurements).
    """
    from PIL import Image, ImageOps

    im = Image.open(io.BytesIO(data))
    input_format = im.format
    icc = im.info.get("icc_profile") if colour_manage else None
    tw, th = target_size(*im.size, size)
    box = None
    if draft_factor and input_format == "JPEG" and (tw, th) != im.size:
        res = im.draft(None, (int(tw * draft_factor), int(th * draft_factor)))
        if res is not None:
            box = res[1]  # the drafted image covers the source at a fractional scale
    im = _pillow_normalise(im, keep_cmyk=colour_manage)
    if (tw, th) != im.size or box is not None:
        im = im.resize((tw, th), Image.Resampling.LANCZOS, box=box, reducing_gap=reducing_gap)
    # After the resize: the image is small, and the draft box needs no transposing.
    ImageOps.exif_transpose(im, in_place=True)
    if colour_manage:
        im = _pillow_icc_to_srgb(im, icc, cmyk_fallback)
    im.info = {}  # no EXIF, ICC or text chunks in the thumbnail
    fmt = "PNG" if lossless else output_format(input_format, im.mode in ("RGBA", "LA"))
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=JPEG_QUALITY)
    else:
        im.save(buf, "PNG")
    return buf.getvalue(), fmt


# --------------------------------------------------------------------------- pyvips


def pyvips_setup() -> None:
    """One thread per image (the service parallelises across images) and no operation cache."""
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    pyvips.block_untrusted_set(True)


_LOADER_FORMAT = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "tiff": "TIFF"}


def _pyvips_input_format(loader: str) -> str:
    for prefix, fmt in _LOADER_FORMAT.items():
        if loader.startswith(prefix):
            return fmt
    return loader


# Interpretations libvips must convert even without an embedded profile.
_NEEDS_CONVERSION = {"cmyk", "labs", "lab", "lch", "xyz", "scrgb", "hsv", "yxy"}


def _needs_icc(source: bytes | str) -> bool:
    """Header only (about 0.1 ms): is there a profile to apply, or a non-RGB colour space?"""
    import pyvips

    if isinstance(source, str):
        head = pyvips.Image.new_from_file(source)
    else:
        head = pyvips.Image.new_from_buffer(source, "")
    return bool(head.get_typeof("icc-profile-data")) or head.interpretation in _NEEDS_CONVERSION


def pyvips_image(source, size: int, *, icc: str = "always", via: str = "buffer"):
    """The colour-managed, shrink-on-load thumbnail as an (unsaved) pyvips image.

    icc="always": export_profile="srgb" on every image, as specified; libvips then runs an
    sRGB -> sRGB transform on untagged images too. icc="tagged": only when the header shows a
    profile or a non-RGB colour space (what sharp does).
    via="buffer": thumbnail_buffer, which copies the input bytes into a libvips blob;
    via="memory": thumbnail_source on Source.new_from_memory, which reads them in place.
    A str source is a file path and goes to thumbnail(); a pyvips.Source (e.g. a SourceCustom
    reading a stream) goes to thumbnail_source() and needs icc="always" (no second read).
    """
    import pyvips

    kwargs = {"height": size, "size": "down"}
    if icc == "always" or _needs_icc(source):
        kwargs["export_profile"] = "srgb"
    if isinstance(source, str):
        im = pyvips.Image.thumbnail(source, size, **kwargs)
    elif isinstance(source, pyvips.Source):
        im = pyvips.Image.thumbnail_source(source, size, **kwargs)
    elif via == "memory":
        im = pyvips.Image.thumbnail_source(pyvips.Source.new_from_memory(source), size, **kwargs)
    else:
        im = pyvips.Image.thumbnail_buffer(source, size, **kwargs)
    if im.format != "uchar" or im.interpretation not in ("srgb", "b-w"):
        im = im.colourspace("srgb")  # 16-bit, CIELab, etc. left without a profile
    return im


def pyvips_thumbnail(
    source,
    size: int,
    *,
    icc: str = "always",
    via: str = "buffer",
    lossless: bool = False,
) -> tuple[bytes, str]:
    """pyvips: thumbnail (shrink-on-load, EXIF rotate, ICC to sRGB), then save."""
    import pyvips

    im = pyvips_image(source, size, icc=icc, via=via)
    input_format = _pyvips_input_format(im.get("vips-loader"))
    fmt = "PNG" if lossless else output_format(input_format, im.hasalpha())
    keep = pyvips.enums.ForeignKeep.NONE
    if fmt == "JPEG":
        return im.jpegsave_buffer(Q=JPEG_QUALITY, keep=keep), fmt
    return im.pngsave_buffer(keep=keep), fmt
