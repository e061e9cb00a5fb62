"""Image reading policy, 16-bit PNG decoding, atomic writes and float conversion."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from coolchic.io import (
    MAX_PIXELS,
    ImageError,
    atomic_write_bytes,
    float_to_image,
    image_to_float,
    read_image,
    write_image,
)

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2))


def ramp(h: int, w: int, c: int, top: int, seed: int = 0) -> np.ndarray:
    """A deterministic image whose values cover 0..top, smooth enough to use every filter."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, top + 1, (h, w, c), dtype=np.int64)
    x.flat[0], x.flat[-1] = 0, top
    return x.astype(np.uint16 if top > 255 else np.uint8)


def encode_png(array: np.ndarray, *, depth: int, filters=(0, 1, 2, 3, 4), interlace=False,
               trns: bytes | None = None) -> bytes:
    """A PNG writer independent of coolchic.io: chosen row filters, optional Adam7."""
    h, w, c = array.shape
    bpp = c * depth // 8
    raw, k = bytearray(), 0
    for x0, y0, dx, dy in ADAM7 if interlace else ((0, 0, 1, 1),):
        sub = array[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        rows = sub.astype(">u2" if depth == 16 else "u1").view(np.uint8)
        rows = rows.reshape(sub.shape[0], -1).astype(np.int64)  # (rows, bytes per row)
        prev = np.zeros(rows.shape[1], np.int64)
        for row in rows:
            kind = filters[k % len(filters)]
            k += 1
            a = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
            c_ = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
            p = a + prev - c_
            pa, pb, pc = np.abs(p - a), np.abs(p - prev), np.abs(p - c_)
            paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, prev, c_))
            pred = (0, a, prev, (a + prev) // 2, paeth)[kind]
            raw += bytes([kind]) + ((row - pred) % 256).astype(np.uint8).tobytes()
            prev = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    colour = {1: 0, 3: 2, 2: 4, 4: 6}[c]
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour,
                                                           0, 0, int(interlace)))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")


def save(tmp_path, name: str, image: Image.Image, **params) -> str:
    path = str(tmp_path / name)
    image.save(path, **params)
    return path


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (9, 17)])
def test_the_reference_png_writer_agrees_with_pillow(tmp_path, shape, interlace):
    x8 = ramp(*shape, 3, 255)
    path = tmp_path / "a.png"
    path.write_bytes(encode_png(x8, depth=8, interlace=interlace))
    assert np.array_equal(np.asarray(Image.open(path)), x8)
    x16 = ramp(*shape, 3, 65535)
    path.write_bytes(encode_png(x16, depth=16, interlace=interlace))
    assert np.array_equal(np.asarray(Image.open(path)), (x16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (0, 1, 2, 3, 4)])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (9, 17)])
def test_16_bit_rgb_png_is_read_without_losing_bits(tmp_path, shape, filters, interlace):
    x = ramp(*shape, 3, 65535, seed=len(filters))
    path = tmp_path / "rgb48.png"
    path.write_bytes(encode_png(x, depth=16, filters=filters, interlace=interlace))
    array, bit_depth = read_image(path)
    assert bit_depth == 16 and array.dtype == np.uint16
    assert np.array_equal(array, x)


def test_opaque_16_bit_alpha_is_dropped_and_transparency_refused(tmp_path):
    x = ramp(4, 6, 3, 65535)
    alpha = np.full((4, 6, 1), 65535, np.uint16)
    path = tmp_path / "rgba64.png"
    path.write_bytes(encode_png(np.concatenate([x, alpha], axis=2), depth=16))
    assert np.array_equal(read_image(path)[0], x)
    path.write_bytes(encode_png(np.concatenate([x[:, :, :1], alpha], axis=2), depth=16))
    assert np.array_equal(read_image(path)[0], x[:, :, :1])
    alpha[2, 3] = 65534
    path.write_bytes(encode_png(np.concatenate([x, alpha], axis=2), depth=16))
    with pytest.raises(ImageError, match=r"transparency .* \(1 of 24 pixels"):
        read_image(path)


def test_a_16_bit_colour_key_is_refused_only_when_a_pixel_matches_it(tmp_path):
    x = ramp(4, 6, 3, 65535)
    path = tmp_path / "key.png"
    path.write_bytes(encode_png(x, depth=16, trns=struct.pack(">3H", *x[1, 2])))
    with pytest.raises(ImageError, match="transparency"):
        read_image(path)
    unused = next(v for v in range(65536) if not (x[:, :, 0] == v).any())
    path.write_bytes(encode_png(x, depth=16, trns=struct.pack(">3H", unused, 0, 0)))
    assert np.array_equal(read_image(path)[0], x)


