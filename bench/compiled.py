"""The image's wheel, built here, and its engine side by side with the checkout's sources.

The production image installs the project as a wheel, which compiles the per-event hot path with
Cython (setup.py); ./dev's editable install runs the sources. `compiled_checkout` builds that wheel
from what deploy/Dockerfile's build stage copies and lays it out as a checkout whose processor/ is
the installed one. The benchmark runs this processor from it, as production does, and compares its
engine with the sources' (`compare`); tests/server/test_compiled.py runs the unit tier against it.
"""
from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from bench.side_by_side import run_side_by_side
from processor.runtime import extension_modules

ROOT = Path(__file__).resolve().parents[1]
#: the checkout's working files: never part of a build or of the compiled checkout
NOT_SOURCES = {".git", ".venv", "build", "processor", ".hypothesis", ".pytest_cache", "out", ".state"}


def image_build_context(into: Path) -> Path:
    """Copy what the Dockerfile's build stage copies (`COPY src... dest`, before the runtime stage)."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    build_stage = dockerfile.split("\nFROM ", 2)[1]
    into.mkdir(parents=True)
    for line in re.findall(r"^COPY (?!--from)(.+)$", build_stage, re.MULTILINE):
        *sources, _destination = line.split()
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, into / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, into / source)
    return into


def installed_wheel(workdir: Path) -> Path:
    """Build the image's wheel from its build context and unpack it (what `pip install` puts in place)."""
    context = image_build_context(workdir / "context")
    wheels = workdir / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels),
                            str(context)], capture_output=True, text=True, timeout=900)
    if built.returncode != 0:
        raise RuntimeError(f"building the image's wheel failed:\n{built.stdout[-2000:]}{built.stderr[-3000:]}")
    [wheel] = wheels.glob("*.whl")
    installed = workdir / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    return installed


def compiled_checkout(workdir: Path) -> Path:
    """The checkout as it is, but with the image's installed package in place of processor/."""
    installed = installed_wheel(workdir)
    checkout = workdir / "checkout"
    checkout.mkdir()
    shutil.copytree(installed / "processor", checkout / "processor")
    for entry in ROOT.iterdir():
        if entry.name not in NOT_SOURCES and not entry.name.endswith(".egg-info"):
            (checkout / entry.name).symlink_to(entry)
    return checkout


def compare(events: Path, rounds: int, checkout: Path) -> dict[str, Any]:
    """The dry replay's engine, the sources against a `compiled_checkout`'s modules, side by side."""
    compiled = extension_modules(checkout)
    if not compiled:
        return {"compiled_modules": 0, "skipped": "the wheel was built without a C compiler: nothing compiled"}
    sides = run_side_by_side({"source": (str(ROOT), str(events), rounds),
                              "compiled": (str(checkout), str(events), rounds)}, shards=1)
    source, built = (statistics.median(sides[name]["rates"]) for name in ("source", "compiled"))
    return {"compiled_modules": len(compiled), "events": sides["source"]["report"]["events"], "rounds": rounds,
            "source_events_per_cpu_s": round(source), "compiled_events_per_cpu_s": round(built),
            "ratio": round(built / source, 2), "reports_equal": sides["source"]["report"] == sides["compiled"]["report"],
            "source_peak_rss_mb": round(sides["source"]["peak_rss_mb"], 1),
            "compiled_peak_rss_mb": round(sides["compiled"]["peak_rss_mb"], 1)}
