"""The `coolchic` command line: each command parses, makes one library call, and prints a
rich summary. Bad input gives one line on stderr and exit status 2, never a traceback.

The console script (`coolchic.entry`) runs `decode` and `--version` without this module;
both paths share `coolchic.cli_decode`."""

from __future__ import annotations

import functools
import glob
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from coolchic.amortized.cli import amortized_app
from coolchic.cli_decode import check_output, decode_files, error_line, version_line
from coolchic.evaluate.cli import evaluate_command, reproduce_command

app = typer.Typer(
    name="coolchic",
    help="Overfitted neural image compression (COOL-CHIC) with a bit-exact integer decoder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)  # a log gets whole lines, not lines cut at 80 columns
err_console = Console(stderr=True, soft_wrap=True)


def _show_version(value: bool) -> None:
    if value:
        console.print(version_line(), highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Overfitted neural image compression (COOL-CHIC) with a bit-exact integer decoder."""


def fail(message: str) -> None:
    error_line(message)
    raise typer.Exit(2)


def clean_errors(fn: Callable) -> Callable:
    """Turn the library's input errors into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError, MemoryError) as exc:  # CommandError, BitstreamError, ImageError too
            fail(str(exc) or exc.__class__.__name__)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _progress(*first_columns):
    """A progress display on stderr: a bar on a terminal, a line per tenth in a log."""
    from coolchic.progress import progress_display

    return progress_display(err_console, *first_columns)


@app.command()
@clean_errors
def encode(
    images: Annotated[list[Path], typer.Argument(
        help="Image(s) to encode (PNG, PPM, TIFF, JPEG, ...); several are trained together in "
             "batches, on a path of their own (docs/batched.md).", show_default=False)],
    lmbda: Annotated[float | None, typer.Option(
        "--lmbda", "-l", help="Rate weight: larger = smaller file [1e-3].")] = None,
    quality: Annotated[float | None, typer.Option(
        help="Quality 0-100 instead of --lmbda (log-linear: 0 = lambda 5e-2, 100 = 2e-5); for an "
             "amortized codec, one of its shipped qualities ('coolchic amortized list').")] = None,
    target_bpp: Annotated[float | None, typer.Option(
        help="Search lambda for at most this many bits per pixel (several encodes).")] = None,
    target_psnr: Annotated[float | None, typer.Option(
        help="Search lambda for at least this PSNR in dB (several encodes).")] = None,
    max_encodes: Annotated[int, typer.Option(help="Encodes allowed to a --target-* search.")] = 4,
    output: Annotated[Path | None, typer.Option("--output", "-o", help=(
        "Bitstream path [IMAGE.bin]; with several images, an existing folder that receives "
        "NAME.bin for each [each beside its image]."))] = None,
    preset: Annotated[str, typer.Option(help="Training recipe (by cost): fast, medium, slow.")] = "fast",
    iterations: Annotated[int | None, typer.Option(help="Override the preset's iterations.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    arch: Annotated[str, typer.Option(
        help="Decoder configuration: default (682 MAC/px, learned upsampling), mid (490), lite "
             "(353), lite-noconv (272), synth (639), lop (559, Cool-chic LOP's shape, learned "
             "upsampling), auto (lite-noconv where its fewer weights pay: small images at "
             "large lambda), best (where auto picks default, encode with default and synth "
             "and keep the lower RD cost: twice the time), or race (where auto picks default, "
             "train default and lop for a tenth of the iterations each and encode with the "
             "better: 1.2 times the time).")] = "auto",
    threads: Annotated[int | None, typer.Option(
        help="Training threads [default: this machine's cores, at most 4]; the native kernels "
             "give the same bitstream for any count.", show_default=False)] = None,
    compile: Annotated[str, typer.Option(
        help="Compiled training kernels (native C++ on the CPU): auto, on, off.")] = "auto",
    codec: Annotated[str, typer.Option(
        help="coolchic (overfitted), or a pretrained amortized codec: cwic, ccn, cpm, or "
             "progressive (cwic's codes in layers: 'decode --layers K' reads the first K).")] = "coolchic",
    checkpoint: Annotated[Path | None, typer.Option(
        help="Amortized codecs: weights (a model.pt of 'coolchic amortized train') instead of "
             "the shipped ones.")] = None,
    batch: Annotated[int | None, typer.Option(
        help="Several images: at most N encodes trained together [all those of one size].",
        show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        help="Save the training state to OUTPUT.partial.* every minute, and go on from it when "
             "the same encode is run again (same bitstream as an encode never stopped); the "
             "files are removed once the bitstream is written.")] = True,
) -> None:
    """Encode IMAGE into a coolchic bitstream; several images are trained together, in
    batches of one size (each its own bitstream, whatever its batch)."""
    from coolchic.encode import encode as encode_image
    from coolchic.io import atomic_write_bytes

    if batch is not None and batch < 1:
        fail("--batch must be >= 1")
    if len(images) > 1:
        others = {"--target-bpp": target_bpp, "--target-psnr": target_psnr, "--threads": threads,
                  "--checkpoint": checkpoint}
        given = [name for name, value in others.items() if value is not None]
        if codec != "coolchic" or given:
            fail(f"{', '.join(given) or '--codec ' + codec} only with one image (batched encoding "
                 "trains coolchic models, on one thread on the CPU)")
        _encode_batch(images, output, lmbda=lmbda, quality=quality, preset=preset,
                      iterations=iterations, device=device, seed=seed, arch=arch,
                      graphs=compile != "off", batch=batch)
        return
    image = images[0]
    output = output or image.with_suffix(".bin")
    check_output(output)
    if not image.is_file():
        fail(f"no such image file: {image}")
    if codec != "coolchic":
        _encode_amortized(image, output, codec=codec, quality=quality, checkpoint=checkpoint,
                          threads=threads, others={"--lmbda": lmbda, "--target-bpp": target_bpp,
                                                   "--target-psnr": target_psnr,
                                                   "--iterations": iterations})
        return
    if checkpoint is not None:
        fail("--checkpoint is for the amortized codecs (--codec cwic, ccn or cpm)")
    if iterations is not None and iterations < 1:
        fail("--iterations must be >= 1")
    knobs = (("--lmbda", lmbda), ("--quality", quality),
             ("--target-bpp", target_bpp), ("--target-psnr", target_psnr))
    chosen = [name for name, value in knobs if value is not None]
    if len(chosen) > 1:
        fail(f"give only one of --lmbda, --quality, --target-bpp, --target-psnr (got {', '.join(chosen)})")
    if quality is not None:
        from coolchic.rate_control import lmbda_from_quality
        lmbda = lmbda_from_quality(quality)
    with _progress("{task.description}") as bar:
        task = bar.add_task("[bold]encoding[/]", total=None, stats="")

        def on_progress(p) -> None:
            if p.iteration == 1 or p.iteration % 10 == 0 or p.iteration == p.total:
                bar.update(task, total=p.total, completed=p.iteration,
                           stats=f"loss {p.loss:.3g}  {p.psnr_db:.2f} dB  ~{p.bpp:.3f} bpp")

        def encode_at(value: float, saves: Path | None = None):
            return encode_image(image, lmbda=value, preset=preset, iterations=iterations,
                                device=device, seed=seed, arch=arch, callback=on_progress,
                                threads=threads, compile=compile, resume=saves)

        if target_bpp is None and target_psnr is None:
            saves = output.with_name(output.name + ".partial") if resume else None
            if saves is not None and any(output.parent.glob(f"{glob.escape(saves.name)}.*")):
                bar.console.print(f"found saved training in {saves}.*: an encode of the same image, "
                                  "lambda and settings goes on from it", highlight=False)
            try:
                result = encode_at(1e-3 if lmbda is None else lmbda, saves)
            except KeyboardInterrupt:
                if saves is None or not any(output.parent.glob(f"{glob.escape(saves.name)}.*")):
                    raise
                err_console.print(f"interrupted; the training state is saved in {saves}.*: run the "
                                  "same command to go on from it")
                raise typer.Exit(130) from None
        else:
            from coolchic.rate_control import search_lmbda

            def on_trial(t) -> None:
                bar.console.print(f"  lambda {t.lmbda:.3g}: {t.bpp:.4f} bpp, {t.psnr_db:.2f} dB",
                                  highlight=False)

            kind, target = ("bpp", target_bpp) if target_bpp is not None else ("psnr", target_psnr)
            result, _ = search_lmbda(encode_at, kind=kind, target=target, max_encodes=max_encodes,
                                     on_trial=on_trial)
    atomic_write_bytes(output, result.data)
    r = result.report
    console.print(
        f"[bold green]{output}[/]: {r.n_bytes} bytes, [bold]{r.bpp:.4f} bpp[/], "
        f"PSNR [bold]{r.psnr_db:.2f} dB[/] (decoded), {r.width}x{r.height}x{r.channels} "
        f"{r.bit_depth}-bit, {r.mac_per_pixel:.0f} MAC/pixel, lambda {r.lmbda:.3g}, "
        f"encoded in {r.encode_seconds:.1f} s",
        highlight=False,
    )


def _encode_batch(images: list[Path], output: Path | None, *, lmbda: float | None,
                  quality: float | None, preset: str, iterations: int | None, device: str,
                  seed: int, arch: str, graphs: bool, batch: int | None) -> None:
    """`encode` of several images: one `encode_batch` call, a bar per image (its state and
    the last values of its training proxy) under one for the whole run (with its ETA), and
    each bitstream written as soon as it is done."""
    from coolchic.encode_batch import encode_batch
    from coolchic.io import atomic_write_bytes

    if lmbda is not None and quality is not None:
        fail("give only one of --lmbda, --quality")
    if quality is not None:
        from coolchic.rate_control import lmbda_from_quality
        lmbda = lmbda_from_quality(quality)
    if output is not None and not output.is_dir():
        fail(f"with several images, --output must be an existing folder: {output}")
    outputs = [output / f"{p.stem}.bin" if output else p.with_suffix(".bin") for p in images]
    if len(set(outputs)) < len(outputs):
        fail("two images would write the same bitstream path; rename them or encode them separately")
    for image, path in zip(images, outputs):
        if not image.is_file():
            fail(f"no such image file: {image}")
        check_output(path)
    if iterations is not None and iterations < 1:
        fail("--iterations must be >= 1")
    with _progress("{task.description}") as bar:
        whole = bar.add_task("[bold]all[/]", total=None, stats="")
        tasks = [bar.add_task(p.name, total=None, stats="queued") for p in images]
        done: dict[int, int] = {}

        def on_progress(p) -> None:
            t = p.training
            for k, index in enumerate(p.indices):
                done[index] = t.iteration
                bar.update(tasks[index], total=t.total, completed=t.iteration,
                           stats=f"training {t.psnr_db[k]:.2f} dB ~{t.bpp[k]:.3f} bpp"
                                 + ("  coding" if t.iteration == t.total else ""))
            bar.update(whole, total=t.total * len(images), completed=sum(done.values()),
                       stats=f"batch {p.batch + 1}/{p.batches} ({len(p.indices)} encodes)")

        def on_result(index: int, result) -> None:
            atomic_write_bytes(outputs[index], result.data)
            r = result.report
            bar.update(tasks[index], stats=f"done: {r.bpp:.4f} bpp, {r.psnr_db:.2f} dB")

        start = time.perf_counter()
        results = encode_batch(images, lmbda=1e-3 if lmbda is None else lmbda, preset=preset,
                               iterations=iterations, device=device, seed=seed, arch=arch,
                               batch=batch, callback=on_progress, on_result=on_result, graphs=graphs)
    for path, result in zip(outputs, results):
        r = result.report
        console.print(
            f"[bold green]{path}[/]: {r.n_bytes} bytes, [bold]{r.bpp:.4f} bpp[/], "
            f"PSNR [bold]{r.psnr_db:.2f} dB[/] (decoded), {r.width}x{r.height}x{r.channels} "
            f"{r.bit_depth}-bit, {r.mac_per_pixel:.0f} MAC/pixel, lambda {r.lmbda:.3g}", highlight=False)
    console.print(f"{len(images)} images encoded in {time.perf_counter() - start:.1f} s, trained in "
                  "batches (bitstreams differ from one-image encodes)", highlight=False)


def _encode_amortized(image: Path, output: Path, *, codec: str, quality: float | None,
                      checkpoint: Path | None, threads: int | None, others: dict) -> None:
    """`encode --codec NAME` for the amortized codecs: one library call, one summary line."""
    from coolchic.amortized.api import encode as encode_amortized
    from coolchic.amortized.api import image_codecs
    from coolchic.io import atomic_write_bytes

    if codec not in image_codecs():
        fail(f"unknown codec {codec!r}; expected one of coolchic, {', '.join(image_codecs())}")
    given = [name for name, value in others.items() if value is not None]
    if given:
        fail(f"{', '.join(given)} only apply to the coolchic codec, not to {codec}")
    if threads is not None and threads < 1:
        fail("--threads must be >= 1")
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    result = encode_amortized(image, codec=codec, quality=quality, checkpoint=checkpoint)
    atomic_write_bytes(output, result.data)
    r = result.report
    console.print(
        f"[bold green]{output}[/]: {r.n_bytes} bytes, [bold]{r.bpp:.4f} bpp[/], "
        f"PSNR [bold]{r.psnr_db:.2f} dB[/] (decoded), {r.width}x{r.height}x3 8-bit, "
        f"{codec} quality {r.quality} ({Path(r.checkpoint).name}), "
        f"encoded in {r.encode_seconds:.1f} s",
        highlight=False,
    )
    if r.layer_ends:
        console.print(f"{len(r.layer_ends)} layers; the first k decode alone from the first "
                      f"{', '.join(map(str, r.layer_ends))} bytes", highlight=False)


@app.command()
def decode(
    bitstreams: Annotated[list[Path], typer.Argument(
        help="Bitstream(s) to decode (any codec: the header names it).", show_default=False)],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Image path [BITSTREAM.png]; with several bitstreams, an existing "
        "folder that receives NAME.png for each.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda (bit-identical output).")] = "cpu",
    checkpoint: Annotated[Path | None, typer.Option(
        help="Amortized streams: the weights to decode with instead of the shipped ones.")] = None,
    layers: Annotated[int | None, typer.Option(
        help="Progressive streams: decode the first K layers [all the file holds].")] = None,
) -> None:
    """Decode each BITSTREAM to an image.

    With several, a file that fails is reported in one line and the others are still
    decoded; the exit status is then 2."""
    status = decode_files(bitstreams, output=output, device=device, checkpoint=checkpoint, layers=layers)
    if status:
        raise typer.Exit(status)


