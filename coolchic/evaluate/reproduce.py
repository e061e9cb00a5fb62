"""``make reproduce-paper``: the COOL-CHIC paper's Kodak protocol, end to end.

Runs our codec at the paper's lambdas (read from the published results, not typed here)
and every classical baseline available on this machine on the same Kodak images, then
writes the run folder (``per_image.tsv``, ``summary.tsv``, ``bdrate.md``, ``rd.png``) and
``comparison.md``, the table printed at the end: our per-lambda means beside the paper's.
The default run folder, ``results/runs/kodak-<protocol>``, is scratch space (git-ignored);
copy a finished run to ``results/<name>/`` to publish it.

Protocols (``PRESET=...``):

- ``quick`` (default): 256x256 centre crops of the 24 Kodak images, training preset
  ``medium`` (called ``quick`` up to coolchic 0.4). A CPU protocol meant to finish within
  60 minutes on 2 cores (38 min 41 s on the 2-core Intel Xeon VM,
  results/kodak-quick-7000/; about 90 min on the slower AMD EPYC VM). The centres of
  Kodak images hold more detail than their borders: the classical codecs need about 40 %
  more bits on these crops than on whole images at equal PSNR (BD-rate, measured for
  HEVC, AVIF, WebP and JPEG), so its numbers are not the paper's. It checks the pipeline
  and ranks the codecs on identical pixels.
- ``paper``: the 24 whole images with preset ``slow``, the paper's setting; meant for a GPU
  (``--device cuda``).
- ``paper-grade``: 8 whole images (kodim01, 04, 07, 08, 13, 15, 19, 23) at 4 lambdas
  (4e-4, 1e-3, 4e-3, 2e-2: about 0.05 to 1.3 bpp), preset ``slow``, against x265 HEVC
  4:4:4 and AVIF 4:4:4 on the same images. Its run folder is ``results/paper-grade/run``
  (committed: it resumes across sessions), its bitstreams are copied to
  ``results/paper-grade/bitstreams/IMAGE@LAMBDA.bin`` (the evidence, decodable without our
  evaluation code), and ``releases.md`` sets each point's RD cost beside Cool-chic 3.4's
  published one at the same lambda. About 20 minutes a CPU encode here: 32 encodes are
  about 5 hours on 2 cores.
- any training preset name (``fast``, ``medium``, ...): whole images with that preset.

Command line: ``coolchic reproduce-paper --help`` (or ``python -m coolchic.evaluate reproduce-paper``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from coolchic.evaluate.baselines import CODECS as CLASSICAL
from coolchic.evaluate.bdrate import bd_quality, bd_rate
from coolchic.evaluate.errors import EvaluationError
from coolchic.evaluate.evaluation import (
    EvaluationResult,
    EvaluationSpec,
    check_preset,
    evaluate,
    plan,
    write_outputs,
)
from coolchic.evaluate.jobs import Codec, CoolchicCodec
from coolchic.evaluate.published import PAPER_VERSION, paper_lambdas, paper_per_image, paper_points
from coolchic.evaluate.report import complete_points, curves
from coolchic.evaluate.runner import BackendOptions
from coolchic.evaluate.store import RunStore
from coolchic.io import atomic_write_bytes

KODAK_HINT = (
    "put the 24 Kodak images (kodim01.png ... kodim24.png, e.g. from r0k.us/graphics/kodak)"
    " in ../shared/data/kodak next to the repository, or pass KODAK_DIR=/path/to/kodak"
    " (make) / --kodak-dir (coolchic reproduce-paper)"
)


@dataclass(frozen=True)
class Protocol:
    """One way of running the paper's evaluation."""

    name: str  # PRESET value
    preset: str  # our training preset
    crop: int | None  # centre-crop side in pixels, None for whole images
    description: str
    images: tuple[str, ...] | None = None  # Kodak images run (None: all 24)
    lambdas: tuple[float, ...] | None = None  # None: the paper's
    baselines: tuple[str, ...] | None = None  # classical codecs run beside ours (None: all)
    out: Path | None = None  # run folder (None: results/runs/kodak-<name>, scratch)
    publish: Path | None = None  # where its bitstreams are copied as IMAGE@LAMBDA.bin
    release: str | None = None  # the Cool-chic release whose points releases.md compares


PAPER_GRADE = Path("results") / "paper-grade"
PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("quick", "medium", 256,
                 "256x256 centre crops of the 24 Kodak images, preset medium (CPU, <= 60 min)"),
        Protocol("paper", "slow", None, "the 24 whole Kodak images, preset slow (GPU)"),
        Protocol("paper-grade", "slow", None,
                 "8 whole Kodak images at 4 lambdas, preset slow, against HEVC and AVIF 4:4:4",
                 images=("kodim01", "kodim04", "kodim07", "kodim08", "kodim13", "kodim15",
                         "kodim19", "kodim23"),
                 lambdas=(4e-4, 1e-3, 4e-3, 2e-2), baselines=("hevc444", "avif444"),
                 out=PAPER_GRADE / "run", publish=PAPER_GRADE / "bitstreams", release="v3.4"),
    )
}


