"""The `decode` command's work and output, without typer or rich (their imports take longer
than a decode): the lean entry point (`coolchic.entry`) and the typer app (`coolchic.cli`)
both run `decode_files`, so the two print the same lines and exit with the same status.
Bad input gives one line on stderr and exit status 2, never a traceback.

Lines are styled as rich styles them ("[bold green]" for a written file, "[bold red]" for
"error:"): ANSI codes where the stream is a terminal, or FORCE_COLOR or TTY_COMPATIBLE=1
says to pretend it is, bold only under NO_COLOR, nothing for TERM=dumb; nothing else is
interpreted (no markup or emoji codes in file names).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

BAD_INPUT = 2  # the exit status of any refused input
INTERRUPTED = 130


class CommandError(ValueError):
    """An input a command refuses before any work; the message is the whole line."""


def _is_terminal(stream: TextIO) -> bool:
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    if "FORCE_COLOR" in os.environ:
        return os.environ["FORCE_COLOR"] != ""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def styled(text: str, sgr: str, stream: TextIO) -> str:
    """`text` in the ANSI style `sgr` ("1;32": bold green) where rich would style it on `stream`."""
    if not _is_terminal(stream) or os.environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return text
    if os.environ.get("NO_COLOR", ""):
        sgr = "1"  # the bold stays, the colour goes
    return f"\x1b[{sgr}m{text}\x1b[0m"


def error_line(message: str) -> None:
    """One line on stderr: "error: " and the message."""
    print(f"{styled('error:', '1;31', sys.stderr)} {message}", file=sys.stderr, flush=True)


def version_line() -> str:
    from coolchic import __version__
    from coolchic.bitstream import FORMAT_MAJOR, FORMAT_MINOR

    return f"coolchic {__version__} (writes bitstream format {FORMAT_MAJOR}.{FORMAT_MINOR})"


def check_output(path: Path) -> None:
    """Refuse an output that cannot be written before any work is done (an encode would
    otherwise fail after training).

    Raises:
        CommandError: the folder is missing or not writable, or the path is a folder.
    """
    if not path.parent.exists():
        raise CommandError(f"output directory does not exist: {path.parent}")
    if path.is_dir():
        raise CommandError(f"output path is a directory: {path}")
    probe = path.parent / f".coolchic-{os.urandom(6).hex()}.tmp"
    try:  # what the atomic writer will do: a new file beside the target
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise CommandError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None


def decode_files(bitstreams: list[Path], *, output: Path | None = None, device: str = "cpu",
                 checkpoint: Path | None = None, layers: int | None = None) -> int:
    """`coolchic decode`: each bitstream to an image, one summary line each on stdout.

    Args:
        bitstreams: at least one path, any codec (the header names it).
        output: the image path with one bitstream [BITSTREAM.png]; with several, an existing
            folder that receives NAME.png for each [each beside its bitstream].
        device: 'cpu' or 'cuda'; checkpoint, layers: for amortized and progressive streams.

    Returns:
        The exit status: 0; 2 after a refused input (with several bitstreams, the others are
        still decoded); 130 when interrupted.
    """
    try:
        return _decode_files(bitstreams, output=output, device=device, checkpoint=checkpoint,
                             layers=layers)
    except (ValueError, OSError, MemoryError) as exc:  # BitstreamError, ImageError, EntropyError too
        error_line(str(exc) or exc.__class__.__name__)
        return BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED


def _decode_files(bitstreams: list[Path], *, output: Path | None, device: str,
                  checkpoint: Path | None, layers: int | None) -> int:
    if layers is not None and layers < 1:
        raise CommandError("--layers must be >= 1")
    if len(bitstreams) == 1:
        output = output or bitstreams[0].with_suffix(".png")
        check_output(output)
        _decode_one(bitstreams[0], output, device=device, checkpoint=checkpoint, layers=layers)
        return 0
    if output is not None and not output.is_dir():
        raise CommandError(f"with several bitstreams, --output must be an existing folder: {output}")
    outputs = [(output / b.name).with_suffix(".png") if output else b.with_suffix(".png")
               for b in bitstreams]
    if len(set(outputs)) < len(outputs):
        raise CommandError("two bitstreams would decode to the same image path; decode them separately")
    failed = 0
    for bitstream, image_path in zip(bitstreams, outputs):
        try:
            check_output(image_path)
            _decode_one(bitstream, image_path, device=device, checkpoint=checkpoint, layers=layers)
        except CommandError as exc:  # its line names the file
            error_line(str(exc))
            failed += 1
        except (ValueError, OSError, MemoryError) as exc:  # BitstreamError, ImageError too
            error_line(f"{bitstream}: {exc or exc.__class__.__name__}")
            failed += 1
    if failed:
        print(f"{failed} of {len(bitstreams)} bitstreams not decoded", file=sys.stderr)
        return BAD_INPUT
    return 0


def _decode_one(bitstream: Path, output: Path, *, device: str, checkpoint: Path | None,
                layers: int | None) -> None:
    """One file: one library call, one summary line."""
    from coolchic.bitstream import CodecId, peek_codec
    from coolchic.io import write_image

    progressive = peek_codec(bitstream) == CodecId.PROGRESSIVE  # may be a cut stream
    if layers is not None and not progressive and bitstream.is_file():
        raise CommandError(f"{bitstream}: --layers applies to progressive streams only "
                           "(coolchic encode --codec progressive)")
    start = time.perf_counter()
    if progressive:
        from coolchic.amortized.api import decode as decode_amortized

        image = decode_amortized(bitstream.read_bytes(), checkpoint=checkpoint, layers=layers)
    else:
        from coolchic.decoder.api import decode

        image = decode(bitstream, device=device, checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    write_image(output, image, 8 if image.dtype.itemsize == 1 else 16)
    print(f"{styled(str(output), '1;32', sys.stdout)}: {image.shape[1]}x{image.shape[0]}x{image.shape[2]} "
          f"decoded in {seconds:.3f} s", flush=True)
