"""Ingest refusals a client should retry: answered with gRPC UNAVAILABLE, never as rejected items.

A rejection in an ``IngestAck`` is final (the SDK drops what was rejected); a
batch that could not be queued for a reason that may pass (Kafka not answering)
must be re-sent instead, so it ends the call with UNAVAILABLE, the status every
gRPC client retries, and the SDK re-sends every batch not yet acknowledged.
"""

from __future__ import annotations

import contextvars


class IngestUnavailable(Exception):
    """The batch was not queued; re-sending it later may succeed."""


class Lane:
    """The batches of one ingest call (a stream, or one unary call), in the order they arrived.

    The Kafka front refuses every later batch of a lane once one of its batches was
    lost: a re-send of the lost one must not land behind a later batch of its run
    (steps going back would be rejected).
    """

    __slots__ = ("epoch", "exhausted", "failed", "outstanding")

    def __init__(self) -> None:
        self.epoch = -1  # producer epoch of the lane's batches in flight
        self.outstanding = 0  # batches queued and not yet confirmed
        self.failed = ""  # why an earlier batch was lost ("" while none was)
        self.exhausted = ""  # the limit that refused an earlier batch (service/limits.py): later ones wait too


#: Set by the ingest servicer for each call; the tasks that call creates inherit it.
CURRENT_LANE: contextvars.ContextVar[Lane | None] = contextvars.ContextVar("runwatch_ingest_lane", default=None)