def protocol_for(name: str) -> Protocol:
    """A named protocol, or whole images with the training preset ``name``."""
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    try:
        check_preset(name)
    except EvaluationError:
        raise EvaluationError(
            f"unknown PRESET {name!r}; choose a protocol ({', '.join(PROTOCOLS)}) or a"
            " training preset"
        ) from None
    return Protocol(name, name, None, f"the 24 whole Kodak images, preset {name}")


def find_kodak(kodak_dir: Path | None) -> Path:
    """The Kodak folder: the one given, else ``../shared/data/kodak`` beside the repository.

    Raises:
        EvaluationError: not found (the message says where to put the images).
    """
    if kodak_dir is not None:
        if not Path(kodak_dir).is_dir():
            raise EvaluationError(f"KODAK_DIR {kodak_dir} is not a folder; {KODAK_HINT}")
        return Path(kodak_dir)
    repository = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), repository):
        candidate = base.parent / "shared" / "data" / "kodak"
        if candidate.is_dir():
            return candidate
    raise EvaluationError(f"Kodak images not found; {KODAK_HINT}")


def comparison_markdown(store: RunStore, codec: str, protocol: Protocol) -> str:
    """Our per-lambda means beside the paper's, and BD numbers against the paper's curve."""
    rows = [r for r in store.rows() if r.codec == codec]
    n_images = len({r.image for r in rows})
    ours = {p.setting: p for p in complete_points(curves(rows).get(codec, []), n_images)}
    paper = {p.lmbda: p for p in paper_points()}
    lines = [
        f"# {codec} vs COOL-CHIC (ICCV 2023, release {PAPER_VERSION}) on Kodak",
        "",
        f"Protocol `{protocol.name}`: {protocol.description}; {n_images} images.",
    ]
    if protocol.crop:
        lines.append("Ours is measured on centre crops, the paper on whole images: the columns"
                     " are shown side by side, not as a like-for-like comparison (classical"
                     " codecs need about 40 % more bits on these crops than on whole images).")
    lines += [
        "",
        "| lambda | bpp ours | bpp paper | PSNR ours (dB) | PSNR paper (dB) "
        "| PSNR of mean MSE ours | PSNR of mean MSE paper |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lmbda in sorted(set(ours) | set(paper)):
        mine, theirs = ours.get(lmbda), paper.get(lmbda)
        lines.append("| " + " | ".join([
            f"{lmbda:g}",
            f"{mine.bpp:.4f}" if mine else "-", f"{theirs.bpp:.4f}" if theirs else "-",
            f"{mine.psnr_db:.3f}" if mine else "-", f"{theirs.psnr_db:.3f}" if theirs else "-",
            f"{mine.psnr_of_mean_mse_db:.3f}" if mine else "-",
            f"{theirs.psnr_of_mean_mse_db:.3f}" if theirs else "-",
        ]) + " |")
    if len(ours) >= 2:
        points = sorted(ours.values(), key=lambda p: p.bpp)
        published = sorted(paper.values(), key=lambda p: p.bpp)
        args = ([p.bpp for p in published], [p.psnr_db for p in published],
                [p.bpp for p in points], [p.psnr_db for p in points])
        rate, psnr = bd_rate(*args), bd_quality(*args)
        shown = "none (no common PSNR range)" if math.isnan(rate.value) else (
            f"{rate.value:+.2f} % (overlap {rate.overlap:.2f})")
        lines += ["", f"BD-rate of ours against the paper's curve (mean PSNR): {shown}; "
                  f"BD-PSNR {psnr.value:+.3f} dB (overlap {psnr.overlap:.2f})."]
    return "\n".join(lines) + "\n"


def reproduce(
    preset: str = "quick",
    options: BackendOptions | None = None,
    *,
    kodak_dir: Path | None = None,
    out: Path | None = None,
    device: str = "cpu",
    baselines: tuple[str, ...] = tuple(CLASSICAL),
    console: Console | None = None,
    codec_factory: Callable[[EvaluationSpec], Codec] | None = None,
    report_only: bool = False,
) -> EvaluationResult:
    """Run the protocol ``preset`` on Kodak and write the run folder plus comparison.md.

    Args:
        preset: protocol name (module docstring) or training preset.
        options: backend and parallelism.
        kodak_dir: folder of the Kodak images (default: see :func:`find_kodak`).
        out: run folder (default ``results/runs/kodak-<protocol>``).
        device: where our codec trains (``cpu`` or ``cuda``).
        baselines: classical codecs to run beside ours (default: all, skipped if missing).
        console: where progress goes (default: stderr).
        codec_factory: replaces our codec (tests).
        report_only: run nothing; write the reports (and publish the bitstreams) of the
            jobs already finished, e.g. of a long run stopped part-way.

    Returns:
        The evaluation's result, comparison.md included in its files. Resumable like any
        evaluation: run it again after an interrupt.
    """
    console = console or Console(stderr=True)
    protocol = protocol_for(preset)
    images_dir = find_kodak(kodak_dir)
    out = out or protocol.out or Path("results") / "runs" / f"kodak-{protocol.name}"
    console.print(f"protocol {protocol.name}: {protocol.description}; images from {images_dir};"
                  f" results in {out}", highlight=False)
    spec = EvaluationSpec(
        images_dir=images_dir, out=out, lambdas=protocol.lambdas or paper_lambdas(),
        preset=protocol.preset, baselines=baselines if protocol.baselines is None else tuple(
            b for b in protocol.baselines if b in baselines),
        crop=protocol.crop, device=device, images=protocol.images,
    )
    if report_only:
        jobs, _, skipped = plan(spec, codec_factory=codec_factory)
        files, entries = write_outputs(RunStore(out), spec, jobs, skipped)
        result = EvaluationResult(out=out, files=files, skipped=skipped, bd_entries=entries)
    else:
        result = evaluate(spec, options, console=console, codec_factory=codec_factory)
    codec = (codec_factory or (lambda s: CoolchicCodec(protocol.preset)))(spec).name
    store = RunStore(out)
    if protocol.release is None:
        text, path = comparison_markdown(store, codec, protocol), out / "comparison.md"
    else:
        text, path = releases_markdown(store, codec, protocol), out / "releases.md"
    atomic_write_bytes(path, text.encode())
    Console().print(text, highlight=False)
    result.files.append(path)
    if protocol.publish is not None:
        result.files += publish_bitstreams(store, codec, protocol.publish)
    return result


def publish_bitstreams(store: RunStore, codec: str, folder: Path) -> list[Path]:
    """Copy the run's bitstreams of `codec` to `folder` as IMAGE@LAMBDA.bin, and remove the
    .bin files there that are not this run's (nothing else goes there), so that they can be
    decoded and measured without our evaluation code."""
    written = []
    folder.mkdir(parents=True, exist_ok=True)
    for row in store.rows():
        if row.codec != codec:
            continue
        source = store.bitstream_path(codec, row.image, row.setting)
        if source.is_file():
            target = folder / f"{row.image}@{row.setting:g}.bin"
            atomic_write_bytes(target, source.read_bytes())
            written.append(target)
    for stale in set(folder.glob("*.bin")) - set(written):  # another run's: not this run's evidence
        stale.unlink()
    return written


def releases_markdown(store: RunStore, codec: str, protocol: Protocol) -> str:
    """Each (image, lambda) of ours beside a Cool-chic release's published point at the same
    lambda: bpp, PSNR and the RD cost J = MSE + lambda bpp (MSE on [0, 1]), and J's ratio."""
    theirs = paper_per_image(protocol.release)
    rows = sorted((r for r in store.rows() if r.codec == codec), key=lambda r: (r.image, r.setting))
    lines = [f"# {codec} beside Cool-chic {protocol.release} at the same lambdas", "",
             f"Protocol `{protocol.name}`: {protocol.description}. Cool-chic's points are its "
             "published per-image results (coolchic.evaluate.published.paper_per_image); J = "
             "MSE + lambda * bpp with the MSE on [0, 1]. Encode: our wall time for that file.", "",
             "| image | lambda | bpp | PSNR (dB) | MAC/pixel | encode (min) | Cool-chic bpp | "
             "Cool-chic PSNR | J / Cool-chic's J |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ratios = []
    for r in rows:
        j = 10.0 ** (-r.psnr_db / 10.0) + r.setting * r.bpp
        point = theirs.get((r.image, r.setting))
        cells = ["-", "-", "-"]
        if point is not None:
            ratio = j / (10.0 ** (-point[1] / 10.0) + r.setting * point[0])
            ratios.append(ratio)
            cells = [f"{point[0]:.4f}", f"{point[1]:.2f}", f"{ratio:.3f}"]
        mac = "-" if r.mac_per_pixel is None else f"{r.mac_per_pixel:.0f}"
        lines.append(f"| {r.image} | {r.setting:g} | {r.bpp:.4f} | {r.psnr_db:.2f} | {mac} | "
                     f"{r.encode_s / 60:.1f} | " + " | ".join(cells) + " |")
    if ratios:
        mean = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        lines += ["", f"Geometric mean of J / Cool-chic's J over {len(ratios)} points: {mean:.3f}."]
    return "\n".join(lines) + "\n"