def test_a_corrupt_16_bit_png_raises_an_image_error(tmp_path):
    data = bytearray(encode_png(ramp(8, 8, 3, 65535), depth=16))
    path = tmp_path / "bad.png"
    idat = data.index(b"IDAT")
    path.write_bytes(bytes(data[: idat + 30]))
    with pytest.raises(ImageError):
        read_image(path)
    data[idat + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="checksum"):
        read_image(path)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("ext", [".png", ".tif", ".ppm", ".bmp"])
def test_8_bit_images_round_trip_through_lossless_formats(tmp_path, ext, c):
    if ext == ".ppm" and c == 1:
        ext = ".pgm"
    x = ramp(5, 7, c, 255)
    write_image(tmp_path / f"x{ext}", x, 8)
    array, bit_depth = read_image(tmp_path / f"x{ext}")
    assert (bit_depth, array.dtype, array.shape) == (8, np.uint8, (5, 7, c))
    assert np.array_equal(array, x)


def test_webp_and_jpeg_files_are_read(tmp_path):
    x = ramp(8, 8, 3, 255)
    array, _ = read_image(save(tmp_path, "x.webp", Image.fromarray(x), lossless=True))
    assert np.array_equal(array, x)
    array, bit_depth = read_image(save(tmp_path, "x.jpg", Image.fromarray(x)))
    assert (array.shape, array.dtype, bit_depth) == ((8, 8, 3), np.uint8, 8)
    write_image(tmp_path / "y.jpg", x, 8)  # lossy formats can be written too
    assert read_image(tmp_path / "y.jpg")[0].shape == (8, 8, 3)


@pytest.mark.parametrize("ext", [".png", ".tif", ".pgm"])
def test_16_bit_gray_round_trips(tmp_path, ext):
    x = ramp(3, 4, 1, 65535)
    write_image(tmp_path / f"g{ext}", x, 16)
    array, bit_depth = read_image(tmp_path / f"g{ext}")
    assert (bit_depth, array.dtype) == (16, np.uint16)
    assert np.array_equal(array, x)


def test_16_bit_rgb_round_trips_and_pillow_reads_our_file(tmp_path):
    x = ramp(6, 9, 3, 65535)
    write_image(tmp_path / "c.png", x, 16)
    assert np.array_equal(read_image(tmp_path / "c.png")[0], x)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c.png")), x >> 8)


@pytest.mark.parametrize("c, depth", [(1, 8), (3, 8), (1, 16)])
def test_our_png_files_read_back_in_pillow_exactly(tmp_path, c, depth):
    x = ramp(6, 9, c, (1 << depth) - 1)
    write_image(tmp_path / "x.PNG", x, depth)  # the extension's case does not matter
    with Image.open(tmp_path / "x.PNG") as im:
        assert im.format == "PNG" and np.array_equal(np.asarray(im).reshape(x.shape), x)


def test_writing_a_png_imports_no_pillow(tmp_path):
    code = ("import sys, numpy as np; from coolchic.io import write_image; "
            "write_image(sys.argv[1], np.zeros((2, 3, 3), np.uint8), 8); sys.exit('PIL' in sys.modules)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.png")], check=True)


def test_one_pixel_images_are_read(tmp_path):
    for name, mode, value in [("a.png", "L", 7), ("b.png", "RGB", (1, 2, 3)), ("c.tif", "I;16", 9)]:
        array, _ = read_image(save(tmp_path, name, Image.new(mode, (1, 1), value)))
        assert array.shape[:2] == (1, 1)
        assert array.ravel().tolist() == list(np.atleast_1d(value))


def test_palette_images_become_rgb(tmp_path):
    x = ramp(4, 4, 3, 255)
    palette = Image.fromarray(x).quantize(colors=8)
    array, bit_depth = read_image(save(tmp_path, "p.png", palette))
    assert (array.shape, bit_depth) == ((4, 4, 3), 8)
    assert np.array_equal(array, np.asarray(palette.convert("RGB")))
    assert read_image(save(tmp_path, "p.gif", palette))[0].shape == (4, 4, 3)


