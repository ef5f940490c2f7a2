"""A RunStart for a run that is already open: a repeat, a completion, or a conflict.

A run's start record is write-once, field by field. A later RunStart for the
same running run may fill in what the record leaves unset (the SDK re-sends
its start with the architecture once the model is known, and with
hyperparameters logged late) and add new keys to ``hyperparameters`` and
``environment``; a field it leaves unset keeps the recorded value. A RunStart
that adds nothing is a repeat (an at-least-once re-send): a duplicate that
changes nothing. One that contradicts a recorded value is rejected, naming
the field, so a run can never move to another project or lose its metadata
by a stray RunStart.

A run opened implicitly (``--auto-create-runs``: events before any RunStart)
has no client-given metadata yet; its first real RunStart replaces the
placeholder whole.
"""

from __future__ import annotations

from google.protobuf import struct_pb2

from runwatch.service.nesting import key_path
from runwatch.v1 import runs_pb2

Violation = tuple[str, str]


def implicit_start(run_id: str, now: float) -> runs_pb2.RunStart:
    """The placeholder record of a run opened by its events."""
    return runs_pb2.RunStart(run_id=run_id, project="default", start_time=now)


def looks_implicit(start: runs_pb2.RunStart) -> bool:
    """Whether a stored record is the placeholder of an implicitly opened run.

    Run state rebuilt from the store (after a restart) no longer knows how the
    run was opened; a record holding nothing but run id, the default project
    and a time is taken as a placeholder (an explicit RunStart that sent
    nothing else can be completed the same way, which loses nothing).
    """
    return start.project == "default" and {f.name for f, _ in start.ListFields()} <= {
        "run_id", "project", "start_time"
    }  # fmt: skip


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _conflict(run_id: str, path: str, old, new) -> Violation:
    what = path if path.isidentifier() else f"{path} ="
    return (path, f"run {run_id!r} already started with {what} {_shown(old)}, got {_shown(new)}")


def _value(v: struct_pb2.Value):
    """A Struct value as plain Python, for messages."""
    kind = v.WhichOneof("kind")
    if kind == "struct_value":
        return "{...}"
    if kind == "list_value":
        return "[...]"
    return None if kind in (None, "null_value") else getattr(v, kind)


def _merge_struct(
    run_id: str, path: str, into: struct_pb2.Struct, new: struct_pb2.Struct, kept: list[str] | None = None
) -> tuple[bool, Violation | None]:
    """Add ``new``'s keys missing from ``into`` (recursing into objects both have); (changed, conflict).

    With ``kept``, a differing value is no conflict: the recorded one stays and its path is appended.
    """
    changed = False
    for key, value in new.fields.items():
        where = key_path(path, key)
        if key not in into.fields:
            into.fields[key].CopyFrom(value)
            changed = True
            continue
        old = into.fields[key]
        if old.WhichOneof("kind") == "struct_value" and value.WhichOneof("kind") == "struct_value":
            sub_changed, v = _merge_struct(run_id, where, old.struct_value, value.struct_value, kept)
            if v:
                return False, v
            changed |= sub_changed
        elif old != value:
            if kept is None:
                return False, _conflict(run_id, where, _value(old), _value(value))
            kept.append(where)
    return changed, None


def _first_difference(path: str, old, new) -> str:
    """Path of the first field where two messages of one type differ (``path`` if none is found)."""
    for field in old.DESCRIPTOR.fields:
        a, b = getattr(old, field.name), getattr(new, field.name)
        if a == b:
            continue
        where = f"{path}.{field.name}"
        if field.message_type is not None and field.is_repeated and not field.message_type.GetOptions().map_entry:
            for i, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    return _first_difference(f"{where}[{i}]", x, y)
            return f"{where} (length {len(a)} vs {len(b)})"
        if field.message_type is not None and not field.is_repeated:
            return _first_difference(where, a, b)
        return where
    return path


def merge_start(
    recorded: runs_pb2.RunStart, new: runs_pb2.RunStart, implicit: bool = False
) -> tuple[runs_pb2.RunStart | None, Violation | None]:
    """Apply ``new`` to a running run's ``recorded`` start: ``(merged record, None)`` if it adds something,
    ``(None, None)`` if it is a repeat, ``(None, (field, reason))`` if it contradicts the record.

    Field paths are relative to the RunStart (``"project"``, ``"hyperparameters.lr"``).

    Examples
    --------
    >>> rec = runs_pb2.RunStart(run_id="r1", project="alpha", start_time=5.0, framework="torch")
    >>> merge_start(rec, runs_pb2.RunStart(run_id="r1", project="alpha"))  # a repeat
    (None, None)
    >>> merge_start(rec, runs_pb2.RunStart(run_id="r1", project="beta"))[1]
    ('project', "run 'r1' already started with project 'alpha', got 'beta'")
    >>> merged, _ = merge_start(rec, runs_pb2.RunStart(run_id="r1", project="alpha", tags=["x"]))
    >>> list(merged.tags), merged.framework  # filled in; what the new one left unset is kept
    (['x'], 'torch')
    """
    if implicit:
        merged = runs_pb2.RunStart()
        merged.CopyFrom(new)
        merged.project = new.project or "default"
        if not new.start_time:
            merged.start_time = recorded.start_time
        return merged, None
    return _merge(recorded, new, kept=None)


