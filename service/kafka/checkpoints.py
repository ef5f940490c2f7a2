"""Per-run detector checkpoints on a compacted state topic, co-partitioned with the ingest topic.

A run's checkpoint is written to the state partition with the number of the
ingest partition its events came from, keyed by run id (a tombstone once the
run has ended). The owner of ingest partition *p* restores by reading state
partition *p* up to a fence: it first appends a fence record there and reads
until it has passed it, so every checkpoint acknowledged before the fence is
seen without trusting the broker's end offsets.
"""

from __future__ import annotations

import logging
import time
import uuid

from kafka import KafkaConsumer, TopicPartition

from runwatch.service.kafka.config import KafkaSettings
from runwatch.service.kafka.producer import OutRecord, ReliableProducer

log = logging.getLogger("runwatch.kafka")

FENCE_PREFIX = b"\x00fence/"
STATE_SCHEMA = [("runwatch-schema", b"runwatch.state"), ("content-type", b"application/json")]


class CheckpointStore:
    """Writes and reads run checkpoints on ``settings.state_topic``."""

    def __init__(self, settings: KafkaSettings, producer: ReliableProducer) -> None:
        self.settings = settings
        self.producer = producer
        self.member = uuid.uuid4().hex[:12]

    def record(self, partition: int, run_id: str, blob: bytes | None) -> OutRecord:
        """The checkpoint record of one run (``blob`` None: tombstone, the run has ended)."""
        return OutRecord(
            self.settings.state_topic, run_id.encode(), blob, list(STATE_SCHEMA) if blob is not None else [], partition
        )

    def load(self, partitions: list[int], timeout: float = 60.0) -> dict[int, dict[str, bytes]]:
        """Latest checkpoint of every live run of each ingest partition in ``partitions``."""
        if not partitions:
            return {}
        topic = self.settings.state_topic
        fences = self.producer.deliver(
            [OutRecord(topic, FENCE_PREFIX + f"{self.member}/{uuid.uuid4().hex}".encode(), None, [], p) for p in partitions]
        )
        stop_at = {TopicPartition(topic, p): meta.offset for p, meta in zip(partitions, fences)}
        found: dict[int, dict[str, bytes]] = {p: {} for p in partitions}
        reader = KafkaConsumer(
            **self.settings.common_options(),
            client_id=f"{self.settings.client_id}-state-reader",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        try:
            reader.assign(list(stop_at))
            reader.seek_to_beginning(*stop_at)
            pending = {tp for tp, fence in stop_at.items() if fence > 0}
            deadline = time.monotonic() + timeout
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"state partitions {sorted(tp.partition for tp in pending)} not read in {timeout:g} s")
                for tp, batch in reader.poll(timeout_ms=200).items():
                    runs = found[tp.partition]
                    for rec in batch:
                        if rec.offset >= stop_at[tp]:
                            break
                        if rec.key is None or rec.key.startswith(FENCE_PREFIX):
                            continue
                        run_id = rec.key.decode("utf-8", "replace")
                        if rec.value is None:
                            runs.pop(run_id, None)
                        else:
                            runs[run_id] = rec.value
                for tp in list(pending):
                    if reader.position(tp) >= stop_at[tp]:
                        pending.discard(tp)
        finally:
            reader.close()
        return found
