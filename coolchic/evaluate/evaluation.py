"""``coolchic evaluate``: plan the jobs of a run, run what is missing, write the results.

A run folder ends up with ``per_image.tsv`` (one row per codec, image and setting, with a
header recording every command and machine that contributed), ``summary.tsv`` (curves
averaged over images), ``bdrate.md`` (every codec against every anchor), ``rd.png``, and
``amortized.md`` when amortized codecs ran (ours beside their papers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from coolchic.evaluate.amortized_report import comparison_markdown
from coolchic.evaluate.baselines import CODECS as CLASSICAL
from coolchic.evaluate.datasets import list_images
from coolchic.evaluate.errors import EvaluationError
from coolchic.evaluate.jobs import (
    AmortizedAdapter,
    ClassicalAdapter,
    Codec,
    CoolchicCodec,
    Job,
    Outcome,
)
from coolchic.evaluate.plots import rd_figure, save_rd_plot
from coolchic.evaluate.provenance import code_revision, command_line, machine_description, recipe_fingerprint
from coolchic.evaluate.published import PublishedCurve, published_curves
from coolchic.evaluate.report import (
    BdEntry,
    bd_matrix,
    bdrate_markdown,
    complete_points,
    curves,
    per_image_bd_markdown,
    summary_tsv,
)
from coolchic.evaluate.runner import BackendOptions, execute, pending_jobs
from coolchic.evaluate.store import PARTIAL_DIR, RunStore
from coolchic.io import atomic_write_bytes


@dataclass(frozen=True)
class EvaluationSpec:
    """What to measure.

    Attributes:
        images_dir: folder of source images (lossless files).
        out: run folder (created; an existing one is resumed).
        lambdas: our codec's RD lambdas (> 0); empty to run baselines only.
        preset: our training preset, or None to leave our codec out.
        baselines: classical registry names to run beside ours.
        amortized: amortized codecs (``coolchic.amortized``) to run at every quality of
            their shipped checkpoints.
        crop: centre-crop side in pixels, None for whole images.
        images: image names to keep (stems), None for all.
        iterations, device, seed, arch: passed to ``coolchic.encode``.
        anchors: codecs every other is compared to in bdrate.md (those present in the run).
    """

    images_dir: Path
    out: Path
    lambdas: tuple[float, ...] = ()
    preset: str | None = "fast"
    baselines: tuple[str, ...] = ()
    amortized: tuple[str, ...] = ()
    crop: int | None = None
    images: tuple[str, ...] | None = None
    iterations: int | None = None
    device: str = "cpu"
    seed: int = 0
    arch: str | None = None
    # the anchors of issue 5's targets first (HEVC and AVIF 4:4:4, VVC, JPEG XL), then JPEG
    anchors: tuple[str, ...] = ("hevc444", "avif444", "vvc420", "jxl", "jpeg420")


@dataclass
class EvaluationResult:
    """What a finished run wrote, and the codecs that could not run here."""

    out: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one note per skipped codec
    n_run: int = 0  # jobs run by this invocation
    n_reused: int = 0  # jobs found finished in the run folder
    bd_entries: list[BdEntry] = field(default_factory=list)  # what bdrate.md shows


def check_lambdas(lambdas: Sequence[float]) -> tuple[float, ...]:
    for value in lambdas:
        if not (math.isfinite(value) and value > 0):
            raise EvaluationError(f"lambda must be a finite number > 0, got {value}")
    return tuple(dict.fromkeys(float(v) for v in lambdas))


def check_preset(preset: str) -> str:
    from coolchic.presets import PRESETS

    if preset not in PRESETS:
        raise EvaluationError(f"unknown preset {preset!r}; choose from: {', '.join(PRESETS)}")
    return preset


def check_codec_options(spec: EvaluationSpec) -> None:
    """Refuse our codec's bad options before anything is written or trained."""
    from coolchic.config import check_arch_name
    from coolchic.decoder.dispatch import check_device

    check_preset(spec.preset)
    if spec.iterations is not None and spec.iterations < 1:
        raise EvaluationError(f"--iterations must be >= 1, got {spec.iterations}")
    try:
        check_device(spec.device)
        if spec.arch is not None:
            check_arch_name(spec.arch)
    except ValueError as err:
        raise EvaluationError(str(err)) from None


