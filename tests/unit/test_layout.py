"""What ships is `processor/` alone: it never imports the local stack or the benchmark, but where it
offers them to a development checkout (guarded, named as absent otherwise); and settings written
by `Settings.to_toml` read back as the same settings (one schema for both directions)."""
from __future__ import annotations

import pytest

import ast
from pathlib import Path

from processor.config import Settings, load_settings

PROCESSOR = Path(__file__).resolve().parents[2] / "processor"
HARNESS = ("devstack", "bench", "tests")


def harness_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, module, guarded by `except ImportError`) for every import of the harness in `path`."""
    tree = ast.parse(path.read_text())
    guarded = {id(node) for handler in ast.walk(tree) if isinstance(handler, ast.Try)
               if any(isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in handler.handlers)
               for statement in handler.body for node in ast.walk(statement)}
    found = []
    for node in ast.walk(tree):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [(node.lineno, name, id(node) in guarded) for name in names if name.split(".")[0] in HARNESS]
    return found


def test_the_shipped_package_imports_the_harness_only_behind_a_guard():
    unguarded = {f"{path.relative_to(PROCESSOR.parent)}:{line} {module}"
                 for path in PROCESSOR.rglob("*.py") for line, module, guarded in harness_imports(path) if not guarded}
    assert unguarded == set()


def test_settings_written_as_toml_read_back_the_same(tmp_path):
    settings = Settings(adapter={"kind": "generic", "conversation_id": "$.a", "event_time": "$.t",
                                 "state": {"status": "$.s", "odd name": "$.x"}},
                        flush_seconds=2.5, endpoint="http://127.0.0.1:4566", inspect_show=("status",),
                        interval_minutes=15, service_level_seconds=30.0,
                        service_level_seconds_by_queue={"9f3c1a52-0d4e-4c8b-a1f2-7e6d5c4b3a29": 10.0, "odd queue": 45.0})
    path = tmp_path / "settings.toml"
    path.write_text(settings.to_toml())
    assert load_settings(str(path), environ={}) == settings
    assert load_settings(None, environ={}) == Settings()


def test_analytics_settings_are_checked_and_read_from_the_environment(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("[analytics]\ninterval_minutes = 7\n")
    with pytest.raises(ValueError, match="interval_minutes must be one of 5, 10, 15, 30, 60"):
        load_settings(str(path), environ={})
    path.write_text("[analytics.service_level_seconds_by_queue]\nq1 = -3\n")
    with pytest.raises(ValueError, match="q1 must be a finite number of at least 0"):
        load_settings(str(path), environ={})
    settings = load_settings(None, environ={"PROCESSOR_INTERVAL_MINUTES": "15", "PROCESSOR_METRICS_RETENTION_DAYS": "6",
                                            "PROCESSOR_SERVICE_LEVEL_SECONDS": "30"})
    assert (settings.interval_minutes, settings.metrics_retention_days, settings.service_level_seconds) == (15, 6.0, 30.0)
