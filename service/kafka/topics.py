"""Topic setup at start: create what is missing, check that the state topic mirrors the ingest topic."""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from runwatch.service.kafka.config import KafkaSettings

log = logging.getLogger("runwatch.kafka")
TOPIC_ALREADY_EXISTS = 36


def partition_count(settings: KafkaSettings, topic: str, timeout: float = 10.0) -> int:
    """Partitions of ``topic`` (0 if it does not exist)."""
    consumer = KafkaConsumer(**settings.common_options(), client_id=f"{settings.client_id}-meta", enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout
        while True:
            found = consumer.partitions_for_topic(topic)
            if found or time.monotonic() > deadline:
                return len(found or ())
            if topic not in consumer.topics():
                return 0
            time.sleep(0.2)
    finally:
        consumer.close()


def _create(admin: KafkaAdminClient, topics: list[NewTopic]) -> None:
    if not topics:
        return
    try:
        reply = admin.create_topics(topics)
    except TopicAlreadyExistsError:
        return
    for t in (reply or {}).get("topics", []) if isinstance(reply, dict) else []:
        code = t.get("error_code", 0)
        if code not in (0, TOPIC_ALREADY_EXISTS):
            raise KafkaError(f"cannot create topic {t.get('name')}: error {code} {t.get('error_message') or ''}")


def ensure_topics(settings: KafkaSettings) -> int:
    """Create missing topics (when ``create_topics``) and return the ingest topic's partition count.

    The state topic gets as many partitions as the ingest topic and compaction: checkpoints of
    the runs of ingest partition *p* are written to state partition *p*, so a new owner of *p*
    reads only that partition back. The logs topic (when set) has exactly as many partitions as
    the ingest topic: its partition *p* goes to the owner of ingest partition *p*.
    """
    s = settings
    ingest = partition_count(s, s.ingest_topic, timeout=1.0)
    if s.create_topics:
        admin = KafkaAdminClient(**s.common_options(), client_id=f"{s.client_id}-admin")
        try:
            wanted = ingest or s.partitions
            missing = []
            if not ingest:
                missing.append(NewTopic(s.ingest_topic, wanted, s.replication_factor))
            for name in (s.anomaly_topic, s.dlq_topic):
                if not partition_count(s, name, timeout=1.0):
                    missing.append(NewTopic(name, wanted, s.replication_factor))
            if not partition_count(s, s.state_topic, timeout=1.0):
                missing.append(
                    NewTopic(s.state_topic, wanted, s.replication_factor, topic_configs={"cleanup.policy": "compact"})
                )
            if s.logs_topic and not partition_count(s, s.logs_topic, timeout=1.0):
                missing.append(NewTopic(s.logs_topic, wanted, s.replication_factor))
            _create(admin, missing)
            if missing:
                log.info("created topics %s", ", ".join(t.name for t in missing))
        finally:
            admin.close()
        ingest = partition_count(s, s.ingest_topic)
    if not ingest:
        raise KafkaError(f"ingest topic {s.ingest_topic!r} does not exist (create it, or allow --kafka-create-topics)")
    state = partition_count(s, s.state_topic)
    if state < ingest:
        raise KafkaError(
            f"state topic {s.state_topic!r} has {state} partitions, fewer than the {ingest} of {s.ingest_topic!r}: "
            "give it at least as many (cleanup.policy=compact)"
        )
    if s.logs_topic:
        logs = partition_count(s, s.logs_topic)
        if logs != ingest:
            raise KafkaError(
                f"logs topic {s.logs_topic!r} has {logs} partitions, the ingest topic {s.ingest_topic!r} {ingest}: "
                "give it as many (its partition p is read by the owner of ingest partition p)"
                if logs
                else f"logs topic {s.logs_topic!r} does not exist (create it with {ingest} partitions, "
                "or allow --kafka-create-topics)"
            )
    return ingest
