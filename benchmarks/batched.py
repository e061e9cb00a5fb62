"""Batched training speed (issue 27): ms per image-iteration of the batched path
(coolchic.train_batch) alone and in batches, against the single-encode path
(coolchic.train.overfit's step) measured in the same run, beside the arithmetic floor.

    python benchmarks/batched.py [--device cpu|cuda] [--steps N] [--warmup W]
                                 [--sizes 256x256,768x512] [--batches 1,4,16,64]

A step is one forward, backward and Adam step of the softround phase on a random image
with random latents (N(0, 2)), as benchmarks/speed.py times the single path. Batch 64 runs
at 256x256 only (--max-pixels caps batch x pixels). On the CPU the batched path runs torch
on one thread (see coolchic.train_batch) and the single path runs its native kernels on
--threads threads (default 1, the same core count). On CUDA the batched path is timed with
its steps replayed as CUDA graphs and, as "batched-eager", without. The floor: 3 x the
decoder's MAC per pixel x pixels over this device's float32 matrix-multiply throughput;
"x single" is the single path's ms per iteration over the batched path's ms per
image-iteration (> 1: the batch is faster per image). No result file: paste the output.

On Linux CPUs, run it as ``MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184
python benchmarks/batched.py``: glibc otherwise maps every tensor above 32 MB afresh at each
step, and the page faults dominate large batches (at 256x256, batch 16 took 555 ms per
image-iteration without, 236 ms with, on the reference 2-core machine under load).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from coolchic.complexity import mac_per_pixel
from coolchic.config import get_arch
from coolchic.encode import effective_config
from coolchic.model.batched import BatchedCoolChic
from coolchic.model.coolchic import CoolChic
from coolchic.presets import get_preset
from coolchic.quant import make_quantizer
from coolchic.train import adam, training_kernels, training_threads
from coolchic.train_batch import BatchTrainer


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_ms(step, device: str, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times)


def matmul_gflops(device: str, n: int = 2048, repeats: int = 5) -> float:
    """float32 throughput of one (n, n) @ (n, n) product on `device`, GFLOP/s."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    ms = _median_ms(lambda: a @ b, device, repeats, 1)
    return 2 * n**3 / ms / 1e6


def single_ms(config, h: int, w: int, opts) -> tuple[float, str]:
    """ms per iteration of the single-encode step, and the kernels it ran."""
    torch.manual_seed(0)
    model = CoolChic(config, h, w, 3).to(opts.device)
    with torch.no_grad():
        for y in model.latents:
            y.normal_(0, 2)
    image = torch.rand(1, 3, h, w, device=opts.device)
    networks = [p for n, p in model.named_parameters() if not n.startswith("latents.")]
    optimizer = adam([{"params": list(model.latents), "lr": 1e-2}, {"params": networks, "lr": 1e-3}])
    kernels = training_kernels("auto", model, 1, opts.device)
    softround = make_quantizer("softround", temperature=0.3, noise_shape=1.5)

    def step():
        mse, rate = model.loss_terms(softround, image, kernels=kernels)
        loss = mse + 1e-3 * rate / (h * w)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with training_threads(opts.threads, kernels):
        ms = _median_ms(step, opts.device, opts.steps, opts.warmup)
    return ms, "native" if kernels.native is not None else "torch"


def batched_ms(config, h: int, w: int, batch: int, opts, *, graphs: bool) -> float:
    """ms per step of a batch of `batch` encodes."""
    model = BatchedCoolChic.from_seeds(config, h, w, 3, range(batch)).to(opts.device)
    with torch.no_grad():
        model.latents.normal_(0, 2)
    phase = get_preset("fast").phases[0]
    images = torch.rand(batch, 3, h, w, device=opts.device)
    trainer = BatchTrainer(model, images, [1e-3] * batch, list(range(batch)),
                           longest_phase=phase.iterations, graphs=graphs)
    trainer.start_phase(phase)
    threads = torch.get_num_threads()
    if opts.device == "cpu":
        torch.set_num_threads(1)
    try:
        return _median_ms(lambda: trainer.step("softround"), opts.device, opts.steps, opts.warmup)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sizes", default="256x256,768x512", help="WxH,...")
    parser.add_argument("--batches", default="1,4,16,64")
    parser.add_argument("--max-pixels", type=int, default=16 * 768 * 512,
                        help="largest batch x pixels run (skips 64 at 768x512)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (graph capture)")
    parser.add_argument("--arch", default="default")
    parser.add_argument("--threads", type=int, default=1, help="threads of the single path")
    opts = parser.parse_args()
    if opts.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    name = torch.cuda.get_device_name() if opts.device == "cuda" else _cpu_model()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the batched path's thread count on the CPU
    gflops = matmul_gflops(opts.device)
    torch.set_num_threads(threads)
    print(f"# device {opts.device} ({name}); torch {torch.__version__}; cores {os.cpu_count()}; "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if opts.device == "cpu" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        print("# note: MALLOC_MMAP_THRESHOLD_ unset: large batches pay page faults (see the docstring)")
    print(f"# float32 matmul {gflops:.0f} GFLOP/s (one thread on the CPU); arch {opts.arch}; "
          f"{opts.steps} timed steps after {opts.warmup}")
    print("size\tpath\tbatch\tms_per_step\tms_per_image_iteration\tx_single\tfloor_ms\tratio_to_floor")
    for size in opts.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        config = effective_config(get_arch(opts.arch), h, w)
        floor = 2 * 3 * mac_per_pixel(config, h, w, 3).total * h * w / (gflops * 1e9) * 1e3  # 2 FLOP per MAC
        single, kernels = single_ms(config, h, w, opts)
        print(f"{size}\tsingle ({kernels}, {opts.threads} thread(s))\t1\t{single:.1f}\t{single:.2f}\t1.00\t"
              f"{floor:.3f}\t{single / floor:.0f}", flush=True)
        paths = [("batched", True)] + ([("batched-eager", False)] if opts.device == "cuda" else [])
        for batch in (int(b) for b in opts.batches.split(",")):
            if batch * h * w > opts.max_pixels:
                continue
            for path, graphs in paths:
                ms = batched_ms(config, h, w, batch, opts, graphs=graphs)
                per = ms / batch
                print(f"{size}\t{path}\t{batch}\t{ms:.1f}\t{per:.2f}\t{single / per:.2f}\t{floor:.3f}\t"
                      f"{per / floor:.0f}", flush=True)
            if opts.device == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
