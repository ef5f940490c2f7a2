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
#: Present only on a dead letter that does not carry the whole original record: what was cut,
#: "value" (the value is the original's first bytes) or "value,headers,key" (only the provenance
#: headers are kept; the original is at ORIGIN_TOPIC/ORIGIN_PARTITION/ORIGIN_OFFSET).
TRUNCATED = "runwatch-dlq-truncated"
ORIGINAL_SIZE = "runwatch-dlq-original-size"  # bytes of the original value (with TRUNCATED)
MAX_VIOLATIONS = 100
# Room left for the record's framing (lengths, timestamps, batch header) under the size limit.
_FRAMING_BYTES = 1024
_REFERENCE_KEY_BYTES = 1024


def _size(headers: list[tuple[str, bytes]]) -> int:
    return sum(len(k.encode()) + len(v or b"") for k, v in headers)


def single_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n``): a header value is one line, whatever a reason quotes.

    >>> single_line("bad\\nvalue\\t'x'")
    "bad\\\\nvalue\\\\t'x'"
    """
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def dead_letter(
    dlq_topic: str,
    record,
    kind: str,
    violations: list[tuple[str, str]],
    accepted: int = 0,
    max_bytes: int | None = None,
) -> OutRecord:
    """The DLQ record for ``record`` (an ingest record: topic, partition, offset, timestamp, key, value, headers).

    Key, value and the original headers are kept byte for byte so the record can
    be fixed and produced again; runwatch's headers come after them. With
    ``max_bytes`` (the largest record the producer sends), a dead letter that
    would be larger keeps only the first bytes of the value and says so in
    :data:`TRUNCATED` and :data:`ORIGINAL_SIZE`; its ``fallback``, sent if the
    broker still refuses it, keeps nothing of the original but where it is.
    """
    first = f"{violations[0][0]}: {violations[0][1]}" if violations else kind
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    reason = f"{first}{more}" + (f"; {accepted} other item(s) of this record were accepted" if accepted else "")
    reason = single_line(reason)
    ours = [
        (REASON, reason.encode()),
        (ERROR_KIND, kind.encode()),
        (VIOLATIONS, json.dumps([{"field": f, "reason": r} for f, r in violations[:MAX_VIOLATIONS]]).encode()),
        (ORIGIN_TOPIC, record.topic.encode()),
        (ORIGIN_PARTITION, str(record.partition).encode()),
        (ORIGIN_OFFSET, str(record.offset).encode()),
        (ORIGIN_TIMESTAMP, str(record.timestamp).encode()),
        (DEAD_AT, f"{time.time():.3f}".encode()),
    ]
    original_headers = [(k, v if v is not None else b"") for k, v in record.headers or []]
    value = record.value
    whole = OutRecord(dlq_topic, record.key, value, [*original_headers, *ours])
    value_size = len(value or b"")
    if max_bytes is None:
        return whole
    # Without the original, the reference: enough to find it in the ingest topic (while retained).
    reference = OutRecord(
        dlq_topic,
        (record.key or b"")[:_REFERENCE_KEY_BYTES] or None,
        b"",
        [*ours, (TRUNCATED, b"value,headers,key"), (ORIGINAL_SIZE, str(value_size).encode())],
    )
    if len(record.key or b"") + value_size + _size(whole.headers) + _FRAMING_BYTES <= max_bytes:
        whole.fallback = reference
        return whole
    cut = [(TRUNCATED, b"value"), (ORIGINAL_SIZE, str(value_size).encode())]
    room = max_bytes - _FRAMING_BYTES - len(record.key or b"") - _size(original_headers) - _size(ours) - _size(cut)
    if room < 0:
        return reference
    return OutRecord(dlq_topic, record.key, (value or b"")[:room], [*original_headers, *ours, *cut], fallback=reference)
