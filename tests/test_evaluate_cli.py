"""The evaluation commands: bad input gives exit 2 and one line, no traceback; the
reproduce protocol, published data and plots."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from coolchic.evaluate.cli import evaluate_command, parse_baselines, reproduce_command
from coolchic.evaluate.errors import EvaluationError
from coolchic.evaluate.plots import rd_figure, save_rd_plot
from coolchic.evaluate.published import (
    classical_reference_curves,
    paper_lambdas,
    paper_per_image,
    paper_points,
    published_curves,
    read_reference_csv,
)
from coolchic.evaluate.report import CurvePoint, bd_matrix, bd_rate_rows_markdown, bdrate_markdown, curves
from coolchic.evaluate.reproduce import find_kodak, protocol_for
from coolchic.evaluate.store import Row
from tests.conftest import synthetic_image

app = typer.Typer()
app.command("evaluate")(evaluate_command)
app.command("reproduce-paper")(reproduce_command)
runner = CliRunner()


def _clean_failure(result, *words):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = result.stderr.strip()
    assert line and "\n" not in line
    for word in words:
        assert word in line


@pytest.fixture
def folder(tmp_path):
    Image.fromarray(synthetic_image(16, 16)).save(tmp_path / "a.png")
    return tmp_path


@pytest.mark.parametrize("args, words", [
    (["--lmbda", "0.001,-1"], ["lambda", "> 0"]),
    (["--lmbda", "0,0.01"], ["lambda"]),
    (["--lmbda", "abc"], ["abc"]),
    (["--preset", "turbo"], ["turbo", "fast"]),
    (["--baselines", "bpg"], ["bpg", "jpeg420"]),
    (["--backend", "spark"], ["spark", "ray"]),
    (["--images", "nope"], ["nope"]),
    (["--jobs", "0"], ["--jobs"]),
    (["--iterations", "0"], ["--iterations"]),
    (["--arch", "huge"], ["huge"]),
    (["--device", "tpu"], ["tpu"]),
])
def test_bad_evaluate_options_exit_2_with_one_line(folder, args, words):
    out = folder / "run"
    result = runner.invoke(app, ["evaluate", str(folder), "--out", str(out), *args])
    _clean_failure(result, *words)
    assert not (out / "per_image.tsv").exists()


def test_a_missing_or_empty_image_folder_exits_2(tmp_path):
    _clean_failure(runner.invoke(app, ["evaluate", str(tmp_path / "nope"), "-o",
                                       str(tmp_path / "run")]), "not found")
    _clean_failure(runner.invoke(app, ["evaluate", str(tmp_path), "-o",
                                       str(tmp_path / "run")]), "no images")


def test_reproduce_without_kodak_says_where_to_put_the_images(tmp_path):
    result = runner.invoke(app, ["reproduce-paper", "--kodak-dir", str(tmp_path / "none")])
    _clean_failure(result, "kodim01.png", "KODAK_DIR")
    _clean_failure(runner.invoke(app, ["reproduce-paper", "--preset", "nope"]), "PRESET")


def test_reproduce_paper_runs_as_a_command_of_the_installed_script():
    script = Path(sys.executable).with_name("coolchic")
    if not script.exists():
        pytest.skip("the coolchic script is not installed beside this Python")
    done = subprocess.run([str(script), "reproduce-paper", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "--kodak-dir" in done.stdout


def test_the_quick_protocol_crops_and_paper_protocol_uses_whole_images():
    assert protocol_for("quick").crop == 256 and protocol_for("quick").preset == "medium"
    assert protocol_for("paper").crop is None
    assert protocol_for("medium").preset == "medium"


def test_find_kodak_takes_the_given_folder_or_explains(tmp_path):
    assert find_kodak(tmp_path) == tmp_path
    with pytest.raises(EvaluationError, match="kodim01"):
        find_kodak(tmp_path / "missing")


def test_baseline_lists_parse():
    assert parse_baselines("none") == () and "hevc444" in parse_baselines("all")
    assert parse_baselines("jpeg420, webp") == ("jpeg420", "webp")


def test_the_paper_lambdas_and_points_come_from_the_published_data():
    assert paper_lambdas() == (1e-4, 5e-4, 4e-3, 2e-2)
    first = paper_points()[0]
    assert (first.bpp, first.psnr_db) == (1.7493, 40.7759)
    assert len(paper_per_image()) == 24 * 4


def test_per_image_releases_agree_with_their_published_means():
    for version in ("v3.4", "v5.0"):
        points = paper_per_image(version)
        means = {float(r["lmbda"]): r for r in read_reference_csv("ALL_image_avg.csv")
                 if r["version"] == version and r["dataset"] == "image-kodak"}
        assert len(points) == 24 * len(means) == 120
        for lmbda, row in means.items():
            ours = [v for (_, lm), v in points.items() if lm == lmbda]
            assert np.mean([b for b, _ in ours]) == pytest.approx(float(row["mean_rate_bpp"]), abs=1e-4)
            assert np.mean([p for _, p in ours]) == pytest.approx(float(row["mean_psnr_db"]), abs=1e-3)
    with pytest.raises(ValueError, match="v2.0"):
        paper_per_image("v2.0")


def test_every_published_curve_has_a_citation_and_increasing_rates():
    found = published_curves(("coolchic", "learned")) + classical_reference_curves()
    keys = {c.key for c in found}
    assert {"coolchic-v1.0", "bmshj2018-hyperprior", "mbt2018", "cheng2020-anchor",
            "li2020-ccn", "mentzer2018", "kodak-hevc444"} <= keys
    for curve in found:
        assert curve.citation and list(curve.bpp) == sorted(curve.bpp)
        assert curve.psnr_db is not None or curve.ms_ssim is not None


def _row(codec, image, setting, bpp, psnr):
    mse = 255**2 / 10 ** (psnr / 10)
    return Row(codec=codec, image=image, width=8, height=8, lmbda=setting, quality=None,
               bytes=int(bpp * 8), bpp=bpp, psnr_db=psnr, mse=mse, ms_ssim=0.9,
               encode_s=1.0, decode_s=0.1, mac_per_pixel=None, preset="p", revision="r")


def test_curve_points_average_psnr_both_ways():
    rows = [_row("c", "a", 1.0, 0.5, 30.0), _row("c", "b", 1.0, 1.5, 40.0)]
    (point,) = curves(rows)["c"]
    assert (point.n_images, point.bpp, point.psnr_db) == (2, 1.0, 35.0)
    expected = 10 * math.log10(255**2 / ((10**-3 + 10**-4) / 2 * 255**2))
    assert point.psnr_of_mean_mse_db == pytest.approx(expected)
    assert point.psnr_of_mean_mse_db < point.psnr_db


def test_bd_rate_rows_table_uses_complete_points_only():
    rows = []
    for codec, shift in (("anchor", 0.0), ("ours", 1.0)):
        for image in ("a", "b"):
            rows += [_row(codec, image, s, b, p + shift)
                     for s, b, p in ((1, 0.2, 28.0), (2, 0.5, 32.0), (3, 1.0, 36.0))]
    text = bd_rate_rows_markdown(rows, ["ours"], ["anchor"], 2, label="codec")
    header, rule, line = text.splitlines()
    assert header == "| codec | anchor |" and rule == "| --- | ---: |"
    value = float(line.split("|")[2].strip().rstrip(" %"))
    assert value < 0  # 1 dB better at every rate: fewer bits
    # a point missing one image leaves the curve: one point fewer, another number
    partial = [r for r in rows if not (r.codec == "ours" and r.image == "b" and r.lmbda == 3)]
    other = bd_rate_rows_markdown(partial, ["ours"], ["anchor"], 2).splitlines()[2]
    assert other != line


def test_bd_matrix_and_markdown_list_every_codec_against_the_anchor(tmp_path):
    def curve(shift):
        return [CurvePoint(s, 1, b, p + shift, p + shift, 0.9, p / 3 + shift, 0, 0, None)
                for s, b, p in ((1, 0.2, 28.0), (2, 0.5, 32.0), (3, 1.0, 36.0))]

    flat = [CurvePoint(s, 1, b, 30.0, 30.0, 0.9, 10.0, 0, 0, None)
            for s, b in ((1, 0.2), (2, 0.5))]
    entries = bd_matrix({"anchor": curve(0.0), "better": curve(1.0), "flat": flat},
                        ["anchor"])
    by_codec = {e.codec: e for e in entries}
    assert by_codec["anchor"].bd_rate_psnr_pct == 0.0
    assert by_codec["better"].bd_rate_psnr_pct < 0 and by_codec["better"].bd_psnr_db > 0
    assert by_codec["better"].bd_rate_ms_ssim_pct < 0
    assert math.isnan(by_codec["flat"].bd_rate_psnr_pct)  # saturated: no crash, no number
    text = bdrate_markdown(entries, title="t")
    assert "## Anchor: anchor" in text and "| better |" in text
    figure = rd_figure({"coolchic-x": curve(1.0), "anchor": curve(0.0)}, published_curves(),
                       title="test")
    path = save_rd_plot(tmp_path / "rd.png", figure)
    assert Path(path).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_with_baselines_only_prints_bd_rates_and_writes_the_run(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(2):
        Image.fromarray(synthetic_image(24, 40, seed=index)).save(images / f"i{index}.png")
    out = tmp_path / "run"
    result = runner.invoke(app, ["evaluate", str(images), "-o", str(out), "--only-baselines",
                                 "--baselines", "jpeg420,jpeg444"])
    assert result.exit_code == 0, result.output
    assert "BD-rate against jpeg420" in result.stdout and "jpeg444" in result.stdout
    assert "wrote" in result.stdout and (out / "rd.png").exists()
    # Images below 161 pixels have no 5-scale MS-SSIM: NaN in the TSV, "-" in the table.
    assert "\tnan\t" in (out / "per_image.tsv").read_text()


def test_reproduce_writes_the_run_and_the_comparison_with_the_paper(tmp_path):
    from coolchic.evaluate.reproduce import reproduce
    from tests.test_evaluate_runner import FakeCodec, make_images

    kodak = make_images(tmp_path / "kodak")
    fake = FakeCodec(str(tmp_path / "log"), name="coolchic-quick")
    result = reproduce("quick", kodak_dir=kodak, out=tmp_path / "run", baselines=("jpeg420",),
                       codec_factory=lambda spec: fake)
    names = {p.name for p in result.files}
    assert {"per_image.tsv", "summary.tsv", "bdrate.md", "rd.png", "comparison.md"} <= names
    text = (tmp_path / "run" / "comparison.md").read_text()
    assert "| 0.0001 |" in text and "40.776" in text  # the paper's lambda and PSNR
    assert "BD-rate of ours against the paper's curve" in text
    lambdas = {float(line.split()[0]) for line in (tmp_path / "log").read_text().splitlines()}
    assert lambdas == set(paper_lambdas())


def test_the_paper_grade_protocol_publishes_its_bitstreams_and_compares_with_cool_chic(
        tmp_path, monkeypatch):
    from dataclasses import replace as swap

    from PIL import Image

    import coolchic.evaluate.reproduce as reproduce_module
    from tests.test_evaluate_runner import SIDE, FakeCodec, synthetic_image

    kodak = tmp_path / "kodak"
    kodak.mkdir()
    for seed, name in enumerate(("kodim01", "kodim04", "kodim05")):
        Image.fromarray(synthetic_image(SIDE + 10, SIDE + 20, seed=seed)).save(kodak / f"{name}.png")
    protocol = swap(reproduce_module.PROTOCOLS["paper-grade"], images=("kodim01", "kodim04"),
                    lambdas=(4e-3, 2e-2), baselines=("jpeg420",), out=tmp_path / "run",
                    publish=tmp_path / "bitstreams")
    monkeypatch.setitem(reproduce_module.PROTOCOLS, "paper-grade", protocol)
    fake = FakeCodec(str(tmp_path / "log"), name="coolchic-slow")
    reproduce_module.reproduce("paper-grade", kodak_dir=kodak, baselines=("jpeg420", "webp"),
                               codec_factory=lambda spec: fake)
    published = sorted(p.name for p in (tmp_path / "bitstreams").iterdir())
    assert published == ["kodim01@0.004.bin", "kodim01@0.02.bin", "kodim04@0.004.bin", "kodim04@0.02.bin"]
    assert (tmp_path / "bitstreams" / "kodim04@0.02.bin").read_bytes() == (
        tmp_path / "run" / "bitstreams" / "coolchic-slow" / "kodim04@0.02.bin").read_bytes()
    text = (tmp_path / "run" / "releases.md").read_text()
    assert "Cool-chic v3.4" in text and "over 4 points" in text
    # Cool-chic 3.4's published kodim01 at 0.02: 0.1211 bpp (its per-image results)
    assert "| kodim01 | 0.02 |" in text
    assert not (tmp_path / "run" / "rows" / "webp").exists()  # only the protocol's anchors
    # a run stopped part-way: --report-only runs nothing and publishes what is finished
    for path in (tmp_path / "bitstreams").iterdir():
        path.unlink()
    (tmp_path / "run" / "rows" / "coolchic-slow" / "kodim04@0.02.json").unlink()
    calls = (tmp_path / "log").read_text()
    reproduce_module.reproduce("paper-grade", kodak_dir=kodak, baselines=("jpeg420",),
                               codec_factory=lambda spec: fake, report_only=True)
    assert (tmp_path / "log").read_text() == calls
    assert len(list((tmp_path / "bitstreams").iterdir())) == 3
    assert "over 3 points" in (tmp_path / "run" / "releases.md").read_text()
