"""Image files in and out, and atomic file writes.

Images are numpy arrays of shape (H, W, C), C = 1 (gray) or 3 (RGB), dtype uint8 for
8-bit and uint16 for 16-bit images, paired with their bit depth (8 or 16).

Reading policy (``read_image``), for anything Pillow can open (PNG, PPM/PGM, TIFF, JPEG,
BMP, WebP, GIF, ...), any size from 1x1 up to ``MAX_PIXELS`` pixels; the first frame of
multi-frame files; EXIF orientation is ignored (pixels are taken as stored):

- 8-bit gray and RGB are returned as they are; 1-bit and 2/4-bit gray become 8-bit gray
  (0/255 for 1-bit).
- Palette images become RGB. CMYK, YCbCr, LAB and HSV images are converted to RGB with
  Pillow's conversions.
- Alpha (RGBA, LA, PA, palette or colour-key transparency) is accepted only when every
  pixel is fully opaque; the alpha channel is then dropped. Otherwise the image is refused.
- 16-bit gray (Pillow modes ``I;16``, ``I;16B``, and ``I`` holding values in 0..65535) is
  returned as 16-bit gray.
- 16-bit RGB (and RGBA / gray+alpha) PNG files are decoded by this module, because Pillow
  reduces them to 8 bits. 16-bit colour files of other formats (TIFF, PPM, ...) are refused
  with a message, since Pillow would silently drop their low bits: convert them to PNG.
- Floating-point images (mode ``F``) and other modes are refused.

Writing (``write_image``) picks the format from the file extension. PNG files, 8- or
16-bit, gray or RGB, are written by this module (so that a decode imports no Pillow); other
formats by Pillow: 8-bit images to any format it writes (lossy formats such as JPEG lose
information), 16-bit gray to TIFF or PPM/PGM, 16-bit RGB to none. Every file is written
atomically: to a temporary file in the destination directory, then renamed.

Every failure is an ``ImageError`` (a ``ValueError``) with a one-sentence message.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from typing import TYPE_CHECKING

import numpy as np

from coolchic.bitstream import MAX_PIXELS

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["MAX_PIXELS", "ImageError", "atomic_write_bytes", "float_to_image",
           "image_to_float", "read_image", "write_image"]

_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_TO_RGB_MODES = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")
_NARROW_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", *_TO_RGB_MODES)
_SIXTEEN_BIT_FORMATS = ("TIFF", "PPM")  # formats Pillow stores I;16 in without loss (PNG: ours)
_PNG_EXTENSIONS = (".png", ".apng")  # Pillow's for PNG; written by `_encode_png`


class ImageError(ValueError):
    """An image file cannot be read or written; the message is one sentence."""


def _check_bit_depth(bit_depth: int) -> None:
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an image file following the module's policy.

    Returns:
        (array, bit_depth): array (H, W, C) with C in {1, 3}, uint8 when bit_depth is 8 and
        uint16 when it is 16.

    Raises:
        ImageError: missing file, not an image, truncated, too large or unsupported.
    """
    from PIL import Image  # here: writing a PNG, all a decode does, needs no Pillow

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageError(f"no such image file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageError(f"image of {im.width}x{im.height} pixels is larger than "
                                     f"the limit of {MAX_PIXELS} pixels: {path}")
                if _loses_bits(im):
                    if im.format != "PNG":
                        raise ImageError(f"16-bit colour {im.format} images are not supported "
                                         f"(Pillow reduces them to 8 bits); convert to 16-bit "
                                         f"PNG: {path}")
                    with open(path, "rb") as f:
                        return _opaque(_decode_png(f.read()), path), 16
                im.load()
                return _from_pillow(im, path)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"image is too large for Pillow's decompression-bomb limit: "
                         f"{path}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"not an image file (or a format Pillow cannot read): {path}") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"cannot read image {path}: {reason}") from None


