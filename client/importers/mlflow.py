"""MLflow's file store: an ``mlruns/`` folder (no mlflow package needed).

Layout (``mlflow.set_tracking_uri("file:./mlruns")``, the default before MLflow 3)::

    mlruns/<experiment id>/meta.yaml                 name: <experiment name>
    mlruns/<experiment id>/<run id>/meta.yaml        run_name, status, start_time, end_time (ms), lifecycle_stage
    mlruns/<experiment id>/<run id>/metrics/<name>   lines "<timestamp ms> <value> <step>"
    mlruns/<experiment id>/<run id>/params/<name>    the value
    mlruns/<experiment id>/<run id>/tags/<name>      the value (mlflow.source.git.commit, mlflow.runName, ...)

Names containing ``/`` are nested folders. ``PATH`` may be the ``mlruns``
folder, one experiment's folder or one run's folder. Deleted runs
(``lifecycle_stage: deleted``, or under ``.trash``) are skipped. The
experiment's name becomes the project unless one is given. MLflow's SQL
backends (``sqlite:///mlflow.db``) are not read: export to a file store, or
replay their CSV export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runwatch.client.importers._yaml import load_flat, scalar
from runwatch.client.importers.base import (
    STRICT,
    ImportedRun,
    ImportFormatError,
    Problems,
    RunBuilder,
    parse_float,
    parse_step,
)

__all__ = ["looks_like", "read"]

FORMAT = "mlflow"
_STATUS = {1: "running", 2: "running", 3: "finished", 4: "failed", 5: "killed",
           "RUNNING": "running", "SCHEDULED": "running", "FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
_TAG_KEYS = {"mlflow.source.git.commit": "git.commit", "mlflow.source.git.branch": "git.branch",
             "mlflow.source.name": "script", "mlflow.user": "user"}


def _is_run(d: Path) -> bool:
    return (d / "meta.yaml").is_file() and (d / "metrics").is_dir()


def _has_runs(d: Path) -> bool:
    return any(_is_run(c) for c in d.iterdir() if c.is_dir())


def _is_experiment(d: Path) -> bool:
    return (d / "meta.yaml").is_file() and _has_runs(d)


def looks_like(path: Path) -> bool:
    """An ``mlruns`` folder, an experiment folder or a run folder."""
    if not path.is_dir():
        return False
    if _is_run(path) or _is_experiment(path):
        return True
    return any(c.is_dir() and _is_experiment(c) for c in path.iterdir())


def read(path: Path, canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """Every live run under ``path`` (malformed metric lines, unreadable runs go to ``problems``)."""
    path = Path(path)
    if _is_run(path):
        experiments = [(path.parent, [path])]
    elif _is_experiment(path) or _has_runs(path):  # a folder of runs without its meta.yaml (not committed) too
        experiments = [(path, _runs_of(path))]
    else:
        experiments = [(c, _runs_of(c)) for c in sorted(path.iterdir()) if c.is_dir() and c.name != ".trash" and _is_experiment(c)]
        if not experiments:
            raise ImportFormatError(path, "folder", "no MLflow experiments here (expected <id>/meta.yaml and <id>/<run>/metrics/)")
    out = []
    for exp_dir, run_dirs in experiments:
        exp_meta = load_flat(exp_dir / "meta.yaml") if (exp_dir / "meta.yaml").is_file() else {}
        exp_name = str(exp_meta.get("name") or exp_dir.name)
        for run_dir in run_dirs:
            try:
                run = _read_run(run_dir, exp_name, canonical, problems)
            except (ImportFormatError, OSError) as exc:
                error = exc if isinstance(exc, ImportFormatError) else ImportFormatError(run_dir, "folder", str(exc))
                problems.skip(error, "the run was skipped")
                continue
            if run is not None:
                out.append(run)
    return out


def _runs_of(exp_dir: Path) -> list[Path]:
    return sorted(c for c in exp_dir.iterdir() if c.is_dir() and _is_run(c))


def _read_run(run_dir: Path, exp_name: str, canonical: bool, problems: Problems) -> ImportedRun | None:
    meta = load_flat(run_dir / "meta.yaml")
    if str(meta.get("lifecycle_stage", "active")) == "deleted":
        return None
    run_uuid = str(meta.get("run_uuid") or meta.get("run_id") or run_dir.name)
    tags = _read_values(run_dir / "tags")
    name = str(meta.get("run_name") or tags.get("mlflow.runName") or run_uuid)
    run = ImportedRun(FORMAT, run_dir, key=run_uuid, name=name, original_id=run_uuid, project=exp_name, tags=["mlflow"])
    run.hyperparameters = {k: scalar(v) for k, v in _read_values(run_dir / "params").items()}
    for k, v in tags.items():
        run.environment[_TAG_KEYS.get(k, k)] = v
    run.environment["mlflow.run_id"] = run_uuid
    for key, attr in (("start_time", "start_time"), ("end_time", "end_time")):
        value = meta.get(key)
        if isinstance(value, (int, float)) and value > 0:
            setattr(run, attr, float(value) / 1000.0)
    status = meta.get("status")
    run.status = _STATUS.get(status if not isinstance(status, str) else status.upper())
    builder = RunBuilder(run)
    metrics_dir = run_dir / "metrics"
    notes: list[str] = []
    for f in sorted(p for p in metrics_dir.rglob("*") if p.is_file()):
        name = f.relative_to(metrics_dir).as_posix()
        _read_metric(f, name, builder, problems, notes)
    built = builder.build(canonical)
    built.notes.extend(notes)
    return built


def _read_metric(path: Path, name: str, builder: RunBuilder, problems: Problems, notes: list[str]) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.skip(ImportFormatError(path, f"byte {exc.start}", f"not UTF-8 text: {exc.reason}"), "the metric was skipped")
        return
    points: list[tuple[int, float, float]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        where = f"line {line_no}"
        try:
            if len(parts) not in (2, 3):
                raise ImportFormatError(path, where, f"expected '<timestamp ms> <value> <step>', got {line[:80]!r}")
            ts = parse_float(parts[0], path, where, "timestamp")
            value = parse_float(parts[1], path, where, "value")
            step = parse_step(parts[2], path, where) if len(parts) == 3 else 0
        except ImportFormatError as exc:
            problems.skip(exc, "the line was skipped")
            continue
        points.append((step, value, ts / 1000.0))
    for step, value, wall in _placed(points, name, notes):
        builder.add(step, name, value, wall)


def _placed(points: list[tuple[int, float, float]], name: str, notes: list[str]) -> list[tuple[int, float, float]]:
    """One metric's ``(step, value, wall)`` points, in file (logging) order, as they should be replayed.

    ``mlflow.log_metric`` without ``step=`` logs at step 0. A metric logged that way every epoch has all its
    points at 0: they are a series in logging order, one step each. Step-0 points that come after the metric
    reached a later step are summaries (a best or final value logged without a step) and are left out: kept,
    they would replace the first epoch's value.

    Examples
    --------
    >>> notes = []
    >>> _placed([(0, 0.9, 1.0), (0, 0.7, 2.0), (0, 0.6, 3.0)], "val_loss", notes)
    [(0, 0.9, 1.0), (1, 0.7, 2.0), (2, 0.6, 3.0)]
    >>> _placed([(0, 0.9, 1.0), (1, 0.7, 2.0), (2, 0.6, 3.0), (0, 0.6, 4.0)], "val_f1", notes)
    [(0, 0.9, 1.0), (1, 0.7, 2.0), (2, 0.6, 3.0)]
    >>> notes  # doctest: +NORMALIZE_WHITESPACE
    ["metric 'val_loss': 3 points all at step 0 (logged without a step): placed in logging order, one step each",
     "metric 'val_f1': 1 point(s) at step 0 after step 2 (values logged without a step) left out"]
    """
    if len(points) > 1 and all(step == 0 for step, _, _ in points):
        notes.append(
            f"metric {name!r}: {len(points)} points all at step 0 (logged without a step): "
            "placed in logging order, one step each"
        )
        return [(k, value, wall) for k, (_, value, wall) in enumerate(points)]
    kept, top, late = [], 0, 0
    for point in points:
        if point[0] == 0 and top > 0:
            late += 1
            continue
        top = max(top, point[0])
        kept.append(point)
    if late:
        notes.append(f"metric {name!r}: {late} point(s) at step 0 after step {top} (values logged without a step) left out")
    return kept


def _read_values(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        return {}
    out = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            out[f.relative_to(folder).as_posix()] = f.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
    return out
