"""Evaluation runs with a fake codec: the real measurement path, resumability after an
interrupt or a kill -9, and identical rows from the in-process and process-pool backends."""

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coolchic.evaluate.errors import EvaluationError
from coolchic.evaluate.evaluation import EvaluationSpec, evaluate
from coolchic.evaluate.jobs import Encoded, Job, run_job
from coolchic.evaluate.runner import BackendOptions
from coolchic.evaluate.store import ROW_FIELDS, RunStore, read_tsv
from tests.conftest import synthetic_image

SIDE = 176  # MS-SSIM needs a shorter side above 160 pixels
LAMBDAS = (1e-3, 1e-2)


@dataclass(frozen=True)
class FakeCodec:
    """JPEG at a quality derived from lambda; logs each encode call to a file (one line per
    call with the process id, so calls are counted across processes); raises KeyboardInterrupt at call
    number ``interrupt_at`` to simulate Ctrl-C; sleeps ``delay`` seconds per encode."""

    log: str
    interrupt_at: int | None = None
    delay: float = 0.0
    name: str = "coolchic-fake"
    kind: str = "lambda"
    keep_bitstreams: bool = True

    def encode(self, pixels, bit_depth, setting):
        with open(self.log, "a") as log:
            log.write(f"{setting} {os.getpid()}\n")
        if self.interrupt_at is not None and calls(self.log) >= self.interrupt_at:
            raise KeyboardInterrupt
        time.sleep(self.delay)
        quality = int(np.clip(25 * -math.log10(setting) - 40, 5, 95))
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        return Encoded(buffer.getvalue(), mac_per_pixel=123.0)

    def decode(self, path, height, width):
        return np.asarray(Image.open(path).convert("RGB"))

    def preset(self):
        return "fake"

    def revision(self):
        return "test"


def calls(log) -> int:
    return len(Path(log).read_text().splitlines()) if Path(log).exists() else 0


def make_images(folder: Path) -> Path:
    """Three synthetic RGB images img0..img2 of (SIDE + 10) x (SIDE + 20) pixels."""
    folder.mkdir()
    for index in range(3):
        Image.fromarray(synthetic_image(SIDE + 10, SIDE + 20, seed=index)).save(
            folder / f"img{index}.png")
    return folder


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path / "images")


def spec_for(folder, out, **changes):
    spec = EvaluationSpec(images_dir=folder, out=out, lambdas=LAMBDAS, preset="fake",
                          baselines=("jpeg420",), crop=SIDE, anchors=("jpeg420",))
    return replace(spec, **changes)


def factory(codec):
    return lambda spec: codec


def without_timings(rows):
    return [replace(r, encode_s=0.0, decode_s=0.0) for r in rows]


def test_run_job_measures_the_decoded_file(images, tmp_path):
    codec = FakeCodec(str(tmp_path / "log"))
    outcome = run_job(Job(codec.name, "img0", str(images / "img0.png"), SIDE, 1e-3), codec)
    row = outcome.row
    assert (row.width, row.height, row.lmbda, row.quality) == (SIDE, SIDE, 1e-3, None)
    assert row.bytes == len(outcome.bitstream) and row.bpp == 8 * row.bytes / SIDE**2
    decoded = np.asarray(Image.open(io.BytesIO(outcome.bitstream)).convert("RGB"))
    source = np.asarray(Image.open(images / "img0.png"))[5 : 5 + SIDE, 10 : 10 + SIDE]
    assert row.mse == pytest.approx(np.mean((decoded.astype(float) - source) ** 2))
    assert row.psnr_db == pytest.approx(10 * math.log10(255**2 / row.mse))
    assert 0.5 < row.ms_ssim < 1 and row.mac_per_pixel == 123.0
    assert (row.preset, row.revision) == ("fake", "test")


