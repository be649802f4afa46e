"""Consumer throughput against the moto server: thumbnails per second and CPU per thumbnail.

    .venv/bin/python bench/consumer_throughput.py [--messages 50] [--workers 1 2 4]

moto is the bottleneck here (one core, slower as the queue grows: NOTES.md), so the figure that
carries over to AWS is the consumer's CPU seconds per thumbnail, measured in the consumer's own
process; wall-clock throughput is printed beside it. The backlog is bounded (default 50).
"""

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "corpus" / "2569067123_aca715a2ee_o.jpg"


def photo() -> bytes:
    if PHOTO.is_file():
        return PHOTO.read_bytes()
    from PIL import Image  # a generated stand-in of the same size when the corpus is absent

    buf = io.BytesIO()
    Image.effect_mandelbrot((2725, 2225), (-2, -1.5, 1, 1.5), 100).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def run(workers: int, messages: int) -> dict:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(env)
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    bucket = f"bench-{workers}-{int(time.time())}"
    s3.create_bucket(Bucket=bucket)
    queue = sqs.create_queue(QueueName=bucket, Attributes={"VisibilityTimeout": "120"})["QueueUrl"]
    data = photo()
    for i in range(messages):
        s3.put_object(Bucket=bucket, Key=f"raw-images/{i}.jpg", Body=data)
    for i in range(0, messages, 10):
        entries = [
            {
                "Id": str(j),
                "MessageBody": json.dumps({"bucket": bucket, "key": f"raw-images/{j}.jpg"}),
            }
            for j in range(i, min(i + 10, messages))
        ]
        sqs.send_message_batch(QueueUrl=queue, Entries=entries)

    consumer = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        env={
            **env,
            "BUCKET_NAME": bucket,
            "QUEUE_URL": queue,
            "WORKERS": str(workers),
            "HEALTH_PORT": "0",
            "HEALTH_HOST": "127.0.0.1",
            "WAIT_TIME_SECONDS": "1",
            "LOG_LEVEL": "WARNING",
            "BENCH_MESSAGES": str(messages),
        },
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = consumer.communicate(timeout=600)
    server.stop()
    return json.loads(out.strip().splitlines()[-1])


# The consumer in a child process that stops itself once the backlog is done, then reports its
# own CPU time and peak RSS.
CHILD = """
import json, os, threading, time
from imgpipe.config import Settings
from imgpipe.consumer import Consumer
from imgpipe import health
n = int(os.environ["BENCH_MESSAGES"])
def hwm():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024
c = Consumer(Settings.from_env())
c.sqs, c.storage  # build the clients before measuring
idle = hwm()
t = threading.Thread(target=c.run); start = time.monotonic(); cpu0 = time.process_time(); t.start()
while health.WRITTEN._value.get() < n:
    time.sleep(0.05)
wall, cpu = time.monotonic() - start, time.process_time() - cpu0
c.stop(); t.join()
print(json.dumps({"wall": wall, "cpu": cpu, "n": n, "idle_mb": idle, "rss_mb": hwm()}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"# consumer throughput, {args.messages} x {len(photo())} B JPEG (2725x2225) -> 256 px")
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, moto server in-process\n")
    print("| workers | wall thumbnails/s | CPU ms/thumbnail | consumer RSS MB idle, peak |")
    print("|---|---|---|---|")
    for workers in args.workers:
        r = run(workers, args.messages)
        print(
            f"| {workers} | {r['n'] / r['wall']:.1f} | {r['cpu'] / r['n'] * 1000:.1f} "
            f"| {r['idle_mb']:.0f}, {r['rss_mb']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
