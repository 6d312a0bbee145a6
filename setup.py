"""Compiles the per-event hot path with Cython, as the Python it is (everything else: pyproject.toml).

The modules below run for every event (decode, normalize, admit, reduce, encode, RocksDB). Compiled
unchanged in Cython's pure-Python mode, with type hints left as hints (annotation_typing off, so an
int passed where a float is annotated stays an int), they behave as their source does, at ~1.2x its
events per CPU-second: Python's per-call cost is what is left of the engine's time.

- A wheel (the production image, `pip install .`) holds each compiled module beside its source.
- An editable install (./dev's venv) never compiles: a build beside an edited source would win the
  import and run stale code, so the checkout stays pure Python and nothing is written into it.
- Where no C compiler is found the wheel is pure Python; `processor.runtime.compiled_modules()` and
  the KCL child's first log line say which it is.
tests/server/test_compiled.py builds the wheel and runs the unit tier against it.
"""
from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

#: the modules compiled: each runs at least once per event
HOT_PATH = (
    "processor/adapters/__init__.py",
    "processor/adapters/genesys.py",
    "processor/analytics/sessions.py",
    "processor/codec.py",
    "processor/decode.py",
    "processor/engine.py",
    "processor/limits.py",
    "processor/model.py",
    "processor/reduce.py",
    "processor/replay.py",
    "processor/store.py",
)


def module_name(path: str) -> str:
    """processor/adapters/__init__.py -> processor.adapters.__init__ (Cython's name for a package's own)."""
    return path.removesuffix(".py").replace("/", ".")


class BuildHotPath(build_ext):
    """Cythonizes at build time, into build/ (never beside the sources), and not at all when editable."""

    def run(self) -> None:
        if self.editable_mode:
            return
        from Cython.Build import cythonize

        translated = cythonize(self.extensions, build_dir=os.path.join("build", "cython"), quiet=True,
                               compiler_directives={"language_level": 3, "annotation_typing": False})
        for extension, into_c in zip(self.extensions, translated, strict=True):
            extension.sources = into_c.sources
        self.parallel = self.parallel or os.cpu_count()
        super().run()


if __name__ == "__main__":  # as setuptools runs it; tests/server/test_compiled.py imports HOT_PATH
    setup(
        # optional: a module that fails to compile (no compiler) ships as its Python source instead
        ext_modules=[Extension(module_name(path), [path], optional=True) for path in HOT_PATH],
        cmdclass={"build_ext": BuildHotPath},
    )
