"""The embedded progressive codec: one stream, any prefix ending at a layer boundary decodes
alone to exactly the image of that many layers; any other cut is refused. Tiny random-init
cwic models and coders, tiny images."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from coolchic.amortized import api, checkpoints, cwic, layered
from coolchic.amortized import progressive_cwic as pc
from coolchic.amortized.progressive import build_model, encode_layers, integer_net
from coolchic.bitstream import BitstreamError, CodecId, read_bitstream
from coolchic.cli import app
from coolchic.decode import decode as decode_file
from tests.conftest import synthetic_image

TINY = {"code_channels": 8, "levels": 4, "features": 8, "context_hidden": (2,), "map_hidden": (2,)}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    model = cwic.build(TINY).eval()
    torch.manual_seed(seed + 1)
    coder = build_model(pc.layered_config(model, layer_depth=2, hidden=(2,)))  # 4 layers
    coder.source_crc = model.model_crc()
    coder.quality = 30
    return model, coder


@pytest.fixture(scope="module")
def codec():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, coder = _pair()
    yield layered.LayeredCodec(coder, model)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image():
    return synthetic_image(24, 40, seed=4)


@pytest.fixture(scope="module")
def stream(codec, image):
    return codec.compress(image)


def test_every_prefix_ending_at_a_layer_boundary_decodes_to_exactly_the_k_layer_image(codec, image, stream):
    parsed = layered.read(stream)
    assert parsed.complete and parsed.layer_count == 4 and len(parsed.ends) == 4
    assert parsed.ends[-1] == len(stream) - 4  # the last layer, then the container's CRC
    images = []
    for k, end in enumerate(parsed.ends, 1):
        expected = codec.reconstruct(image, layers=k)
        prefix = stream[:end]
        assert not layered.read(prefix).complete and len(layered.read(prefix).layers) == k
        assert np.array_equal(codec.decompress(prefix), expected)
        assert np.array_equal(codec.decompress(stream, layers=k), expected)
        assert np.array_equal(codec.decompress(stream[:end + 7], layers=k), expected)  # rest unread
        images.append(expected)
    assert np.array_equal(codec.decompress(stream), images[-1])
    assert np.array_equal(images[-1], codec.reconstruct(image))
    assert len({im.tobytes() for im in images}) == 4  # every layer changes the image


def test_the_k_layer_image_is_cwics_decoder_from_the_first_k_layers_and_the_rest_trimmed(codec, image):
    bits = pc.layered_code(codec.cwic, image)
    kept = np.zeros(bits.shape, dtype=bool)
    kept[:4] = True
    assert np.array_equal(codec.reconstruct(image, layers=2), codec.cwic._synthesize(bits, kept, 24, 40))
    assert not codec.cwic.use_map  # then cwic codes every bit: its image is the one of all layers
    assert np.array_equal(codec.reconstruct(image), codec.cwic.reconstruct(image))


def test_a_cut_anywhere_else_is_refused_with_one_sentence_never_a_wrong_image(codec, stream):
    ends = set(layered.read(stream).ends) | {len(stream)}
    for n in range(len(stream)):
        if n in ends:
            continue
        with pytest.raises(BitstreamError) as error:
            codec.decompress(stream[:n])
        assert "\n" not in str(error.value)
    with pytest.raises(BitstreamError, match=r"cut at byte \d+, inside layer 2; .*layer boundary"):
        layered.read(stream[: layered.read(stream).ends[0] + 3])
    with pytest.raises(BitstreamError, match="cut inside its final checksum"):
        layered.read(stream[:-1])


def test_a_layer_stream_does_not_depend_on_the_layers_after_it(codec, image):
    bits = pc.layered_code(codec.cwic, image)
    net = integer_net(codec.coder)
    every = encode_layers(net, codec.config, bits, layers=4)
    for k in range(1, 4):
        assert encode_layers(net, codec.config, bits, layers=k) == every[:k]
    shorter = dataclasses.replace(codec.config, coded_layer_count=2)
    assert encode_layers(net, shorter, bits) == every[:2]


def test_corruption_and_impossible_requests_are_refused(codec, stream):
    ends = layered.read(stream).ends
    bad = bytearray(stream)
    bad[ends[1] + 2] ^= 0x10  # inside layer 3
    with pytest.raises(BitstreamError, match="checksum mismatch in layer 3"):
        codec.decompress(bytes(bad))
    assert np.array_equal(codec.decompress(bytes(bad), layers=2), codec.decompress(stream, layers=2))
    with pytest.raises(BitstreamError, match="holds 2 complete layer.* of 4; 3 were asked for"):
        codec.decompress(stream[: ends[1]], layers=3)
    with pytest.raises(BitstreamError, match="holds 4 complete layer.* of 4; 5 were asked for"):
        codec.decompress(stream, layers=5)
    with pytest.raises(BitstreamError, match="holds no complete layer"):
        layered.read(stream[: ends[0] - len(layered.read(stream).layers[0]) - 4])
    tail = bytearray(stream)
    tail[-1] ^= 1
    with pytest.raises(BitstreamError, match="checksum mismatch: the file is corrupt"):
        layered.read(bytes(tail))
    with pytest.raises(BitstreamError, match="bytes after the checksum"):
        layered.read(stream + b"\0")
    model, coder = _pair(seed=5)
    other = layered.LayeredCodec(coder, model)
    with pytest.raises(BitstreamError, match="written by progressive weights with CRC"):
        other.decompress(stream)


def test_the_whole_stream_is_a_valid_container_and_names_its_codec(codec, stream):
    header, sections = read_bitstream(stream)
    assert header.codec_id == CodecId.PROGRESSIVE and (header.height, header.width) == (24, 40)
    assert api.peek_codec(stream) == CodecId.PROGRESSIVE == api.peek_codec(stream[:30])
    assert api.peek_codec(b"CCHC") is None and api.peek_codec(b"nope" * 4) is None
    with pytest.raises(BitstreamError, match="truncated"):  # whole files only: no image from a cut
        decode_file(stream[: layered.read(stream).ends[1]])
    info = api.describe(stream[: layered.read(stream).ends[1]])
    assert info.entry.name == "progressive" and info.layer_count == 4 and len(info.layer_ends) == 2
    assert info.quality == 30 and info.channels == 3


def test_a_coder_fitted_on_another_cwic_model_is_refused():
    model, coder = _pair()
    other, _ = _pair(seed=3)
    with pytest.raises(ValueError, match="fitted on the codes of cwic model"):
        layered.LayeredCodec(coder, other)


def test_a_gray_image_decodes_to_a_gray_image_at_every_layer(codec):
    gray = synthetic_image(16, 24, channels=1, seed=2)
    data = codec.compress(gray)
    assert read_bitstream(data)[0].channels == 1
    for k, end in enumerate(layered.read(data).ends, 1):
        out = codec.decompress(data[:end])
        assert out.shape == (16, 24, 1) and np.array_equal(out, codec.reconstruct(gray, layers=k))


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A stand-in for the shipped folder: the tiny cwic at quality 50 and its coder at 30."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(checkpoints, "FOLDER", folder)
    model, coder = _pair()
    torch.save({"model": "cwic", "config": TINY, "state": model.state_dict()}, tmp_path / "cwic.pt")
    checkpoints.ship(tmp_path / "cwic.pt", quality=50)
    pc.save(coder, tmp_path / "coder.pt")
    checkpoints.ship(tmp_path / "coder.pt", quality=30)
    return folder


def _one_line_error(result, message, must_not_exist=None):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr
    if must_not_exist is not None:
        assert not must_not_exist.exists()


def test_the_cli_encodes_progressive_and_decodes_k_layers_or_a_cut_file(shipped, tmp_path):
    runner = CliRunner()
    png = tmp_path / "img.png"
    Image.fromarray(synthetic_image(24, 40, seed=4)).save(png)
    out = tmp_path / "img.bin"
    result = runner.invoke(app, ["encode", str(png), "--codec", "progressive", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "progressive quality 30" in result.stdout and "4 layers" in result.stdout
    data = out.read_bytes()
    ends = layered.read(data).ends
    assert ", ".join(map(str, ends)) in " ".join(result.stdout.split())
    assert runner.invoke(app, ["amortized", "list"]).stdout.splitlines()[-1] == "progressive 30"
    model, coder = _pair()
    codec = layered.LayeredCodec(coder, model)
    source = np.asarray(Image.open(png))
    for k, end in enumerate(ends, 1):
        by_option, by_cut = tmp_path / f"k{k}.png", tmp_path / f"cut{k}.png"
        cut = tmp_path / f"cut{k}.bin"
        cut.write_bytes(data[:end])
        args = ["decode", str(out), "--layers", str(k), "-o", str(by_option)]
        assert runner.invoke(app, args).exit_code == 0
        assert runner.invoke(app, ["decode", str(cut), "-o", str(by_cut)]).exit_code == 0
        expected = codec.reconstruct(source, layers=k)
        assert np.array_equal(np.asarray(Image.open(by_option)), expected)
        assert np.array_equal(np.asarray(Image.open(by_cut)), expected)
    info = runner.invoke(app, ["info", str(tmp_path / "cut2.bin")], env={"COLUMNS": "200"})
    assert info.exit_code == 0 and "2 of 4" in info.stdout and "progressive (id 5)" in info.stdout
    bad = tmp_path / "bad.bin"
    bad.write_bytes(data[: ends[1] + 5])
    _one_line_error(runner.invoke(app, ["decode", str(bad), "-o", str(tmp_path / "bad.png")]),
                    "inside layer 3", tmp_path / "bad.png")
    _one_line_error(runner.invoke(app, ["decode", str(out), "--layers", "0", "-o", str(tmp_path / "z.png")]),
                    "--layers must be >= 1", tmp_path / "z.png")
    _one_line_error(runner.invoke(app, ["decode", str(out), "--layers", "9", "-o", str(tmp_path / "z.png")]),
                    "9 were asked for", tmp_path / "z.png")
    _one_line_error(runner.invoke(app, ["encode", str(png), "--codec", "progressive", "--quality", "50",
                                        "-o", str(tmp_path / "q.bin")]),
                    "no shipped progressive checkpoint of quality 50; progressive ships qualities 30",
                    tmp_path / "q.bin")


def test_layers_on_a_stream_of_another_codec_is_one_line_and_exit_2(tmp_path):
    torch.manual_seed(0)
    model = cwic.build(TINY).eval()
    path = tmp_path / "cwic.bin"
    path.write_bytes(model.compress(synthetic_image(16, 16)))
    _one_line_error(CliRunner().invoke(app, ["decode", str(path), "--layers", "2", "-o",
                                             str(tmp_path / "x.png")]),
                    "--layers applies to progressive streams only", tmp_path / "x.png")
    golden = str(Path(__file__).parent / "golden" / "tiny.bin")
    _one_line_error(CliRunner().invoke(app, ["decode", golden, "--layers", "1", "-o",
                                             str(tmp_path / "y.png")]),
                    "--layers applies to progressive streams only", tmp_path / "y.png")
    with pytest.raises(ValueError, match="only progressive streams"):
        api.decode(path.read_bytes(), layers=1)
