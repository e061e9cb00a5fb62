"""Builds the native kernels at install time (see coolchic/nativebuild.py).

The C++ sources are plain shared libraries loaded with ctypes, not Python extension
modules: each is compiled, in every CPU variant of the architecture, by
`coolchic.nativebuild.build` into coolchic/_native/. A failed build does not fail the
install: it says why, and coolchic then runs its numpy and torch paths.
"""

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _nativebuild():
    """coolchic/nativebuild.py, loaded by path: the package itself needs torch, which a
    build environment does not have."""
    path = HERE / "coolchic" / "nativebuild.py"
    spec = importlib.util.spec_from_file_location("_coolchic_nativebuild", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


class BuildNative(build_ext):
    """build_ext for ctypes libraries: our compiler call, our file names, no failure."""

    def run(self):
        nb = _nativebuild()
        for source, flags in nb.SOURCES.items():
            for variant in nb.variants():
                name = nb.library_name(Path(source), variant)
                out = (HERE if self.inplace else Path(self.build_lib)) / "coolchic" / "_native" / name
                try:
                    nb.build(HERE / "coolchic" / source, flags, variant, out)
                    print(f"coolchic: built {out.name}")
                except RuntimeError as error:
                    print(f"coolchic: WARNING: {name} not built ({error}); coolchic will run its "
                          "slower numpy and torch paths", file=sys.stderr)
                if not self.inplace and out.exists() and getattr(self, "editable_mode", False):
                    dest = HERE / "coolchic" / "_native" / name
                    dest.parent.mkdir(exist_ok=True)
                    os.replace(out, dest)

    def get_outputs(self):
        return []

    def get_source_files(self):
        return [f"coolchic/{s}" for s in _nativebuild().SOURCES]


# one placeholder extension, so that setuptools runs build_ext (and marks the wheel as
# platform-specific); BuildNative builds the real libraries
setup(ext_modules=[Extension("coolchic._native.placeholder", sources=[])],
      cmdclass={"build_ext": BuildNative})
