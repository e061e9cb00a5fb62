"""Loading the native kernels (coolchic/nativebuild.py): the installed library of the
CPU's variant, every variant decoding the same image bit for bit, stale or missing
libraries refused with a reason and a fall-back, and the development build into a
private cache only."""

import ctypes
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import coolchic.decoder.native as native_decoder
import coolchic.model.fused as fused
import coolchic.model.native as native
import coolchic.nativebuild as nativebuild
from coolchic.config import DecoderConfig
from coolchic.decode import decode
from coolchic.model.coolchic import CoolChic
from coolchic.presets import get_preset
from coolchic.train import overfit, training_kernels

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "kodim23.bin"


def _clear_handles():
    native._load.cache_clear()
    fused.native_kernels.cache_clear()
    native_decoder._load.cache_clear()
    nativebuild.cpu_flags.cache_clear()


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No installed library and a cold private cache, both in tmp_path; the process-wide
    handles reloaded afterwards."""
    monkeypatch.setattr(nativebuild, "INSTALL_DIR", tmp_path / "installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("COOLCHIC_NATIVE", raising=False)
    _clear_handles()
    yield tmp_path
    _clear_handles()


def _installed_or_skip(source: Path, variant: nativebuild.Variant) -> Path:
    path = nativebuild.INSTALL_DIR / nativebuild.library_name(source, variant)
    if not path.exists():
        pytest.skip(f"{path.name} is not installed (no compiler at install time)")
    return path


def test_the_installed_libraries_report_the_sha_of_their_source():
    for source in (native.SOURCE, native_decoder.SOURCE):
        path = _installed_or_skip(source, nativebuild.BASELINE)
        sha = ctypes.CDLL(str(path)).coolchic_source_sha
        sha.restype = ctypes.c_char_p
        assert sha().decode() == nativebuild.source_sha(source)


def test_every_cpu_variant_of_the_native_decoder_gives_the_numpy_image_bit_for_bit(monkeypatch):
    reference = decode(SAMPLE, kernel="numpy")
    runnable = nativebuild.runnable_variants()
    for variant in nativebuild.variants():
        _installed_or_skip(native_decoder.SOURCE, variant)
        if variant not in runnable:
            continue  # this CPU lacks its instructions
        flags = variant.cpu_flags
        monkeypatch.setattr(nativebuild, "runnable_variants", lambda flags=flags: [
            v for v in nativebuild.variants() if v.cpu_flags == flags])
        native_decoder._load.cache_clear()
        try:
            assert np.array_equal(decode(SAMPLE, kernel="native"), reference), variant.name
        finally:
            native_decoder._load.cache_clear()


def test_a_cpu_without_avx2_gets_the_baseline_library(monkeypatch):
    monkeypatch.setattr(nativebuild, "cpu_flags", lambda: frozenset({"sse2"}))
    assert nativebuild.runnable_variants() == [nativebuild.BASELINE]


def test_a_library_built_from_another_version_of_the_source_is_not_loaded(tmp_path):
    installed = _installed_or_skip(native.SOURCE, nativebuild.BASELINE)
    edited = tmp_path / native.SOURCE.name
    edited.write_text(native.SOURCE.read_text() + "\n// an edit\n")
    shutil.copy(installed, tmp_path / installed.name)
    lib = nativebuild.load(edited, flags=native.FLAGS, version_symbol="coolchic_kernels_version",
                           version=native.VERSION, install_dir=tmp_path)
    assert isinstance(lib, str) and "another version" in lib


def test_without_an_installed_library_training_falls_back_to_the_torch_kernels_and_says_so(fresh):
    assert native.library() is None and fused.native_kernels() is None
    assert "pip install" in native.unavailable_reason()
    image = torch.rand(1, 3, 9, 11)
    model = CoolChic(DecoderConfig(), 9, 11, 3)
    with pytest.warns(UserWarning, match="native training kernels unavailable.*bitstream differs"):
        kernels = training_kernels("on", model, 10, "cpu")
    assert kernels.native is None
    assert training_kernels("off", model, 10, "cpu") is fused.EAGER
    with pytest.warns(UserWarning):
        trained = overfit(image, DecoderConfig(), get_preset("fast").scaled_to(3), 1e-3)
    assert all(torch.isfinite(p).all() for p in trained.parameters())


def test_without_an_installed_decoder_decoding_warns_once_and_gives_the_same_image(fresh, capfd):
    nativebuild.warn_fallback.cache_clear()
    reference = decode(SAMPLE, kernel="numpy")
    assert np.array_equal(decode(SAMPLE), reference)
    assert np.array_equal(decode(SAMPLE), reference)
    err = capfd.readouterr().err
    assert err.count("native decoder unavailable") == 1 and len(err.strip().splitlines()) == 1
    nativebuild.warn_fallback.cache_clear()


def test_a_failed_development_build_says_why_and_leaves_no_library(fresh, monkeypatch):
    monkeypatch.setenv("COOLCHIC_NATIVE", "build")
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    assert native.library() is None
    assert "failed" in native.unavailable_reason()
    assert not list(fresh.rglob("*.so"))


def test_the_development_build_goes_once_into_a_private_cache_and_is_reused(fresh, monkeypatch):
    if nativebuild.compiler() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("COOLCHIC_NATIVE", "build")
    assert native_decoder.kernels() is not None, native_decoder.unavailable_reason()
    built = list((fresh / "cache").rglob("decoder_kernels_*.so"))
    assert len(built) == 1
    assert (built[0].parent.stat().st_mode & 0o777) == 0o700
    stamp = built[0].stat().st_mtime_ns
    native_decoder._load.cache_clear()
    assert native_decoder.kernels() is not None
    assert built[0].stat().st_mtime_ns == stamp


def test_a_build_cache_that_others_may_write_is_refused(fresh, monkeypatch):
    monkeypatch.setenv("COOLCHIC_NATIVE", "build")
    cache = fresh / "cache" / "coolchic"
    cache.mkdir(parents=True)
    os.chmod(cache, 0o777)
    assert native_decoder.kernels() is None
    assert "others may write" in native_decoder.unavailable_reason()
    assert not list(cache.iterdir())


def test_coolchic_native_0_disables_the_native_kernels_without_a_warning(monkeypatch, capfd):
    monkeypatch.setenv("COOLCHIC_NATIVE", "0")
    _clear_handles()
    nativebuild.warn_fallback.cache_clear()
    try:
        assert native_decoder.kernels() is None and native.library() is None
        assert decode(SAMPLE).shape[2] == 3
        assert "unavailable" not in capfd.readouterr().err
    finally:
        _clear_handles()
        nativebuild.warn_fallback.cache_clear()


def test_every_native_source_is_listed_with_the_flags_its_loader_uses():
    listed = {nativebuild.PACKAGE / name: flags for name, flags in nativebuild.SOURCES.items()}
    assert listed == {native.SOURCE: native.FLAGS, native_decoder.SOURCE: native_decoder.FLAGS}
    assert set(nativebuild.PACKAGE.rglob("*.cpp")) == set(listed)


def test_the_development_build_replaces_a_stale_cached_library_in_the_same_process(fresh, monkeypatch):
    if nativebuild.compiler() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("COOLCHIC_NATIVE", "build")
    source = fresh / "decoder_kernels.cpp"  # a copy of the decoder's source, then an edit of it
    source.write_text(native_decoder.SOURCE.read_text())
    load = dict(flags=native_decoder.FLAGS, version_symbol="coolchic_decoder_kernels_version",
                version=native_decoder.VERSION)
    first = nativebuild.load(source, **load)
    assert isinstance(first, ctypes.CDLL), first
    source.write_text(source.read_text() + "\n// an edit\n")  # the cached library is now stale
    second = nativebuild.load(source, **load)
    assert isinstance(second, ctypes.CDLL), second
    sha = second.coolchic_source_sha
    sha.restype = ctypes.c_char_p
    assert sha().decode() == nativebuild.source_sha(source)
    assert len(list((fresh / "cache").rglob("decoder_kernels_*.so"))) == 2  # one per source version