@app.command()
@clean_errors
def info(bitstream: Annotated[Path, typer.Argument(help="coolchic bitstream.")]) -> None:
    """Show a bitstream's header, section sizes and decoder complexity."""
    from coolchic.bitstream import CodecId, peek_codec
    from coolchic.decode import codec_id, describe

    if peek_codec(bitstream) == CodecId.PROGRESSIVE or codec_id(bitstream) != CodecId.COOLCHIC:
        _info_amortized(bitstream)
        return
    d = describe(bitstream)
    h, c = d.header, d.config
    table = Table(title=str(bitstream), show_header=False)
    table.add_row("size", f"{h.width} x {h.height}, {h.channels} channel(s), {h.bit_depth}-bit")
    table.add_row("bytes", f"{d.total_bytes} ({d.bpp:.4f} bpp)")
    for name, n in d.section_bytes.items():
        table.add_row(f"  section {name}", f"{n} bytes")
    table.add_row("latent grids", str(c.latents.n_grids))
    table.add_row("ARM", f"context {c.arm.context}, hidden {list(c.arm.hidden)}")
    table.add_row("synthesis", f"hidden {list(c.synthesis.hidden)}, "
                  f"{c.synthesis.residual_convs} residual 3x3 conv(s)")
    table.add_row("upsampling", "learned taps at every level" if c.upsampling.learned
                  else "bicubic (fixed)")
    table.add_row("weight prior", _prior_text(d.weight_prior))
    m = d.macs
    table.add_row("decoder MAC/pixel", f"{m.total:.1f} (ARM {m.arm:.1f}, "
                  f"upsampling {m.upsampling:.1f}, synthesis {m.synthesis:.1f})")
    console.print(table)


