"""`make demo`'s report: `python -m imgpipe.local.demo [--timeout S] [--out DIR] FILE...`.

Uploads each file under raw-images/ (a real S3 PUT: the bucket's notification starts the
Lambda), waits for every thumbnail, copies them to DIR and prints one row per image: input
bytes and size, thumbnail size and bytes, upload-to-thumbnail latency. Exits 1, naming them,
if some thumbnail did not appear in time. Settings from the environment, as `imgpipe upload`.
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyvips

from imgpipe import admin
from imgpipe.storage import thumbnail_key


@dataclass
class Row:
    key: str
    thumb_key: str
    data: bytes
    thumb: bytes | None = None
    latency_ms: float | None = None


def run(dep: admin.Deployment, files: list[str], timeout: float) -> list[Row]:
    """Upload, wait for every thumbnail at once (admin's own wait), fetch what came."""
    sent = admin.put_files(dep, files)
    latencies = admin.wait_for_thumbnails(dep, sent, time.monotonic() + timeout)
    rows = []
    for name, key in zip(files, sent, strict=True):
        row = Row(
            key, thumbnail_key(key, dep.raw_prefix, dep.thumb_prefix), Path(name).read_bytes()
        )
        if key in latencies:
            row.latency_ms = latencies[key] * 1000
            got = dep.client("s3").get_object(Bucket=dep.bucket, Key=row.thumb_key)
            row.thumb = got["Body"].read()
        rows.append(row)
    return rows


def describe(data: bytes) -> str:
    """WxH of the first frame, with the EXIF orientation or frame count when there is one."""
    image = pyvips.Image.new_from_buffer(data, "")
    pages = image.get("n-pages") if image.get_typeof("n-pages") else 1
    height = image.get("page-height") if image.get_typeof("page-height") else image.height
    text = f"{image.width}x{height}"
    if image.get_typeof("orientation") and image.get("orientation") != 1:
        text += f" (EXIF {image.get('orientation')})"
    if pages > 1:
        text += f" ({pages} frames)"
    return text


def report(rows: list[Row]) -> int:
    """The table on stdout; 1 if a thumbnail is missing, naming each on stderr."""
    header = ("key", "input bytes", "input size", "thumbnail size", "thumb bytes", "latency ms")
    table = [header]
    for row in rows:
        done = row.thumb is not None
        table.append(
            (
                row.key,
                str(len(row.data)),
                describe(row.data),
                describe(row.thumb) if done else "MISSING",
                str(len(row.thumb)) if done else "-",
                f"{row.latency_ms:.0f}" if done else "-",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        cells = [line[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        print("  ".join(cells))
    missing = [row.key for row in rows if row.thumb is None]
    for key in missing:
        print(f"no thumbnail for {key}", file=sys.stderr)
    return 1 if missing else 0


def save(rows: list[Row], thumb_prefix: str, out_dir: Path) -> None:
    for row in rows:
        if row.thumb is not None:
            target = out_dir / row.thumb_key.removeprefix(thumb_prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(row.thumb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imgpipe.local.demo", description="Upload images, wait for their thumbnails."
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--timeout", type=float, default=60, help="seconds (default 60)")
    parser.add_argument("--out", type=Path, help="copy the thumbnails here")
    args = parser.parse_args(argv)

    dep = admin.Deployment(dict(os.environ))
    rows = run(dep, args.files, args.timeout)
    if args.out:
        save(rows, dep.thumb_prefix, args.out)
    return report(rows)


if __name__ == "__main__":
    sys.exit(main())
