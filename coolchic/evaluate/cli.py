"""Typer command functions of the evaluation toolkit, for the main ``coolchic`` app::

    app.command("evaluate")(evaluate_command)
    app.command("reproduce-paper")(reproduce_command)

Each parses its options, makes one library call and prints where the results are. Bad
input gives one line on stderr and exit status 2; Ctrl-C exits with status 130 after
saying how to resume.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from coolchic.evaluate.baselines import CODECS as CLASSICAL

DEFAULT_LAMBDAS = "1e-4,4e-4,1e-3,4e-3,2e-2"


def _errors_as_exit_codes(fn: Callable) -> Callable:
    """One line on stderr and exit 2 for bad input; a resume hint and exit 130 on Ctrl-C."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        err = Console(stderr=True)
        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError) as exc:  # EvaluationError, ImageError, BitstreamError
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: finished jobs are saved; run the same command again to"
                      " resume", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def parse_lambdas(text: str) -> tuple[float, ...]:
    """``"1e-4,4e-4"`` -> (0.0001, 0.0004); empty text -> ()."""
    from coolchic.evaluate.errors import EvaluationError

    values = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            values.append(float(item))
        except ValueError:
            raise EvaluationError(f"--lmbda: {item!r} is not a number") from None
    return tuple(values)


