"""Start-up benchmark: the whole `coolchic decode FILE -o OUT.png` command against the decode
alone in a warm process, so the difference is what the command adds (interpreter start,
imports, argument parsing, the PNG write, the summary line).

    python benchmarks/startup.py [BITSTREAM] [--runs N] [--command CMD]

BITSTREAM defaults to samples/kodim23.bin. --command is the command to time, split on
spaces (default: the `coolchic` script beside this interpreter); to time another checkout,
run it with PYTHONPATH=/path/to/that/checkout, which its files then win over an editable
install's. Runs of the command and of a bare interpreter are interleaved, so that a change
in the machine's load reaches both; medians are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# One decode to load what the decoder loads, then timed decodes of the same file.
IN_PROCESS = """
import sys, time
t = time.perf_counter()
from coolchic.decode import decode
decode(sys.argv[1])
print(time.perf_counter() - t)
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    decode(sys.argv[1])
    print(time.perf_counter() - t)
"""


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bitstream", nargs="?", type=Path, default=REPO / "samples" / "kodim23.bin")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--command", default=str(Path(sys.executable).with_name("coolchic")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.png"
        command = [*args.command.split(), "decode", str(args.bitstream), "-o", str(out)]
        _timed(command)  # the first run fills the page cache
        whole, bare = [], []
        for _ in range(args.runs):
            whole.append(_timed(command))
            bare.append(_timed([sys.executable, "-c", "pass"]))
    lines = subprocess.run([sys.executable, "-c", IN_PROCESS, str(args.bitstream), str(args.runs)],
                           check=True, capture_output=True, text=True).stdout.split()
    first, warm = float(lines[0]), statistics.median(map(float, lines[1:]))
    command_s = statistics.median(whole)
    print(f"{args.bitstream.name}, {args.runs} runs, load average {os.getloadavg()[0]:.2f}")
    print(f"  whole command ({Path(args.command.split()[-1]).name} decode)  {1e3 * command_s:7.1f} ms")
    print(f"  decode in a warm process          {1e3 * warm:7.1f} ms")
    print(f"  first decode in a process         {1e3 * first:7.1f} ms  (its imports included)")
    print(f"  bare interpreter                  {1e3 * statistics.median(bare):7.1f} ms")
    print(f"  whole command - warm decode       {1e3 * (command_s - warm):7.1f} ms")


if __name__ == "__main__":
    main()
