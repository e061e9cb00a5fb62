"""Speed benchmark: decode time and memory, training ms per iteration, and the distance to
this machine's physical floor. Writes results/speed.tsv (see README).

    python benchmarks/speed.py [DATASET] [--images N] [--repeats R] [--threads T]
                               [--archs A,B] [--streams DIR]

DATASET defaults to ../shared/data/kodak when it exists (PNG files). Each image is encoded
with few training iterations (--iterations, default 50): decoding costs the same whatever
the training length, since the decoder's work depends only on the image size and the
decoder configuration, not on the latent values. Each bitstream is decoded in a fresh
process (--repeats timed decodes after one warm-up; the median is reported, the first,
cold decode too) whose peak resident memory is reported. This script imports torch only
where it measures training or matmul throughput, so a decoding process holds what the
decoder itself loads (no torch on the CPU).

The floor: a model's multiply-accumulates (MAC) divided by this machine's float32 (training)
or float64 (decoding) matrix-multiply throughput, measured with a large torch matmul. A
training iteration is counted as 3x the decoder's MAC (forward, and the two products per
layer of the backward pass); the ARM runs over every latent. The ratio measured / floor
says how far the implementation is from what the arithmetic alone would cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "kodak"
TRAIN_SIZES = ((512, 768), (256, 256))  # (H, W)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Throughput of one large (n, n) @ (n, n) matmul, GFLOP/s (median of `repeats`)."""
    import torch

    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, it does not inherit
    the parent's peak across fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _decode_child(path: str, repeats: int, device: str, kernel: str) -> None:
    """Runs in a fresh process: decode `path` 1 + repeats times, print JSON."""
    t = time.perf_counter()
    from coolchic.decode import decode

    import_s = time.perf_counter() - t
    data = Path(path).read_bytes()
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        decode(data, device=device, kernel=kernel)
        times.append(time.perf_counter() - t)
    print(json.dumps({"import_s": import_s, "times": times, "peak_mb": _peak_mb()}))


def _baseline_child() -> None:
    import coolchic.decode  # noqa: F401

    print(json.dumps({"peak_mb": _peak_mb()}))


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True,
                         text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stream(path: Path, arch: str, opts, work: Path) -> Path:
    """The bitstream of `path` encoded with `arch`: encoded into `work`, or, with --streams,
    taken from that folder when an earlier run left it there (so that runs of this script
    on two versions of the decoder time the same bitstreams)."""
    stream = (opts.streams or work) / f"{path.stem}_{arch}_{opts.iterations}it.bin"
    if opts.streams is None or not stream.exists():
        from coolchic.encode import encode

        result = encode(path, lmbda=1e-3, iterations=opts.iterations, arch=arch)
        stream.parent.mkdir(parents=True, exist_ok=True)
        stream.write_bytes(result.data)
    return stream


def bench_decode(images: list[Path], arch: str, opts, work: Path) -> list[dict]:
    """Each image's stream decoded by the native decoder and, as its peer in the same run,
    by the numpy one (same image bit for bit; tests check it)."""
    from coolchic.complexity import mac_per_pixel
    from coolchic.config import get_arch
    from coolchic.decode import describe

    rows = []
    for path in images:
        stream = _stream(path, arch, opts, work)
        data = stream.read_bytes()
        header = describe(data).header
        h, w = header.height, header.width
        macs = mac_per_pixel(get_arch(arch), h, w, header.channels).total
        medians = {}
        for kernel in opts.decoders:
            r = _child(["--decode-child", str(stream), str(opts.repeats), opts.device, kernel])
            median = medians[kernel] = statistics.median(r["times"][1:])
            rows.append({"image": path.stem, "size": f"{w}x{h}", "median_s": median, "kernel": kernel,
                         "cold_s": r["times"][0], "peak_mb": r["peak_mb"], "mac_per_pixel": macs,
                         "pixels": h * w, "bytes": len(data), "load": _load()})
            print(f"decode {arch:8s} {path.stem} ({kernel}): median {median * 1000:.0f} ms, first "
                  f"{r['times'][0] * 1000:.0f} ms, peak RSS {r['peak_mb']:.0f} MB (load {_load()})",
                  flush=True)
        if len(medians) == 2:
            print(f"decode {arch:8s} {path.stem}: numpy / native = "
                  f"{medians['numpy'] / medians['native']:.2f}", flush=True)
    return rows


def _earlier_rows(path: Path, kinds: list[str]) -> list[list[str]]:
    """The rows of these kinds in an existing results file, so that a run that skips a
    kind does not erase its earlier measurements."""
    if not kinds or not path.exists():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]
    return [r for r in rows if r[0] in kinds]


def _time(fn, steps: int, *, cpu: bool = False) -> float | tuple[float, float]:
    """Median ms of `steps` calls after 2 warm-ups; with `cpu`, (wall, this process's CPU
    time): on a shared machine the wall time also counts waiting for a core."""
    for _ in range(2):
        fn()
    times, cpu_times = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - c)
    wall = statistics.median(times) * 1000
    return (wall, statistics.median(cpu_times) * 1000) if cpu else wall


