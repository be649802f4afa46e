"""make_thumbnail on images the tests generate: size, orientation, colour, alpha, limits."""

import io

import pytest
from PIL import Image

from images import make_image
from imgpipe.errors import PermanentError
from imgpipe.imaging import Limits, make_thumbnail, sniff_format


def opened(thumb) -> Image.Image:
    return Image.open(io.BytesIO(thumb.data))


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1200, 800), (256, 171)), ((800, 1200), (171, 256)), ((100, 50), (100, 50))],
)
def test_longest_edge_fits_and_small_images_are_not_enlarged(size, expected):
    thumb = make_thumbnail(make_image(size=size), 256)
    assert opened(thumb).size == expected == (thumb.width, thumb.height)


def test_exif_orientation_is_applied_and_exif_is_stripped():
    # Given a landscape JPEG whose EXIF says "rotate 90° clockwise to display" (orientation 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "TestCamera"
    data = make_image(size=(600, 300), exif=exif.tobytes())
    # When it is thumbnailed, then it comes out upright (portrait) with no EXIF left
    out = opened(make_thumbnail(data, 256))
    assert out.size == (128, 256)
    assert not out.getexif()
    assert "icc_profile" not in out.info


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_format_follows_the_input_by_content(fmt, content_type):
    thumb = make_thumbnail(make_image(fmt, size=(400, 300)), 256)
    assert thumb.content_type == content_type
    assert opened(thumb).format == fmt


def test_tiff_becomes_jpeg_and_tiff_with_alpha_becomes_png():
    assert make_thumbnail(make_image("TIFF"), 256).content_type == "image/jpeg"
    rgba = make_image("TIFF", mode="RGBA", color=(0, 0, 255, 100))
    assert make_thumbnail(rgba, 256).content_type == "image/png"


def test_png_transparency_is_kept():
    data = make_image("PNG", size=(400, 400), mode="RGBA", color=(0, 128, 0, 64))
    out = opened(make_thumbnail(data, 256)).convert("RGBA")
    assert out.getpixel((10, 10))[3] == pytest.approx(64, abs=1)


def test_jpeg_output_never_has_alpha_left():
    # A TIFF with alpha, but opaque: the JPEG path flattens onto white when alpha exists
    data = make_image("TIFF", size=(300, 200), mode="RGBA", color=(255, 0, 0, 0))
    out = opened(make_thumbnail(data, 256))
    assert out.mode == "RGBA"  # alpha was present, so PNG was chosen
    assert out.getpixel((5, 5))[3] == 0


def test_cmyk_jpeg_comes_out_as_srgb():
    data = make_image("JPEG", mode="CMYK", color=(0, 255, 255, 0))  # pure red ink
    out = opened(make_thumbnail(data, 256))
    assert out.mode == "RGB"
    r, g, b = out.getpixel((10, 10))
    assert r > 180 and g < 80 and b < 80


def test_sixteen_bit_png_comes_out_as_8_bit():
    image = Image.new("I;16", (300, 300), 65535 // 2)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    out = opened(make_thumbnail(buf.getvalue(), 256))
    assert out.mode in ("RGB", "L")
    value = out.getpixel((5, 5))
    assert (value[0] if isinstance(value, tuple) else value) == pytest.approx(128, abs=2)


def test_animated_gif_stays_animated():
    frames = [Image.new("RGB", (400, 200), (i * 60, 0, 255 - i * 60)) for i in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    thumb = make_thumbnail(buf.getvalue(), 256)
    out = opened(thumb)
    assert (thumb.frames, out.n_frames) == (4, 4)
    assert out.size == (256, 128)


def test_the_same_source_gives_byte_identical_output():
    data = make_image(size=(1000, 700))
    assert make_thumbnail(data, 256).data == make_thumbnail(data, 256).data


def test_a_decompression_bomb_is_refused_from_its_header():
    data = make_image("PNG", size=(5000, 5000), mode="L", color=0)
    with pytest.raises(PermanentError) as e:
        make_thumbnail(data, 256, limits=Limits(max_pixels=10_000_000))
    assert e.value.reason == "too-many-pixels"
    assert "5000x5000" in str(e.value)


def test_input_over_the_byte_limit_is_refused():
    with pytest.raises(PermanentError) as e:
        make_thumbnail(make_image(), 256, limits=Limits(max_input_bytes=100))
    assert e.value.reason == "too-large"


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "svg"),
        (b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", "svg"),
        (b"%PDF-1.7\n...", "pdf"),
        (b"8BPS\x00\x01" + b"\x00" * 30, "psd"),
        (b"\x08\xf2\xa6\xb6" + b"\x00" * 60, "unknown"),  # libvips' own format
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 20, "jpeg2000"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 20, "heic"),
    ],
)
def test_formats_outside_the_allow_list_are_refused_before_decoding(data, fmt):
    assert sniff_format(data) == fmt
    with pytest.raises(PermanentError) as e:
        make_thumbnail(data, 256)
    assert e.value.reason == "unsupported-format"


def test_the_file_name_does_not_matter_only_the_bytes():
    assert sniff_format(make_image("PNG")) == "png"
    assert sniff_format(make_image("WEBP")) == "webp"


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_and_corrupt_images_are_permanent_failures(cut):
    data = make_image(size=(800, 600))
    with pytest.raises(PermanentError) as e:
        make_thumbnail(data[: int(len(data) * cut)], 256)
    assert e.value.reason == "corrupt-image"
    with pytest.raises(PermanentError):
        make_thumbnail(b"\xff\xd8\xff" + b"garbage" * 10, 256)
