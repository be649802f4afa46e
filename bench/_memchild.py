"""Child process for the peak-memory figure: make one thumbnail, print peak RSS as JSON.

usage: _memchild.py {pillow|pyvips} {baseline|buffer|tuned|stream|file} [PATH SIZE]

baseline imports and sets up the library only; buffer reads the whole file into memory first
(as the service does with an S3 GET body); tuned is buffer through pyvips' "tuned" pipeline
(Source.new_from_memory, export_profile only when tagged); stream feeds a SourceCustom from a
file object read in chunks, as an S3 GET body could be; file lets the library read the path.
"""

import os
import subprocess
import sys

INNER = "IMGPIPE_BENCH_MEMCHILD_INNER"


def relaunch() -> int:
    # Linux keeps ru_maxrss across fork+exec: a child of the (large) benchmark process would
    # report the parent's high-water mark. This small process forks the measuring one instead.
    env = dict(os.environ, **{INNER: "1"})
    return subprocess.run([sys.executable, __file__, *sys.argv[1:]], env=env).returncode


def vm_hwm_kb() -> int:
    """Peak RSS of this address space from /proc (a cross-check of ru_maxrss)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def measure() -> int:
    import json
    import resource
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _thumbs

    lib, mode = sys.argv[1], sys.argv[2]
    if lib == "pillow" and mode != "buffer" and mode != "baseline":
        sys.exit("the Pillow pipeline takes bytes only; use buffer")
    if lib == "pyvips":
        _thumbs.pyvips_setup()
    else:
        from PIL import Image

        Image.init()  # load every plugin now, so the baseline holds what open() would load
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out_len = 0
    if mode != "baseline":
        path, size = sys.argv[3], int(sys.argv[4])
        if mode == "file":
            source = path
        elif mode == "stream":
            import pyvips

            stream = open(path, "rb")  # left open: it lives as long as this process
            source = pyvips.SourceCustom()
            source.on_read(stream.read)
        else:
            source = Path(path).read_bytes()
        if lib == "pyvips":
            tuned = {"icc": "tagged", "via": "memory"} if mode == "tuned" else {}
            out, _ = _thumbs.pyvips_thumbnail(source, size, **tuned)
        else:
            out, _ = _thumbs.pillow_thumbnail(source, size)
        out_len = len(out)
    result = {
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "vmhwm_kb": vm_hwm_kb(),
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.perf_counter() - wall0,
        "out_bytes": out_len,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(measure() if os.environ.get(INNER) == "1" else relaunch())