def test_a_run_writes_the_tsv_summary_bdrate_table_and_plot(images, tmp_path):
    codec = FakeCodec(str(tmp_path / "log"))
    result = evaluate(spec_for(images, tmp_path / "run"), codec_factory=factory(codec),
                      command="coolchic evaluate test")
    assert {p.name for p in result.files} == {"per_image.tsv", "summary.tsv", "bdrate.md",
                                              "rd.png"}
    text = (tmp_path / "run" / "per_image.tsv").read_text()
    assert "# invocation 1:" in text and "coolchic evaluate test" in text and "machine:" in text
    rows = read_tsv(tmp_path / "run" / "per_image.tsv")
    assert len(rows) == 3 * (len(LAMBDAS) + 8)
    assert {r.codec for r in rows} == {"coolchic-fake", "jpeg420"}
    assert all(r.quality is None for r in rows if r.codec == "coolchic-fake")
    assert (tmp_path / "run" / "rd.png").read_bytes()[:4] == b"\x89PNG"
    assert "| coolchic-fake |" in (tmp_path / "run" / "bdrate.md").read_text()
    bitstreams = sorted((tmp_path / "run" / "bitstreams" / "coolchic-fake").iterdir())
    assert len(bitstreams) == 3 * len(LAMBDAS)


def test_an_interrupted_run_resumes_without_redoing_or_trusting_partial_files(images, tmp_path):
    out, log = tmp_path / "run", str(tmp_path / "log")
    spec = spec_for(images, out, baselines=())
    with pytest.raises(KeyboardInterrupt):
        evaluate(spec, codec_factory=factory(FakeCodec(log, interrupt_at=4)))
    store = RunStore(out)
    finished = store.rows()
    assert len(finished) == 3  # jobs 1-3 saved; job 4 interrupted inside encode
    assert not (out / "per_image.tsv").exists()
    # What a kill -9 in the middle of a write leaves: a temporary file, never a final name.
    row_dir = out / "rows" / "coolchic-fake"
    leftover = row_dir / ".img1@0.01.json.0123456789ab.tmp"
    leftover.write_text('{"codec": "coolchic-fake", "ima')
    # A damaged final file (not something atomic writes produce) must not be trusted either.
    damaged = store.row_path("coolchic-fake", finished[0].image, finished[0].setting)
    damaged.write_text("{}")

    before = calls(log)
    evaluate(spec, codec_factory=factory(FakeCodec(log)))
    assert calls(log) - before == 3 * len(LAMBDAS) - 2  # all but the two intact rows
    assert not leftover.exists()
    rows = store.rows()
    assert len(rows) == 3 * len(LAMBDAS)
    untouched = [r for r in finished[1:]]
    assert all(r in rows for r in untouched)  # same timings: not recomputed
    assert len(read_tsv(out / "per_image.tsv")) == len(rows)
    assert len(json.loads((out / "run.json").read_text())["invocations"]) == 2


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_where_it_stopped(images, tmp_path):
    out, log = tmp_path / "run", str(tmp_path / "log")
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from tests.test_evaluate_runner import FakeCodec, spec_for, factory
from coolchic.evaluate.evaluation import evaluate
from pathlib import Path
evaluate(spec_for(Path({str(images)!r}), Path({str(out)!r}), baselines=()),
         codec_factory=factory(FakeCodec({log!r}, delay=0.3)))
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(RunStore(out).rows()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    saved = RunStore(out).rows()
    assert 2 <= len(saved) < 3 * len(LAMBDAS)
    before = calls(log)
    evaluate(spec_for(images, out, baselines=()), codec_factory=factory(FakeCodec(log)))
    assert calls(log) - before == 3 * len(LAMBDAS) - len(saved)
    assert all(r in RunStore(out).rows() for r in saved)


def test_a_run_folder_of_other_crops_is_refused(images, tmp_path):
    codec = FakeCodec(str(tmp_path / "log"))
    evaluate(spec_for(images, tmp_path / "run", baselines=(), lambdas=(1e-2,)),
             codec_factory=factory(codec))
    with pytest.raises(EvaluationError, match="another --out"):
        evaluate(spec_for(images, tmp_path / "run", crop=SIDE - 8),
                 codec_factory=factory(codec))


@pytest.mark.slow
def test_a_process_pool_gives_the_same_rows_as_one_process(images, tmp_path):
    log = str(tmp_path / "log")
    spec = spec_for(images, tmp_path / "one", images=("img0", "img1"))
    evaluate(spec, codec_factory=factory(FakeCodec(log)))
    evaluate(replace(spec, out=tmp_path / "pool"), BackendOptions(jobs=2),
             codec_factory=factory(FakeCodec(log)))
    one, pool = RunStore(tmp_path / "one").rows(), RunStore(tmp_path / "pool").rows()
    assert without_timings(one) == without_timings(pool) and len(one) == 2 * (2 + 8)


def test_rows_have_exactly_the_documented_columns(images, tmp_path):
    evaluate(spec_for(images, tmp_path / "run", baselines=(), images=("img2",)),
             codec_factory=factory(FakeCodec(str(tmp_path / "log"))))
    header = [ln for ln in (tmp_path / "run" / "per_image.tsv").read_text().splitlines()
              if not ln.startswith("#")][0].split("\t")
    assert header == [("lambda" if f == "lmbda" else f) for f in ROW_FIELDS]
    assert header[:4] == ["codec", "image", "width", "height"]


def test_a_run_folder_of_another_recipe_is_refused_not_mixed(tmp_path, monkeypatch):
    from coolchic import config
    from coolchic.evaluate.provenance import recipe_fingerprint

    first = recipe_fingerprint("slow", None, None)
    assert first == recipe_fingerprint("slow", None, None)  # stable
    assert first != recipe_fingerprint("slow", 500, None)  # the phases scaled
    assert first != recipe_fingerprint("fast", None, None)
    assert first != recipe_fingerprint("slow", None, "best")
    # a Phase field added later, at its default, leaves the fingerprint as it was before it
    # existed (runs begun then still resume); another value changes it
    assert first == "df129173b981"  # the recipe of coolchic 0.5.0 and 0.5 (format 5.0)
    from dataclasses import replace

    from coolchic import presets
    slow = presets.get_preset("slow")
    gaussian = replace(slow, phases=(replace(slow.phases[0], noise="gaussian"), *slow.phases[1:]))
    monkeypatch.setitem(presets.PRESETS, "slow", gaussian)
    assert recipe_fingerprint("slow", None, None) != first
    monkeypatch.setitem(presets.PRESETS, "slow", slow)
    monkeypatch.setattr(config, "SYNTH_FROM", config.SYNTH_FROM * 2)  # auto's rule changed
    changed = recipe_fingerprint("slow", None, None)
    assert changed != first

    store = RunStore(tmp_path / "run")
    store.open_run(identity={"crop": None, "dataset": "kodak", "recipe": first}, invocation={})
    store.open_run(identity={"crop": None, "dataset": "kodak", "recipe": first}, invocation={})  # resumes
    with pytest.raises(EvaluationError, match="another coolchic recipe"):
        store.open_run(identity={"crop": None, "dataset": "kodak", "recipe": changed}, invocation={})
    old = RunStore(tmp_path / "old")  # a folder from before recipes were recorded
    old.open_run(identity={"crop": None, "dataset": "kodak"}, invocation={})
    with pytest.raises(EvaluationError, match="unrecorded"):
        old.open_run(identity={"crop": None, "dataset": "kodak", "recipe": first}, invocation={})
    assert len(json.loads((tmp_path / "run" / "run.json").read_text())["invocations"]) == 2


def test_publishing_copies_the_runs_bitstreams_and_removes_any_other(tmp_path):
    from coolchic.evaluate.reproduce import publish_bitstreams
    from coolchic.evaluate.store import Row

    store = RunStore(tmp_path / "run")
    store.open_run(identity={"crop": None, "dataset": "kodak"}, invocation={})
    for image, data in (("kodim01", b"one"), ("kodim04", b"four")):
        store.save(Row("coolchic-slow", image, 8, 8, 0.02, None, len(data), 1.0, 30.0, 1.0, 0.9,
                       1.0, 0.1, 600.0, "slow", "test"), data)
    store.save(Row("hevc444", "kodim01", 8, 8, None, 30, 3, 1.0, 30.0, 1.0, 0.9, 1.0, 0.1, None,
                   "x", "x"), b"hev")
    folder = tmp_path / "bitstreams"
    folder.mkdir()
    (folder / "kodim23@0.02.bin").write_bytes(b"an older run's")
    (folder / "kodim01@0.02.bin").write_bytes(b"stale")
    written = publish_bitstreams(store, "coolchic-slow", folder)
    assert sorted(p.name for p in folder.iterdir()) == ["kodim01@0.02.bin", "kodim04@0.02.bin"]
    assert sorted(written) == sorted(folder.iterdir())
    assert (folder / "kodim01@0.02.bin").read_bytes() == b"one"


@pytest.mark.parametrize("head", ["ref: refs/heads/topic", "ref: refs/heads/packed", "detached"])
def test_the_revision_is_read_in_a_linked_worktree_too(tmp_path, monkeypatch, head):
    from coolchic.evaluate import provenance

    repo, tree = tmp_path / "repo", tmp_path / "tree"
    linked = repo / ".git" / "worktrees" / "tree"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    linked.mkdir(parents=True)
    (repo / ".git" / "refs" / "heads" / "topic").write_text("a" * 40 + "\n")
    (repo / ".git" / "packed-refs").write_text("# pack-refs\n" + "b" * 40 + " refs/heads/packed\n")
    (linked / "commondir").write_text("../..\n")
    (linked / "HEAD").write_text(("c" * 40 if head == "detached" else head) + "\n")
    (tree / "coolchic" / "evaluate").mkdir(parents=True)
    (tree / ".git").write_text(f"gitdir: {linked}\n")
    monkeypatch.setattr(provenance, "__file__", str(tree / "coolchic" / "evaluate" / "provenance.py"))
    expected = {"ref: refs/heads/topic": "a", "ref: refs/heads/packed": "b", "detached": "c"}[head]
    assert provenance.code_revision().endswith("+g" + expected * 12)


def test_the_classical_codecs_jobs_come_before_ours(images, tmp_path):
    from coolchic.evaluate.evaluation import plan

    ours = FakeCodec(str(tmp_path / "log"))
    jobs, _, _ = plan(spec_for(images, tmp_path / "run"), codec_factory=factory(ours))
    kinds = [job.codec == ours.name for job in jobs]
    assert any(kinds) and not all(kinds)
    assert kinds == sorted(kinds)  # every jpeg420 job, then every one of ours


def test_per_image_bd_rates_cover_the_images_where_our_curve_is_complete():
    from coolchic.evaluate.bdrate import bd_rate
    from coolchic.evaluate.report import per_image_bd_markdown
    from coolchic.evaluate.store import Row

    def row(codec, image, setting, bpp, psnr):
        ours = codec.startswith("coolchic")
        return Row(codec=codec, image=image, width=8, height=8, lmbda=setting if ours else None,
                   quality=None if ours else setting, bytes=int(bpp * 8), bpp=bpp, psnr_db=psnr,
                   mse=1.0, ms_ssim=0.9, encode_s=1.0, decode_s=0.1, mac_per_pixel=None,
                   preset="p", revision="r")

    anchor = [(0.2, 28.0), (0.5, 31.0), (1.0, 34.0), (2.0, 37.0)]
    ours = [(0.18, 28.3), (0.45, 31.4), (0.9, 34.2)]
    rows = [row("hevc444", im, q, b, p) for im in ("a", "b") for q, (b, p) in enumerate(anchor)]
    rows += [row("coolchic-x", "a", lm, b, p) for lm, (b, p) in zip((0.02, 0.004, 0.001), ours)]
    rows += [row("coolchic-x", "b", lm, b, p) for lm, (b, p) in zip((0.02, 0.004), ours)]  # b: 2 of 3
    text = per_image_bd_markdown(rows, ["coolchic-x"], ["hevc444"])
    expected = bd_rate([b for b, _ in anchor], [p for _, p in anchor],
                       [b for b, _ in ours], [p for _, p in ours]).value
    assert f"| coolchic-x | a | {expected:+.2f} % |" in text
    assert "| coolchic-x | b |" not in text
    anchors_only = [r for r in rows if r.codec == "hevc444"]
    assert per_image_bd_markdown(anchors_only, ["coolchic-x"], ["hevc444"]) is None
