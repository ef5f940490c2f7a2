"""``runwatch detectors train`` and ``runwatch detectors evaluate``: the learned detectors on your own runs.

``train`` fits a learned-detector artifact (:mod:`runwatch.models.learned.training`)
on runs a user already has: the runs of a runwatch store (``--store DATA_DIR``,
or ``--store postgresql://...`` for a shared PostgreSQL store; with no source
given, ``$RUNWATCH_STORE``, the store ``runwatch serve`` uses), training logs on
disk (``--logs PATH``: whatever ``runwatch replay`` reads) and, in a checkout of
the repository, the benchmark corpus (``--corpus DIR``).
``evaluate`` streams runs through a fresh diagnostic suite, as the service
would, and reports which runs it flags.

Label policy (what a run counts as when training and evaluating):

- a run named in ``--labels`` gets that label (``healthy`` or a fault type);
- an unlabelled store run counts as healthy only if it finished normally
  (status FINISHED) and has no stored anomaly of severity ERROR or above;
  other unlabelled store runs (running, failed, killed, or flagged) are left
  out: they might be faulty. Deployment runs are always left out;
- an unlabelled log run counts as healthy (``--logs`` points at logs of good
  runs) unless its log says it failed or was killed (MLflow status, TensorBoard
  hparams session end), which leaves it out;
- either way, an unlabelled run whose training loss is ever NaN/Inf is left out;
- corpus runs carry their own labels (the corpus's ``train`` split only).

The labels file is a CSV with a header. ``run`` (or ``run_id``) names the run:
a store run by its run id; a log run by its replay id (the id ``runwatch
replay`` stores it under, ``replay-<format>-<name>-<hash>``), its path below the
folder given to ``--logs`` (e.g. ``training_logs/hf/lora_imdb``), its name, or
its original id (e.g. an MLflow run id). ``fault`` is ``healthy`` or a fault
type (``divergence``, ``nan``, ``overfitting``, ...: :data:`KNOWN_FAULTS`; another
name is warned about and counted as a fault of its own, and a near-miss of a
known name, such as ``healty``, is refused as a typo). Optional: ``onset`` (or
``onset_step``; default 0), ``manifest_step`` (the step where the fault shows,
e.g. the first NaN; empty = unknown) and ``cause``. The corpus's
``labels.csv`` has this shape.

The forecaster learns what precedes a divergence, so it needs divergent runs
(``divergence``/``nan`` with a manifest step); with fewer than
``TrainingConfig.min_divergent_runs`` of them, the forecaster and its
calibrated levels are kept from ``--base`` (default: the artifact shipped
with runwatch) and only the autoencoder and the run-outlier reference are
fitted (and calibrated) on the given runs.

Examples
--------
Train on a store's finished runs, check the result on the same runs, serve it::

    runwatch detectors train --store runwatch-data --out my-detectors
    runwatch detectors evaluate --artifact my-detectors --store runwatch-data
    echo '{"settings": {"learned": {"artifact": "my-detectors"}}}' > diagnostics.json
    runwatch serve --diagnostics-config diagnostics.json
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, Field, ValidationError, field_validator

detectors_app = typer.Typer(
    help="fit the learned detectors on your own runs (train) and measure detectors on labelled runs (evaluate)",
    no_args_is_help=True,
)

BLOCK_EVENTS = 50  # events per block fed to a monitor, like a client's batch
STORE_HELP = ("a runwatch store: a data folder (holding runwatch.db) or a postgresql://USER:PASSWORD@HOST:PORT/DB "
              "URL (the password is shown as ***); repeat for several [default, when no other source is given: "
              "$RUNWATCH_STORE]")
LABELS_HELP = ("CSV with a header: run (or run_id), fault (healthy or a fault kind: divergence, nan, overfitting, "
               "no_learning, ...; an unknown kind is warned about, a misspelt one refused); optional onset, "
               "manifest_step, cause")
DEFAULT_BASE = "the artifact shipped with runwatch"


class SourceError(ValueError):
    """A data source or labels file that cannot be read; the message names it."""


#: The fault kinds labels are known to use: the benchmark corpus's injected faults (bench/corpus/specs.py
#: FAULTS) and the real-log labels' (bench/real_labels: no_learning, collapse). Others are warned about.
KNOWN_FAULTS = (
    "healthy", "divergence", "nan", "vanishing_gradient", "dying_relu", "oscillation", "slow_convergence",
    "overfitting", "data_corruption", "bad_batch", "stall", "no_learning", "collapse",
)


def fault_typo(fault: str) -> str | None:
    """The known fault kind ``fault`` looks like a misspelling of, if any (None for a known or unrelated name).

    Examples
    --------
    >>> fault_typo("healty"), fault_typo("divergance"), fault_typo("nan"), fault_typo("bogusfault")
    ('healthy', 'divergence', None, None)
    """
    import difflib

    if fault in KNOWN_FAULTS:
        return None
    close = difflib.get_close_matches(fault, KNOWN_FAULTS, n=1, cutoff=0.8)
    return close[0] if close else None


def unknown_faults(labels: Sequence[RunLabel]) -> list[str]:
    """The fault names of ``labels`` that are not :data:`KNOWN_FAULTS`, in first-seen order."""
    return list(dict.fromkeys(lab.fault for lab in labels if lab.fault not in KNOWN_FAULTS))


class RunLabel(BaseModel):
    """One row of a labels file.

    Examples
    --------
    >>> RunLabel(run="r1", fault="Divergence", onset=120, manifest_step=180).fault
    'divergence'
    """

    run: str = Field(min_length=1)
    fault: str = "healthy"
    onset: int = Field(0, ge=0)
    manifest_step: int | None = Field(None, ge=0)
    cause: str = ""

    @field_validator("fault")
    @classmethod
    def _normal_fault(cls, value: str) -> str:
        return value.strip().lower() or "healthy"


@dataclass
class SourceRun:
    """One run read from a store or logs, with what the label policy makes of it."""

    run_id: str
    source: str  # "store" or "logs"
    keys: tuple[str, ...]  # the names a labels row may use for it; the first after the id is shown
    steps: list[int]
    wall_times: list[float]
    metrics: list[dict[str, float]]
    healthy_unlabelled: bool  # the label policy's verdict without a label
    left_out_because: str = ""  # why it is not healthy without a label
    label: RunLabel | None = None

    @property
    def name(self) -> str:
        return self.keys[1] if len(self.keys) > 1 else self.run_id

    @property
    def fault(self) -> str | None:
        """``healthy``, a fault type, or None (unlabelled and not taken as healthy)."""
        if self.label is not None:
            return self.label.fault
        return "healthy" if self.healthy_unlabelled else None

    def block(self, lo: int = 0, hi: int | None = None):
        from runwatch.models.block import MetricBlock

        hi = len(self.steps) if hi is None else hi
        return MetricBlock.from_rows(self.steps[lo:hi], self.wall_times[lo:hi], self.metrics[lo:hi])


# -- reading runs ---------------------------------------------------------------------------------


def read_labels(path: Path) -> list[RunLabel]:
    """Rows of a labels CSV (see the module docstring).

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = p.write_text("run_id,fault,onset_step,manifest_step\\nr1,divergence,100,180\\nr2,healthy,,\\n")
    >>> [(r.run, r.fault, r.onset, r.manifest_step) for r in read_labels(p)]
    [('r1', 'divergence', 100, 180), ('r2', 'healthy', 0, None)]
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SourceError(f"--labels {path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(text.splitlines())
    columns = set(reader.fieldnames or ())
    run_col = next((c for c in ("run", "run_id") if c in columns), None)
    if run_col is None or "fault" not in columns:
        raise SourceError(
            f"--labels {path}: needs a header with 'run' (or 'run_id') and 'fault'; got {sorted(columns)}")
    onset_col = next((c for c in ("onset", "onset_step") if c in columns), None)
    out = []
    for line, row in enumerate(reader, start=2):
        raw = {
            "run": (row.get(run_col) or "").strip(),
            "fault": (row.get("fault") or "").strip(),
            "onset": (row.get(onset_col) or "").strip() if onset_col else "",
            "manifest_step": (row.get("manifest_step") or "").strip(),
            "cause": (row.get("cause") or "").strip(),
        }
        given = {k: v for k, v in raw.items() if v != ""}
        try:
            label = RunLabel(**given)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SourceError(f"--labels {path}:line {line}: {problems}") from None
        if (meant := fault_typo(label.fault)) is not None:
            # A misspelt "healthy" would count a healthy run as a problem run: refused, not guessed.
            raise SourceError(
                f"--labels {path}:line {line}: fault: {label.fault!r} is not a fault kind; did you mean {meant!r}? "
                f"(known: {', '.join(KNOWN_FAULTS)})")
        out.append(label)
    return out


def shown_store(location: str | Path) -> str:
    """A ``--store`` value as messages and the artifact's provenance show it: a URL's password as ``***``, a
    folder's absolute path."""
    from runwatch.service.store_location import is_postgresql, redact

    return redact(location) if is_postgresql(str(location)) else str(Path(location).resolve())


def open_store(location: str | Path):
    """The :class:`RunStore` of a ``--store`` value: a runwatch data folder (holding ``runwatch.db``) or a
    ``postgresql://`` URL. Neither is created: a folder or database without a runwatch store is a SourceError,
    and so is a database that cannot be reached; every message hides the URL's password.
    """
    from runwatch.service.store import RunStore
    from runwatch.service.store_backends import backend_for
    from runwatch.service.store_location import StoreError, check_store_url, is_postgresql, redact

    if not is_postgresql(str(location)):
        db = Path(location) / "runwatch.db"
        if not db.is_file():
            raise SourceError(f"--store {location}: no runwatch store there ({db} does not exist)")
        return RunStore(db)
    url, shown = str(location), redact(str(location))
    try:
        check_store_url(url)
        backend = backend_for(url)
        conn = backend.connect_reader()
        try:
            tables = backend.tables(conn)
        finally:
            conn.close()
    except (ValueError, StoreError) as exc:
        raise SourceError(f"--store {shown}: {_without_location(str(exc), shown)}") from None
    if "schema_version" not in tables:
        raise SourceError(f"--store {shown}: no runwatch store there (the database holds no runwatch tables)")
    try:
        return RunStore(url)
    except StoreError as exc:
        raise SourceError(f"--store {shown}: {_without_location(str(exc), shown)}") from None


def _without_location(message: str, shown: str) -> str:
    """A store error's message after ``--store URL:``, which already names the database."""
    message = message.removeprefix("store: ").replace(f" to {shown}:", ":", 1)
    return message.removeprefix(f"{shown}: ").removeprefix(f"{shown} ")


def store_runs(location: str | Path) -> list[SourceRun]:
    """Every training run of a runwatch store: a data folder (its ``runwatch.db``) or a ``postgresql://`` URL.

    Examples
    --------
    >>> runs = store_runs(Path("runwatch-data"))                        # doctest: +SKIP
    >>> [(r.run_id, r.fault, r.left_out_because) for r in runs][:1]      # doctest: +SKIP
    [('run-1', 'healthy', '')]
    """
    from runwatch.service.store_backends import store_unavailable
    from runwatch.v1 import anomaly_pb2, runs_pb2

    store = open_store(location)
    out = []
    try:
        for info in store.list_runs(limit=2**62):
            if info.kind == runs_pb2.RUN_KIND_DEPLOYMENT:
                continue
            events = sorted(store.events(info.run_id), key=lambda e: e.step)  # stable: chunks are step-ordered already
            why = ""
            metrics = [dict(e.metrics) for e in events]
            if info.status != runs_pb2.RUN_STATUS_FINISHED:
                why = "status " + runs_pb2.RunStatus.Name(info.status).removeprefix("RUN_STATUS_").lower()
            else:
                bad = store.anomalies(run_id=info.run_id, min_severity=anomaly_pb2.SEVERITY_ERROR, limit=1)
                if bad:
                    a = bad[0]
                    severity = anomaly_pb2.Severity.Name(a.severity).removeprefix("SEVERITY_")
                    kind = anomaly_pb2.AnomalyKind.Name(a.kind).removeprefix("ANOMALY_KIND_")
                    why = f"{severity} anomaly {kind} at step {a.first_step}"
            why = why or _nonfinite_loss(metrics)
            out.append(SourceRun(
                info.run_id, "store", (info.run_id,), [e.step for e in events], [e.wall_time for e in events],
                metrics, healthy_unlabelled=not why, left_out_because=why,
            ))
    except Exception as exc:
        if (unavailable := store_unavailable(store.backend, exc)) is None:
            raise
        raise SourceError(f"--store {shown_store(location)}: {unavailable}") from None
    finally:
        store.close()
    return out


def log_runs(path: Path) -> list[SourceRun]:
    """Every run the importers read under ``path`` (see ``runwatch replay``)."""
    from runwatch.client.importers import ImportFormatError, load

    try:
        runs = load(path)
    except (ImportFormatError, FileNotFoundError, ValueError) as exc:
        raise SourceError(f"--logs {path}: {exc}") from None
    out = []
    for run in runs:
        why = f"the log says the run {run.status}" if run.status in ("failed", "killed") else ""
        why = why or _nonfinite_loss(run.metrics)
        keys = tuple(dict.fromkeys(k for k in (run.run_id(), run.display, run.name, run.original_id) if k))
        out.append(SourceRun(run.run_id(), "logs", keys, list(run.steps), list(run.wall_times), list(run.metrics),
                             healthy_unlabelled=not why, left_out_because=why))
    return out


def _nonfinite_loss(metrics: Sequence[dict[str, float]]) -> str:
    """Why a run is not healthy when one of its training losses is NaN/Inf (no healthy run logs one), else ''."""
    from runwatch.models.learned.features import LOSS_NAMES

    for m in metrics:
        for name in LOSS_NAMES:
            v = m.get(name)
            if v is not None and not math.isfinite(v):
                return "non-finite loss"
    return ""


def apply_labels(runs: Sequence[SourceRun], labels: Sequence[RunLabel]) -> list[str]:
    """Give each run the first label naming it; return the label names that matched no run."""
    by_key: dict[str, RunLabel] = {}
    for lab in labels:
        by_key.setdefault(lab.run, lab)
    used = set()
    for run in runs:
        lab = next((by_key[k] for k in run.keys if k in by_key), None)
        if lab is not None:
            run.label = lab
            used.add(lab.run)
    return [lab.run for lab in labels if lab.run not in used]


def _gather(store: Sequence[str | Path], logs: Sequence[Path], labels: Path | None, err) -> list[SourceRun]:
    found = [r for d in store for r in store_runs(d)] + [r for p in logs for r in log_runs(p)]
    runs = list({r.run_id: r for r in reversed(found)}.values())[::-1]  # a source given twice counts once
    if labels is not None:
        rows = read_labels(labels)
        if unknown := unknown_faults(rows):
            err(f"warning: {len(unknown)} fault name(s) in --labels are not known fault kinds, each counted as a "
                f"problem run of its own kind: {', '.join(unknown)} (known: {', '.join(KNOWN_FAULTS)})")
        unmatched = apply_labels(runs, rows)
        if unmatched:
            shown = ", ".join(unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
            err(f"warning: {len(unmatched)} label row(s) match no run read: {shown}")
    return runs


def _store_sources(store: Sequence[str], logs: Sequence[Path], corpus: Path | None, err) -> list[str]:
    """``--store`` as given; with no source at all, ``$RUNWATCH_STORE`` (what ``runwatch serve`` uses), if set."""
    import os

    if store or logs or corpus:
        return list(store)
    env = os.environ.get("RUNWATCH_STORE", "").strip()
    if env:
        err(f"reading the store of $RUNWATCH_STORE: {shown_store(env)}")
        return [env]
    return []


# -- train ----------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The runs :func:`collect_training_runs` picked, and what it left out."""

    runs: list = field(default_factory=list)  # TrainingRun
    left_out: Counter = field(default_factory=Counter)  # reason -> runs
    by_source: Counter = field(default_factory=Counter)  # source -> runs used

    def summary(self) -> str:
        faults = Counter(r.fault for r in self.runs)
        healthy = faults.pop("healthy", 0)
        parts = [f"{len(self.runs)} run(s): {healthy} healthy"]
        if faults:
            parts.append(", ".join(f"{n} {f}" for f, n in sorted(faults.items())))
        src = ", ".join(f"{n} from {s}" for s, n in sorted(self.by_source.items()))
        text = "training on " + ", ".join(parts) + (f" ({src})" if src else "")
        if self.left_out:
            text += f"; left out {sum(self.left_out.values())}: " + ", ".join(
                f"{n} {why}" for why, n in self.left_out.most_common())
        return text


def collect_training_runs(
    store: Sequence[str | Path] = (), logs: Sequence[Path] = (), corpus: Path | None = None, labels: Path | None = None,
    err=print,
) -> TrainingData:
    """The labelled runs of the sources, under the label policy of the module docstring.

    Examples
    --------
    >>> data = collect_training_runs(store=[Path("runwatch-data")])     # doctest: +SKIP
    >>> print(data.summary())                                          # doctest: +SKIP
    training on 12 run(s): 12 healthy (12 from store); left out 2: 1 status running, 1 status failed
    """
    from runwatch.models.learned.training import TrainingRun

    data = TrainingData()
    for run in _gather(store, logs, labels, err):
        fault = run.fault
        if fault is None:
            # A reason per kind, not per run: "ERROR anomaly NONFINITE at step 220" -> "ERROR anomaly NONFINITE".
            data.left_out[run.left_out_because.split(" at step ")[0]] += 1
            continue
        if not run.steps:
            data.left_out["no events"] += 1
            continue
        lab = run.label
        data.runs.append(TrainingRun(
            run.run_id, run.block(), fault, lab.onset if lab else 0, lab.manifest_step if lab else None,
            lab.cause if lab else "", run.source,
        ))
        data.by_source[run.source] += 1
    if corpus is not None:
        for r in corpus_training_runs(corpus):
            data.runs.append(r)
            data.by_source["corpus"] += 1
    return data


def corpus_training_runs(path: Path) -> list:
    """The corpus's train-split runs, through the benchmark harness (a repository checkout only)."""
    try:
        from bench.train_detectors import corpus_runs
    except ImportError:
        raise SourceError(
            "--corpus needs the benchmark harness (bench/), which only a checkout of the runwatch repository has: "
            "run from the repository root, or use --store/--logs") from None
    if not path.is_dir():
        raise SourceError(f"--corpus {path}: no such folder")
    try:
        return corpus_runs(path)
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"--corpus {path}: {type(exc).__name__}: {exc}") from None


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _as_given(location: str) -> str:
    """A ``--store`` value as typed, but with a URL's password as ``***``."""
    from runwatch.service.store_location import redact

    return redact(location)


def _command_line(name: str, options: Iterable[tuple[str, Any]]) -> str:
    """The command as typed (from the parsed options: ``sys.argv`` is not the command under a test runner)."""
    parts = [f"runwatch detectors {name}"]
    for flag, value in options:
        parts += [f"{flag} {v}" for v in (value if isinstance(value, list) else [value]) if v is not None]
    return " ".join(parts)


@detectors_app.command("train")
def train(
    out: Annotated[Path, typer.Option(help="folder to write the artifact to (config.json + weights.safetensors)")],
    store: Annotated[list[str] | None, typer.Option("--store", help=STORE_HELP)] = None,
    logs: Annotated[list[Path] | None, typer.Option("--logs", help="training logs of good runs: a file or folder `runwatch replay` reads; repeat for several")] = None,
    corpus: Annotated[Path | None, typer.Option(help="the benchmark corpus (its train split; only in a repository checkout)")] = None,
    labels: Annotated[Path | None, typer.Option(help=LABELS_HELP)] = None,
    config: Annotated[Path | None, typer.Option(help="TrainingConfig JSON (epochs, thinning, calibration, ...)")] = None,
    base: Annotated[Path | None, typer.Option(help="artifact whose forecaster is kept when there are too few divergent runs (default: the shipped one)")] = None,
) -> None:
    """Fit the learned detectors on your runs and write an artifact for `runwatch serve`.

    Label policy: a run named in --labels gets that label. Otherwise a store run
    is healthy only if it FINISHED and has no stored anomaly of severity ERROR or
    above (other store runs are left out: they might be faulty); a log run is
    healthy unless its log says it failed or was killed; a run with a NaN/Inf
    loss is never taken as healthy without a label. Without enough divergent
    runs (fault divergence/nan with a manifest_step) the forecaster of --base is
    kept; the autoencoder and run-outlier reference are fitted on your runs.
    """
    import time

    from runwatch.models.learned.artifacts import ArtifactError, load_artifact
    from runwatch.models.learned.training import TrainingConfig, TrainingDataError, fit_artifact

    logs, given_store = logs or [], store or []
    store = _store_sources(given_store, logs, corpus, err=lambda m: typer.echo(m, err=True))
    if not (store or logs or corpus):
        _fail("no training data: give --store DATA_DIR (or a postgresql:// URL), --logs PATH or --corpus DIR")
    try:
        cfg = TrainingConfig.model_validate_json(config.read_text()) if config else TrainingConfig()
    except OSError as exc:
        _fail(f"--config {config}: {exc.strerror or exc}")
    except ValidationError as exc:
        _fail(f"--config {config}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    try:
        base_art = load_artifact(base)
    except ArtifactError as exc:
        _fail(f"--base: {exc}")
    t0 = time.perf_counter()
    try:
        data = collect_training_runs(store, logs, corpus, labels, err=lambda m: typer.echo(m, err=True))
    except SourceError as exc:
        _fail(str(exc))
    typer.echo(data.summary())
    command = _command_line("train", [("--out", str(out)), ("--store", [_as_given(p) for p in store]),
                                      ("--logs", [str(p) for p in logs]), ("--corpus", corpus), ("--labels", labels),
                                      ("--config", config), ("--base", base)])
    provenance = {
        "command": command,
        "sources": {"store": [shown_store(p) for p in store], "logs": [str(p.resolve()) for p in logs],
                    "corpus": str(corpus.resolve()) if corpus else None,
                    "labels": str(labels.resolve()) if labels else None},
        "base": str(base.resolve()) if base else DEFAULT_BASE,
        "counts": {"runs": len(data.runs), "by_source": dict(data.by_source),
                   "by_fault": dict(Counter(r.fault for r in data.runs)), "left_out": dict(data.left_out)},
    }
    try:
        art = fit_artifact(data.runs, cfg, provenance=provenance, base=base_art,
                           log=lambda m: typer.echo(f"  {m}", err=True))
    except TrainingDataError as exc:
        left = f" (left out: {', '.join(f'{n} {w}' for w, n in data.left_out.most_common())})" if data.left_out else ""
        _fail(f"{exc}{left}")
    art.save(out)
    th = art.config.thresholds
    done = art.config.training
    forecaster = "fitted" if done["forecaster_source"] == "fitted" else f"kept from {base or 'the shipped artifact'}"
    typer.echo(
        f"wrote {out} in {time.perf_counter() - t0:.0f} s: autoencoder and run-outlier reference fitted on "
        f"{done['healthy_windows']} healthy windows, {done['reference_prefixes']} run prefixes; forecaster {forecaster}"
    )
    typer.echo(f"alert levels: sequence {th.sequence_alert:.3g}, forecast {th.forecast_alert:.3g}, "
               f"run outlier {th.run_outlier_alert:.3g}")
    suite = json.dumps({"settings": {"learned": {"artifact": str(out.resolve())}}})
    from_env = store and not given_store  # evaluate reads $RUNWATCH_STORE the same way
    sources = " ".join([*(f"--store {_as_given(p)}" for p in store if not from_env), *(f"--logs {p}" for p in logs)])
    typer.echo(f"check it:  runwatch detectors evaluate --artifact {out} {sources}".rstrip())
    typer.echo(f"serve it:  runwatch serve --diagnostics-config FILE, FILE holding {suite}")
    typer.echo(f"           (or RUNWATCH_DIAGNOSTICS='{suite}' runwatch serve)")


# -- evaluate -------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What one run's stream raised."""

    run_id: str
    name: str  # how the run is shown: its id, or a log run's path below --logs
    label: str  # healthy, a fault type, or "unlabelled"
    events: int
    flagged: bool  # any WARNING+ alert
    first_step: int | None  # the first WARNING+ alert's step (problem runs: the first at or after the onset, if any)
    first_kind: str  # its kind (and detector)
    caught: bool | None  # faulty runs: a WARNING+ alert at or after the onset
    incidents: int  # distinct WARNING+ incidents
    unlabelled_because: str = ""  # why the label policy did not take an unlabelled run as healthy


def stream_run(monitor, run: SourceRun, block_events: int = BLOCK_EVENTS) -> list:
    """Feed ``run`` to ``monitor`` in blocks of ``block_events`` events; return the alerts raised."""
    alerts = []
    for lo in range(0, len(run.steps), block_events):
        alerts += monitor.observe_block(run.block(lo, lo + block_events))
    return alerts


def evaluate_runs(runs: Sequence[SourceRun], suite, block_events: int = BLOCK_EVENTS) -> list[RunResult]:
    """Stream every run through a fresh monitor of ``suite``.

    Examples
    --------
    >>> from runwatch.models.registry import DiagnosticSuite
    >>> run = SourceRun("r", "logs", ("r",), list(range(60)), [0.0] * 60, [{"loss": 1.0}] * 59 + [{"loss": math.nan}],
    ...                 healthy_unlabelled=True)
    >>> [(r.flagged, r.first_step, r.first_kind) for r in evaluate_runs([run], DiagnosticSuite())]
    [(True, 59, 'NONFINITE (nonfinite)')]
    """
    from runwatch.models.findings import Severity

    out = []
    for run in runs:
        alerts = [a for a in stream_run(suite.monitor(run.run_id), run, block_events)
                  if a.finding.severity >= Severity.WARNING]
        label = run.fault or "unlabelled"
        caught = None
        shown = alerts
        if label not in ("healthy", "unlabelled"):
            # An alert before the onset is a false alarm, not a detection; show the first detection.
            onset = run.label.onset if run.label else 0
            counted = [a for a in alerts if a.finding.step >= onset]
            caught = bool(counted)
            shown = counted or alerts
        first = min(shown, key=lambda a: a.finding.step, default=None)
        out.append(RunResult(
            run.run_id, run.name, label, len(run.steps), bool(alerts),
            first.finding.step if first else None,
            f"{first.finding.kind.name} ({first.finding.detector})" if first else "",
            caught, len({a.incident_id for a in alerts}), run.left_out_because if label == "unlabelled" else "",
        ))
    return out


def summarize(results: Sequence[RunResult]) -> dict[str, Any]:
    """Healthy runs flagged, problem runs caught (by fault), incidents per 10k logged steps of healthy runs.

    Examples
    --------
    >>> rs = [RunResult("a", "a", "healthy", 5000, True, 10, "K", None, 1),
    ...       RunResult("b", "b", "healthy", 5000, False, None, "", None, 0),
    ...       RunResult("c", "c", "nan", 100, True, 50, "K", True, 2)]
    >>> s = summarize(rs)
    >>> s["healthy_flagged"], s["problems_caught"], s["alerts_per_10k_healthy_steps"]
    ([1, 2], [1, 1], 1.0)
    """
    healthy = [r for r in results if r.label == "healthy"]
    faulty = [r for r in results if r.caught is not None]
    by_fault: dict[str, list[int]] = {}
    for r in faulty:
        hit = by_fault.setdefault(r.label, [0, 0])
        hit[0] += r.caught
        hit[1] += 1
    steps = sum(r.events for r in healthy)
    incidents = sum(r.incidents for r in healthy)
    return {
        "healthy_flagged": [sum(r.flagged for r in healthy), len(healthy)],
        "problems_caught": [sum(bool(r.caught) for r in faulty), len(faulty)],
        "caught_by_fault": dict(sorted(by_fault.items())),
        "healthy_steps": steps,
        "healthy_incidents": incidents,
        "alerts_per_10k_healthy_steps": round(1e4 * incidents / steps, 3) if steps else None,
        "unlabelled": sum(r.label == "unlabelled" for r in results),
    }


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.1f}%)" if d else "0/0 (-)"


