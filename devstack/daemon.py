"""The KCL MultiLangDaemon run locally against the emulator: the production properties with local
endpoints, names and timings, and a worker process started and stopped by PID. Against moto:
  * `-Daws.cborEnabled=false`: moto speaks JSON, the Java SDK defaults to CBOR for Kinesis;
  * the Kinesis client insists on HTTP/2, which the emulator serves as h2c;
  * dummy credentials through the default provider chain (`LocalEmulator.environment`).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Mapping

from processor.daemon import daemon_command, java, read_properties, render_properties

#: the production configuration, from the checkout this local stack runs in
PRODUCTION_PROPERTIES = Path(__file__).resolve().parent.parent / "kcl.properties"
LOCAL_JAVA_OPTIONS = ("-Daws.cborEnabled=false",)

#: shorter timings so local runs and tests move quickly; semantics unchanged
LOCAL_TIMINGS = {
    "failoverTimeMillis": "6000",
    "shardSyncIntervalMillis": "1000",
    "parentShardPollIntervalMillis": "1000",
    "idleTimeBetweenReadsInMillis": "200",
    "shutdownGraceMillis": "15000",
    "metricsLevel": "NONE",
}



def local_properties(*, endpoint: str, stream: str, application: str, executable: str,
                     extra: Mapping[str, str] | None = None) -> str:
    """The production properties with local endpoints, names and timings."""
    properties = read_properties(PRODUCTION_PROPERTIES)
    properties.update(LOCAL_TIMINGS)
    properties.update(streamName=stream, applicationName=application, executableName=executable,
                      kinesisEndpoint=endpoint, dynamoDBEndpoint=endpoint)
    properties.update(extra or {})
    return render_properties(properties, "generated from kcl.properties for the local emulator")


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
        command = [java(), *daemon_command(self.properties_path, LOCAL_JAVA_OPTIONS)[1:]]
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
