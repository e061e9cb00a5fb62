"""A run folder that survives Ctrl-C and kill -9.

Layout of ``OUT/``::

    run.json                 what the run measures (crop, image folder) + every invocation
    rows/<codec>/<image>@<setting>.json   one finished (codec, image, setting) each
    bitstreams/<codec>/<image>@<setting>.bin   our codec's bitstreams, as decoded
    per_image.tsv            assembled from rows/ (never read back)
    partial/                 the training state of our encodes under way (coolchic.checkpoint),
                             saved every minute: a stopped run's encodes go on from it; each
                             removed when its bitstream is made (not for publishing)

Every file is written to a temporary name in its folder and renamed over its final name
(``coolchic.io.atomic_write_bytes``), so a final name always holds a complete file. A job
counts as finished only when its row file exists and parses with the exact set of fields;
anything else (a temporary file left by a kill, a truncated copy) is ignored and the job
runs again. The bitstream is written before the row, so a row never points at a missing
or partial bitstream.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from coolchic.evaluate.errors import EvaluationError
from coolchic.io import atomic_write_bytes

ROWS_DIR = "rows"
BITSTREAMS_DIR = "bitstreams"
MANIFEST = "run.json"
TSV_NAME = "per_image.tsv"
PARTIAL_DIR = "partial"


@dataclass(frozen=True)
class Row:
    """One image coded at one setting by one codec: the unit of every result file.

    Attributes:
        codec: ``coolchic-<preset>`` for ours, else a classical registry name.
        image: image name (file stem).
        width, height: pixels of the (cropped) image that was coded.
        lmbda: rate-distortion lambda (ours), None for classical codecs.
        quality: quality setting in the codec's unit (classical), None for ours.
        bytes: size of the whole file that was decoded.
        bpp: 8 * bytes / (width * height).
        psnr_db: RGB PSNR of the decoded image, on the source bit depth (8-bit for Kodak).
        mse: RGB mean squared error on the source sample scale (0..255 for 8-bit).
        ms_ssim: RGB MS-SSIM in [0, 1].
        encode_s, decode_s: wall-clock seconds of the encode and decode calls.
        mac_per_pixel: decoder multiply-accumulates per pixel (ours), None otherwise.
        preset: our training preset, or the classical encoder's settings.
        revision: our code revision, or the classical tool's version.
    """

    codec: str
    image: str
    width: int
    height: int
    lmbda: float | None
    quality: float | None
    bytes: int
    bpp: float
    psnr_db: float
    mse: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    mac_per_pixel: float | None
    preset: str
    revision: str

    @property
    def setting(self) -> float:
        """lambda for ours, quality for classical codecs: what distinguishes a curve's points."""
        return self.lmbda if self.lmbda is not None else self.quality


ROW_FIELDS = tuple(f.name for f in dataclasses.fields(Row))

# TSV column -> format of one value (None is written as "-").
_TSV_FORMATS = {
    "codec": "{}", "image": "{}", "width": "{:d}", "height": "{:d}", "lmbda": "{!r}",
    "quality": "{:g}", "bytes": "{:d}", "bpp": "{:.6f}", "psnr_db": "{:.4f}", "mse": "{:.6g}",
    "ms_ssim": "{:.6f}", "encode_s": "{:.3f}", "decode_s": "{:.3f}",
    "mac_per_pixel": "{:.1f}", "preset": "{}", "revision": "{}",
}
_TSV_COLUMNS = {"lmbda": "lambda"}


def setting_tag(value: float) -> str:
    """File-name form of a lambda or quality (``0.0001`` -> ``0.0001``, ``35.0`` -> ``35``)."""
    return f"{value:g}" if float(value).is_integer() else repr(float(value))


def job_stem(image: str, setting: float) -> str:
    return f"{image}@{setting_tag(setting)}"


def _parse_row(data: bytes) -> Row | None:
    try:
        fields = json.loads(data)
    except ValueError:
        return None
    if not isinstance(fields, dict) or set(fields) != set(ROW_FIELDS):
        return None
    return Row(**fields)