def format_report(results: Sequence[RunResult], summary: dict[str, Any], what: str) -> str:
    """The table and summary ``evaluate`` prints."""
    width = min(60, max([len(r.name) for r in results] + [3]))
    lines = [f"{'run':{width}}  {'label':18} {'events':>7}  {'flagged':7} {'first step':>10}  first alert"]
    for r in results:
        flag = "yes" if r.flagged else "no"
        if r.caught is not None:
            flag = "caught" if r.caught else ("early" if r.flagged else "missed")
        rid = r.name if len(r.name) <= width else "..." + r.name[-(width - 3):]
        step = "" if r.first_step is None else str(r.first_step)
        lines.append(f"{rid:{width}}  {r.label:18} {r.events:>7}  {flag:7} {step:>10}  {r.first_kind}")
    s = summary
    lines.append("")
    lines.append(f"detectors: {what}")
    lines.append(f"healthy runs flagged: {_pct(*s['healthy_flagged'])}")
    by_fault = ", ".join(f"{f} {n}/{d}" for f, (n, d) in s["caught_by_fault"].items())
    lines.append(f"problem runs caught: {_pct(*s['problems_caught'])}" + (f": {by_fault}" if by_fault else ""))
    rate = s["alerts_per_10k_healthy_steps"]
    lines.append(f"alerts per 10k steps on healthy runs: {'-' if rate is None else f'{rate:.1f}'} "
                 f"({s['healthy_incidents']} incident(s) over {s['healthy_steps']:,} logged steps)")
    if s["unlabelled"]:
        lines.append(f"unlabelled runs (not counted; label them with --labels): {s['unlabelled']}")
    return "\n".join(lines)


