"""`coolchic amortized ...`: commands of the amortized codecs (a typer sub-app of the main CLI).

Each command parses its options, makes one library call and prints a rich summary. Bad input
gives one line on stderr and exit status 2. Torch is imported only inside the commands.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

amortized_app = typer.Typer(
    name="amortized",
    help="Amortized (pretrained-encoder) codecs: training and tools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


_DATA_HELP = "Folder of training images, searched recursively; repeat for several folders."


def _found(files: list, data: list[Path]) -> None:
    Console(stderr=True).print(f"{len(files)} training images under {', '.join(map(str, data))}",
                               highlight=False, soft_wrap=True)


def _clean_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError) as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            Console(stderr=True).print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _progress(label: str):
    """A progress display on stderr (`coolchic.progress`): a bar, or lines in a log."""
    from coolchic.progress import progress_display

    return progress_display(Console(stderr=True, soft_wrap=True), f"[bold]{label}[/]")


@amortized_app.command("list")
@_clean_errors
def list_codecs(
    configs: Annotated[bool, typer.Option(
        "--configs", help="List the named training configurations instead: model, name, "
        "parameter count, config overrides (JSON).")] = False,
) -> None:
    """One line per amortized image codec: its name, then the qualities of its shipped
    operating points (what encode --quality accepts), as plain numbers."""
    if configs:
        _list_configs()
        return
    from coolchic.amortized.api import image_codecs, qualities

    for name in image_codecs():
        print(" ".join([name, *map(str, qualities(name))]))


def _list_configs() -> None:
    """One line per trainable model and named configuration (`train --config NAME`)."""
    import json

    from coolchic.amortized import registry
    from coolchic.amortized.training import parameter_count

    for entry in registry.MODELS:
        if not entry.available or not hasattr(entry.load(), "STAGES"):
            continue
        for config_name, overrides in entry.configs().items():
            count = parameter_count(entry.load().build(overrides))
            print(f"{entry.name} {config_name} {count} {json.dumps(overrides, sort_keys=True)}")


@amortized_app.command()
@_clean_errors
def progressive(
    layer_depth: Annotated[int, typer.Option(help="Bits per layer and position (K).")] = 8,
    layer_count: Annotated[int, typer.Option(help="Layers of the code (N).")] = 4,
    coded_layer_count: Annotated[int | None, typer.Option(help="Layers to code [all].")] = None,
    height: Annotated[int, typer.Option(help="Code rows.")] = 32,
    width: Annotated[int, typer.Option(help="Code columns.")] = 32,
    train_samples: Annotated[int, typer.Option(help="Synthetic codes to fit the coder on.")] = 16,
    steps: Annotated[int, typer.Option(help="Training steps.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the coded sample and of the model.")] = 0,
    source_seed: Annotated[int, typer.Option(help="Seed of the synthetic source's parameters.")] = 0,
    threads: Annotated[int, typer.Option(help="Torch threads for fitting.")] = 1,
) -> None:
    """System (d): fit the progressive entropy coder on synthetic layered binary codes, code a
    fresh sample, and report bits per bit against the source's entropy bound."""
    import torch

    from coolchic.amortized.progressive import ProgressiveConfig, synthetic_report

    if threads < 1 or steps < 1 or train_samples < 1:
        raise ValueError("--threads, --steps and --train-samples must be >= 1")
    torch.set_num_threads(threads)
    config = ProgressiveConfig(layer_depth=layer_depth, layer_count=layer_count,
                               coded_layer_count=coded_layer_count)
    with _progress("fitting") as bar:
        task = bar.add_task("fit", total=steps, stats="")

        def on_step(step: int, loss: float) -> None:
            if step % 10 == 0 or step == steps:
                bar.update(task, completed=step, stats=f"{loss:.4f} bits/bit")

        r = synthetic_report(config, height=height, width=width, train_samples=train_samples,
                             steps=steps, seed=seed, source_seed=source_seed, callback=on_step)
    table = Table(title="progressive entropy coder (d) on synthetic codes", show_header=False)
    table.add_row("code", f"{height} x {width} x ({config.layer_count} layers of "
                  f"{config.layer_depth} bits), {config.coded_channels // config.layer_depth} coded")
    table.add_row("coded bits", f"{r.coded_bits} -> {r.n_bytes} bytes")
    table.add_row("bits per bit (real bytes)", f"{r.bits_per_bit:.4f}")
    table.add_row("bits per bit (model, ideal)", f"{r.ideal_bits_per_bit:.4f}")
    table.add_row("entropy bound (source)", f"{r.bound_bits_per_bit:.4f}")
    table.add_row("real / bound", f"{r.ratio:.4f} ({100 * (r.ratio - 1):+.2f}%)")
    table.add_row("training loss", f"{r.train_bits_per_bit:.4f} bits/bit")
    table.add_row("round trip", "exact" if r.round_trip else "[bold red]MISMATCH[/]")
    table.add_row("time", f"fit {r.fit_seconds:.1f} s, encode {r.encode_seconds:.3f} s, "
                  f"decode {r.decode_seconds:.3f} s")
    Console().print(table)
    if not r.round_trip:
        raise typer.Exit(1)