@app.command()
@clean_errors
def upgrade(
    bitstream: Annotated[Path, typer.Argument(
        help="Bitstream of an older format (2.0, 3.0 or 4.0; written by coolchic 0.2 to 0.4).")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to write the current-format file [BITSTREAM-v5.bin].")] = None,
) -> None:
    """Rewrite an older bitstream (format 2.0 to 4.0) in the current format.

    Lossless: the same decoded image, no more bytes; no image or training needed."""
    from coolchic.bitstream import FORMAT_MAJOR
    from coolchic.io import atomic_write_bytes
    from coolchic.legacy import upgrade as upgrade_bitstream

    output = output or bitstream.with_name(f"{bitstream.stem}-v{FORMAT_MAJOR}{bitstream.suffix or '.bin'}")
    check_output(output)
    data = bitstream.read_bytes()
    new = upgrade_bitstream(data)
    atomic_write_bytes(output, new)
    console.print(f"[bold green]{output}[/]: {len(data)} -> {len(new)} bytes "
                  f"({100.0 * (len(new) - len(data)) / len(data):+.2f} %)", highlight=False)


def _prior_text(prior_id: int) -> str:
    from coolchic.payload import weight_priors

    prior = weight_priors().get(prior_id)
    if prior is None:
        return "none (weights coded as they are)"
    return f"{prior_id} (mean weights learned at lambda {prior.lmbda:g}; spec §5.2.1)"


def _info_amortized(bitstream: Path) -> None:
    from coolchic.amortized.api import describe as describe_amortized

    d = describe_amortized(bitstream.read_bytes())
    table = Table(title=str(bitstream), show_header=False)
    table.add_row("codec", f"{d.entry.name} (id {int(d.entry.codec_id)}), amortized")
    table.add_row("model", f"{d.entry.title} ({d.entry.citation})")
    table.add_row("weights", f"quality {d.quality}, CRC {d.model_crc:08x}")
    table.add_row("size", f"{d.width} x {d.height}, {d.channels} channel(s), 8-bit")
    table.add_row("bytes", f"{d.total_bytes} ({d.bpp:.4f} bpp)")
    for name, n in d.section_bytes.items():
        table.add_row(f"  section {name}", f"{n} bytes")
    if d.layer_ends:
        table.add_row("layers", f"{len(d.layer_ends)} of {d.layer_count}; the first k end at bytes "
                      f"{', '.join(map(str, d.layer_ends))}")
    if d.legacy:
        table.add_row("payload", "first amortized layout (u32 word counts), read upgraded")
    console.print(table)


app.command("evaluate")(evaluate_command)
app.command("reproduce-paper")(reproduce_command)
app.add_typer(amortized_app, name="amortized")