@detectors_app.command("evaluate")
def evaluate(
    artifact: Annotated[Path | None, typer.Option(help="learned artifact to use (default: the shipped one)")] = None,
    store: Annotated[list[str] | None, typer.Option("--store", help=STORE_HELP)] = None,
    logs: Annotated[list[Path] | None, typer.Option("--logs", help="training logs: a file or folder `runwatch replay` reads; repeat for several")] = None,
    labels: Annotated[Path | None, typer.Option(help=LABELS_HELP)] = None,
    rules_only: Annotated[bool, typer.Option("--rules-only", help="run the rule diagnostics alone (no learned detectors), to compare")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of the table")] = False,
    diagnostics_config: Annotated[Path | None, typer.Option(help="JSON file of the diagnostics to run, as `runwatch serve --diagnostics-config` takes (default: all)")] = None,
    block_events: Annotated[int, typer.Option(min=1, help="events per block fed to the detectors")] = BLOCK_EVENTS,
) -> None:
    """Stream runs through the diagnostics (as `runwatch serve` runs them) and report what they flag.

    Labels follow the same policy as `detectors train`: --labels first; otherwise
    a FINISHED store run without a stored ERROR+ anomaly, or a log run whose log
    does not say it failed, counts as healthy, unless its loss is ever NaN/Inf;
    other runs are listed as unlabelled and not counted. A problem run is caught
    by a WARNING+ alert at or after its onset. Stored anomalies came from the
    detectors of that time: label the runs you know for an unbiased measure.
    """
    from runwatch.models.learned.artifacts import ArtifactError
    from runwatch.models.registry import DIAGNOSTICS, DiagnosticSuite, SuiteConfig

    logs = logs or []
    store = _store_sources(store or [], logs, None, err=lambda m: typer.echo(m, err=True))
    if not (store or logs):
        _fail("no runs to evaluate: give --store DATA_DIR (or a postgresql:// URL) or --logs PATH")
    if rules_only and artifact is not None:
        _fail("--rules-only runs no learned detector; drop --artifact")
    try:
        served = SuiteConfig.model_validate_json(diagnostics_config.read_text()) if diagnostics_config else SuiteConfig()
    except OSError as exc:
        _fail(f"--diagnostics-config {diagnostics_config}: {exc.strerror or exc}")
    except ValidationError as exc:
        _fail(f"--diagnostics-config {diagnostics_config}: "
              + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    enabled, settings = list(served.enabled), dict(served.settings)
    if rules_only:
        enabled = [n for n in enabled if n != "learned"]
        settings.pop("learned", None)
    elif artifact is not None:
        if "learned" not in enabled:
            _fail("--artifact: the diagnostics config does not enable 'learned'")
        settings["learned"] = {**settings.get("learned", {}), "artifact": str(artifact.resolve())}
    suite_cfg = SuiteConfig(**{**served.model_dump(), "enabled": enabled, "settings": settings})
    rules = [n for n in enabled if n != "learned"]
    what = "rules" if set(rules) == set(DIAGNOSTICS) - {"learned"} else f"rules {', '.join(rules) or 'none'}"
    if "learned" in enabled:
        what += f" + learned ({settings.get('learned', {}).get('artifact') or 'shipped artifact'})"
    else:
        what += " only"
    try:
        runs = _gather(store, logs, labels, err=lambda m: typer.echo(m, err=True))
    except SourceError as exc:
        _fail(str(exc))
    try:
        suite = DiagnosticSuite(suite_cfg)
    except ArtifactError as exc:
        _fail(f"--artifact: {exc}")
    results = evaluate_runs(runs, suite, block_events)
    summary = summarize(results)
    if as_json:
        typer.echo(json.dumps({
            "detectors": what,
            "runs": [dataclasses.asdict(r) for r in results],
            "summary": summary,
        }, indent=2))
    else:
        typer.echo(format_report(results, summary, what))