def _loses_bits(im: Image.Image) -> bool:
    """Whether Pillow would decode samples wider than 8 bits into an 8-bit mode."""
    if im.mode not in _NARROW_MODES:
        return False
    for tile in im.tile:
        args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
        if args and isinstance(args[0], str) and ";16" in args[0]:
            return True
        if tile.codec_name == "ppm" and len(args) > 1 and args[1] > 255:
            return True
    bits = getattr(im, "tag_v2", {}).get(258)  # TIFF BitsPerSample
    return bits is not None and max(np.atleast_1d(bits)) > 8


def _from_pillow(im: Image.Image, path: str) -> tuple[np.ndarray, int]:
    mode, key = im.mode, im.info.get("transparency")
    if mode in _WIDE_GRAY_MODES:
        array = np.asarray(im)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ImageError(f"32-bit integer image with values outside 0..65535: {path}")
        return _opaque(_keyed(array.astype(np.uint16)[:, :, None], key), path), 16
    if mode == "P":
        im = im.convert("RGBA" if key is not None else "RGB")
    elif mode in ("PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in _TO_RGB_MODES:
        im = im.convert("RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageError(f"unsupported image mode {mode!r} (floating-point or exotic pixel "
                         f"format): {path}")
    array = np.asarray(im)
    if array.ndim == 2:
        array = array[:, :, None]
    if mode in ("L", "RGB"):
        array = _keyed(array, key)
    return _opaque(array.astype(np.uint8), path), 8


def _keyed(array: np.ndarray, key) -> np.ndarray:
    """Append an alpha channel from a colour key (PNG tRNS), or return the array as is."""
    if key is None or isinstance(key, bytes):
        return array
    transparent = np.all(array == np.asarray(key, dtype=np.int64).reshape(-1), axis=-1)
    alpha = np.where(transparent, 0, np.iinfo(array.dtype).max).astype(array.dtype)
    return np.concatenate([array, alpha[:, :, None]], axis=-1)


def _opaque(array: np.ndarray, path: str) -> np.ndarray:
    """Drop a fully opaque alpha channel (C = 2 or 4); refuse any transparency."""
    if array.shape[2] in (1, 3):
        return np.ascontiguousarray(array)
    alpha = array[:, :, -1]
    clear = int(np.count_nonzero(alpha != np.iinfo(array.dtype).max))
    if clear:
        raise ImageError(f"images with transparency are not supported ({clear} of "
                         f"{alpha.size} pixels are not fully opaque): {path}")
    return np.ascontiguousarray(array[:, :, :-1])


# PNG (ISO/IEC 15948) decoding and encoding for the colour types Pillow reduces to 8 bits.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # interlace passes as (x0, y0, dx, dy)


def _png_chunks(data: bytes):
    if not data.startswith(_PNG_SIGNATURE):
        raise ImageError("not a PNG file")
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise ImageError("truncated PNG file")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data):
            raise ImageError("truncated PNG file")
        body = data[pos + 8 : end]
        if zlib.crc32(kind + body) != struct.unpack_from(">I", data, end)[0]:
            raise ImageError("corrupt PNG file (chunk checksum mismatch)")
        if kind == b"IEND":
            return
        yield kind, body
        pos = end + 4


def _decode_png(data: bytes) -> np.ndarray:
    """Non-palette 8/16-bit PNG -> (H, W, C) uint8/uint16, alpha kept, tRNS as alpha."""
    ihdr, idat, trns = None, [], None
    for kind, body in _png_chunks(data):
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"tRNS":
            trns = body
    if ihdr is None:
        raise ImageError("corrupt PNG file (no IHDR chunk)")
    width, height, depth, colour, compression, filtering, interlace = ihdr
    if depth not in (8, 16) or colour not in _PNG_CHANNELS or compression or filtering \
            or interlace > 1 or not 0 < width * height <= MAX_PIXELS:
        raise ImageError(f"unsupported PNG layout: {width}x{height}, {depth}-bit, colour "
                         f"type {colour}, interlace {interlace}")
    channels, sample = _PNG_CHANNELS[colour], depth // 8
    bpp = channels * sample  # bytes per pixel, the filters' left distance
    passes = [(x0, y0, dx, dy, (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy)
              for x0, y0, dx, dy in (_ADAM7 if interlace else ((0, 0, 1, 1),))]
    expected = sum(ph * (1 + pw * bpp) for *_, pw, ph in passes if pw)
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat), expected + 1)
    except zlib.error:
        raise ImageError("corrupt PNG image data") from None
    if len(raw) != expected:
        raise ImageError("truncated or corrupt PNG image data")
    dtype = np.dtype(">u2" if sample == 2 else "u1")
    out = np.empty((height, width, channels), dtype)
    pos = 0
    for x0, y0, dx, dy, pw, ph in passes:
        if pw and ph:
            rows = _unfilter(raw[pos : pos + ph * (1 + pw * bpp)], ph, pw * bpp, bpp)
            out[y0::dy, x0::dx] = rows.view(dtype).reshape(ph, pw, channels)
            pos += ph * (1 + pw * bpp)
    out = out.astype(np.uint16 if sample == 2 else np.uint8)
    if trns is not None and colour in (0, 2):
        out = _keyed(out, np.frombuffer(trns, ">u2")[:channels].astype(np.int64))
    return out


