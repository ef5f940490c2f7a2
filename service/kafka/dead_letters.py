"""Dead letters: an ingest record that could not be used, kept as it came, with why and where from."""

from __future__ import annotations

import json
import time

from runwatch.service.kafka.producer import OutRecord

REASON = "runwatch-dlq-reason"
ERROR_KIND = "runwatch-dlq-error"  # undecodable | rejected | partial
VIOLATIONS = "runwatch-dlq-violations"  # JSON list of {"field", "reason"}
ORIGIN_TOPIC = "runwatch-dlq-topic"
ORIGIN_PARTITION = "runwatch-dlq-partition"
ORIGIN_OFFSET = "runwatch-dlq-offset"
ORIGIN_TIMESTAMP = "runwatch-dlq-timestamp"
DEAD_AT = "runwatch-dlq-time"
MAX_VIOLATIONS = 100


def dead_letter(
    dlq_topic: str, record, kind: str, violations: list[tuple[str, str]], accepted: int = 0
) -> OutRecord:
    """The DLQ record for ``record`` (an ingest record: topic, partition, offset, timestamp, key, value, headers).

    Key, value and the original headers are kept byte for byte so the record can
    be fixed and produced again; runwatch's headers come after them.
    """
    first = f"{violations[0][0]}: {violations[0][1]}" if violations else kind
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    reason = f"{first}{more}" + (f"; {accepted} other item(s) of this record were accepted" if accepted else "")
    headers = [
        *(record.headers or []),
        (REASON, reason.encode()),
        (ERROR_KIND, kind.encode()),
        (VIOLATIONS, json.dumps([{"field": f, "reason": r} for f, r in violations[:MAX_VIOLATIONS]]).encode()),
        (ORIGIN_TOPIC, record.topic.encode()),
        (ORIGIN_PARTITION, str(record.partition).encode()),
        (ORIGIN_OFFSET, str(record.offset).encode()),
        (ORIGIN_TIMESTAMP, str(record.timestamp).encode()),
        (DEAD_AT, f"{time.time():.3f}".encode()),
    ]
    return OutRecord(dlq_topic, record.key, record.value, headers)
