"""Kafka settings (``--kafka-*`` flags, ``RUNWATCH_KAFKA_*`` variables) and the client options they make."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
#: Longest wait for one broker request; shorter when the delivery timeout leaves less after the linger.
MAX_REQUEST_TIMEOUT_MS = 15_000
#: Shortest request timeout worth running with (a request to a loaded broker can take this long).
MIN_REQUEST_TIMEOUT_MS = 1_000


# Connection and security settings as each client names them: (ours, kafka-python, librdkafka).
# Only settings with a value are passed.
_CONNECTION_KEYS = (
    ("reconnect_backoff_ms", "reconnect_backoff_ms", "reconnect.backoff.ms"),
    ("reconnect_backoff_max_ms", "reconnect_backoff_max_ms", "reconnect.backoff.max.ms"),
    ("security_protocol", "security_protocol", "security.protocol"),
    ("sasl_mechanism", "sasl_mechanism", "sasl.mechanism"),
    ("sasl_username", "sasl_plain_username", "sasl.username"),
    ("sasl_password", "sasl_plain_password", "sasl.password"),
    ("ssl_cafile", "ssl_cafile", "ssl.ca.location"),
    ("ssl_certfile", "ssl_certfile", "ssl.certificate.location"),
    ("ssl_keyfile", "ssl_keyfile", "ssl.key.location"),
)


class KafkaSettings(BaseSettings):
    """How runwatch talks to a Kafka-protocol cluster; off while ``bootstrap`` is empty.

    Examples
    --------
    >>> k = KafkaSettings(bootstrap="127.0.0.1:9092", acks="1")
    >>> k.enabled, k.producer_options()["acks"], k.ingest_topic
    (True, 1, 'runwatch.events')
    """

    model_config = SettingsConfigDict(env_prefix="RUNWATCH_KAFKA_", extra="forbid", validate_assignment=True)

    bootstrap: str = Field(default="", description="HOST:PORT[,HOST:PORT...] of the cluster; empty = no Kafka")
    ingest_topic: str = Field(default="runwatch.events", description="log events in (key = run id)")
    anomaly_topic: str = Field(default="runwatch.anomalies", description="anomalies out (key = run id)")
    dlq_topic: str = Field(default="runwatch.events.dlq", description="undecodable or invalid ingest messages")
    state_topic: str = Field(default="runwatch.state", description="compacted per-run detector checkpoints")
    logs_topic: str = Field(
        default="", description="raw text log lines in (key = run id, value = the line; e.g. runwatch.logs); off when empty"
    )
    group: str = Field(default="runwatch-detector", description="consumer group of the detector instances")
    client_id: str = Field(default="runwatch", description="client id prefix seen by the brokers")
    anomaly_format: Literal["json", "protobuf"] = Field(default="json", description="encoding of anomaly records")
    consume: bool = Field(default=True, description="run the detector consumer (off = gRPC-to-Kafka front only)")
    create_topics: bool = Field(default=True, description="create missing topics at start")
    partitions: int = Field(default=12, ge=1, description="partitions of topics runwatch creates")
    replication_factor: int = Field(default=1, ge=1, description="replication of topics runwatch creates")

    acks: Literal["all", "1", "0"] = Field(default="all", description="producer acks: all, 1 or 0")
    linger_ms: int = Field(default=5, ge=0, description="producer linger before sending a batch")
    batch_size: int = Field(default=256 << 10, ge=1024, description="producer batch size in bytes")
    compression: str = Field(default="none", description="producer compression: none, gzip, snappy, lz4, zstd")
    max_message_bytes: int = Field(default=1 << 20, ge=16 << 10, description="largest record runwatch produces")
    idempotence: bool = Field(default=True, description="idempotent producer (recreated after fatal errors)")
    delivery_timeout_ms: int = Field(default=30_000, ge=1000, description="give up on one send after this long")

    session_timeout_ms: int = Field(default=10_000, ge=1000, description="consumer group session timeout")
    heartbeat_interval_ms: int = Field(default=3_000, ge=100, description="consumer heartbeat interval")
    max_poll_records: int = Field(default=500, ge=1, description="most records one read of the consumer's queue returns (a slice may take several)")
    commit_interval_ms: int = Field(
        default=200, ge=0, description="longest detection cycle: anomalies, checkpoints, then offsets, this often"
    )
    max_partition_fetch_bytes: int = Field(default=4 << 20, ge=1 << 16, description="consumer fetch size per partition")
    reconnect_backoff_ms: int = Field(default=100, ge=1, description="first reconnect delay")
    reconnect_backoff_max_ms: int = Field(default=5_000, ge=1, description="longest reconnect delay (bounded)")
    start_timeout_s: float = Field(default=30.0, gt=0, description="give up at start if no broker answers")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str = Field(default="", description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER")
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    @field_validator("compression")
    @classmethod
    def _known_compression(cls, value: str) -> str:
        if value not in COMPRESSIONS:
            raise ValueError(f"unknown compression {value!r}; use one of {', '.join(COMPRESSIONS)}")
        return value

    @model_validator(mode="after")
    def _delivery_outlasts_linger_and_request(self) -> KafkaSettings:
        # kafka-python refuses (at start, exit 2) a delivery timeout under linger + request timeout.
        least = self.linger_ms + MIN_REQUEST_TIMEOUT_MS
        if self.delivery_timeout_ms < least:
            raise ValueError(
                f"delivery_timeout_ms ({self.delivery_timeout_ms}) must be at least linger_ms ({self.linger_ms}) "
                f"+ {MIN_REQUEST_TIMEOUT_MS} ms for one broker request = {least}: raise delivery_timeout_ms "
                "or lower linger_ms"
            )
        return self

    @property
    def request_timeout_ms(self) -> int:
        """Timeout of one broker request: what the delivery timeout leaves after the linger, at most 15 s."""
        return min(self.delivery_timeout_ms - self.linger_ms, MAX_REQUEST_TIMEOUT_MS)

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap.strip())

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap.split(",") if s.strip()]

    def _connection(self, client: int) -> dict:
        """The set connection and security settings under ``client``'s names (1 kafka-python, 2 librdkafka)."""
        opts: dict = {}
        for names in _CONNECTION_KEYS:
            value = getattr(self, names[0])
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value:
                opts[names[client]] = value
        return opts

    def common_options(self) -> dict:
        """Connection and security options shared by producers, consumers and the admin client."""
        return {"bootstrap_servers": self.servers, **self._connection(1)}

    def producer_options(self, role: str = "producer") -> dict:
        return {
            **self.common_options(),
            "client_id": f"{self.client_id}-{role}",
            "acks": "all" if self.acks == "all" else int(self.acks),
            "linger_ms": self.linger_ms,
            "batch_size": self.batch_size,
            "compression_type": None if self.compression == "none" else self.compression,
            "max_request_size": self.max_message_bytes + (64 << 10),
            "enable_idempotence": self.idempotence and self.acks == "all",
            "delivery_timeout_ms": self.delivery_timeout_ms,
            "request_timeout_ms": self.request_timeout_ms,
        }

    def consumer_config(self) -> dict:
        """librdkafka configuration of the detector's group consumer (confluent-kafka).

        The detector reads with librdkafka rather than kafka-python: its threads fetch
        and check records in C while the event loop detects, so fetching overlaps
        detection instead of taking turns with it under the GIL.
        """
        return {
            "bootstrap.servers": ",".join(self.servers),
            # Group and instance in the name librdkafka logs under (``<client.id>#consumer-1``) and brokers see.
            "client.id": f"{self.client_id}-detector.{self.group}.{socket.gethostname()}-{os.getpid()}",
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": self.heartbeat_interval_ms,
            "fetch.wait.max.ms": 100,
            "max.partition.fetch.bytes": self.max_partition_fetch_bytes,
            # Prefetch (one queue for all partitions) is bounded: some fetches ahead of detection. When it
            # is full librdkafka waits fetch.queue.backoff.ms before fetching again (1 s by default: an idle
            # second per full queue).
            "queued.max.messages.kbytes": 16 * self.max_partition_fetch_bytes // 1024,
            "fetch.queue.backoff.ms": 20,
            **self._connection(2),
        }
