"""Decode time of given bitstreams on one core, beside the floor of their arithmetic.

    python benchmarks/decode_files.py [FILE ...] [--repeats R] [--decoders native,numpy]
                                      [--against CHECKOUT]

FILE defaults to the paper-grade protocol's published bitstreams
(results/paper-grade/bitstreams/*.bin). Each file is decoded in a fresh process on one
thread (OMP/OPENBLAS/MKL threads 1): one warm-up, then R timed decodes, median reported.
--against decodes the same files with another checkout of coolchic (its folder is put
first on PYTHONPATH; its native libraries must be built there), alternating the two per
file, so that a before/after comparison shares the machine's state.

The floor of a file is its decoder's multiply-accumulates (MAC/pixel from the file's
header x pixels) divided by float64 matrix-multiply throughput, measured in this run with
torch's threads as benchmarks/speed.py does; "x speed.tsv floor" divides by the float64
throughput that results/speed.tsv records instead (its floor column), the reference of
the speed issue's target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FILES = sorted((REPO / "results" / "paper-grade" / "bitstreams").glob("*.bin"))


def _child(path: str, repeats: int, kernel: str) -> None:
    """In a fresh process: decode `path` 1 + repeats times, print the times as JSON."""
    from coolchic.decode import decode

    data = Path(path).read_bytes()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        decode(data, kernel=kernel)
        times.append(time.perf_counter() - start)
    print(json.dumps(times))


def _timed(path: Path, repeats: int, kernel: str, checkout: Path | None) -> float:
    """Median seconds of `repeats` decodes after a warm-up, in a fresh one-thread process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, __file__, "--child", str(path), str(repeats), kernel],
                         check=True, capture_output=True, text=True, env=env, cwd=checkout or REPO)
    return statistics.median(json.loads(out.stdout.strip().splitlines()[-1])[1:])


def _recorded_f64() -> float | None:
    """The float64 matmul throughput results/speed.tsv records (GFLOP/s), if any."""
    try:
        text = (REPO / "results" / "speed.tsv").read_text()
    except OSError:
        return None
    found = re.search(r"float64 ([0-9.]+) GFLOP/s", text)
    return float(found.group(1)) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--decoders", default="native,numpy")
    parser.add_argument("--against", type=Path, default=None,
                        help="another checkout of coolchic to time on the same files")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        _child(opts.child[0], int(opts.child[1]), opts.child[2])
        return
    files = opts.files or DEFAULT_FILES
    if not files:
        sys.exit("no bitstreams given and none in results/paper-grade/bitstreams/")
    kernels = opts.decoders.split(",")
    if not set(kernels) <= {"native", "numpy"}:
        sys.exit("--decoders takes native and/or numpy")
    import torch  # for the floor only
    from speed import _load, matmul_gflops  # benchmarks/speed.py, beside this script

    from coolchic.decode import describe

    f64 = matmul_gflops(torch.float64)
    recorded = _recorded_f64()
    print(f"# float64 matmul {f64:.1f} GFLOP/s in this run"
          + (f", {recorded:.1f} in results/speed.tsv" if recorded else "")
          + f"; load average at start {_load()}; decodes on one thread, median of {opts.repeats}")
    columns = ["file", "mac_per_pixel", "floor_ms"]
    for kernel in kernels:
        columns += [f"{kernel}_ms", f"{kernel}_x_floor"]
        if recorded:
            columns.append(f"{kernel}_x_speed_tsv_floor")
        if opts.against:
            columns += [f"{kernel}_against_ms", f"{kernel}_speedup"]
    print("\t".join(columns), flush=True)
    ratios: dict[str, list[float]] = {k: [] for k in kernels}
    for path in files:
        info = describe(path)
        pixels = info.header.height * info.header.width
        mac = info.macs.total
        floor = 2 * mac * pixels / (f64 * 1e9)
        row = [path.name, f"{mac:.0f}", f"{floor * 1e3:.2f}"]
        for kernel in kernels:
            ours = _timed(path, opts.repeats, kernel, None)
            ratios[kernel].append(ours / floor)
            row += [f"{ours * 1e3:.1f}", f"{ours / floor:.1f}"]
            if recorded:
                row.append(f"{ours / (2 * mac * pixels / (recorded * 1e9)):.1f}")
            if opts.against:
                theirs = _timed(path, opts.repeats, kernel, opts.against)
                row += [f"{theirs * 1e3:.1f}", f"{theirs / ours:.2f}"]
        print("\t".join(row), flush=True)
    for kernel in kernels:
        print(f"# {kernel}: median {statistics.median(ratios[kernel]):.1f} x this run's floor "
              f"over {len(files)} files; load average at end {_load()}")


if __name__ == "__main__":
    main()
