"""Compiles the per-event hot path with Cython, as the Python it is (everything else: pyproject.toml).

The modules of `processor.runtime.HOT_PATH` run for every event (decode, normalize, admit, reduce,
encode, RocksDB). Compiled unchanged in Cython's pure-Python mode, with type hints left as hints
(annotation_typing off, so an int passed where a float is annotated stays an int), they behave as
their source does, faster: Python's per-call cost is what is left of the engine's time.

- A wheel (the production image, `pip install .`) holds each compiled module beside its source.
- An editable or in-place build (./dev's venv, `build_ext --inplace`) compiles nothing: a build
  beside an edited source would win the import and run stale code.
- A module that fails to compile (no C compiler) ships as its source; `processor.runtime.
  describe_build()`, the KCL child's first log line, names it, and the image's build refuses it.
- A module taken off HOT_PATH leaves no earlier build of itself in build/ to be packed again.
tests/server/test_compiled.py builds the image's wheel and runs the unit tier against it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Collection

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from processor.runtime import HOT_PATH, extension_modules  # noqa: E402 - the runtime reports on the same list


def extension(module: str) -> Extension:
    """A module's Extension; a package's own is its __init__ (Cython's name for it)."""
    path = module.replace(".", "/")
    if os.path.isdir(os.path.join(HERE, path)):
        return Extension(f"{module}.__init__", [f"{path}/__init__.py"], optional=True)
    return Extension(module, [f"{path}.py"], optional=True)


def remove_stale_builds(build_lib: str, modules: Collection[str]) -> list[str]:
    """Delete the compiled modules under `build_lib` that are not among `modules`: bdist_wheel packs
    all of build_lib, and an earlier build would shadow the source beside it."""
    removed = []
    for module, path in extension_modules(Path(build_lib)).items():
        if module not in modules:
            path.unlink()
            removed.append(module)
    return removed


class BuildHotPath(build_ext):
    """Cythonizes into build/ when build_ext runs (it knows then whether the build is editable)."""

    def run(self) -> None:
        if self.editable_mode or self.inplace:
            print("processor: editable or in-place build: the hot path stays pure Python", file=sys.stderr)
            return
        for module in remove_stale_builds(self.build_lib, HOT_PATH):
            print(f"processor: removed the earlier build of {module} (no longer compiled)", file=sys.stderr)
        from Cython.Build import cythonize

        translated = cythonize(self.extensions, build_dir=os.path.join("build", "cython"), quiet=True,
                               compiler_directives={"language_level": 3, "annotation_typing": False})
        for ext, into_c in zip(self.extensions, translated, strict=True):
            ext.sources = into_c.sources  # setuptools' own Extension objects keep its per-extension settings
        self.parallel = self.parallel or os.cpu_count()
        super().run()


if __name__ == "__main__":  # as setuptools runs it; tests import remove_stale_builds
    setup(ext_modules=[extension(module) for module in HOT_PATH], cmdclass={"build_ext": BuildHotPath})