def resume_start(
    recorded: runs_pb2.RunStart, new: runs_pb2.RunStart
) -> tuple[runs_pb2.RunStart | None, Violation | None, list[str]]:
    """Apply the RunStart of a resumed run (``resume`` set) to its ``recorded`` start.

    ``(merged record or None if nothing was added, None, kept)``, or ``(None, (field, reason), [])`` when
    project or kind differ (a run never moves). A restarted process has a new start time, pid and host,
    so nothing else is a conflict: the record keeps its values, fills in what it lacks and gains new
    hyperparameter and environment keys; ``kept`` names the hyperparameters, framework, tags or
    architecture whose new value differed and was not taken (environment facts differ on every restart
    and are not named).

    Examples
    --------
    >>> rec = runs_pb2.RunStart(run_id="r1", project="a", start_time=5.0)
    >>> rec.hyperparameters.update({"lr": 0.1})
    >>> new = runs_pb2.RunStart(run_id="r1", project="a", start_time=9.0, resume=True)
    >>> new.hyperparameters.update({"lr": 0.05, "epochs": 3})
    >>> merged, conflict, kept = resume_start(rec, new)
    >>> merged.start_time, sorted(merged.hyperparameters.items()), conflict, kept
    (5.0, [('epochs', 3.0), ('lr', 0.1)], None, ['hyperparameters.lr'])
    >>> resume_start(rec, runs_pb2.RunStart(run_id="r1", project="b", resume=True))[1]
    ('project', "run 'r1' already started with project 'a', got 'b'")
    """
    kept: list[str] = []
    merged, v = _merge(recorded, new, kept)
    return merged, v, [] if v else kept


def _merge(
    recorded: runs_pb2.RunStart, new: runs_pb2.RunStart, kept: list[str] | None
) -> tuple[runs_pb2.RunStart | None, Violation | None]:
    """``new`` applied to ``recorded`` field by field: filled in where unset, new keys added.

    Project and kind must match. Otherwise, with ``kept`` None a differing value is the conflict returned; with a
    list (a resume) the recorded value stays, its path is appended for the fields a person sets (hyperparameters,
    framework, tags, architecture), and a new start time or environment fact is no difference at all.
    """
    run_id = new.run_id
    # Fields whose unset value has a meaning of its own ("" = default project, 0 = training).
    if (new.project or "default") != (recorded.project or "default"):
        return None, _conflict(run_id, "project", recorded.project or "default", new.project or "default")
    if (new.kind or runs_pb2.RUN_KIND_TRAINING) != (recorded.kind or runs_pb2.RUN_KIND_TRAINING):
        return None, _conflict(
            run_id, "kind", runs_pb2.RunKind.Name(recorded.kind or 1), runs_pb2.RunKind.Name(new.kind or 1)
        )
    if kept is None and new.start_time and new.start_time != recorded.start_time:
        return None, _conflict(run_id, "start_time", recorded.start_time, new.start_time)

    merged = runs_pb2.RunStart()
    merged.CopyFrom(recorded)
    changed = False
    if new.framework and new.framework != recorded.framework:
        if not recorded.framework:
            merged.framework, changed = new.framework, True
        elif kept is None:
            return None, _conflict(run_id, "framework", recorded.framework, new.framework)
        else:
            kept.append("framework")
    if new.tags and list(new.tags) != list(recorded.tags):
        if not recorded.tags:
            merged.tags.extend(new.tags)
            changed = True
        elif kept is None:
            return None, _conflict(run_id, "tags", list(recorded.tags), list(new.tags))
        else:
            kept.append("tags")
    if new.architecture.ByteSize() and new.architecture != recorded.architecture:
        if not recorded.architecture.ByteSize():
            merged.architecture.CopyFrom(new.architecture)
            changed = True
        elif kept is None:
            where = _first_difference("architecture", recorded.architecture, new.architecture)
            return None, (where, f"run {run_id!r} already started with another architecture; {where} differs")
        else:
            kept.append("architecture")
    for key, value in new.environment.items():
        old = recorded.environment.get(key)
        if old is None:
            merged.environment[key] = value
            changed = True
        elif old != value and kept is None:
            return None, _conflict(run_id, key_path("environment", key), old, value)
    if new.HasField("hyperparameters"):
        added, v = _merge_struct(run_id, "hyperparameters", merged.hyperparameters, new.hyperparameters, kept)
        if v:
            return None, v
        changed |= added
    return (merged if changed else None), None