def test_palette_transparency_is_refused_only_when_used(tmp_path):
    palette = Image.fromarray(np.array([[0, 1], [1, 1]], np.uint8), mode="L").convert("P")
    with pytest.raises(ImageError, match=r"\(1 of 4 pixels"):
        read_image(save(tmp_path, "t.png", palette, transparency=0))
    assert read_image(save(tmp_path, "u.png", palette, transparency=5))[0].shape == (2, 2, 3)


def test_opaque_alpha_is_dropped_and_any_transparency_refused(tmp_path):
    rgba = np.concatenate([ramp(3, 3, 3, 255), np.full((3, 3, 1), 255, np.uint8)], axis=2)
    array, _ = read_image(save(tmp_path, "o.png", Image.fromarray(rgba)))
    assert np.array_equal(array, rgba[:, :, :3])
    la = Image.merge("LA", [Image.fromarray(rgba[:, :, 0]), Image.fromarray(rgba[:, :, 3])])
    assert read_image(save(tmp_path, "la.png", la))[0].shape == (3, 3, 1)
    rgba[1, 1, 3] = 254
    with pytest.raises(ImageError, match="not fully opaque"):
        read_image(save(tmp_path, "t.png", Image.fromarray(rgba)))


def test_an_8_bit_colour_key_is_refused_when_a_pixel_matches_it(tmp_path):
    x = ramp(3, 3, 3, 255)
    key = tuple(int(v) for v in x[0, 1])
    with pytest.raises(ImageError, match="transparency"):
        read_image(save(tmp_path, "k.png", Image.fromarray(x), transparency=key))


def test_a_16_bit_gray_colour_key_is_refused_when_a_pixel_matches_it(tmp_path):
    gray = Image.fromarray(np.array([[0, 300], [7, 9]], np.uint16))
    with pytest.raises(ImageError, match=r"\(1 of 4 pixels"):
        read_image(save(tmp_path, "k.png", gray, transparency=300))
    assert read_image(save(tmp_path, "u.png", gray, transparency=301))[1] == 16


def test_bilevel_images_become_8_bit_gray(tmp_path):
    bits = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    array, bit_depth = read_image(save(tmp_path, "b.png", bits))
    assert bit_depth == 8 and array[:, :, 0].tolist() == [[0, 255], [255, 0]]


@pytest.mark.parametrize("mode,ext", [("CMYK", ".jpg"), ("CMYK", ".tif"), ("YCbCr", ".jpg"),
                                      ("LAB", ".tif")])
def test_other_colour_spaces_become_rgb(tmp_path, mode, ext):
    image = Image.fromarray(ramp(8, 8, 3, 255)).convert(mode)
    array, bit_depth = read_image(save(tmp_path, f"x{ext}", image))
    assert (array.shape, array.dtype, bit_depth) == ((8, 8, 3), np.uint8, 8)


def test_32_bit_integer_images_are_16_bit_only_within_range(tmp_path):
    values = np.array([[0, 65535]], np.int32)
    array, bit_depth = read_image(save(tmp_path, "i.tif", Image.fromarray(values, mode="I")))
    assert bit_depth == 16 and array[:, :, 0].tolist() == [[0, 65535]]
    with pytest.raises(ImageError, match="outside 0..65535"):
        read_image(save(tmp_path, "j.tif", Image.fromarray(values + 1, mode="I")))


def test_16_bit_colour_files_pillow_would_truncate_are_refused(tmp_path):
    path = tmp_path / "c.ppm"
    path.write_bytes(b"P6\n2 1\n65535\n" + np.arange(6, dtype=">u2").tobytes())
    with pytest.raises(ImageError, match="16-bit colour PPM .* convert to 16-bit PNG"):
        read_image(path)


def test_floating_point_images_are_refused(tmp_path):
    path = save(tmp_path, "f.tif", Image.fromarray(np.zeros((2, 2), np.float32)))
    with pytest.raises(ImageError, match="unsupported image mode 'F'"):
        read_image(path)


def test_unreadable_files_raise_one_line_image_errors(tmp_path):
    (tmp_path / "t.png").write_text("not an image at all")
    png = tmp_path / "x.png"
    write_image(png, ramp(32, 32, 3, 255), 8)
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[:100])
    cases = {"t.png": "not an image file", "cut.png": "cannot read image",
             "missing.png": "no such image file", ".": "no such image file"}
    for name, message in cases.items():
        with pytest.raises(ImageError, match=message) as info:
            read_image(tmp_path / name)
        assert "\n" not in str(info.value)


