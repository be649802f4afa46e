"""Every file of ../shared/corpus through a running consumer, checked against its README row.

`thumbnail` rows must yield a right thumbnail; `reject` rows none, a dead-letter with a reason,
and a consumer still serving; `either` rows one or the other. Skipped when the corpus is absent.
"""

import io
import json
import time

import pytest
from PIL import Image, ImageChops, ImageCms, ImageOps, ImageStat, UnidentifiedImageError

from harness import consumer_thread, make_pipeline
from images import make_image

SIZE = 256
KEPT_FORMATS = {"JPEG", "PNG", "WEBP", "GIF"}
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
MAX_MEAN_DIFFERENCE = 10  # of 255, against an independent colour-managed conversion (lcms2)


def corpus_rows(corpus) -> dict[str, tuple[str, str]]:
    """file -> (format column, expected column) from corpus/README.md's table."""
    rows = {}
    for line in (corpus / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and (corpus / cells[0]).is_file():
            rows[cells[0]] = (cells[1].upper(), cells[4])
    return rows


@pytest.fixture(scope="module")
def run(corpus, moto_endpoint):
    """Upload the whole corpus, let one consumer handle every message, collect the results."""
    pipeline = make_pipeline(f"imgpipe-corpus-{int(time.time())}")
    rows = corpus_rows(corpus)
    assert len(rows) > 90, "corpus README table not understood"
    for name in rows:
        pipeline.upload(f"raw-images/{name}", (corpus / name).read_bytes())
        pipeline.send(f"raw-images/{name}")
    with consumer_thread(pipeline, WORKERS=2) as consumer:
        deadline = time.monotonic() + 180
        while pipeline.depth(pipeline.queue_url) and time.monotonic() < deadline:
            time.sleep(0.5)
        # Still serving after every bad file: one more good image goes through.
        pipeline.upload("raw-images/after-the-corpus.jpg", make_image())
        pipeline.send("raw-images/after-the-corpus.jpg")
        pipeline.thumbnail("thumbnails/after-the-corpus.jpg")
        alive = consumer.health.alive
    expected_dead = sum(1 for _, exp in rows.values() if not exp.startswith("thumbnail"))
    dead = {
        json.loads(m["Body"])["key"].removeprefix("raw-images/"): m
        for m in pipeline.dead_letters(expected=expected_dead, timeout=10)
    }
    thumbs = {
        k.removeprefix("thumbnails/"): pipeline.s3.get_object(Bucket=pipeline.bucket, Key=k)
        for k in pipeline.keys("thumbnails/")
    }
    return rows, thumbs, dead, alive


def test_thumbnail_rows_get_a_right_thumbnail(run, corpus):
    rows, thumbs, dead, _ = run
    problems = []
    for name, (fmt, expected) in rows.items():
        if not expected.startswith("thumbnail"):
            continue
        if name not in thumbs:
            reason = dead.get(name, {}).get("MessageAttributes", {})
            problems.append(f"{name}: no thumbnail ({reason})")
            continue
        problems += [f"{name}: {p}" for p in check(corpus / name, fmt, expected, thumbs[name])]
    assert not problems, "\n".join(problems)


def test_reject_rows_get_no_thumbnail_and_a_dead_letter_with_a_reason(run):
    rows, thumbs, dead, alive = run
    for name, (_, expected) in rows.items():
        if expected.startswith("reject"):
            assert name not in thumbs, name
            assert dead[name]["MessageAttributes"]["imgpipe-error-reason"]["StringValue"], name
    assert alive


def test_either_rows_get_exactly_one_of_the_two(run):
    rows, thumbs, dead, _ = run
    for name, (_, expected) in rows.items():
        if expected.startswith("either"):
            assert (name in thumbs) != (name in dead), name


def check(path, fmt, expected, obj) -> list[str]:
    """What is wrong with one thumbnail, as short sentences (empty when it is right)."""
    data = obj["Body"].read()
    out = Image.open(io.BytesIO(data))
    problems = []
    try:
        source = Image.open(path)
    except UnidentifiedImageError:  # Pillow cannot read 16-bit CIELab TIFF: check what we can
        if max(out.size) > SIZE or out.mode != "RGB":
            problems.append(f"{out.size} {out.mode} is not an sRGB thumbnail")
        return problems
    upright = ImageOps.exif_transpose(source) or source
    if obj["ContentType"] != MIME.get(out.format):
        problems.append(f"Content-Type {obj['ContentType']} but the bytes are {out.format}")
    if fmt in KEPT_FORMATS and out.format != fmt:
        problems.append(f"{fmt} input became {out.format}")
    if max(out.size) > SIZE:
        problems.append(f"{out.size} is over {SIZE}")
    if out.width > upright.width or out.height > upright.height:
        problems.append(f"enlarged from {upright.size} to {out.size}")
    if max(upright.size) <= SIZE and out.size != upright.size:
        problems.append(f"small image resized from {upright.size} to {out.size}")
    if "landscape" in expected and not out.width > out.height:
        problems.append(f"{out.size} is not landscape")
    if "portrait" in expected and not out.height > out.width:
        problems.append(f"{out.size} is not portrait")
    if out.getexif() or any(
        k in out.info for k in ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp")
    ):
        problems.append(f"metadata left: {sorted(out.info)}")
    if "transparency kept" in expected and fmt in ("PNG", "WEBP") and _has_alpha(source):
        if not _has_alpha(out):
            problems.append("transparency lost")
    if "fully transparent" in expected and out.convert("RGBA").getextrema()[3] != (0, 0):
        problems.append("not fully transparent")
    if fmt in ("GIF", "WEBP") and _animation(source)[0] > 1:
        # libvips merges identical neighbouring frames: compare what is seen, and for how long.
        (frames, ms), (out_frames, out_ms) = _animation(source), _animation(out)
        if out_frames < 2 or abs(ms - out_ms) > 10 * frames:
            problems.append(f"animation {frames} frames/{ms} ms became {out_frames}/{out_ms} ms")
    difference = _colour_difference(upright, out)
    if difference is not None and difference > MAX_MEAN_DIFFERENCE:
        problems.append(f"colour differs by {difference:.1f}/255 from a managed conversion")
    return problems


def _animation(image) -> tuple[int, int]:
    """(distinct frames, total milliseconds) of an image's animation."""
    distinct, total = set(), 0
    for i in range(getattr(image, "n_frames", 1)):
        image.seek(i)
        distinct.add(image.convert("RGBA").tobytes())
        total += image.info.get("duration") or 0
    image.seek(0)
    return len(distinct), total


def _has_alpha(image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def _colour_difference(source, out) -> float | None:
    """Mean difference (0-255) from lcms2's conversion of the source with its own ICC profile,
    with libvips' default intent (relative colorimetric).

    None where there is no embedded profile to convert from, or the source has transparency.
    """
    icc = source.info.get("icc_profile")
    if not icc or _has_alpha(source) or getattr(source, "n_frames", 1) > 1:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        reference = ImageCms.profileToProfile(
            source,
            profile,
            ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            outputMode="RGB",
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None
    reference = reference.resize(out.size, Image.LANCZOS)
    diff = ImageChops.difference(reference, out.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3