def amortized_settings(names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """Amortized codec name -> the qualities of its shipped checkpoints.

    Raises:
        EvaluationError: an unknown codec, or one without shipped weights.
    """
    from coolchic.amortized import checkpoints
    from coolchic.amortized.api import image_codecs

    found = {}
    for name in dict.fromkeys(names):
        if name not in image_codecs():
            raise EvaluationError(f"unknown amortized codec {name!r}; choose from: "
                                  f"{', '.join(image_codecs())}")
        qualities = tuple(float(q) for q in checkpoints.shipped(name))
        if not qualities:
            raise EvaluationError(f"no shipped {name} checkpoint in {checkpoints.FOLDER}")
        found[name] = qualities
    return found


def plan(spec: EvaluationSpec, *, codec_factory: Callable[[EvaluationSpec], Codec] | None = None
         ) -> tuple[list[Job], dict[str, Codec], list[str]]:
    """Jobs of a run, the codec objects they name, and notes on codecs skipped here.

    Args:
        codec_factory: builds our codec from the spec (tests pass a fake); default
            :class:`CoolchicCodec`.

    Raises:
        EvaluationError: bad lambdas, unknown preset or codec, no images.
    """
    lambdas = check_lambdas(spec.lambdas)
    unknown = [name for name in spec.baselines if name not in CLASSICAL]
    if unknown:
        raise EvaluationError(
            f"unknown codec(s) {', '.join(unknown)}; choose from: {', '.join(CLASSICAL)}"
        )
    paths = list_images(spec.images_dir, names=list(spec.images) if spec.images else None)
    codecs: dict[str, Codec] = {}
    settings: dict[str, Sequence[float]] = {}
    if spec.preset is not None and lambdas:
        if codec_factory is None:
            check_codec_options(spec)
            codec = CoolchicCodec(preset_name=spec.preset, iterations=spec.iterations,
                                  device=spec.device, seed=spec.seed, arch=spec.arch,
                                  resume_dir=str(Path(spec.out) / PARTIAL_DIR))
        else:
            codec = codec_factory(spec)
        codecs[codec.name], settings[codec.name] = codec, lambdas
    skipped = []
    for name in dict.fromkeys(spec.baselines):
        why, version = CLASSICAL[name].probe()
        if why:
            skipped.append(f"{name} skipped: {why}")
            continue
        codecs[name] = ClassicalAdapter(name, version=version)
        settings[name] = CLASSICAL[name].qualities
    for name, qualities in amortized_settings(spec.amortized).items():
        adapter = AmortizedAdapter(name)
        codecs[adapter.name], settings[adapter.name] = adapter, qualities
    if not codecs:
        raise EvaluationError("nothing to run: give lambdas and a preset, amortized codecs or"
                              " runnable baselines")
    # the classical codecs first: seconds per job against minutes or hours for ours, and
    # with their curves done, a report can give BD-rates as soon as one of our curves is
    order = sorted(codecs, key=lambda name: isinstance(codecs[name], CoolchicCodec) or
                   getattr(codecs[name], "kind", "") == "lambda")
    jobs = [Job(codec, path.stem, str(path), spec.crop, float(setting))
            for codec in order for path in paths for setting in settings[codec]]
    return jobs, codecs, skipped


def evaluate(
    spec: EvaluationSpec,
    options: BackendOptions | None = None,
    *,
    console: Console | None = None,
    command: str | None = None,
    codec_factory: Callable[[EvaluationSpec], Codec] | None = None,
    published: Sequence[PublishedCurve] | None = None,
) -> EvaluationResult:
    """Run (or resume) an evaluation and write its result files.

    Args:
        spec: what to measure.
        options: backend (local/ray) and parallelism.
        console: where progress and notes go (default: stderr).
        command: the command line to record (default: this process's).
        codec_factory: replaces our codec (tests).
        published: reference curves for the plot (default: the published Kodak curves).

    Returns:
        The files written and the codecs skipped. KeyboardInterrupt propagates after the
        finished jobs are saved; running the same command again resumes.
    """
    console = console or Console(stderr=True)
    options = options or BackendOptions()
    jobs, codecs, skipped = plan(spec, codec_factory=codec_factory)
    for note in skipped:
        console.print(f"[yellow]note:[/] {note}")
    store = RunStore(spec.out)
    identity = {"crop": spec.crop, "dataset": Path(spec.images_dir).resolve().name}
    if spec.preset is not None and spec.lambdas and codec_factory is None:
        identity["recipe"] = recipe_fingerprint(spec.preset, spec.iterations, spec.arch)
    store.open_run(
        identity=identity,
        invocation={"command": command or command_line(),
                    "machine": machine_description(spec.device),
                    "revision": code_revision(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    "backend": options.backend, "jobs": options.jobs},
    )
    todo = pending_jobs(jobs, store)
    result = EvaluationResult(out=Path(spec.out), skipped=skipped,
                              n_reused=len(jobs) - len(todo))
    if result.n_reused:
        console.print(f"resuming {spec.out}: {result.n_reused} of {len(jobs)} jobs already done")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=console,
                  transient=False) as progress:
        task = progress.add_task("evaluating", total=len(todo), last="")

        def advance(outcome: Outcome) -> None:
            row = outcome.row
            progress.update(task, advance=1, last=f"{row.codec} {row.image} "
                            f"{row.setting:g}: {row.bpp:.3f} bpp {row.psnr_db:.2f} dB")

        result.n_run = execute(todo, codecs, store, options, on_done=advance)
    result.files, result.bd_entries = write_outputs(store, spec, jobs, skipped,
                                                    published=published)
    return result


def write_outputs(store: RunStore, spec: EvaluationSpec, jobs: Sequence[Job],
                  skipped: Sequence[str], *, published: Sequence[PublishedCurve] | None = None,
                  ) -> tuple[list[Path], list[BdEntry]]:
    """Assemble per_image.tsv, summary.tsv, bdrate.md and rd.png from the stored rows of
    ``jobs`` (rows of other jobs in the folder are left out); returns the files and the
    BD-rate entries."""
    wanted = {(job.codec, job.image, job.setting) for job in jobs}
    rows = [r for r in store.rows() if (r.codec, r.image, r.setting) in wanted]
    images = sorted({r.image for r in rows})
    header = [
        "coolchic evaluation: one row per (codec, image, setting); bpp from the whole file;"
        " PSNR / MSE / MS-SSIM on RGB against the (cropped) source, at its bit depth",
        f"images: {len(images)} from {Path(spec.images_dir).name}/, "
        + (f"centre crops of {spec.crop}x{spec.crop}" if spec.crop else "whole images"),
    ]
    for number, invocation in enumerate(store.invocations(), start=1):
        header.append(f"invocation {number}: {invocation['started']} | {invocation['command']}")
        header.append(f"  machine: {invocation['machine']} | revision {invocation['revision']}"
                      f" | backend {invocation.get('backend')} x{invocation.get('jobs')}")
    header += list(skipped)
    files = [store.write_tsv(rows, header_lines=header)]

    curve_map = {codec: complete_points(points, len(images))
                 for codec, points in curves(rows).items()}
    summary_path = store.out / "summary.tsv"
    atomic_write_bytes(summary_path, summary_tsv(curve_map).encode())
    files.append(summary_path)

    anchors = [a for a in spec.anchors if len(curve_map.get(a, ())) >= 2]
    ours = [c for c in curve_map if c.startswith("coolchic")]
    what = f"{len(images)} images of {Path(spec.images_dir).name}" + (
        f", {spec.crop}x{spec.crop} centre crops" if spec.crop else "")
    entries: list[BdEntry] = []
    if (anchors or ours) and sum(len(points) >= 2 for points in curve_map.values()) >= 2:
        entries = bd_matrix(curve_map, anchors or ours[:1])
        markdown = bdrate_markdown(entries, title=f"BD-rates: {what}", notes=list(skipped))
        per_image = per_image_bd_markdown(rows, ours, anchors) if anchors else None
        if per_image is not None:
            markdown += "\n" + per_image
        bd_path = store.out / "bdrate.md"
        atomic_write_bytes(bd_path, markdown.encode())
        files.append(bd_path)

    if published is None:
        published = published_curves()
    comparison = comparison_markdown(curve_map, published, what=what)
    if comparison is not None:
        amortized_path = store.out / "amortized.md"
        atomic_write_bytes(amortized_path, comparison.encode())
        files.append(amortized_path)
    note = " (published curves: full images)" if spec.crop else ""
    figure = rd_figure(curve_map, published, title=f"Rate-distortion, {what}{note}")
    files.append(save_rd_plot(store.out / "rd.png", figure))
    return files, entries