def _unfilter(buf: bytes, rows: int, stride: int, bpp: int) -> np.ndarray:
    """Undo the PNG row filters; returns (rows, stride) uint8."""
    lines = np.frombuffer(buf, np.uint8).reshape(rows, 1 + stride)  # filter byte + row
    out = np.empty((rows, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(rows):
        kind, line = lines[y, 0], lines[y, 1:]
        if kind == 0:
            out[y] = line
        elif kind == 1:  # Sub: running sum per byte lane, modulo 256
            out[y] = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            out[y] = line + prev
        elif kind in (3, 4):  # Average, Paeth: each byte depends on its reconstructed left
            out[y] = np.frombuffer(_unfilter_sequential(kind, line, prev, bpp), np.uint8)
        else:
            raise ImageError(f"corrupt PNG image data (filter type {kind})")
        prev = out[y]
    return out


def _unfilter_sequential(kind: int, line: np.ndarray, prev: np.ndarray, bpp: int) -> bytearray:
    cur, up = bytearray(line.tobytes()), prev.tobytes()
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        if kind == 3:
            cur[i] = (cur[i] + ((a + up[i]) >> 1)) & 0xFF
            continue
        b, c = up[i], (up[i - bpp] if i >= bpp else 0)
        pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
        cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    return cur


def _encode_png(array: np.ndarray, bit_depth: int) -> bytes:
    """(H, W, C) integers, C = 1 or 3 -> gray or RGB PNG bytes of that bit depth, every row
    with the Up filter. On a decoded Kodak image (768x512 RGB) this took 35 ms where
    Pillow's writer, which chooses a filter for each row, took 60 ms at the same zlib
    level, for 3 % more bytes."""
    height, width, channels = array.shape
    stride = width * channels * bit_depth // 8
    rows = array.astype(np.uint8 if bit_depth == 8 else ">u2").view(np.uint8).reshape(height, stride)
    raw = np.empty((height, stride + 1), np.uint8)  # each row: its filter byte, then its bytes
    raw[:, 0] = 2  # Up: each byte minus the one above it, modulo 256
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    colour = 0 if channels == 1 else 2  # gray or RGB
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)  # no interlace
    return (_PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_LEVEL))
            + chunk(b"IEND", b""))


# zlib level of written PNGs: on a decoded Kodak image, level 3 wrote in 0.074 s what level 6
# (zlib's default) wrote in 0.204 s, for 13 % more bytes; a decode command waits for it
PNG_LEVEL = 3
# extensions whose Pillow writer `Image.preinit` loads, with Pillow's format name for each
QUICK_FORMATS = {".ppm": "PPM", ".pgm": "PPM", ".pnm": "PPM", ".bmp": "BMP"}