class RunStore:
    """The files of one run folder (see the module docstring for the layout)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)

    def row_path(self, codec: str, image: str, setting: float) -> Path:
        return self.out / ROWS_DIR / codec / f"{job_stem(image, setting)}.json"

    def bitstream_path(self, codec: str, image: str, setting: float) -> Path:
        return self.out / BITSTREAMS_DIR / codec / f"{job_stem(image, setting)}.bin"

    def open_run(self, *, identity: dict, invocation: dict) -> None:
        """Create the run folder, or check that an existing one measures the same thing.

        Args:
            identity: what every row of the run depends on (crop, image folder, ...); a run
                folder created with another identity is refused rather than mixed.
            invocation: command, machine, revision and time of this start; appended.

        Raises:
            EvaluationError: the folder holds a run with a different identity.
        """
        manifest_path = self.out / MANIFEST
        manifest = {"identity": identity, "invocations": []}
        if manifest_path.exists():
            try:
                manifest = json.loads(manifest_path.read_bytes())
            except ValueError as err:
                raise EvaluationError(f"{manifest_path} is not valid JSON: {err}") from None
            held = manifest.get("identity")
            if held != identity:
                if isinstance(held, dict) and held.get("recipe") != identity.get("recipe"):
                    raise EvaluationError(
                        f"{self.out} holds encodes of another coolchic recipe (preset, decoders or "
                        f"the rules that pick them changed: {held.get('recipe', 'unrecorded')} "
                        f"against {identity.get('recipe')}); choose another --out, or move it away"
                    )
                raise EvaluationError(
                    f"{self.out} holds a run of {held}, not {identity}; choose another --out"
                )
        manifest["invocations"].append(invocation)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=1) + "\n").encode())
        self._sweep_temporaries()

    def _sweep_temporaries(self) -> None:
        """Delete temporary files that a killed run left (``.<name>.<hex>.tmp``, the names
        ``atomic_write_bytes`` uses); they are never read, only cleaned up."""
        for folder in (ROWS_DIR, BITSTREAMS_DIR):
            for path in (self.out / folder).glob("*/.*.tmp"):
                path.unlink(missing_ok=True)

    def invocations(self) -> list[dict]:
        path = self.out / MANIFEST
        return json.loads(path.read_bytes())["invocations"] if path.exists() else []

    def finished(self, codec: str, image: str, setting: float) -> Row | None:
        """The stored row of a job, or None when the job has to run (again)."""
        path = self.row_path(codec, image, setting)
        try:
            return _parse_row(path.read_bytes())
        except OSError:
            return None

    def save(self, row: Row, bitstream: bytes | None = None) -> None:
        """Persist a finished job: its bitstream (if kept) first, then its row."""
        if bitstream is not None:
            path = self.bitstream_path(row.codec, row.image, row.setting)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, bitstream)
        path = self.row_path(row.codec, row.image, row.setting)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(dataclasses.asdict(row), indent=1, allow_nan=True) + "\n"
        atomic_write_bytes(path, text.encode())

    def rows(self) -> list[Row]:
        """Every finished row, sorted by codec, image and setting."""
        found = []
        for path in sorted((self.out / ROWS_DIR).glob("*/*.json")):
            row = _parse_row(path.read_bytes())
            if row is not None:
                found.append(row)
        return sorted(found, key=lambda r: (r.codec, r.image, r.setting))

    def write_tsv(self, rows: list[Row], *, header_lines: list[str]) -> Path:
        """Write ``per_image.tsv``: ``# `` header lines, then one line per row."""
        lines = [f"# {line}" for line in header_lines]
        lines.append("\t".join(_TSV_COLUMNS.get(name, name) for name in ROW_FIELDS))
        for row in rows:
            lines.append("\t".join(_format(name, getattr(row, name)) for name in ROW_FIELDS))
        path = self.out / TSV_NAME
        atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
        return path


def _format(name: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return _TSV_FORMATS[name].format(value)


def read_tsv(path: str | Path) -> list[Row]:
    """Rows of a ``per_image.tsv`` (values as rounded in the file)."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln and not ln.startswith("#")]
    names = [{v: k for k, v in _TSV_COLUMNS.items()}.get(n, n) for n in lines[0].split("\t")]
    types = {f.name: f.type for f in dataclasses.fields(Row)}
    rows = []
    for line in lines[1:]:
        fields = {}
        for name, text in zip(names, line.split("\t"), strict=True):
            kind = types[name]
            if text == "-":
                fields[name] = None
            elif kind.startswith("int"):
                fields[name] = int(text)
            elif kind.startswith("float"):
                fields[name] = float(text)
            else:
                fields[name] = text
        rows.append(Row(**fields))
    return rows
