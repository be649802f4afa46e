"""Choose the thumbnail library on numbers: Pillow against pyvips (libvips).

usage: .venv/bin/python bench/compare_libraries.py [--corpus ../shared/corpus] [--size 256]

Measures throughput on sharp's benchmark photo, the whole corpus (CPU, failures, checks),
colour fidelity on the ICC/CMYK/CIELab files, peak memory of a fresh process on a generated
48-megapixel JPEG and a large PNG, and resampling quality (SSIM) against full-decode references.
CPU time (time.process_time: every thread of the process) is the primary figure, because the
machine is shared; wall time is printed beside it. Prints a Markdown report and writes it to
bench/RESULTS-libraries.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import _thumbs
import PIL
import pyvips
from PIL import Image, ImageCms, features

BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
DEFAULT_CORPUS = PROJECT.parent / "shared" / "corpus"
BENCH_PHOTO = "2569067123_aca715a2ee_o.jpg"
SECOND_SIZE = 720
COLOUR_LIMIT = 10.0  # corpus README: mean difference within 10/255 of libvips' result
BIG_W, BIG_H = 8000, 6000

# Pillow set-ups measured on the benchmark photo; PILLOW_MAIN is the one used everywhere else.
PILLOW_VARIANTS = {
    "Pillow draft>=1x, gap None": dict(draft_factor=1.0, reducing_gap=None),
    "Pillow draft>=2x, gap None": dict(draft_factor=2.0, reducing_gap=None),
    "Pillow no draft, gap None": dict(draft_factor=None, reducing_gap=None),
    "Pillow no draft, gap 3.0": dict(draft_factor=None, reducing_gap=3.0),
}
PILLOW_MAIN = "Pillow draft>=2x, gap None"
LIBS = ("pyvips", "pyvips tuned", "Pillow", "Pillow+ImageCms")
THROUGHPUT_SETUPS = ("pyvips", "pyvips tuned", *PILLOW_VARIANTS, "Pillow+ImageCms")


def lib_function(name: str, cmyk_profile: bytes | None):
    """The pipeline of one library column, as fn(data, size, lossless=False)."""
    main = PILLOW_VARIANTS[PILLOW_MAIN]
    if name == "pyvips":
        return _thumbs.pyvips_thumbnail
    if name == "pyvips tuned":
        return lambda d, s, lossless=False: _thumbs.pyvips_thumbnail(
            d, s, icc="tagged", via="memory", lossless=lossless
        )
    if name == "Pillow":
        return lambda d, s, lossless=False: _thumbs.pillow_thumbnail(
            d, s, lossless=lossless, **main
        )
    if name == "Pillow+ImageCms":
        return lambda d, s, lossless=False: _thumbs.pillow_thumbnail(
            d, s, lossless=lossless, colour_manage=True, cmyk_fallback=cmyk_profile, **main
        )
    params = PILLOW_VARIANTS[name]
    return lambda d, s, lossless=False: _thumbs.pillow_thumbnail(d, s, lossless=lossless, **params)


# --------------------------------------------------------------------------- measuring


def timed(fn, *args, **kwargs):
    c0, w0 = time.process_time(), time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.process_time() - c0, time.perf_counter() - w0


def to_rgb8(im: pyvips.Image) -> pyvips.Image:
    """Any decoded thumbnail as 3-band 8-bit sRGB, alpha flattened onto mid grey."""
    if im.hasalpha():
        im = im.flatten(background=[128] * (im.bands - 1))
    if im.interpretation != "srgb" or im.format != "uchar":
        im = im.colourspace("srgb")
    if im.bands == 1:
        im = im.bandjoin([im, im])
    return im.cast("uchar")


def decode(buf: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(buf, "")


def same_size(im: pyvips.Image, ref: pyvips.Image) -> pyvips.Image:
    if (im.width, im.height) == (ref.width, ref.height):
        return im
    return im.resize(ref.width / im.width, vscale=ref.height / im.height, kernel="lanczos3")


def mad(a: pyvips.Image, b: pyvips.Image) -> float:
    """Mean absolute difference, 0-255, over the RGB channels."""
    a, b = to_rgb8(a), to_rgb8(b)
    a = same_size(a, b)
    return (a.cast("float") - b.cast("float")).abs().avg()


def ssim(a: pyvips.Image, b: pyvips.Image) -> float:
    """SSIM of the Rec.601 luma, Gaussian window sigma 1.5 (Wang et al. 2004 constants)."""
    a, b = to_rgb8(a), to_rgb8(b)
    a = same_size(a, b)

    def luma(im):
        im = im.cast("float")
        return im[0] * 0.299 + im[1] * 0.587 + im[2] * 0.114

    def blur(im):
        return im.gaussblur(1.5, min_ampl=0.01, precision="float")

    x, y = luma(a).copy_memory(), luma(b).copy_memory()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x).copy_memory(), blur(y).copy_memory()
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    num = (mx * my * 2 + c1) * (sxy * 2 + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return (num / den).avg()


# --------------------------------------------------------------------------- corpus


def corpus_files(corpus: Path) -> list[tuple[str, str]]:
    """(file, expected) for the README rows whose expected column starts with 'thumbnail'."""
    rows = []
    for line in (corpus / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("file", "") or set(cells[0]) <= {"-"}:
            continue
        if cells[4].startswith("thumbnail") and (corpus / cells[0]).is_file():
            rows.append((cells[0], cells[4]))
    return rows


@dataclass
class FileResult:
    cpu: float = 0.0
    wall: float = 0.0
    error: str | None = None
    problems: list[str] = field(default_factory=list)
    mad: float | None = None  # lossless pixels vs libvips' result: colour
    mad_q80: float | None = None  # delivered bytes vs the same: colour plus encode loss
    out_bytes: int = 0


def has_real_alpha(im: pyvips.Image) -> bool:
    """An alpha band with at least one pixel that is not opaque."""
    return im.hasalpha() and im[im.bands - 1].min() < (65535 if im.format == "ushort" else 255)


def check(
    out: bytes, fmt: str, lossless: bytes, ref: pyvips.Image | None, size: int
) -> tuple[list[str], float, float]:
    """What the corpus README asks of a right thumbnail, against libvips' result.

    Structure (format, size, alpha, metadata) is checked on the delivered bytes; colour on the
    same pipeline's pixels written lossless, so that JPEG q80 noise is not counted as colour.
    """
    problems: list[str] = []
    magic = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG"}[fmt]
    if not out.startswith(magic):
        problems.append(f"bytes are not {fmt}")
    im = decode(out)
    if max(im.width, im.height) > size:
        problems.append(f"{im.width}x{im.height} is over {size} px")
    for name in ("exif-data", "icc-profile-data", "xmp-data", "iptc-data"):
        if im.get_typeof(name):
            problems.append(f"metadata left: {name}")
    nan = float("nan")
    if ref is None:
        return problems, nan, nan
    if abs(im.width - ref.width) > 1 or abs(im.height - ref.height) > 1:
        problems.append(f"{im.width}x{im.height}, libvips gives {ref.width}x{ref.height}")
        return problems, nan, nan
    if has_real_alpha(ref) and not im.hasalpha():
        problems.append("alpha lost")
    if has_real_alpha(im) and not ref.hasalpha():
        problems.append("alpha added")
    diff = mad(decode(lossless), ref)
    if diff > COLOUR_LIMIT:
        problems.append(f"colour {diff:.1f}/255 off libvips")
    return problems, diff, mad(im, ref)


def run_corpus(corpus: Path, sizes: list[int], reps: int, cmyk_profile: bytes) -> dict:
    """results[size][lib][file] -> FileResult, plus the reference images' descriptions."""
    files = corpus_files(corpus)
    results: dict = {s: {lib: {} for lib in LIBS} for s in sizes}
    for name, _expected in files:
        data = (corpus / name).read_bytes()
        for size in sizes:
            try:
                ref = _thumbs.pyvips_image(data, size).copy_memory()
            except pyvips.Error:
                ref = None
            for lib in LIBS:
                fn = lib_function(lib, cmyk_profile)
                res = FileResult()
                cpus, walls = [], []
                for _ in range(reps):
                    try:
                        (out, fmt), cpu, wall = timed(fn, data, size)
                    except Exception as e:  # noqa: BLE001 - every failure is a finding here
                        text = re.sub(r" at 0x[0-9a-f]+", "", str(e).strip().splitlines()[0])
                        res.error = f"{type(e).__name__}: {text[:120]}"
                        break
                    cpus.append(cpu)
                    walls.append(wall)
                if res.error is None:
                    res.cpu, res.wall = statistics.median(cpus), statistics.median(walls)
                    res.out_bytes = len(out)
                    lossless, _ = fn(data, size, lossless=True)
                    res.problems, res.mad, res.mad_q80 = check(out, fmt, lossless, ref, size)
                results[size][lib][name] = res
    return {"files": files, "results": results}


