"""A bounded on-disk spool of serialized ``EventBatch`` messages.

The :class:`~runwatch.client.sender.BatchSender` writes every batch it forms
here before sending it and deletes it once the server acknowledged it, so
telemetry survives the service being down for a whole run, a service restart
in the middle of a run, and a crash or restart of the training process
itself: a later client that uses the same spool folder sends what an earlier
one left behind.

Layout
------
``<spool_dir>/<owner>/`` belongs to one sender (``owner`` is
``<host>-<pid>-<random>``) and holds a ``lock`` file, held with ``flock``
while the sender lives, and segment files ``seg-<n>.rws``. A segment starts
with the 8-byte magic ``RWSPOOL1`` followed by records::

    uint32 payload length | uint32 item count | uint32 flags | uint32 crc32(payload) | payload

(little-endian; ``flags`` bit 0: the batch carries a ``RunStart`` or
``RunEnd``). ``seg-<n>.ack`` holds one little-endian uint64: how many leading
records of the segment were acknowledged. A segment whose records are all
acknowledged is deleted.

A new spool adopts the folders of dead owners (their ``lock`` is free): their
segments are renamed into its own folder ahead of anything it writes, so
their batches are sent first. On reading, a record that is cut short or fails
its checksum (a crash in the middle of a write) ends its segment, with one
warning naming the file and byte offset.

Bounds
------
``max_bytes`` bounds the bytes of records not yet acknowledged. When a new
batch would exceed it, ``on_full`` decides: ``"drop_oldest"`` (default)
drops whole segments, oldest first; ``"drop_newest"`` refuses the new batch.
Either way ``RunStart`` and ``RunEnd`` items of a dropped batch are kept (a
small record replaces the dropped ones, in place), so later events of the run
are still accepted and its end is still recorded. Dropped items are counted.
Segments are at most ``max_bytes / 8`` (4 KiB to 4 MiB), so disk use stays
within a segment or two of the bound, plus batches in flight.

Writes are not ``fsync``-ed unless ``fsync=True``: a record reaches the page
cache, which survives a crash of the process but not of the machine.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import re
import socket
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from runwatch.v1 import runs_pb2

__all__ = ["Spool", "SpoolRecord", "default_spool_dir"]

logger = logging.getLogger("runwatch.client")

MAGIC = b"RWSPOOL1"
_HEADER = struct.Struct("<IIII")
_ACK = struct.Struct("<Q")
FLAG_CONTROL = 1
FLAG_RESCUED = 2  # a record of RunStart/RunEnd items kept from dropped batches
_SEGMENT_RE = re.compile(r"seg-(\d{10})\.rws")
_MIN_SEGMENT = 4 << 10
_MAX_SEGMENT = 4 << 20
_CACHE_RECORDS = 256

# record states
SPOOLED, LOADED, ACKED, DROPPED = 0, 1, 2, 3

try:  # POSIX only; elsewhere folders are never adopted (no way to tell a dead owner)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def default_spool_dir() -> Path:
    """``$RUNWATCH_SPOOL_DIR``, else ``$XDG_CACHE_HOME/runwatch/spool`` (``~/.cache/runwatch/spool``)."""
    env = os.environ.get("RUNWATCH_SPOOL_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "runwatch" / "spool"


@dataclass(eq=False)
class SpoolRecord:
    """One batch in the spool."""

    segment: _Segment
    index: int
    offset: int
    length: int  # payload bytes
    items: int
    control: bool
    first_id: int = 0  # sender item id of the batch's first item (0: from an earlier process)
    state: int = SPOOLED
    rescued: bool = False  # holds RunStart/RunEnd items kept from dropped batches

    @property
    def size(self) -> int:
        return _HEADER.size + self.length

    @property
    def live(self) -> bool:
        return self.state in (SPOOLED, LOADED)

    def key(self) -> tuple[int, int]:
        return (self.segment.number, self.index)


@dataclass(eq=False)
class _Segment:
    number: int
    path: Path
    size: int = len(MAGIC)
    records: list[SpoolRecord] = field(default_factory=list)
    done_prefix: int = 0  # leading records acked or dropped
    fd: int | None = None  # open for appending while this is the active segment

    @property
    def ack_path(self) -> Path:
        return self.path.with_suffix(".ack")

    def live_records(self) -> list[SpoolRecord]:
        return [r for r in self.records if r.live]


class Spool:
    """FIFO of serialized batches in a folder, bounded in bytes.

    Parameters
    ----------
    directory
        Parent folder; this spool uses (and locks) a sub-folder of its own.
    max_bytes
        Most bytes of unacknowledged records.
    on_full
        ``"drop_oldest"`` or ``"drop_newest"``.
    adopt
        Take over the folders that dead owners left in ``directory``.
    fsync
        ``fsync`` every record (slower; survives a machine crash).

    Examples
    --------
    >>> import tempfile
    >>> s = Spool(tempfile.mkdtemp(), max_bytes=1 << 20)
    >>> batch = runs_pb2.EventBatch(events=[runs_pb2.MetricEvent(run_id="r", step=0, metrics={"loss": 1.0})])
    >>> _ = s.append(batch.SerializeToString(), items=1, control=False, first_id=1)
    >>> rec = s.take_next()
    >>> s.load(rec).events[0].metrics["loss"], s.pending_items
    (1.0, 1)
    >>> s.ack(rec); s.pending_items
    0
    >>> s.close()
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 256 << 20,
        on_full: str = "drop_oldest",
        adopt: bool = True,
        fsync: bool = False,
    ) -> None:
        if on_full not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"on_full must be 'drop_oldest' or 'drop_newest', got {on_full!r}")
        if max_bytes < 1024:
            raise ValueError(f"max_bytes must be >= 1024, got {max_bytes}")
        self.root = Path(directory).expanduser()
        self.max_bytes = int(max_bytes)
        self.on_full = on_full
        self.fsync = fsync
        self.segment_bytes = max(_MIN_SEGMENT, min(_MAX_SEGMENT, self.max_bytes // 8))
        self._lock = threading.RLock()
        self._segments: list[_Segment] = []
        self._heap: list[tuple[int, int, int, SpoolRecord]] = []  # (segment, index, tiebreak, record)
        self._tiebreak = 0
        self._cache: dict[SpoolRecord, runs_pb2.EventBatch] = {}  # fresh records, parsed
        self._live_bytes = 0
        self._live_items = 0
        self._dropped_items = 0
        self._adopted_items = 0
        self._closed = False
        self._warned_corrupt = False

        self.root.mkdir(parents=True, exist_ok=True)
        owner = f"{_safe(socket.gethostname())}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Lock the folder before it gets its final name, so no other spool ever sees it unlocked.
        staging = self.root / f".new-{owner}"
        staging.mkdir()
        self._lock_fd = os.open(staging / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = self.root / owner
        os.rename(staging, self.path)
        self._next_number = 1
        if adopt:
            self._adopt_orphans()
        self._load_existing()

    # -- properties --------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes of records not yet acknowledged (or dropped)."""
        return self._live_bytes

    @property
    def pending_items(self) -> int:
        """Items in records not yet acknowledged (or dropped)."""
        return self._live_items

    @property
    def dropped_items(self) -> int:
        """Items dropped because the spool was full."""
        return self._dropped_items

    @property
    def adopted_items(self) -> int:
        """Items found unacknowledged at start (left by an earlier process)."""
        return self._adopted_items

    def disk_bytes(self) -> int:
        """Bytes the segment files take on disk now."""
        with self._lock:
            return sum(s.size for s in self._segments)

    def has_unsent(self) -> bool:
        """Whether a record waits to be taken by :meth:`take_next`."""
        with self._lock:
            self._skip_dead()
            return bool(self._heap)

    def run_ids(self) -> list[str]:
        """The runs the live records hold items of, in order of first appearance (reads the records, sends nothing)."""
        seen: dict[str, None] = {}
        with self._lock:
            records = [rec for seg in self._segments for rec in seg.records[seg.done_prefix :] if rec.live]
        for rec in records:
            try:
                batch = self._parse(rec)
            except (OSError, DecodeError):
                continue  # the sender reports it when it takes the record
            for items in (batch.starts, batch.events, batch.logs, batch.ends):
                for item in items:
                    seen.setdefault(item.run_id, None)
        return list(seen)

    def oldest_pending_id(self) -> int | None:
        """``first_id`` of the oldest live record, None when nothing is pending."""
        with self._lock:
            for seg in self._segments:
                for rec in seg.records[seg.done_prefix :]:
                    if rec.live:
                        return rec.first_id
            return None

    # -- writing -----------------------------------------------------------

    def append(
        self,
        payload: bytes,
        *,
        items: int,
        control: bool,
        first_id: int,
        batch: runs_pb2.EventBatch | None = None,
    ) -> list[SpoolRecord]:
        """Add one serialized batch; returns the records dropped to make room (may include loaded ones).

        ``batch`` (the parsed form of ``payload``) is kept in a small cache so
        that sending it soon after needs no disk read.
        """
        dropped: list[SpoolRecord] = []
        with self._lock:
            self._check_open()
            size = _HEADER.size + len(payload)
            if self.on_full == "drop_newest" and self._live_bytes + size > self.max_bytes:
                kept = _control_only(batch if batch is not None else runs_pb2.EventBatch.FromString(payload))
                n_kept = len(kept.starts) + len(kept.ends)
                self._dropped_items += items - n_kept
                if not n_kept:
                    return dropped
                batch, payload, items, control = kept, kept.SerializeToString(), n_kept, True
                size = _HEADER.size + len(payload)
            seg = self._active_segment(size)
            rec = SpoolRecord(seg, len(seg.records), seg.size, len(payload), items, control, first_id)
            header = _HEADER.pack(len(payload), items, FLAG_CONTROL if control else 0, zlib.crc32(payload))
            _write_all(seg.fd, header + payload)
            if self.fsync:
                os.fsync(seg.fd)
            seg.size += size
            seg.records.append(rec)
            self._live_bytes += size
            self._live_items += items
            self._push(rec)
            if batch is not None:
                self._cache[rec] = batch
                if len(self._cache) > _CACHE_RECORDS:
                    self._cache.pop(next(iter(self._cache)))
            if self.on_full == "drop_oldest":
                while self._live_bytes > self.max_bytes:
                    victim = self._oldest_droppable(protect=rec)
                    if victim is None:
                        break
                    dropped.extend(self._drop_segment(victim))
        return dropped

    def _active_segment(self, size: int) -> _Segment:
        seg = self._segments[-1] if self._segments else None
        if seg is None or seg.fd is None or (seg.records and seg.size + size > self.segment_bytes):
            if seg is not None:
                self._roll(seg)
            seg = self._new_segment()
        return seg

    def _new_segment(self) -> _Segment:
        number = self._next_number
        self._next_number += 1
        path = self.path / f"seg-{number:010d}.rws"
        seg = _Segment(number, path)
        seg.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        _write_all(seg.fd, MAGIC)
        self._segments.append(seg)
        return seg

    def _roll(self, seg: _Segment) -> None:
        if seg.fd is not None:
            os.close(seg.fd)
            seg.fd = None
        if seg.records and seg.done_prefix == len(seg.records):
            self._delete_segment(seg)

    # -- reading and acknowledging ----------------------------------------

    def take_next(self) -> SpoolRecord | None:
        """The oldest record not yet taken, now marked as in flight; None if none."""
        with self._lock:
            self._skip_dead()
            if not self._heap:
                return None
            rec = heapq.heappop(self._heap)[3]
            rec.state = LOADED
            return rec

    def load(self, rec: SpoolRecord) -> runs_pb2.EventBatch:
        """The batch a record holds (from the cache, else from disk)."""
        with self._lock:
            batch = self._cache.pop(rec, None)
            if batch is not None:
                return batch
            return runs_pb2.EventBatch.FromString(self._read_payload(rec))

    def untake(self, rec: SpoolRecord) -> None:
        """Put a taken record back, to be taken again (e.g. it could not be sent)."""
        with self._lock:
            if rec.state == LOADED:
                rec.state = SPOOLED
                self._push(rec)

    def ack(self, rec: SpoolRecord) -> None:
        """The server acknowledged ``rec``: forget it (deleting its segment once all its records are done)."""
        self._finish(rec, ACKED)

    def discard(self, rec: SpoolRecord) -> None:
        """Give up on ``rec`` (the server keeps refusing it); its items count as dropped."""
        with self._lock:
            if rec.live:
                self._dropped_items += rec.items
        self._finish(rec, DROPPED)

    def _finish(self, rec: SpoolRecord, state: int) -> None:
        with self._lock:
            if not rec.live:
                return
            rec.state = state
            self._live_bytes -= rec.size
            self._live_items -= rec.items
            self._cache.pop(rec, None)
            self._advance(rec.segment)

    def _advance(self, seg: _Segment) -> None:
        before = seg.done_prefix
        while seg.done_prefix < len(seg.records) and not seg.records[seg.done_prefix].live:
            seg.done_prefix += 1
        if seg.done_prefix == before:
            return
        if seg.done_prefix == len(seg.records) and seg.fd is None:
            self._delete_segment(seg)
            return
        if self._closed:
            return
        try:
            fd = os.open(seg.ack_path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, _ACK.pack(seg.done_prefix), 0)
            finally:
                os.close(fd)
        except OSError as exc:  # the record may be re-sent after a restart: a duplicate, not a loss
            logger.debug("runwatch: cannot record spool progress in %s: %s", seg.ack_path, exc)

    # -- dropping ----------------------------------------------------------

    def _oldest_droppable(self, protect: SpoolRecord) -> _Segment | None:
        for seg in self._segments:
            candidates = [r for r in seg.live_records() if r is not protect and not r.rescued]
            if candidates:
                if seg is protect.segment:
                    # Only the segment being written is left: close it so it can be rewritten.
                    return None
                return seg
        return None

    def _drop_segment(self, seg: _Segment) -> list[SpoolRecord]:
        """Drop the live records of ``seg``, keeping their RunStart/RunEnd items in one record."""
        victims = seg.live_records()
        keep = runs_pb2.EventBatch()
        for rec in victims:
            if rec.control:
                part = _control_only(self.load(rec))
                keep.starts.extend(part.starts)
                keep.ends.extend(part.ends)
        kept_items = len(keep.starts) + len(keep.ends)
        for rec in victims:
            self._live_bytes -= rec.size
            self._live_items -= rec.items
            rec.state = DROPPED
            self._cache.pop(rec, None)
        self._dropped_items += sum(r.items for r in victims) - kept_items
        if seg.fd is not None:
            os.close(seg.fd)
            seg.fd = None
        if not kept_items:
            self._delete_segment(seg)
            return victims
        # Rewrite the segment in place as one record of the rescued control items.
        payload = keep.SerializeToString()
        tmp = seg.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, MAGIC + _HEADER.pack(len(payload), kept_items, FLAG_CONTROL | FLAG_RESCUED, zlib.crc32(payload)) + payload)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, seg.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(seg.ack_path)
        rec = SpoolRecord(seg, 0, len(MAGIC), len(payload), kept_items, True, 0, rescued=True)
        seg.records = [rec]
        seg.done_prefix = 0
        seg.size = len(MAGIC) + rec.size
        self._live_bytes += rec.size
        self._live_items += kept_items
        self._cache[rec] = keep
        self._push(rec)
        return victims

    def _delete_segment(self, seg: _Segment) -> None:
        if seg.fd is not None:
            os.close(seg.fd)
            seg.fd = None
        for p in (seg.path, seg.ack_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        if seg in self._segments:
            self._segments.remove(seg)

    # -- start-up ----------------------------------------------------------

    def _adopt_orphans(self) -> None:
        """Move segments of folders whose owner is gone into ours, oldest folder first."""
        if fcntl is None:
            return
        orphans = []
        for d in self.root.iterdir():
            if d.name.startswith(".new-") and d.is_dir():
                self._remove_stale_staging(d)
                continue
            if d == self.path or d.name.startswith(".") or not d.is_dir() or not (d / "lock").exists():
                continue
            try:
                fd = os.open(d / "lock", os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # its owner is alive
                continue
            orphans.append((d.stat().st_mtime, d, fd))
        for _, d, fd in sorted(orphans, key=lambda o: (o[0], o[1].name)):
            try:
                for seg_path in sorted(p for p in d.iterdir() if _SEGMENT_RE.fullmatch(p.name)):
                    number = self._next_number
                    self._next_number += 1
                    target = self.path / f"seg-{number:010d}.rws"
                    ack = seg_path.with_suffix(".ack")
                    if ack.exists():
                        os.replace(ack, target.with_suffix(".ack"))
                    os.replace(seg_path, target)
                for p in d.iterdir():
                    with contextlib.suppress(OSError):
                        p.unlink()
                with contextlib.suppress(OSError):
                    d.rmdir()
            except OSError as exc:
                logger.warning("runwatch: cannot adopt spool folder %s: %s", d, exc)
            finally:
                os.close(fd)

    @staticmethod
    def _remove_stale_staging(d: Path) -> None:
        """A folder left between mkdir and rename by a process that died there (it holds no data)."""
        try:
            if time.time() - d.stat().st_mtime < 60:
                return  # young: its owner may be setting it up right now
            fd = os.open(d / "lock", os.O_RDWR)
        except OSError:
            return  # no lock yet: its owner may be creating it right now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # alive
        finally:
            os.close(fd)
        for p in d.iterdir():
            with contextlib.suppress(OSError):
                p.unlink()
        with contextlib.suppress(OSError):
            d.rmdir()

    def _load_existing(self) -> None:
        for seg_path in sorted(p for p in self.path.iterdir() if _SEGMENT_RE.fullmatch(p.name)):
            number = int(_SEGMENT_RE.fullmatch(seg_path.name).group(1))
            self._next_number = max(self._next_number, number + 1)
            seg = _Segment(number, seg_path)
            data = seg_path.read_bytes()
            acked = 0
            if seg.ack_path.exists():
                raw = seg.ack_path.read_bytes()
                if len(raw) == _ACK.size:
                    acked = _ACK.unpack(raw)[0]
            if not data.startswith(MAGIC):
                self._corrupt(seg_path, 0, "not a runwatch spool segment")
                self._delete_segment(seg)
                continue
            pos = len(MAGIC)
            while pos < len(data):
                if pos + _HEADER.size > len(data):
                    self._corrupt(seg_path, pos, "record header cut short")
                    break
                length, items, flags, crc = _HEADER.unpack_from(data, pos)
                end = pos + _HEADER.size + length
                if end > len(data):
                    self._corrupt(seg_path, pos, f"record of {length} bytes cut short")
                    break
                if zlib.crc32(data[pos + _HEADER.size : end]) != crc:
                    self._corrupt(seg_path, pos, "record checksum mismatch")
                    break
                rec = SpoolRecord(
                    seg, len(seg.records), pos, length, items, bool(flags & FLAG_CONTROL), rescued=bool(flags & FLAG_RESCUED)
                )
                if rec.index < acked:
                    rec.state = ACKED
                else:
                    self._live_bytes += rec.size
                    self._live_items += items
                    self._adopted_items += items
                    self._push(rec)
                seg.records.append(rec)
                pos = end
            seg.size = pos
            seg.done_prefix = min(acked, len(seg.records))
            if seg.done_prefix == len(seg.records):
                self._delete_segment(seg)
            else:
                self._segments.append(seg)
        self._segments.sort(key=lambda s: s.number)
        if self._adopted_items:
            logger.info(
                "runwatch: %d item(s) left unsent by an earlier process found in the spool %s; sending them first",
                self._adopted_items,
                self.root,
            )

    def _corrupt(self, path: Path, offset: int, what: str) -> None:
        log = logger.debug if self._warned_corrupt else logger.warning
        log("runwatch: spool segment %s: %s at byte %d; the rest of that segment is skipped", path, what, offset)
        self._warned_corrupt = True

    # -- helpers -----------------------------------------------------------

    def _push(self, rec: SpoolRecord) -> None:
        self._tiebreak += 1
        heapq.heappush(self._heap, (rec.segment.number, rec.index, self._tiebreak, rec))

    def _skip_dead(self) -> None:
        while self._heap and self._heap[0][3].state != SPOOLED:
            heapq.heappop(self._heap)

    def _read_payload(self, rec: SpoolRecord) -> bytes:
        with open(rec.segment.path, "rb") as f:
            f.seek(rec.offset + _HEADER.size)
            data = f.read(rec.length)
        if len(data) != rec.length:
            raise OSError(f"spool segment {rec.segment.path} is shorter than expected")
        return data

    def _parse(self, rec: SpoolRecord) -> runs_pb2.EventBatch:
        return runs_pb2.EventBatch.FromString(self._read_payload(rec))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("spool is closed")

    def close(self) -> None:
        """Close files and release the folder; an empty folder is removed, a non-empty one stays for adoption."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for seg in list(self._segments):
                if seg.fd is not None:
                    os.close(seg.fd)
                    seg.fd = None
                if seg.done_prefix == len(seg.records):
                    self._delete_segment(seg)
            self._cache.clear()
            empty = not self._segments
            if empty:
                for p in self.path.iterdir():
                    with contextlib.suppress(OSError):
                        p.unlink()
            os.close(self._lock_fd)  # releases the flock
            if empty:
                with contextlib.suppress(OSError):
                    self.path.rmdir()

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r}, pending_items={self._live_items}, pending_bytes={self._live_bytes})"


def _control_only(batch: runs_pb2.EventBatch) -> runs_pb2.EventBatch:
    out = runs_pb2.EventBatch()
    out.starts.extend(batch.starts)
    out.ends.extend(batch.ends)
    return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64] or "host"
