"""Draws architecture-diagram.png from the boxes and arrows below: `python docs/diagram.py`."""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).resolve().parents[1] / "architecture-diagram.png"
W, H = 1720, 540
BOX_W, BOX_H = 210, 96

# name -> (x, y of the box's centre, colour, lines of text)
BOXES = {
    "s3in": (130, 150, "#f3e5d0", ["S3 bucket", "raw-images/"]),
    "lambda": (470, 150, "#fde2c8", ["Lambda", "lambda/handler.py"]),
    "sns": (810, 150, "#f9d3dc", ["SNS topic", "imgpipe-uploads"]),
    "sqs": (1150, 150, "#f9d3dc", ["SQS queue", "raw delivery"]),
    "dlq": (1510, 150, "#eeeeee", ["dead-letter queue", "reasons as attributes"]),
    "consumer": (1150, 390, "#d6e8f7", ["consumer pods (EKS)", "imgpipe consumer"]),
    "s3out": (1510, 390, "#f3e5d0", ["S3 bucket", "thumbnails/"]),
    "cw": (730, 390, "#e3f1dc", ["CloudWatch", "logs, metrics, alarms"]),
    "mail": (300, 390, "#f9d3dc", ["SNS alarm topic", "email to operator"]),
}
ARROWS = [
    ("s3in", "lambda", "ObjectCreated"),
    ("lambda", "sns", "PublishBatch"),
    ("sns", "sqs", "subscription"),
    ("sqs", "dlq", "redrive / reason"),
    ("sqs", "consumer", "long poll"),
    ("consumer", "s3out", "PutObject"),
    ("consumer", "cw", "logs"),
    ("lambda", "cw", "logs"),
    ("cw", "mail", "alarms"),
]


def font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def edge_point(name, toward):
    """Where the line from box `name` toward a point leaves the box's border."""
    x, y = BOXES[name][:2]
    tx, ty = toward
    dx, dy = tx - x, ty - y
    scale = min(BOX_W / 2 / abs(dx) if dx else 1e9, BOX_H / 2 / abs(dy) if dy else 1e9)
    return x + dx * scale, y + dy * scale


def main():
    image = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(image)
    title, text, small = font(30), font(20), font(16)
    draw.text(
        (40, 20), "imgpipe: S3 -> Lambda -> SNS -> SQS -> consumer on EKS -> S3", "black", title
    )
    labels = []
    for a, b, label in ARROWS:
        start = edge_point(a, BOXES[b][:2])
        end = edge_point(b, BOXES[a][:2])
        draw.line([start, end], "#555555", 3)
        ex, ey = end
        sx, sy = start
        length = max(((ex - sx) ** 2 + (ey - sy) ** 2) ** 0.5, 1)
        ux, uy = (ex - sx) / length, (ey - sy) / length
        draw.polygon(
            [
                (ex, ey),
                (ex - 14 * ux - 7 * uy, ey - 14 * uy + 7 * ux),
                (ex - 14 * ux + 7 * uy, ey - 14 * uy - 7 * ux),
            ],
            "#555555",
        )
        labels.append((((sx + ex) / 2, (sy + ey) / 2), label, abs(ey - sy) < 1))
    for x, y, colour, lines in BOXES.values():
        draw.rounded_rectangle(
            [x - BOX_W / 2, y - BOX_H / 2, x + BOX_W / 2, y + BOX_H / 2], 14, colour, "#333333", 2
        )
        for i, line in enumerate(lines):
            draw.text((x, y - 14 + i * 28), line, "black", text if i == 0 else small, anchor="mm")
    for (x, y), label, horizontal in labels:  # on top of the boxes' edges, so drawn last
        if horizontal:
            draw.text((x, y - 6), label, "#333333", small, anchor="mb")
        else:
            draw.text((x + 10, y), label, "#333333", small, anchor="lm")
    draw.text(
        (40, H - 50),
        "Local mode: the same scripts and code against the moto server (AWS_ENDPOINT_URL), "
        "a local Lambda runtime, consumers as local processes.",
        "#333333",
        small,
    )
    image.save(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