def _cwic(path: Path | None):
    from coolchic.amortized import checkpoints

    return checkpoints.load_shipped("cwic") if path is None else checkpoints.load(path, name="cwic")


@amortized_app.command("progressive-fit")
@_clean_errors
def progressive_fit(
    data: Annotated[list[Path], typer.Option("--data", help=_DATA_HELP)],
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 1500,
    cwic_checkpoint: Annotated[Path | None, typer.Option(
        help="The cwic weights whose codes to fit on [the shipped cwic checkpoint].")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output model file.")] = Path(
        "runs/progressive/model.pt"),
    layer_depth: Annotated[int, typer.Option(help="Bits per layer (K); must divide cwic's channels.")] = 8,
    hidden: Annotated[int, typer.Option(help="Features per code of the hidden layer (0: none).")] = 8,
    batch: Annotated[int, typer.Option(help="Code crops per step.")] = 16,
    crop: Annotated[int, typer.Option(help="Crop side in code positions (8 pixels each).")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 5e-3,
    seed: Annotated[int, typer.Option(help="Model initialisation and crop sampling.")] = 0,
    max_images: Annotated[int | None, typer.Option(help="Use the first N images (sorted) [all].")] = None,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 1,
    log: Annotated[Path | None, typer.Option(
        help="Write a TSV line (mean loss over the last 100 steps) every 100 steps and at the end.")] = None,
) -> None:
    """System (d) on the codes of system (a): fit the progressive entropy coder on the layered
    binary codes a cwic model gives for a folder of images."""
    import time

    import torch

    from coolchic.amortized import progressive_cwic as pc
    from coolchic.amortized.training import image_files

    if threads < 1 or hidden < 0 or (max_images is not None and max_images < 1):
        raise ValueError("--threads and --max-images must be >= 1 and --hidden >= 0")
    torch.set_num_threads(threads)
    cwic = _cwic(cwic_checkpoint)
    config = pc.layered_config(cwic, layer_depth=layer_depth, hidden=(hidden,) if hidden else ())
    files = image_files(data)[:max_images]
    _found(files, data)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _progress("fitting (d)") as bar:
        codes_task = bar.add_task("codes", total=len(files), stats="cwic codes")
        codes = pc.training_codes(cwic, files, callback=lambda i, n: bar.update(codes_task, completed=i))
        fit_task = bar.add_task("fit", total=steps, stats="")
        window: list[float] = []
        lines = ["step\tbits_per_bit\tseconds"]
        start = time.perf_counter()

        def on_step(step: int, loss: float) -> None:
            window.append(loss)
            if step % 10 == 0 or step == steps:
                bar.update(fit_task, completed=step, stats=f"{loss:.4f} bits/bit")
            if step % 100 == 0 or step == steps:
                lines.append(f"{step}\t{sum(window) / len(window):.6f}\t{time.perf_counter() - start:.1f}")
                window.clear()

        result = pc.fit_codes(codes, config, source_crc=cwic.model_crc(), steps=steps, batch=batch,
                              crop=crop, lr=lr, seed=seed, callback=on_step)
    pc.save(result.model, out)
    if log is not None:
        log.write_text("\n".join(lines) + "\n")
    table = Table(title="progressive entropy coder (d) fitted on cwic codes", show_header=False)
    table.add_row("cwic model", f"{cwic_checkpoint or 'shipped'} (crc {cwic.model_crc():08x})")
    table.add_row("layers", f"{config.layer_count} of {config.layer_depth} bits, hidden {config.hidden}")
    table.add_row("training codes", f"{len(codes)} images of {', '.join(map(str, data))}, "
                  f"crops {crop}x{crop}, batch {batch}")
    table.add_row("steps", f"{result.steps} (lr {lr:g}, seed {seed})")
    table.add_row(f"loss (last {min(pc.LOSS_WINDOW, steps)} steps)", f"{result.loss:.4f} bits/bit")
    table.add_row("time", f"{result.seconds:.1f} s fitting")
    table.add_row("written", str(out))
    Console().print(table)


@amortized_app.command("progressive-cwic")
@_clean_errors
def progressive_cwic(
    images: Annotated[list[Path], typer.Argument(help="8-bit images to code.")],
    checkpoint: Annotated[Path | None, typer.Option(
        help="The fitted (d) coder [the shipped progressive checkpoint].")] = None,
    cwic_checkpoint: Annotated[Path | None, typer.Option(
        help="The cwic weights [the shipped cwic checkpoint].")] = None,
    tsv: Annotated[Path | None, typer.Option(help="Also write the per-image values as TSV.")] = None,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 1,
) -> None:
    """System (d) on the codes of system (a): per image, the real bits per bit of the first k
    layers and the PSNR cwic's decoder gives from them, beside cwic's own context model."""
    import torch

    from coolchic.amortized import checkpoints
    from coolchic.amortized import progressive_cwic as pc
    from coolchic.io import atomic_write_bytes

    if threads < 1:
        raise ValueError("--threads must be >= 1")
    torch.set_num_threads(threads)
    from coolchic.amortized.api import rgb8

    pixels = [rgb8(path, "cwic") for path in images]
    cwic = _cwic(cwic_checkpoint)
    coder = (checkpoints.load_shipped("progressive") if checkpoint is None
             else checkpoints.load(checkpoint, name="progressive"))
    pc.check_pair(coder, cwic)
    reports = []
    with _progress("coding") as bar:
        task = bar.add_task("images", total=len(images), stats="")
        for path, image in zip(images, pixels):
            reports.append(pc.image_report(coder, cwic, image, name=path.name))
            bar.update(task, advance=1, stats=path.name)
    if tsv is not None:
        atomic_write_bytes(tsv, pc.tsv(reports).encode())
    ks = range(1, coder.config.layer_count + 1)
    table = Table(title=f"(d) on cwic codes ({coder.config.layer_count} layer(s) of "
                  f"{coder.config.layer_depth} bits): real bits per coded bit of the first k layers "
                  "(raw: 1.000), PSNR of cwic's decoder from them")
    table.add_column("image")
    for k in ks:
        table.add_column(f"b/b k={k}", justify="right")
    for k in ks:
        table.add_column(f"dB k={k}", justify="right")
    for title in ("cwic ctx b/b", "cwic bpp", "cwic dB", "round trip"):
        table.add_column(title, justify="right")
    for r in reports:
        table.add_row(r.name, *(f"{r.bits_per_bit(k):.4f}" for k in ks),
                      *(f"{r.psnr_db[k - 1]:.2f}" for k in ks), f"{r.cwic_context_bits_per_bit:.4f}",
                      f"{r.cwic_bpp:.4f}", f"{r.cwic_psnr_db:.2f}",
                      "exact" if r.round_trip else "[bold red]MISMATCH[/]")
    m = pc.means(reports)
    table.add_row(f"mean of {len(reports)}", *(f"{v:.4f}" for v in m.bits_per_bit),
                  *(f"{v:.2f}" for v in m.psnr_db), f"{m.cwic_context_bits_per_bit:.4f}",
                  f"{m.cwic_bpp:.4f}", f"{m.cwic_psnr_db:.2f}",
                  "exact" if all(r.round_trip for r in reports) else "[bold red]MISMATCH[/]",
                  style="bold")
    Console().print(table)
    summary = Table(title=f"means over {len(reports)} images")
    summary.add_column("coded")
    for title in ("bpp", "bits/bit", "PSNR dB"):
        summary.add_column(title, justify="right")
    for k in ks:
        summary.add_row(f"(d), first {k} layer(s)", f"{m.bpp[k - 1]:.4f}",
                        f"{m.bits_per_bit[k - 1]:.4f}", f"{m.psnr_db[k - 1]:.2f}")
    summary.add_row("cwic context model, all bits", "", f"{m.cwic_context_bits_per_bit:.4f}", "")
    summary.add_row("cwic stream", f"{m.cwic_bpp:.4f}", "", f"{m.cwic_psnr_db:.2f}")
    Console().print(summary)
    if not all(r.round_trip for r in reports):
        raise typer.Exit(1)


_LOG_HEADER = "step\tstage\tloss\tpsnr_db\tbpp\tseconds\tsplit\tlr\n"
_LOG_EVERY = 100  # steps per "train" line of the log


@amortized_app.command()
@_clean_errors
def train(
    model: Annotated[str, typer.Argument(help="Model to train (e.g. cwic).")],
    data: Annotated[list[Path], typer.Option("--data", help=_DATA_HELP)],
    steps: Annotated[int, typer.Option(help="Optimizer steps in all.")] = 1000,
    lmbda: Annotated[float, typer.Option("--lmbda", "-l", help="Rate weight; larger: smaller.")] = 1e-3,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder [runs/MODEL].")] = None,
    config: Annotated[str, typer.Option(
        "--config", help="Named model size: small (the shipped weights' size), paper (cwic, cpm: "
        "the paper's, as far as the model supports it) or large (ccn); 'amortized list --configs' "
        "lists them.")] = "small",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    batch: Annotated[int, typer.Option(help="Crops per step.")] = 4,
    crop: Annotated[int, typer.Option(help="Crop side in pixels (multiple of 8).")] = 64,
    lr: Annotated[float, typer.Option(help="Adam's peak learning rate.")] = 1e-4,
    schedule: Annotated[str, typer.Option(help="Learning rate over the steps: constant, cosine "
                                          "(down to --lr-final x lr) or step (x --decay-factor "
                                          "every --decay-every steps).")] = "constant",
    warmup: Annotated[int, typer.Option(help="Steps of linear learning-rate warm-up.")] = 0,
    lr_final: Annotated[float, typer.Option(help="cosine: last step's rate over lr.")] = 0.0,
    decay_every: Annotated[int, typer.Option(help="step: steps between decays.")] = 0,
    decay_factor: Annotated[float, typer.Option(help="step: rate multiplier at each decay.")] = 0.5,
    val_data: Annotated[list[Path] | None, typer.Option(
        "--val-data", help="Folder of validation images (none of them training images); repeatable.")] = None,
    val_fraction: Annotated[float, typer.Option(
        help="Or hold out this share of the --data images for validation (by file name).")] = 0.0,
    val_every: Annotated[int, typer.Option(help="Steps between validations.")] = 100,
    val_crops: Annotated[int, typer.Option(help="Fixed validation crops (--crop pixels).")] = 16,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt if present.")] = True,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 1,
    log: Annotated[Path | None, typer.Option(
        help="Append TSV lines: 'train' (means over the last 100 steps) every 100 steps and at "
        "the end, 'val' at each validation (docs/amortized.md).")] = None,
) -> None:
    """Train an amortized model on random crops; checkpoints, resume, model-best.pt (with
    validation) and recipe.json in OUT."""
    cli_options = dict(locals())  # the parameters as given, first thing: recipe.json records them
    import torch

    from coolchic.amortized.schedule import LrSchedule
    from coolchic.amortized.training import (
        BEST,
        FINAL,
        RECIPE,
        TrainOptions,
        image_files,
        parameter_count,
    )
    from coolchic.amortized.training import train as train_model
    from coolchic.evaluate.provenance import command_line

    if threads < 1:
        raise ValueError("--threads must be >= 1")
    torch.set_num_threads(threads)
    options = TrainOptions(
        steps=steps, lmbda=lmbda, batch=batch, crop=crop, lr=lr, checkpoint_every=checkpoint_every,
        seed=seed, device=device, val_fraction=val_fraction, val_every=val_every, val_crops=val_crops,
        schedule=LrSchedule(kind=schedule, warmup=warmup, final_fraction=lr_final, every=decay_every,
                            factor=decay_factor))
    out = out or Path("runs") / model
    _found(image_files(data), data)
    if log is not None:
        if not log.exists():
            log.write_text(_LOG_HEADER)
        elif log.read_text().partition("\n")[0] + "\n" != _LOG_HEADER:
            raise ValueError(f"{log} has other columns than this version's log; give another --log")
    command = {"argv": command_line(), "options": cli_options}
    with _progress(f"training {model} ({config})") as bar:
        task = bar.add_task("train", total=steps, stats="")
        window: list = []
        last_val = ""

        def line(p, split: str, loss: float, psnr_db: float, bpp: float) -> str:
            return (f"{p.step}\t{p.stage}\t{loss:.6g}\t{psnr_db:.3f}\t{bpp:.4f}\t{p.seconds:.1f}\t"
                    f"{split}\t{p.lr:.6g}\n")

        def on_step(p) -> None:
            nonlocal last_val
            window.append(p)
            lines = []
            if p.step % _LOG_EVERY == 0 or p.step == p.total:
                n = len(window)
                lines.append(line(p, "train", sum(q.loss for q in window) / n,
                                  sum(q.psnr_db for q in window) / n, sum(q.bpp for q in window) / n))
                window.clear()
            if p.validation is not None:
                v = p.validation
                last_val = f"  val {v.psnr_db:.2f} dB ~{v.bpp:.3f} bpp"
                lines.append(line(p, "val", v.loss, v.psnr_db, v.bpp))
            bar.update(task, completed=p.step, stats=f"stage {p.stage}  lr {p.lr:.3g}  loss {p.loss:.4g}  "
                       f"{p.psnr_db:.2f} dB  ~{p.bpp:.3f} bpp{last_val}")
            if log is not None and lines:
                with log.open("a") as f:
                    f.writelines(lines)

        trained = train_model(model, data, out, options, config_name=config, val_data=val_data,
                              resume=resume, callback=on_step, command=command)
    best = f", lowest validation loss in {out / BEST}" if val_data or val_fraction else ""
    Console().print(f"[bold green]{out / FINAL}[/]: {model} ({config}, {parameter_count(trained):,} "
                    f"parameters) trained for {steps} steps on {device} (checkpoint{best}; recipe in "
                    f"{out / RECIPE})", highlight=False)
