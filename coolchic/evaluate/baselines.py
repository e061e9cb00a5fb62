"""Classical image codecs to compare against, one registry entry each.

Each entry encodes an 8-bit RGB image at one quality setting to the bytes of a whole file
and decodes them back to 8-bit RGB; bpp is counted on those bytes. Settings and quality
ladders follow the measurements in the shared reference (``CODECS.md``), so a run on full
Kodak images can be checked against those published numbers. A codec whose tool is missing
reports why (:meth:`ClassicalCodec.missing`) and is skipped with that note.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coolchic.evaluate import yuv
from coolchic.evaluate.errors import EvaluationError

FFMPEG_HINT = "install ffmpeg with libx265 (Debian/Ubuntu: apt-get install -y ffmpeg)"
VVENC_HINT = (
    "build vvencapp and vvdecapp from github.com/fraunhoferhhi/vvenc and /vvdec, put them on PATH"
)


@dataclass(frozen=True)
class ClassicalCodec:
    """One classical codec at fixed settings, swept over a quality ladder.

    Attributes:
        name: results name (``jpeg420``, ``hevc444``, ...), as in the shared reference.
        label: legend text for plots.
        qualities: the quality ladder, in the codec's own unit (``quality_unit``).
        quality_unit: what a quality value means (``Q``, ``QP``, ``distance``, ``bpp``).
        settings: the exact encoder settings, recorded in every result row.
        encode: (rgb (H, W, 3) uint8, quality) -> bytes of the whole file.
        decode: (bytes, height, width) -> (H, W, 3) uint8 RGB.
        probe: () -> (why unusable or None, tool version string).
    """

    name: str
    label: str
    qualities: tuple[float, ...]
    quality_unit: str
    settings: str
    encode: Callable[[np.ndarray, float], bytes]
    decode: Callable[[bytes, int, int], np.ndarray]
    probe: Callable[[], tuple[str | None, str]]

    def missing(self) -> str | None:
        """Why this codec cannot run here (tool and install hint), or None when it can."""
        return self.probe()[0]

    def version(self) -> str:
        return self.probe()[1]


# --- Pillow: JPEG, WebP, JPEG 2000, AVIF -------------------------------------------------


def _pillow_encode(rgb: np.ndarray, quality: float, *, fmt: str, options: Callable) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, fmt, **options(quality))
    return buffer.getvalue()


def _pillow_decode(data: bytes, height: int, width: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = np.asarray(image.convert("RGB"))
    if rgb.shape != (height, width, 3):
        raise RuntimeError(f"decoded shape {rgb.shape}, expected {(height, width, 3)}")
    return rgb


def _pillow_probe(feature: str, extra: Callable[[], str | None] | None = None):
    def probe() -> tuple[str | None, str]:
        import PIL
        from PIL import features

        if not features.check(feature):
            return f"this Pillow {PIL.__version__} was built without {feature}", ""
        why = extra() if extra else None
        return why, f"Pillow {PIL.__version__}, lib{feature} {features.version(feature)}"

    return probe


def _aom_missing() -> str | None:
    from PIL import _avif

    if not _avif.encoder_codec_available("aom"):
        return "Pillow's libavif has no aom encoder"
    return None


def _pillow_codec(name, label, qualities, unit, fmt, feature, options, settings, extra=None):
    def encode(rgb: np.ndarray, quality: float) -> bytes:
        return _pillow_encode(rgb, quality, fmt=fmt, options=options)

    return ClassicalCodec(name, label, qualities, unit, settings, encode, _pillow_decode,
                          _pillow_probe(feature, extra))


# --- JPEG XL through imagecodecs -----------------------------------------------------------


def _jxl_encode(rgb: np.ndarray, quality: float) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpegxl_encode(rgb, distance=quality, effort=7, numthreads=1))


def _jxl_decode(data: bytes, height: int, width: int) -> np.ndarray:
    import imagecodecs

    rgb = np.asarray(imagecodecs.jpegxl_decode(data, numthreads=1))
    if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
        raise RuntimeError(f"decoded {rgb.dtype} {rgb.shape}, expected uint8 {(height, width, 3)}")
    return rgb


def _jxl_probe() -> tuple[str | None, str]:
    try:
        import imagecodecs
    except ImportError:
        return "imagecodecs is not installed (pip install 'coolchic[codecs]')", ""
    if not imagecodecs.JPEGXL.available:
        return "this imagecodecs build has no JPEG XL", ""
    return None, f"imagecodecs {imagecodecs.__version__}, {imagecodecs.jpegxl_version()}"


# --- HEVC (x265 through ffmpeg) and VVC (vvenc/vvdec): raw Y'CbCr files -----------------


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{what} failed ({done.returncode}): {' | '.join(tail)}")


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else ""


X265_PRESET = "slower"
X265_PARAMS = (
    "info=0:hash=0:wpp=0:pools=1:frame-threads=1:keyint=1:range=full:colorprim=bt709"
    ":transfer=iec61966-2-1:colormatrix=smpte170m:chromaloc=1"
)


def _hevc444_encode(rgb: np.ndarray, quality: float) -> bytes:
    height, width = rgb.shape[:2]
    planes = yuv.to_uint8(yuv.rgb_to_ycbcr(rgb))  # (3, H, W): Y, Cb, Cr planes in file order
    with tempfile.TemporaryDirectory(prefix="coolchic-hevc-") as tmp:
        source, stream = Path(tmp) / "in444.yuv", Path(tmp) / "out.hevc"
        source.write_bytes(planes.tobytes())
        _run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "rawvideo",
              "-pix_fmt", "yuv444p", "-s", f"{width}x{height}", "-i", str(source),
              "-frames:v", "1", "-c:v", "libx265", "-preset", X265_PRESET, "-tune", "psnr",
              "-x265-params", f"qp={int(quality)}:{X265_PARAMS}", "-f", "hevc", str(stream)],
             "ffmpeg/libx265 encode")
        return stream.read_bytes()


def _hevc444_decode(data: bytes, height: int, width: int) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="coolchic-hevc-") as tmp:
        stream, decoded = Path(tmp) / "in.hevc", Path(tmp) / "out.yuv"
        stream.write_bytes(data)
        _run(["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", "-i", str(stream),
              "-f", "rawvideo", "-pix_fmt", "yuv444p", str(decoded)], "ffmpeg HEVC decode")
        samples = np.frombuffer(decoded.read_bytes(), dtype=np.uint8)
    if samples.size != 3 * height * width:
        raise RuntimeError(f"decoded {samples.size} samples, expected {3 * height * width}")
    return yuv.ycbcr_to_rgb(samples.reshape(3, height, width))


def _hevc_probe() -> tuple[str | None, str]:
    if shutil.which("ffmpeg") is None:
        return f"ffmpeg not found; {FFMPEG_HINT}", ""
    done = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True,
                          stdin=subprocess.DEVNULL)
    if b"libx265" not in done.stdout:
        return f"this ffmpeg has no libx265 encoder; {FFMPEG_HINT}", ""
    return None, _first_line(["ffmpeg", "-version"])


def _vvc420_encode(rgb: np.ndarray, quality: float) -> bytes:
    padded = yuv.pad_even(rgb)
    height, width = padded.shape[:2]
    planes = yuv.rgb_to_ycbcr(padded)  # (3, H, W) float
    luma = yuv.to_uint8(planes[0])
    chroma = [yuv.to_uint8(yuv.downsample_chroma(p)) for p in planes[1:]]  # 2 x (H/2, W/2)
    with tempfile.TemporaryDirectory(prefix="coolchic-vvc-") as tmp:
        source, stream = Path(tmp) / "in420.yuv", Path(tmp) / "out.266"
        source.write_bytes(b"".join(p.tobytes() for p in [luma, *chroma]))
        _run(["vvencapp", "-i", str(source), "-s", f"{width}x{height}", "-c", "yuv420",
              "-r", "1", "-f", "1", "--preset", "medium", "-q", str(int(quality)), "--qpa", "0",
              "--intraperiod", "1", "-t", "1", "--verbosity", "0", "-o", str(stream)],
             "vvencapp")
        return stream.read_bytes()


def _vvc420_decode(data: bytes, height: int, width: int) -> np.ndarray:
    even_h, even_w = height + height % 2, width + width % 2
    with tempfile.TemporaryDirectory(prefix="coolchic-vvc-") as tmp:
        stream, decoded = Path(tmp) / "in.266", Path(tmp) / "out.yuv"
        stream.write_bytes(data)
        _run(["vvdecapp", "-b", str(stream), "-o", str(decoded), "-t", "1", "-v", "0"],
             "vvdecapp")
        raw = decoded.read_bytes()
    n_samples = even_h * even_w * 3 // 2
    if len(raw) == 2 * n_samples:  # 10-bit output (main_10): little-endian 16-bit words
        samples = np.frombuffer(raw, dtype="<u2").astype(np.float64) / 4.0
    elif len(raw) == n_samples:
        samples = np.frombuffer(raw, dtype=np.uint8).astype(np.float64)
    else:
        raise RuntimeError(f"vvdecapp wrote {len(raw)} bytes for a {even_w}x{even_h} picture")
    luma = samples[: even_h * even_w].reshape(even_h, even_w)
    cb, cr = samples[even_h * even_w :].reshape(2, even_h // 2, even_w // 2)
    planes = np.stack([luma, yuv.upsample_chroma(cb), yuv.upsample_chroma(cr)])  # (3, H, W)
    return yuv.ycbcr_to_rgb(planes)[:height, :width]


def _vvc_probe() -> tuple[str | None, str]:
    absent = [tool for tool in ("vvencapp", "vvdecapp") if shutil.which(tool) is None]
    if absent:
        return f"{' and '.join(absent)} not found; {VVENC_HINT}", ""
    return None, _first_line(["vvencapp", "--version"])


# --- the registry ------------------------------------------------------------------------


CODECS: dict[str, ClassicalCodec] = {
    c.name: c
    for c in (
        _pillow_codec("jpeg420", "JPEG 4:2:0", (3, 5, 10, 20, 35, 50, 65, 80), "Q", "JPEG",
                      "jpg", lambda q: {"quality": int(q), "subsampling": 2},
                      "Pillow JPEG, subsampling=2 (4:2:0), baseline, standard tables"),
        _pillow_codec("jpeg444", "JPEG 4:4:4", (3, 5, 10, 20, 35, 50, 65, 75), "Q", "JPEG",
                      "jpg", lambda q: {"quality": int(q), "subsampling": 0},
                      "Pillow JPEG, subsampling=0 (4:4:4), baseline, standard tables"),
        _pillow_codec("webp", "WebP", (0, 5, 15, 30, 50, 70, 85, 93), "Q", "WEBP", "webp",
                      lambda q: {"quality": int(q), "method": 6},
                      "Pillow WebP, lossy, method=6 (4:2:0)"),
        _pillow_codec("jpeg2000", "JPEG 2000", (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5), "bpp",
                      "JPEG2000", "jpg_2000",
                      lambda q: {"quality_mode": "rates", "quality_layers": [24.0 / q],
                                 "irreversible": True, "mct": 1, "no_jp2": True},
                      "Pillow OpenJPEG, 9/7 wavelet, ICT, one layer at the target bpp"),
        _pillow_codec("avif444", "AVIF 4:4:4", (10, 20, 30, 35, 40, 50, 62, 72, 80), "Q",
                      "AVIF", "avif",
                      lambda q: {"quality": int(q), "subsampling": "4:4:4", "speed": 4,
                                 "max_threads": 1, "codec": "aom",
                                 "advanced": {"tune": "psnr"}},
                      "Pillow AVIF (libaom), 4:4:4, speed=4, tune=psnr, full range BT.601",
                      extra=_aom_missing),
        ClassicalCodec("jxl", "JPEG XL", (25, 15, 10, 6, 4, 2.8, 2, 1.3), "distance",
                       "imagecodecs jpegxl_encode, VarDCT, effort=7, bare codestream",
                       _jxl_encode, _jxl_decode, _jxl_probe),
        ClassicalCodec("hevc444", "HEVC 4:4:4 (x265)", (47, 44, 40, 36, 32, 28, 24, 21), "QP",
                       f"ffmpeg libx265 -preset {X265_PRESET} -tune psnr, intra, yuv444p "
                       "full-range BT.601",
                       _hevc444_encode, _hevc444_decode, _hevc_probe),
        ClassicalCodec("vvc420", "VVC 4:2:0 (VVenC)", (46, 42, 38, 34, 30, 26, 22), "QP",
                       "vvencapp --preset medium --qpa 0 --intraperiod 1, yuv420 full-range "
                       "BT.601, main_10",
                       _vvc420_encode, _vvc420_decode, _vvc_probe),
    )
}


def get_codec(name: str) -> ClassicalCodec:
    """The registry entry called ``name``.

    Raises:
        EvaluationError: no such codec (the message lists the known ones).
    """
    if name not in CODECS:
        raise EvaluationError(f"unknown codec {name!r}; choose from: {', '.join(CODECS)}")
    return CODECS[name]