def profile_description(data: bytes) -> str:
    im = pyvips.Image.new_from_buffer(data, "")
    kind = im.interpretation
    if im.get_typeof("icc-profile-data"):
        icc = im.get("icc-profile-data")
        desc = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
        return f"{kind}, {desc}"
    return f"{kind}, no profile"


def fidelity_groups(corpus: Path, files: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Files whose colour needs managing (non-sRGB profile, CMYK, CIELab), by profile."""
    groups: dict[str, list[str]] = {}
    for name, _ in files:
        desc = profile_description((corpus / name).read_bytes())
        kind, _, prof = desc.partition(", ")
        if prof.startswith("sRGB") or (prof == "no profile" and kind not in ("cmyk", "labs")):
            continue
        groups.setdefault(desc, []).append(name)
    return sorted(groups.items(), key=lambda kv: kv[1][0])


# --------------------------------------------------------------------------- benchmark photo


def run_throughput(photo: bytes, sizes: list[int], runs: int) -> dict:
    """ops/s of each set-up on the benchmark photo, by median CPU and median wall time.

    Set-ups take turns run by run, so a burst of load from a neighbour falls on all of them.
    """
    setups = {name: lib_function(name, None) for name in THROUGHPUT_SETUPS}
    table: dict = {}
    for size in sizes:
        cpus: dict = {name: [] for name in setups}
        walls: dict = {name: [] for name in setups}
        for fn in setups.values():
            for _ in range(3):
                fn(photo, size)
        for _ in range(runs):
            for name, fn in setups.items():
                _, cpu, wall = timed(fn, photo, size)
                cpus[name].append(cpu)
                walls[name].append(wall)
        for name in setups:
            table[(name, size)] = {
                "cpu_ms": statistics.median(cpus[name]) * 1000,
                "wall_ms": statistics.median(walls[name]) * 1000,
                "cpu_min_ms": min(cpus[name]) * 1000,
                "cpu_max_ms": max(cpus[name]) * 1000,
            }
    return table


def references(photo: bytes, size: int) -> dict[str, pyvips.Image]:
    """Full decodes (no shrink-on-load, no draft) resized with plain Lanczos 3, kept lossless."""
    full = pyvips.Image.new_from_buffer(photo, "")
    tw, th = _thumbs.target_size(full.width, full.height, size)
    ref_vips = full.resize(tw / full.width, vscale=th / full.height, kernel="lanczos3", gap=0.0)
    pim = Image.open(io.BytesIO(photo)).convert("RGB")
    pim = pim.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=None)
    buf = io.BytesIO()
    pim.save(buf, "PNG")
    return {"libvips": ref_vips.copy_memory(), "Pillow": decode(buf.getvalue()).copy_memory()}


def run_quality(photo: bytes, sizes: list[int]) -> dict:
    setups = THROUGHPUT_SETUPS
    table: dict = {}
    for size in sizes:
        refs = references(photo, size)
        table[("(reference check: libvips ref vs Pillow ref)", size)] = {
            "ssim_vips": 1.0,
            "ssim_pil": ssim(refs["libvips"], refs["Pillow"]),
            "ssim_q80": float("nan"),
            "mad_q80": mad(refs["Pillow"], refs["libvips"]),
        }
        for name in setups:
            fn = lib_function(name, None)
            lossless = decode(fn(photo, size, lossless=True)[0])
            q80 = decode(fn(photo, size)[0])
            table[(name, size)] = {
                "ssim_vips": ssim(lossless, refs["libvips"]),
                "ssim_pil": ssim(lossless, refs["Pillow"]),
                "ssim_q80": ssim(q80, refs["libvips"]),
                "mad_q80": mad(q80, refs["libvips"]),
            }
    return table


# --------------------------------------------------------------------------- memory


def make_big_images(tmp: Path, photo: bytes | None) -> dict[str, Path]:
    """A 48 MP JPEG (q90) and a 48 MP PNG, from the benchmark photo or, without it, synthetic."""
    if photo is not None:
        src = pyvips.Image.new_from_buffer(photo, "")
    else:  # smooth random colour blobs: compresses like a photo, not like noise
        src = pyvips.Image.gaussnoise(400, 300, mean=128, sigma=60)
        src = src.bandjoin([src.rot180(), src.fliphor()]).cast("uchar")
        src = src.copy(interpretation="srgb")
    big = src.resize(BIG_W / src.width, vscale=BIG_H / src.height).copy_memory()
    paths = {"JPEG": tmp / "48mp.jpg", "PNG": tmp / "48mp.png"}
    big.jpegsave(str(paths["JPEG"]), Q=90)
    big.pngsave(str(paths["PNG"]), compression=1)
    return paths


def child(lib: str, mode: str, path: Path | None = None, size: int = 256) -> dict:
    cmd = [sys.executable, str(BENCH_DIR / "_memchild.py"), lib, mode]
    if path is not None:
        cmd += [str(path), str(size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_memory(photo: bytes | None, size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="imgpipe-bench-") as tmp:
        paths = make_big_images(Path(tmp), photo)
        mem = {"baseline": {lib: child(lib, "baseline") for lib in ("pillow", "pyvips")}}
        for fmt, path in paths.items():
            mem[fmt] = {
                "file_mb": path.stat().st_size / 1e6,
                "Pillow (bytes)": child("pillow", "buffer", path, size),
                "pyvips (bytes)": child("pyvips", "buffer", path, size),
                "pyvips tuned (bytes)": child("pyvips", "tuned", path, size),
                "pyvips (file path)": child("pyvips", "file", path, size),
                "pyvips (SourceCustom stream)": child("pyvips", "stream", path, size),
            }
    return mem


# --------------------------------------------------------------------------- report


def machine() -> list[str]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- CPUs: {cpus} (nproc), load average at start {load}; {platform.platform()}",
        f"- Python {platform.python_version()}",
        f"- Pillow {PIL.__version__} (libjpeg-turbo {features.version('libjpeg_turbo')}, "
        f"zlib {features.version('zlib')}, LittleCMS {features.version('littlecms2')})",
        f"- pyvips {pyvips.__version__}, libvips "
        f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} (pyvips-binary), "
        f"API mode: {'cffi API' if pyvips.API_mode else 'cffi ABI'}",
    ]


def fmt_f(x: float | None, spec: str = ".1f") -> str:
    return "–" if x is None or x != x else format(x, spec)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def worst(results_lib: dict, names: list[str]) -> tuple[float | None, str]:
    """Worst MAD over a group of files, or the error that stopped one."""
    errs = [results_lib[n].error for n in names if results_lib[n].error]
    if errs:
        return None, "fails: " + errs[0].split(":")[0]
    vals = [results_lib[n].mad for n in names if results_lib[n].mad == results_lib[n].mad]
    return (max(vals) if vals else None), ""


def render(args, sizes, tput, quality, corp, groups, mem, skipped: str | None, elapsed) -> str:
    size = sizes[0]
    out = ["# Image library comparison: Pillow vs pyvips", ""]
    out += [
        f"- Command: `{' '.join(['.venv/bin/python', 'bench/compare_libraries.py', *args.argv])}`",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"run took {elapsed:.0f} s",
        *machine(),
        "- Primary figure: CPU time per thumbnail (`time.process_time`, all threads of the "
        "process), because the 2 cores are shared with other engineers' tests; wall time "
        "(`time.perf_counter`) beside it. pyvips runs with `cache_set_max(0)`, "
        "`concurrency_set(1)`, `block_untrusted_set(True)`.",
        f"- Pipelines: see `bench/_thumbs.py`. Pillow = `{PILLOW_MAIN}` "
        "(open, `draft()` to at least twice the target for JPEG, LANCZOS with the box draft "
        "returns, `exif_transpose` on the small image, mode fixes, metadata stripped); "
        "Pillow+ImageCms = the same plus embedded-profile -> sRGB with LittleCMS (relative "
        "intent) and, for CMYK without a profile, the CMYK profile libvips falls back to. "
        "pyvips = `thumbnail_buffer(data, size, height=size, size='down', "
        "export_profile='srgb')` as specified; pyvips tuned = the same operation as "
        "`thumbnail_source(Source.new_from_memory(data), ...)` (thumbnail_buffer copies the "
        "input into a libvips blob; a memory source reads it in place), with `export_profile` "
        "only when the header shows an ICC profile or a CMYK/CIELab image, as sharp "
        "does, because libvips otherwise runs an sRGB->sRGB transform on every untagged "
        "image. Output: PNG when there is alpha or the input is PNG/GIF, "
        "else JPEG q80, metadata stripped.",
        "",
    ]
    if skipped:
        out += [f"> {skipped}", ""]

    summary = build_summary(sizes, tput, quality, corp, groups, mem)
    out += ["## Summary", "", *summary["table"], "", "## Decision", "", summary["decision"], ""]

    if tput:
        out += [
            f"## 1. Throughput, one thread, `{BENCH_PHOTO}` (2725x2225)",
            "",
            f"Median of {args.runs} runs after 3 warm-ups, the set-ups taking turns run by run; "
            "ops/s = 1 / median time. CPU times move by up to ~1.5x between runs of this "
            "script when neighbours load the shared cores; compare rows of one run.",
            "",
        ]
        rows = []
        for (name, s), r in tput.items():
            rows.append(
                [
                    name,
                    str(s),
                    f"{1000 / r['cpu_ms']:.0f}",
                    f"{1000 / r['wall_ms']:.0f}",
                    f"{r['cpu_ms']:.1f} ({r['cpu_min_ms']:.1f}–{r['cpu_max_ms']:.1f})",
                    f"{r['wall_ms']:.1f}",
                ]
            )
        out += table(
            [
                "set-up",
                "px",
                "ops/s (CPU)",
                "ops/s (wall)",
                "CPU ms median (min–max)",
                "wall ms median",
            ],
            rows,
        )
        out.append("")

    if corp:
        files = corp["files"]
        out += [
            f"## 2. Whole corpus: {len(files)} files whose expected result is a thumbnail",
            "",
            f"Each file {args.reps}x per library, median per file, summed. A file *fails* on an "
            "exception; it is *wrong* when a check fails: over the size, dimensions or "
            "orientation unlike libvips' (±1 px), alpha lost/added, metadata left, or colour "
            f"more than {COLOUR_LIMIT:.0f}/255 (mean, RGB, alpha flattened onto grey) off "
            "libvips' colour-managed result (pyvips as specified, kept lossless), which the "
            "corpus README defines as right. pyvips as specified can therefore only fail the "
            "other checks; pyvips tuned is checked against it like Pillow.",
            "",
        ]
        rows = []
        for s in sizes:
            for lib in LIBS:
                rs = corp["results"][s][lib]
                errors = [n for n, r in rs.items() if r.error]
                wrong = [n for n, r in rs.items() if r.problems]
                rows.append(
                    [
                        lib,
                        str(s),
                        f"{sum(r.cpu for r in rs.values()):.2f}",
                        f"{sum(r.wall for r in rs.values()):.2f}",
                        f"{len(rs) - len(set(errors) | set(wrong))}/{len(rs)}",
                        str(len(errors)),
                        str(len(wrong)),
                        f"{sum(r.out_bytes for r in rs.values()) / 1e3:.0f}",
                    ]
                )
        out += table(
            ["library", "px", "CPU s total", "wall s total", "right", "fail", "wrong", "output kB"],
            rows,
        )
        out.append("")
        for s in sizes:
            for lib in LIBS:
                rs = corp["results"][s][lib]
                bad = [(n, r) for n, r in rs.items() if r.error or r.problems]
                if s != size and not bad:
                    continue
                out.append(f"**{lib}, {s} px** — failures and wrong results:")
                out.append("")
                if not bad:
                    out.append("- none")
                for n, r in bad:
                    what = f"fails: `{r.error}`" if r.error else "; ".join(r.problems)
                    out.append(f"- `{n}`: {what}")
                out.append("")
        watch = [
            "Channel_digital_image_CMYK_color_no_profile.jpg",
            "cielab-dagams.tiff",
            "16-bit-grey-alpha.png",
            "Flag_of_the_Netherlands-16bit.png",
            "bggn4a16.png",
            "tbgn2c16.png",
            "p3.png",
            "prophoto.png",
        ]
        out += [f"Files to watch, {size} px (MAD vs libvips, or the failure):", ""]
        rows = []
        for n in watch:
            if n not in corp["results"][size]["pyvips"]:
                continue
            row = [f"`{n}`"]
            for lib in LIBS:
                r = corp["results"][size][lib][n]
                row.append(
                    f"fails ({r.error.split(':')[0]})"
                    if r.error
                    else fmt_f(r.mad) + (" ✗" if r.problems else "")
                )
            rows.append(row)
        out += table(["file", *LIBS], rows)
        out.append("")

        out += [
            f"## 3. Colour fidelity, {size} px: files with a non-sRGB profile, CMYK or CIELab",
            "",
            "Mean absolute difference (0–255, RGB, alpha flattened onto grey) of each "
            "pipeline's pixels, written lossless, against pyvips' colour-managed result "
            "(the reference, so pyvips itself is 0 by construction). The last column is the "
            "noise a delivered JPEG q80 adds (pyvips' delivered file against the reference), "
            "for scale. Groups sharing a profile show the worst file. "
            f"✗ = over {COLOUR_LIMIT:.0f}/255.",
            "",
        ]
        rows = []
        for desc, names in groups:
            label = f"`{names[0]}`" + (f" (+{len(names) - 1} more)" if len(names) > 1 else "")
            row = [label, desc]
            for lib in LIBS[1:]:
                val, err = worst(corp["results"][size][lib], names)
                row.append(err or (fmt_f(val) + (" ✗" if val and val > COLOUR_LIMIT else "")))
            q80 = [corp["results"][size]["pyvips"][n].mad_q80 for n in names]
            row.append(fmt_f(max((q for q in q80 if q is not None and q == q), default=None)))
            rows.append(row)
        out += table(["file", "colour / profile", *LIBS[1:], "JPEG/PNG encode noise"], rows)
        out.append("")

    if mem:
        out += [
            f"## 4. Peak memory, one {size} px thumbnail in a fresh process",
            "",
            "`ru_maxrss` of a child process (`bench/_memchild.py`, started from a small "
            "launcher, because Linux carries ru_maxrss across fork+exec from the large "
            "benchmark process; `VmHWM` from /proc agrees); the baseline child only "
            "imports and sets up the library. Inputs generated in a temp dir: "
            + ("smooth synthetic colour blobs" if skipped else "the benchmark photo")
            + f" upscaled to {BIG_W}x{BIG_H} and saved as JPEG q90 and PNG (compression 1). "
            "'bytes' reads the whole file into memory first, as the service does with an S3 "
            "GET body, so the file size is part of the peak; 'file path' and 'SourceCustom "
            "stream' (chunks read from a file object, as a streamed S3 body would be) do not "
            "hold the whole file.",
            "",
        ]
        base = mem["baseline"]
        out += [
            f"Baselines: Pillow {base['pillow']['maxrss_kb'] / 1024:.1f} MB, "
            f"pyvips {base['pyvips']['maxrss_kb'] / 1024:.1f} MB. Pillow+ImageCms shares "
            "Pillow's figures: its colour transform runs on the small image.",
            "",
        ]
        rows = []
        for fmt in ("JPEG", "PNG"):
            for name, r in mem[fmt].items():
                if name == "file_mb":
                    continue
                b = base["pillow" if name.startswith("Pillow") else "pyvips"]["maxrss_kb"]
                rows.append(
                    [
                        f"48 MP {fmt} ({mem[fmt]['file_mb']:.1f} MB)",
                        name,
                        f"{r['maxrss_kb'] / 1024:.1f}",
                        f"{(r['maxrss_kb'] - b) / 1024:.1f}",
                        f"{r['vmhwm_kb'] / 1024:.1f}",
                        f"{r['cpu_s']:.2f}",
                        f"{r['wall_s']:.2f}",
                    ]
                )
        out += table(
            [
                "input",
                "pipeline",
                "peak RSS MB (ru_maxrss)",
                "minus baseline MB",
                "VmHWM MB",
                "CPU s",
                "wall s",
            ],
            rows,
        )
        out.append("")

    if quality:
        out += [
            f"## 5. Quality on `{BENCH_PHOTO}`",
            "",
            "SSIM (luma, Gaussian σ 1.5) against two full-decode references resized with plain "
            "Lanczos 3 and kept lossless: libvips `resize(gap=0)` on the full decode, and Pillow "
            "LANCZOS on the full decode without draft. 'lossless' compares the set-up's pixels "
            "before any JPEG encode; 'q80' the delivered JPEG. MAD in 0–255.",
            "",
        ]
        rows = []
        for (name, s), r in quality.items():
            rows.append(
                [
                    name,
                    str(s),
                    fmt_f(r["ssim_vips"], ".4f"),
                    fmt_f(r["ssim_pil"], ".4f"),
                    fmt_f(r["ssim_q80"], ".4f"),
                    fmt_f(r["mad_q80"], ".2f"),
                ]
            )
        out += table(
            [
                "set-up",
                "px",
                "SSIM lossless vs libvips ref",
                "SSIM lossless vs Pillow ref",
                "SSIM q80 vs libvips ref",
                "MAD q80 vs libvips ref",
            ],
            rows,
        )
        out.append("")
    return "\n".join(out)


def lib_facts(lib, sizes, tput, quality, corp, groups, mem) -> dict:
    size = sizes[0]
    f: dict = {"name": lib}
    key = PILLOW_MAIN if lib == "Pillow" else lib
    if tput:
        f["ops"] = {s: 1000 / tput[(key, s)]["cpu_ms"] for s in sizes}
        f["ops_wall"] = {s: 1000 / tput[(key, s)]["wall_ms"] for s in sizes}
    if quality:
        f["ssim"] = quality[(key, size)]["ssim_pil"]
    if corp:
        rs = corp["results"][size][lib]
        f["n"] = len(rs)
        f["bad"] = sorted(n for n, r in rs.items() if r.error or r.problems)
        f["cpu"] = sum(r.cpu for r in rs.values())
        vals = [worst(rs, names) for _, names in groups]
        f["colour_fail"] = sum(1 for v, e in vals if e or (v or 0) > COLOUR_LIMIT)
        f["colour_worst"] = max((v for v, e in vals if v is not None), default=None)
    if mem:
        pipe = "Pillow (bytes)" if lib.startswith("Pillow") else f"{lib} (bytes)"
        base = mem["baseline"]["pillow" if lib.startswith("Pillow") else "pyvips"]["maxrss_kb"]
        f["mem"] = {k: (mem[k][pipe]["maxrss_kb"] - base) / 1024 for k in ("JPEG", "PNG")}
    return f


def build_summary(sizes, tput, quality, corp, groups, mem) -> dict:
    size = sizes[0]
    facts = {lib: lib_facts(lib, sizes, tput, quality, corp, groups, mem) for lib in LIBS}
    header, rows = ["library"], []
    if tput:
        header += [f"ops/s {s} px CPU (wall)" for s in sizes]
    if corp:
        header += [
            f"corpus right ({size} px)",
            "corpus CPU s",
            f"colour-managed groups within {COLOUR_LIMIT:.0f}/255",
        ]
    if mem:
        header += ["48 MP JPEG peak MB −baseline", "48 MP PNG peak MB −baseline"]
    if quality:
        header += [f"SSIM {size} px (vs Pillow full-decode ref)"]
    for lib in LIBS:
        f = facts[lib]
        row = [lib]
        if tput:
            row += [f"{f['ops'][s]:.0f} ({f['ops_wall'][s]:.0f})" for s in sizes]
        if corp:
            row += [
                f"{f['n'] - len(f['bad'])}/{f['n']}",
                f"{f['cpu']:.2f}",
                f"{len(groups) - f['colour_fail']}/{len(groups)}",
            ]
        if mem:
            row += [f"{f['mem']['JPEG']:.0f}", f"{f['mem']['PNG']:.0f}"]
        if quality:
            row += [f"{f['ssim']:.4f}"]
        rows.append(row)
    text = decision(facts, sizes, bool(corp), tput, quality, mem)
    return {"table": table(header, rows), "decision": text}


def _best(facts: dict, names: tuple[str, ...]) -> dict:
    """Of one library's set-ups: fewest wrong corpus files, then most CPU throughput."""
    return min(
        (facts[n] for n in names),
        key=lambda f: (len(f.get("bad", [])), -sum(f.get("ops", {}).values())),
    )


def decision(facts: dict, sizes: list[int], have_corpus: bool, tput, quality, mem) -> str:
    """Choose on correctness first, then memory, then CPU; say the numbers either way."""
    v = _best(facts, ("pyvips tuned", "pyvips"))
    p = _best(facts, ("Pillow+ImageCms", "Pillow"))
    plain, spec = facts["Pillow"], facts["pyvips"]
    size = sizes[0]
    parts = []
    if have_corpus:

        def bad(f):
            return ", ".join(f"`{n}`" for n in f["bad"]) or "none"

        parts.append(
            f"Correctness first (corpus, {size} px): {v['name']} is right on "
            f"{v['n'] - len(v['bad'])} of {v['n']} files (wrong: {bad(v)}); {p['name']} on "
            f"{p['n'] - len(p['bad'])} (wrong: {bad(p)}); plain Pillow, as specified, on only "
            f"{plain['n'] - len(plain['bad'])}: without ImageCms it ignores embedded profiles "
            f"and converts CMYK naively ({plain['colour_fail']} of the colour-managed groups "
            f"off by more than {COLOUR_LIMIT:.0f}/255, worst {fmt_f(plain['colour_worst'])}). "
            "libvips is the colour reference by the corpus README's definition; a second "
            "implementation, Pillow+ImageCms (LittleCMS after the resize, plus a CMYK profile "
            "it has to be given), lands within "
            f"{fmt_f(facts['Pillow+ImageCms']['colour_worst'])}/255 of it where it opens the file."
        )
    if "mem" in v:
        parts.append(
            f"Peak memory above the library's baseline, one {size} px thumbnail from bytes held "
            f"in memory: 48 MP JPEG {v['name']} {v['mem']['JPEG']:.0f} MB vs Pillow "
            f"{p['mem']['JPEG']:.0f} MB; 48 MP PNG {v['mem']['PNG']:.0f} MB vs "
            f"{p['mem']['PNG']:.0f} MB (pyvips as specified: {spec['mem']['PNG']:.0f} MB, "
            "because thumbnail_buffer copies the input)."
        )
        stream = mem.get("PNG", {}).get("pyvips (SourceCustom stream)") if mem else None
        if stream:
            base = mem["baseline"]["pyvips"]["maxrss_kb"]
            parts.append(
                f"Streamed through a SourceCustom, pyvips needs "
                f"{(stream['maxrss_kb'] - base) / 1024:.0f} MB for the same "
                f"{mem['PNG']['file_mb']:.0f} MB PNG; Pillow decodes the whole PNG raster "
                "whatever the input path."
            )
    if "ops" in v:
        speed = "; ".join(f"{s} px {v['ops'][s]:.0f} vs {p['ops'][s]:.0f}" for s in sizes)
        parts.append(
            f"CPU ops/s on the benchmark photo, {v['name']} vs {p['name']}: {speed} "
            f"(pyvips as specified: "
            + ", ".join(f"{spec['ops'][s]:.0f}" for s in sizes)
            + ", the sRGB->sRGB transform on an untagged photo)."
        )
        fast = "Pillow draft>=1x, gap None"
        if all((fast, s) in tput for s in sizes) and quality:
            parts.append(
                "Pillow's fast path (draft to >=1x the target) reaches "
                + ", ".join(
                    f"{1000 / tput[(fast, s)]['cpu_ms']:.0f} ops/s at {s} px (SSIM "
                    f"{quality[(fast, s)]['ssim_pil']:.4f} vs {v['name']} "
                    f"{quality[(v['name'], s)]['ssim_pil']:.4f})"
                    for s in sizes
                )
                + ": faster at the small size, at a lower SSIM."
            )
    if "ssim" in v:
        parts.append(
            f"Quality at {size} px (SSIM vs the Pillow full-decode reference): "
            f"{v['name']} {v['ssim']:.4f}, {p['name']} {p['ssim']:.4f}; both far above what "
            "the q80 JPEG encode then costs (section 5)."
        )
    if not have_corpus:
        parts.insert(0, "**No decision**: the corpus is absent, so correctness is unmeasured.")
        return " ".join(parts)
    nv, np_ = len(v["bad"]), len(p["bad"])
    if nv != np_:
        choice = v if nv < np_ else p
    elif "mem" in v and abs(v["mem"]["PNG"] - p["mem"]["PNG"]) > 10:
        choice = v if v["mem"]["PNG"] < p["mem"]["PNG"] else p
    else:
        choice = v if sum(v.get("ops", {}).values()) >= sum(p.get("ops", {}).values()) else p
    other = p if choice is v else v
    reasons = []
    if len(choice["bad"]) < len(other["bad"]):
        reasons.append(
            f"right on more of the corpus ({choice['n'] - len(choice['bad'])} vs "
            f"{other['n'] - len(other['bad'])} of {choice['n']})"
        )
    if "mem" in choice and choice["mem"]["PNG"] + 10 < other["mem"]["PNG"]:
        reasons.append(
            f"lower peak memory on the large PNG ({choice['mem']['PNG']:.0f} vs "
            f"{other['mem']['PNG']:.0f} MB)"
        )
    if "ops" in choice:
        for s in sizes:
            if choice["ops"][s] > 1.2 * other["ops"][s]:
                reasons.append(
                    f"faster at {s} px ({choice['ops'][s]:.0f} vs {other['ops'][s]:.0f} ops/s CPU)"
                )
            elif choice["ops"][s] * 1.2 >= other["ops"][s]:
                reasons.append(f"as fast at {s} px (within 20%)")
            else:
                reasons.append(
                    f"slower at {s} px ({choice['ops'][s]:.0f} vs {other['ops'][s]:.0f} ops/s CPU)"
                )
    verdict = f"**Choose {choice['name']}** over {other['name']}: " + ", ".join(reasons) + "."
    if choice is v and v is not spec:
        verdict += (
            " Use it as measured here (memory source, export_profile only for tagged images), "
            "not the thumbnail_buffer call as specified."
        )
    parts.insert(0, verdict)
    return " ".join(parts)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--size", type=int, default=256, help="primary longest edge (px)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per throughput cell")
    parser.add_argument("--reps", type=int, default=3, help="runs per corpus file per library")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS-libraries.md")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    started = time.perf_counter()
    _thumbs.pyvips_setup()
    sizes = [args.size] + ([SECOND_SIZE] if args.size != SECOND_SIZE else [])

    tput = quality = corp = None
    groups: list = []
    skipped = None
    photo = None
    photo_path = args.corpus / BENCH_PHOTO
    if (args.corpus / "README.md").is_file() and photo_path.is_file():
        photo = photo_path.read_bytes()
        cmyk = pyvips.Image.profile_load("cmyk")
        print("throughput ...", file=sys.stderr)
        tput = run_throughput(photo, sizes, args.runs)
        print("quality ...", file=sys.stderr)
        quality = run_quality(photo, sizes)
        print("corpus ...", file=sys.stderr)
        corp = run_corpus(args.corpus, sizes, args.reps, cmyk)
        groups = fidelity_groups(args.corpus, corp["files"])
    else:
        skipped = (
            f"Corpus not found at {args.corpus} (README.md and {BENCH_PHOTO} needed): "
            "throughput, corpus, colour and quality skipped; the memory case runs on a "
            "synthetic 48 MP image instead of the upscaled benchmark photo."
        )
        print(skipped, file=sys.stderr)
    print("memory ...", file=sys.stderr)
    mem = run_memory(photo, args.size)

    report = render(
        args, sizes, tput, quality, corp, groups, mem, skipped, time.perf_counter() - started
    )
    print(report)
    args.output.write_text(report + "\n")
    print(f"written: {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