def parse_baselines(text: str) -> tuple[str, ...]:
    """``"all"``, ``"none"`` / empty, or a comma list of classical codec names."""
    text = text.strip()
    if text in ("", "none"):
        return ()
    if text == "all":
        return tuple(CLASSICAL)
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_amortized(text: str) -> tuple[str, ...]:
    """``"all"``, ``"none"`` / empty, or a comma list of amortized codec names."""
    from coolchic.amortized.api import image_codecs

    text = text.strip()
    if text in ("", "none"):
        return ()
    if text == "all":
        return image_codecs()
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _names(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _print_summary(files: list[Path], entries: list) -> None:
    """The BD-rates against the first anchor as a table, then the files written."""
    out = Console()
    if entries:
        anchor = entries[0].anchor
        table = Table(title=f"BD-rate against {anchor} (negative = fewer bits)")
        for column in ("codec", "PSNR", "BD-PSNR", "MS-SSIM dB"):
            table.add_column(column, justify="left" if column == "codec" else "right")
        for e in sorted((e for e in entries if e.anchor == anchor),
                        key=lambda e: (math.isnan(e.bd_rate_psnr_pct), e.bd_rate_psnr_pct)):
            table.add_row(e.codec, _signed(e.bd_rate_psnr_pct, "%"), _signed(e.bd_psnr_db, " dB"),
                          _signed(e.bd_rate_ms_ssim_pct, "%"))
        out.print(table)
    for path in files:
        out.print(f"wrote {path}", highlight=False)


def _signed(value: float, unit: str) -> str:
    return "-" if math.isnan(value) else f"{value:+.2f}{unit}"


_Dir = Annotated[Path, typer.Argument(help="Folder of source images (PNG, PPM, ...).")]
_Out = Annotated[Path, typer.Option("--out", "-o", help="Run folder; an existing one resumes.")]
_Lambdas = Annotated[str, typer.Option("--lmbda", "-l", help="Comma-separated RD lambdas.")]
_Preset = Annotated[str, typer.Option(help="Training preset, in order of cost: fast, medium, slow.")]
_Crop = Annotated[int | None, typer.Option(help="Centre-crop every image to N x N pixels.")]
_Images = Annotated[str | None, typer.Option(help="Comma-separated image names (kodim01,...).")]
_Baselines = Annotated[str, typer.Option(
    help=f"Classical codecs: all, none, or a comma list of {', '.join(CLASSICAL)}.")]
_Amortized = Annotated[str, typer.Option(
    help="Amortized codecs at their shipped qualities: all, none, or a comma list of cwic, ccn, cpm.")]
_OnlyBaselines = Annotated[bool, typer.Option("--only-baselines", help="Leave the overfitted codec out.")]
_Jobs = Annotated[int, typer.Option("--jobs", "-j", help="Local backend: jobs run at once.")]
_Backend = Annotated[str, typer.Option(help="local or ray.")]
_RayAddress = Annotated[str | None, typer.Option(
    help="Ray cluster to join (default: start a local Ray instance).")]
_Gpus = Annotated[float, typer.Option(help="Ray: GPUs reserved per job (with --device cuda).")]
_Cpus = Annotated[float, typer.Option(help="Ray: CPUs reserved per job.")]
_Iterations = Annotated[int | None, typer.Option(help="Override the preset's iterations.")]
_Device = Annotated[str, typer.Option(help="cpu or cuda, for our codec.")]
_Seed = Annotated[int, typer.Option(help="Random seed of our codec.")]
_Arch = Annotated[str | None, typer.Option(help="Decoder configuration of our codec [auto].")]
_Protocol = Annotated[str, typer.Option(
    help="Protocol: quick (CPU, 256x256 crops), paper (whole images, GPU), paper-grade (8 whole "
         "images, 4 lambdas, bitstreams published in results/paper-grade), or a preset name.")]
_Kodak = Annotated[Path | None, typer.Option(help="Folder holding kodim01.png ... kodim24.png.")]
_RunOut = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Run folder [results/runs/kodak-<protocol>; paper-grade: results/paper-grade/run].")]


@_errors_as_exit_codes
def evaluate_command(
    directory: _Dir,
    out: _Out,
    lmbda: _Lambdas = DEFAULT_LAMBDAS,
    preset: _Preset = "fast",
    crop: _Crop = None,
    images: _Images = None,
    baselines: _Baselines = "none",
    amortized: _Amortized = "none",
    only_baselines: _OnlyBaselines = False,
    jobs: _Jobs = 1,
    backend: _Backend = "local",
    ray_address: _RayAddress = None,
    gpus_per_task: _Gpus = 0.0,
    cpus_per_task: _Cpus = 1.0,
    iterations: _Iterations = None,
    device: _Device = "cpu",
    seed: _Seed = 0,
    arch: _Arch = None,
) -> None:
    """Measure the rate-distortion of codecs on the images of DIRECTORY.

    Our codec, the amortized codecs and classical codecs (--only-baselines leaves the
    overfitted codec out).
    Writes per_image.tsv, summary.tsv, bdrate.md and rd.png into --out; resumable.
    """
    from coolchic.evaluate.evaluation import EvaluationSpec, evaluate
    from coolchic.evaluate.runner import BackendOptions

    spec = EvaluationSpec(
        images_dir=directory, out=out, lambdas=() if only_baselines else parse_lambdas(lmbda),
        preset=None if only_baselines else preset, baselines=parse_baselines(baselines),
        amortized=parse_amortized(amortized),
        crop=crop, images=_names(images), iterations=iterations, device=device, seed=seed,
        arch=arch,
    )
    options = BackendOptions(backend=backend, jobs=jobs, ray_address=ray_address,
                             cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
    result = evaluate(spec, options)
    _print_summary(result.files, result.bd_entries)


@_errors_as_exit_codes
def reproduce_command(
    preset: _Protocol = "quick",
    jobs: _Jobs = 1,
    backend: _Backend = "local",
    kodak_dir: _Kodak = None,
    out: _RunOut = None,
    device: _Device = "cpu",
    gpus_per_task: _Gpus = 0.0,
    ray_address: _RayAddress = None,
    report_only: Annotated[bool, typer.Option(
        "--report-only", help="Run nothing: write the reports of the jobs already finished.")] = False,
) -> None:
    """Rebuild the COOL-CHIC paper's Kodak results, with the classical codecs beside them.

    Prints our per-lambda means next to the published ones (ICCV 2023); resumable.
    """
    from coolchic.evaluate.reproduce import reproduce
    from coolchic.evaluate.runner import BackendOptions

    options = BackendOptions(backend=backend, jobs=jobs, ray_address=ray_address,
                             gpus_per_task=gpus_per_task)
    result = reproduce(preset, options, kodak_dir=kodak_dir, out=out, device=device,
                       report_only=report_only)
    _print_summary(result.files, result.bd_entries)