def bench_train(size: tuple[int, int], arch: str, opts) -> dict:
    """ms per training iteration (forward, backward, Adam step) and its split, with the
    kernels and the quantizer that training uses."""
    import torch

    from coolchic.config import get_arch
    from coolchic.model.coolchic import CoolChic
    from coolchic.model.fused import arm_rate, synthesis_mse, upsample_stack
    from coolchic.quant import make_quantizer
    from coolchic.train import adam, training_kernels, training_threads

    h, w = size
    torch.manual_seed(0)
    device = opts.device
    model = CoolChic(get_arch(arch), h, w, 3).to(device)
    with torch.no_grad():
        for y in model.latents:
            y.normal_(0, 2)
    image = torch.rand(1, 3, h, w, device=device)
    networks = [p for n, p in model.named_parameters() if not n.startswith("latents.")]
    optimizer = adam([{"params": list(model.latents), "lr": 1e-2}, {"params": networks, "lr": 1e-3}])
    kernels = training_kernels(opts.compile, model, 1, device)
    # the quantizer of real encodes (presets' soft-rounding phase) at mid-anneal values
    softround = make_quantizer("softround", temperature=0.3, noise_shape=1.5)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        mse, rate = model.loss_terms(softround, image, kernels=kernels)
        loss = mse + 1e-3 * rate / (h * w)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()

    with training_threads(opts.threads, kernels):
        total, total_cpu = _time(step, opts.steps, cpu=True)
    q = [y.detach() + 0.1 for y in model.latents]
    for t in q:
        t.requires_grad_()
    layers = [(m.weight, m.bias) for m in model.arm.layers]
    mlp = [(m.weight, m.bias) for m in model.synthesis.mlp]
    convs = [(m.weight, m.bias) for m in model.synthesis.residual]
    coarser = upsample_stack([t.detach() for t in q])
    if coarser is not None:
        coarser.requires_grad_()
    finest = q[0].detach().clone().requires_grad_()

    def quantize():
        torch.stack([softround(y).sum() for y in model.latents]).sum().backward()
        sync()

    def arm():
        arm_rate(q, layers, model.config.arm.context, kernels=kernels).backward()
        sync()

    def up():
        upsample_stack(q, kernels=kernels).sum().backward()
        sync()

    def syn():
        synthesis_mse(finest, coarser, image, mlp, convs, kernels=kernels).backward()
        sync()

    with training_threads(opts.threads, kernels):
        split = {"quantizer": _time(quantize, opts.steps), "arm_rate": _time(arm, opts.steps),
                 "upsampling": _time(up, opts.steps), "synthesis_mse": _time(syn, opts.steps),
                 "optimizer": _time(optimizer.step, opts.steps)}
    name = "native" if kernels.native is not None else "torch"
    print(f"train   {arch:8s} {w}x{h}: {total:.1f} ms/iter, CPU {total_cpu:.1f} ms ({name} kernels); "
          "fwd+bwd split (ms) "
          + ", ".join(f"{k} {v:.1f}" for k, v in split.items()) + f" (load {_load()})", flush=True)
    return {"ms": total, "cpu_ms": total_cpu, "split": split, "latents": model.n_latents(), "kernels": name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--images", type=int, default=3, help="images decoded per operating point")
    parser.add_argument("--repeats", type=int, default=5, help="timed decodes after the warm-up")
    parser.add_argument("--iterations", type=int, default=50, help="training iterations per bitstream")
    parser.add_argument("--steps", type=int, default=10, help="timed training iterations")
    parser.add_argument("--threads", type=int, default=None,
                        help="training threads, as `coolchic encode --threads` (default: the "
                             "machine's cores, at most 4; decoding always runs on one)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                        help="training kernels, as `coolchic encode --compile` (off: torch)")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "speed.tsv")
    parser.add_argument("--decoders", default="native,numpy",
                        help="decoder kernels to time, comma-separated: native, numpy")
    parser.add_argument("--archs", default=None,
                        help="decoder configurations to time, comma-separated (default: all)")
    parser.add_argument("--streams", type=Path, default=None,
                        help="folder that keeps the encoded bitstreams and reuses them in later "
                             "runs (to time two versions of the decoder on the same streams)")
    parser.add_argument("--decode-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-child", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.decode_child:
        _decode_child(opts.decode_child[0], int(opts.decode_child[1]), *opts.decode_child[2:])
        return
    if opts.baseline_child:
        _baseline_child()
        return

    opts.decoders = opts.decoders.split(",")
    if not set(opts.decoders) <= {"native", "numpy"}:
        sys.exit("--decoders takes native and/or numpy")
    from coolchic.config import ARCHS

    archs = list(ARCHS) if opts.archs is None else opts.archs.split(",")
    if not set(archs) <= set(ARCHS):
        sys.exit(f"--archs takes some of {', '.join(ARCHS)}")
    import torch

    from coolchic.complexity import mac_per_pixel
    from coolchic.decoder.native import unavailable_reason
    from coolchic.model.native import kernel_threads

    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    train_threads = kernel_threads(torch.get_num_threads())
    load_start = _load()
    f32 = matmul_gflops(torch.float32)
    f64 = matmul_gflops(torch.float64)
    machine = (f"{_cpu_model()}; {os.cpu_count()} cores; torch {torch.__version__}; "
               f"numpy {np.__version__}; Python {platform.python_version()}; "
               f"training threads {train_threads}; device {opts.device}")
    print(f"machine: {machine}\nload average at start: {load_start}\n"
          f"matmul throughput: float32 {f32:.0f} GFLOP/s, float64 {f64:.0f} GFLOP/s", flush=True)
    rows = []
    if not opts.skip_decode:
        images = sorted(opts.dataset.glob("*.png"))[: opts.images]
        if not images:
            sys.exit(f"no PNG images in {opts.dataset}; pass a dataset path")
        if "native" in opts.decoders and unavailable_reason():
            sys.exit(f"the native decoder is unavailable: {unavailable_reason()}")
        print(f"decoding {len(images)} image(s) per operating point; bitstreams trained for "
              f"{opts.iterations} iterations (decode cost does not depend on training length)")
        baseline = _child(["--baseline-child"])["peak_mb"]
        with tempfile.TemporaryDirectory() as work:
            decoded = [(arch, r) for arch in archs
                       for r in bench_decode(images, arch, opts, Path(work))]
        for arch, r in decoded:
            floor_s = 2 * r["mac_per_pixel"] * r["pixels"] / (f64 * 1e9)
            kind = "decode" if r["kernel"] == "native" else "decode-numpy"
            rows.append([kind, arch, r["image"], r["size"], f"{r['median_s'] * 1000:.1f}",
                         f"{r['cold_s'] * 1000:.1f}", f"{r['peak_mb']:.0f}",
                         f"{r['peak_mb'] - baseline:.0f}", f"{r['mac_per_pixel']:.1f}",
                         f"{floor_s * 1000:.2f}", f"{r['median_s'] / floor_s:.0f}", r["load"]])
    if not opts.skip_train:
        for arch in archs:
            for h, w in TRAIN_SIZES:
                r = bench_train((h, w), arch, opts)
                macs = mac_per_pixel(ARCHS[arch], h, w, 3).total
                floor_ms = 2 * 3 * macs * h * w / (f32 * 1e9) * 1000
                split = " ".join([f"kernels={r['kernels']}", f"cpu_ms={r['cpu_ms']:.1f}"]
                                 + [f"{k}={v:.1f}" for k, v in r["split"].items()])
                rows.append(["train", arch, split, f"{w}x{h}", f"{r['ms']:.1f}", "", "", "",
                             f"{macs:.1f}", f"{floor_ms:.2f}", f"{r['ms'] / floor_ms:.0f}", _load()])
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    header = [
        f"# machine: {machine}",
        f"# matmul throughput: float32 {f32:.1f} GFLOP/s, float64 {f64:.1f} GFLOP/s",
        f"# load average (1, 5, 15 min) at start: {load_start}; at end: {_load()}",
        f"# decode: median of {opts.repeats} decodes after a warm-up, in a fresh process; "
        f"first_ms is that process's first decode (tables loaded); kind decode: the native "
        f"decoder (C++, built on first use), decode-numpy: the numpy one, same image; bitstreams trained for "
        f"{opts.iterations} iterations: decode cost does not depend on training length",
        "# peak_mb: peak resident memory of the decoding process; above_import_mb: minus "
        "that of a process that only imported the decoder",
        "# train: ms per iteration (forward, backward, Adam step) on a random image, "
        "soft-round quantizer (T 0.3, noise shape 1.5); in the image column: the kernels, "
        "the step's CPU time (cpu_ms: without the waits for a core) and the split (fwd+bwd "
        "each, ms)",
        "# floor_ms: MAC (x3 for training) / matmul throughput; ratio = measured / floor",
        "\t".join(["kind", "arch", "image", "size", "median_ms", "first_ms", "peak_mb",
                   "above_import_mb", "mac_per_pixel", "floor_ms", "ratio", "load_avg"]),
    ]
    skipped = [kind for kind, skip in (("decode", opts.skip_decode), ("decode-numpy", opts.skip_decode),
                                       ("train", opts.skip_train)) if skip]
    kept = _earlier_rows(opts.out, skipped)
    if kept:
        header.insert(-1, f"# {' and '.join(skipped)} rows: kept from an earlier run of this script "
                      "(skipped in this one); their load_avg column is their own")
    opts.out.write_text("\n".join(header + ["\t".join(r) for r in rows + kept]) + "\n")
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
