"""The compiled hot path (setup.py) is the same program as its source.

The image's build stage copies what deploy/Dockerfile names and installs it as a wheel, which
compiles the hot path; here the same files build the same wheel (bench/compiled.py). Every
hot-path module must come out compiled (one that failed to compile would ship silently as Python:
`optional=True`), and the whole unit tier, with its differential and property tests, must pass
against the compiled modules as it does against the sources. ./dev's editable install stays source.
"""
from __future__ import annotations

import re
import subprocess
import sys

from bench.compiled import ROOT, compare, compiled_checkout, compiled_in
from devstack.storm import StormShape, write_storm
from processor.runtime import HOT_PATH


#: the unit tier in one process whose `processor` is the compiled one, or it fails before a test runs
UNIT_TIER_COMPILED = r"""
import sys
import processor.engine
assert processor.engine.__file__.endswith(".so"), f"not compiled: {processor.engine.__file__}"
import pytest
sys.exit(pytest.main(["tests/unit", "-q", "-p", "no:cacheprovider"]))
"""


def test_the_image_wheel_compiles_the_hot_path_and_the_unit_tier_passes_against_it(tmp_path):
    checkout = compiled_checkout(tmp_path / "build")
    assert compiled_in(checkout) == set(HOT_PATH)
    assert compiled_in(ROOT) == set()  # the checkout itself (./dev's editable install) runs its sources

    result = subprocess.run([sys.executable, "-c", UNIT_TIER_COMPILED], cwd=checkout,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert re.search(r"\d+ passed", result.stdout)

    # the benchmark's comparison: a storm replayed by both, with equal reports
    events = tmp_path / "storm.jsonl"
    write_storm(str(events), StormShape(conversations=300))
    found = compare(events, rounds=1, checkout=checkout)
    assert found["compiled_modules"] == len(HOT_PATH) and found["reports_equal"] is True
    assert found["events"] > 3_000 and found["source_events_per_cpu_s"] > 0 and found["compiled_events_per_cpu_s"] > 0
    assert found["source_peak_rss_mb"] > 20 and found["compiled_peak_rss_mb"] > 20