def test_huge_declared_sizes_are_refused_before_decoding(tmp_path, monkeypatch):
    data = bytearray(encode_png(np.zeros((1, 1, 3), np.uint8), depth=8))
    data[16:24] = struct.pack(">II", 20000, 20000)  # IHDR width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="too large"):
        read_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # only coolchic's limit is left
    with pytest.raises(ImageError, match=f"larger than the limit of {MAX_PIXELS} pixels"):
        read_image(path)


def test_writes_refuse_a_missing_directory(tmp_path):
    with pytest.raises(ImageError, match="output directory does not exist: .*nope"):
        write_image(tmp_path / "nope" / "x.png", ramp(2, 2, 3, 255), 8)
    with pytest.raises(ImageError, match="output directory does not exist"):
        atomic_write_bytes(tmp_path / "nope" / "x.bin", b"abc")


def test_atomic_writes_replace_the_file_and_leave_no_temporary_files(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    (tmp_path / "dir").mkdir()
    with pytest.raises(ImageError, match="cannot write"):
        atomic_write_bytes(tmp_path / "dir", b"x")
    assert sorted(os.listdir(tmp_path)) == ["dir", "out.bin"]


def test_a_refused_image_write_leaves_the_old_file_untouched(tmp_path):
    target = tmp_path / "x.jpg"
    target.write_bytes(b"old")
    with pytest.raises(ImageError, match="16-bit gray images can be written only as PNG"):
        write_image(target, ramp(2, 2, 1, 65535), 16)
    with pytest.raises(ImageError, match="16-bit RGB images can be written only as PNG"):
        write_image(tmp_path / "x.tif", ramp(2, 2, 3, 65535), 16)
    with pytest.raises(ImageError, match="extension '.xyz'"):
        write_image(tmp_path / "x.xyz", ramp(2, 2, 3, 255), 8)
    assert os.listdir(tmp_path) == ["x.jpg"] and target.read_bytes() == b"old"


def test_write_image_validates_its_array():
    with pytest.raises(ValueError, match="integer arrays"):
        write_image("x.png", np.zeros((2, 2, 3), np.float32), 8)
    with pytest.raises(ValueError, match=r"in 0..255"):
        write_image("x.png", np.full((2, 2), 256, np.uint16), 8)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_image("x.png", np.zeros((2, 2, 4), np.uint8), 8)
    with pytest.raises(ValueError, match="bit_depth must be 8 or 16"):
        write_image("x.png", np.zeros((2, 2), np.uint8), 12)


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_every_integer_value_survives_the_float_round_trip(bit_depth):
    values = np.arange(1 << bit_depth).astype(np.uint8 if bit_depth == 8 else np.uint16)
    x = image_to_float(values, bit_depth)
    assert x.dtype == np.float32 and x[0] == 0.0 and x[-1] == 1.0
    back = float_to_image(x, bit_depth)
    assert back.dtype == values.dtype and np.array_equal(back, values)


def test_float_to_image_rounds_and_clips_and_refuses_nan():
    assert float_to_image(np.array([-0.5, 0.0, 0.5 / 255, 1.0, 7.0]), 8).tolist() == [
        0, 0, 0, 255, 255]  # 0.5 rounds half to even
    assert float_to_image(np.array([1.5 / 255]), 8).tolist() == [2]
    with pytest.raises(ValueError, match="NaN"):
        float_to_image(np.array([np.nan]), 8)


def test_the_quick_writer_formats_are_pillows_own_names_for_their_extensions():
    from PIL import Image

    from coolchic.io import QUICK_FORMATS

    Image.init()
    assert all(Image.registered_extensions()[ext] == fmt for ext, fmt in QUICK_FORMATS.items())
    Image.preinit()
    assert all(fmt in Image.SAVE for fmt in QUICK_FORMATS.values())


def test_writing_a_png_does_not_import_every_pillow_plugin(tmp_path):
    import subprocess
    import sys

    script = ("import sys, numpy as np; from coolchic.io import write_image; "
              f"write_image({str(tmp_path / 'a.png')!r}, np.zeros((4, 5, 3), np.uint8), 8); "
              "print('PIL.AvifImagePlugin' in sys.modules, 'PIL.TiffImagePlugin' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert (tmp_path / "a.png").stat().st_size > 0