def write_image(path: str | os.PathLike, array: np.ndarray, bit_depth: int) -> None:
    """Write an (H, W), (H, W, 1) or (H, W, 3) integer image atomically.

    The format comes from the extension; see the module docstring for what each bit depth
    can be written as.

    Raises:
        ValueError: bad shape, dtype, value range or bit depth.
        ImageError: unknown extension, a format that cannot hold the image, missing
            output directory, or an OS error while writing.
    """
    _check_bit_depth(bit_depth)
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3) or 0 in array.shape:
        raise ValueError(f"images must be (H, W), (H, W, 1) or (H, W, 3), got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"write_image takes integer arrays, got {array.dtype}; "
                         "use float_to_image first")
    top = (1 << bit_depth) - 1
    if array.min() < 0 or array.max() > top:
        raise ValueError(f"sample values must be in 0..{top} for a {bit_depth}-bit image")
    path = os.fspath(path)
    _check_directory(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in _PNG_EXTENSIONS:
        data = _encode_png(array, bit_depth)
    else:
        data = _encode_with_pillow(array, bit_depth, ext, path)
    atomic_write_bytes(path, data)


def _encode_with_pillow(array: np.ndarray, bit_depth: int, ext: str, path: str) -> bytes:
    """`write_image`'s bytes for a format other than PNG, by Pillow."""
    from PIL import Image

    fmt = QUICK_FORMATS.get(ext)
    if fmt is not None:
        Image.preinit()  # these writers only: Image.init imports every plugin (0.1 s)
    else:
        fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ImageError(f"cannot choose an image format for the extension {ext!r}: {path}")
    channels = array.shape[2]
    if bit_depth == 16 and (channels == 3 or fmt not in _SIXTEEN_BIT_FORMATS):
        kind = "RGB images can be written only as PNG" if channels == 3 else \
            "gray images can be written only as PNG, TIFF or PPM/PGM"
        raise ImageError(f"16-bit {kind}, not {fmt}: {path}")
    pixels = array.astype(np.uint8 if bit_depth == 8 else np.uint16)
    buffer = io.BytesIO()
    try:
        Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).save(buffer, format=fmt)
    except Exception as exc:  # Pillow's writers raise OSError, ValueError, KeyError, ...
        raise ImageError(f"cannot write a {bit_depth}-bit {'gray' if channels == 1 else 'RGB'}"
                         f" image as {fmt}: {exc}") from None
    return buffer.getvalue()


def _check_directory(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ImageError(f"output directory does not exist: {parent}")
    return parent


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    temporary file is renamed over `path`; on failure it is removed.

    Raises:
        ImageError: the directory does not exist, or the OS refuses the write.
    """
    path = os.fspath(path)
    parent = _check_directory(path)
    temp = os.path.join(parent, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)  # the umask applies, as for any new file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ImageError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def image_to_float(array: np.ndarray, bit_depth: int) -> np.ndarray:
    """Integer image -> float32 in [0, 1], dividing by 2^bit_depth - 1 (same shape)."""
    _check_bit_depth(bit_depth)
    return (np.asarray(array, dtype=np.float64) / ((1 << bit_depth) - 1)).astype(np.float32)


def float_to_image(x: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float image in [0, 1] -> integers: scaled by 2^bit_depth - 1, rounded half to even,
    clipped; uint8 for 8 bits, uint16 for 16 (same shape).

    Raises:
        ValueError: the input holds NaN.
    """
    _check_bit_depth(bit_depth)
    top = (1 << bit_depth) - 1
    scaled = np.asarray(x, dtype=np.float64) * top
    if np.isnan(scaled).any():
        raise ValueError("cannot convert an image holding NaN to integers")
    return np.clip(np.rint(scaled), 0, top).astype(np.uint8 if bit_depth == 8 else np.uint16)
