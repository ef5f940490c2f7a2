"""Read training logs already on disk into runwatch's shape, to replay them (``runwatch replay``).

Formats (``fmt``):

==============  ================================================================
``tensorboard`` ``events.out.tfevents.*`` files; a folder's files are one run
``lightning``   Lightning ``CSVLogger`` ``metrics.csv`` (+ ``hparams.yaml``)
``hf``          Hugging Face ``trainer_state.json``
``mlflow``      an MLflow file store: ``mlruns/``, an experiment or a run folder
``csv``         long-format CSV: ``[run_id,]step,metric,value[,wall_time]``
``jsonl``       long-format JSON Lines with the same keys
``wide``        a wide table: one row per step, one column per metric (CSV,
                tab-separated or JSON Lines; Keras ``CSVLogger``, W&B history
                exports, ``wandb-history.jsonl``); see :mod:`.wide_table`
``history``     a training history saved as one JSON document: a Keras ``History.history``
                dump or a script's dict of lists (``{"loss": [...], "val_loss": [...]}``),
                or a list of per-epoch objects; see :mod:`.history_json`
``dvclive``     DVCLive's output folder (``dvclive/plots/metrics/train/loss.tsv``, ...): one
                run; see :mod:`.dvclive`
``notebook``    a Jupyter notebook (``.ipynb``): its cells' printed output as a text log;
                see :mod:`.notebook`
``text``        a text log (``.log``, ``.txt``, ``.out``, any UTF-8 text file) or
                JSON Lines of log records (``{"time", "level", "text"}``): its lines
==============  ================================================================

Each reader returns :class:`ImportedRun` records (metadata + events merged by
step, in step order; log lines for ``text``) and raises
:class:`ImportFormatError`, naming the file and the position (line, record or
JSON path), on malformed input. Given ``Problems(strict=False)``, readers skip
a malformed entry (a row, a record, a line) instead, keeping the error in
``problems.skipped``, and :func:`read_all` skips a malformed file. Metric
names are mapped onto runwatch's conventions (``train_loss`` -> ``loss``,
``eval_loss`` -> ``val/loss``, ...; see :mod:`runwatch.client.names`) unless
``canonical=False``.

Examples
--------
>>> runs = load("lightning_logs/")                       # doctest: +SKIP
>>> [(r.name, len(r.steps), r.metric_names[:3]) for r in runs]  # doctest: +SKIP
[('lightning_logs/version_0', 120, ['epoch', 'loss', 'lr'])]
"""

from __future__ import annotations

from pathlib import Path

from runwatch.client.importers import (
    dvclive,
    hf_trainer_state,
    history_json,
    lightning_csv,
    long_format,
    mlflow,
    notebook,
    tensorboard,
    text_log,
    wide_table,
)
from runwatch.client.importers.base import STRICT, ImportedRun, ImportFormatError, Problems
from runwatch.client.importers.util import strip_gz

__all__ = ["FORMATS", "ImportFormatError", "ImportedRun", "Problems", "detect", "load", "read_all"]

FORMATS = ("tensorboard", "lightning", "hf", "mlflow", "csv", "jsonl", "wide", "history", "dvclive", "notebook", "text")
# Found in a folder walk by name (and then by content: a step or epoch column): W&B's history export, the names
# Keras's CSVLogger files usually get, Ultralytics YOLO's results.csv, detectron2's metrics.json (JSON Lines
# with an iteration key) and OpenMMLab's JSON logs; other tables only with --format wide (a folder holds data CSVs too).
_WIDE_NAMES = (
    wide_table.WANDB_HISTORY, "training_log.csv", "history.csv", "training_history.csv", "train_log.csv",
    "results.csv", "metrics.json", "scalars.json", "progress.csv", "result.json",
)
_HISTORY_STEMS = ("training_log", "train_log", "training_metrics", "train_metrics", "metrics", "losses", "curves")
_WIDE_SUFFIXES = (".log.json",)  # MMCV 1.x: <timestamp>.log.json beside the text log
# Structured files that are never replayed as text lines, even though they are text.
_STRUCTURED = (".json", ".csv", ".tsv", ".yaml", ".yml", ".toml", ".py", ".md", ".html", ".xml", ".ipynb", ".sh")


def _file_format(path: Path) -> str | None:
    name = strip_gz(path.name)
    if tensorboard.is_event_file(path):
        return "tensorboard"
    if name == "trainer_state.json":
        return "hf"
    if notebook.looks_like(path):
        return "notebook"
    if name.endswith(".json") and history_json.looks_like(path):  # one document: before the JSON Lines checks
        return "history"
    if name.endswith((".jsonl", ".ndjson")) or (name.endswith(".json") and wide_table.is_json_lines(path)):
        if text_log.looks_like_records(path):
            return "text"
        if wide_table.looks_like(path):
            return "wide"
        return "jsonl" if not name.endswith(".json") or long_format.looks_like_jsonl(path) else None
    if name.endswith((".csv", ".tsv")):
        if long_format.looks_like_csv(path):
            return "csv"
        if name == "metrics.csv" or lightning_csv.looks_like(path):
            return "lightning"
        if wide_table.looks_like(path):
            return "wide"
    if name.endswith(text_log.TEXT_SUFFIXES):
        return "text"
    return None


def _wide_by_name(path: Path) -> bool:
    name = strip_gz(path.name)
    history_table = name.endswith((".csv", ".tsv")) and "history" in name.lower()  # model_history.csv, ...
    return name in _WIDE_NAMES or name.endswith(_WIDE_SUFFIXES) or history_table


def _ray_twin(path: Path) -> bool:
    """A Ray Tune trial's ``result.json`` beside its ``progress.csv``: the same results twice; the table is read."""
    return path.name == "result.json" and (path.parent / "progress.csv").is_file()


def _history_by_name(path: Path) -> bool:
    # Found in a folder walk by name: what scripts call the file they dump their curves to.
    stem = strip_gz(path.name).removesuffix(".json")
    return path.name.endswith((".json", ".json.gz")) and ("history" in stem.lower() or stem in _HISTORY_STEMS)


def _text_file(path: Path) -> bool:
    """A file named directly that no other format claims: replayed as text if it is UTF-8 text."""
    return not strip_gz(path.name).lower().endswith(_STRUCTURED) and text_log.looks_like_text(path)


def detect(path: str | Path, fmt: str = "auto") -> list[tuple[str, Path | list[Path]]]:
    """What to read under ``path``: ``(format, file / folder / event files)`` items.

    A file is read by its format (a UTF-8 text file of no other format is a
    text log); in a folder, an MLflow store is read as such, otherwise every
    ``metrics.csv``, ``trainer_state.json``, folder of event files, MLflow
    experiment, long-format ``.csv``/``.jsonl`` (a ``step``, ``metric``, ``value``
    header or first object), wide table named like W&B's history export or a Keras
    ``CSVLogger`` file (``training_log.csv``, ``history.csv``, ...) and ``*.log`` text log below it (text logs named
    ``.txt``/``.out``/``.err`` or JSON Lines of log records, and other tables,
    only when ``fmt`` names them).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ImportFormatError
        Nothing readable there, or a file of an unknown format.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if fmt not in ("auto", *FORMATS):
        raise ValueError(f"unknown format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")
    if path.is_file():
        if path.stat().st_size == 0:
            raise ImportFormatError(path, "file", "the file is empty: nothing to replay")
        found = fmt if fmt != "auto" else _file_format(path)
        if found is None and _text_file(path):
            found = "text"
        if found is None:
            raise ImportFormatError(
                path,
                "file",
                "unknown format: expected events.out.tfevents.*, metrics.csv, trainer_state.json, "
                "a long-format .csv/.jsonl, a wide table (.csv/.tsv/.jsonl with a step or epoch column), a text log, "
                "or pass --format",
            )
        return [(found, path)]
    if fmt in ("auto", "mlflow") and mlflow.looks_like(path):
        return [("mlflow", path)]
    if fmt == "mlflow":
        raise ImportFormatError(path, "folder", "not an MLflow file store")
    items: list[tuple[str, Path | list[Path]]] = []
    live_roots: dict[Path, bool] = {}  # DVCLive folders met in the walk: whether each is one
    event_dirs: dict[Path, list[Path]] = {}
    experiments: set[Path] = set()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        live = dvclive.root_of(f) if fmt in ("auto", "dvclive") and f.suffix == ".tsv" else None
        if live is not None:
            if live not in live_roots:
                live_roots[live] = dvclive.looks_like(live)
                if live_roots[live]:
                    items.append(("dvclive", live))
            if live_roots[live]:
                continue
        if fmt == "auto" and f.name == "meta.yaml" and (f.parent / "metrics").is_dir():
            experiments.add(f.parent.parent)  # an MLflow run folder: read its experiment
        elif fmt in ("auto", "tensorboard") and tensorboard.is_event_file(f):
            event_dirs.setdefault(f.parent, []).append(f)
        elif fmt in ("auto", "lightning") and f.name == "metrics.csv":
            items.append(("lightning", f))
        elif fmt in ("auto", "hf") and f.name == "trainer_state.json":
            items.append(("hf", f))
        elif (fmt == "history" or (fmt == "auto" and _history_by_name(f))) and history_json.looks_like(f):
            items.append(("history", f))
        elif fmt == "auto" and _wide_by_name(f) and not _ray_twin(f) and _file_format(f) == "wide":
            items.append(("wide", f))
        elif fmt == "auto" and (long := long_format.kind_of(f)):
            items.append((long, f))
        elif fmt == "notebook" and notebook.looks_like(f):
            items.append(("notebook", f))
        elif fmt in ("csv", "jsonl", "wide") and _file_format(f) == fmt:
            items.append((fmt, f))
        elif (fmt == "auto" and strip_gz(f.name).endswith(".log")) or (fmt == "text" and _file_format(f) == "text"):
            items.append(("text", f))
    for run_dir in {d.parent for d in event_dirs if d.name in tensorboard.KERAS_SPLITS}:
        splits = [run_dir / name for name in sorted(tensorboard.KERAS_SPLITS)]
        if run_dir not in event_dirs and all(d in event_dirs for d in splits):  # Keras: one run in two folders
            event_dirs[run_dir] = [f for d in splits for f in event_dirs.pop(d)]
    items.extend(("tensorboard", files) for files in event_dirs.values())
    items.extend(("mlflow", exp) for exp in experiments if ".trash" not in exp.parts)
    if not items:
        raise ImportFormatError(path, "", _nothing_found(fmt))
    return sorted(items, key=lambda it: str(it[1][0] if isinstance(it[1], list) else it[1]))


def _nothing_found(fmt: str) -> str:
    if fmt != "auto":
        return f"no {fmt} logs found below it"
    return (
        "no logs found below it (looked for events.out.tfevents.*, metrics.csv, trainer_state.json, MLflow runs, "
        "wandb-history.jsonl, Keras CSVLogger files named training_log.csv / history.csv, training histories saved "
        "as JSON (*history*.json), DVCLive folders (plots/metrics/*.tsv), long-format .csv/.jsonl "
        "with step, metric, value, and *.log; "
        "--format reads other files, e.g. --format text for .txt logs)"
    )


def read(
    fmt: str,
    target: Path | list[Path],
    canonical: bool = True,
    root: Path | None = None,
    problems: Problems = STRICT,
) -> list[ImportedRun]:
    """Read one item that :func:`detect` returned (malformed entries go to ``problems``).

    With ``root`` (the folder :func:`detect` searched), runs of one-run-per-file
    formats are shown by their folder's path below it (e.g.
    ``repo/lightning_logs/version_3``), which tells apart same-named folders.
    """
    if fmt == "jsonl" and isinstance(target, Path) and text_log.looks_like_records(target):
        fmt = "text"  # JSON Lines of log records, not of metric values
    if fmt == "tensorboard":
        runs = tensorboard.read(target, canonical, problems)
    elif isinstance(target, list):
        raise TypeError("only tensorboard reads several files as one run")
    else:
        runs = {
            "lightning": lightning_csv.read,
            "hf": hf_trainer_state.read,
            "mlflow": mlflow.read,
            "csv": long_format.read_csv,
            "jsonl": long_format.read_jsonl,
            "wide": wide_table.read,
            "history": history_json.read,
            "dvclive": dvclive.read,
            "notebook": notebook.read,
            "text": text_log.read,
        }[fmt](target, canonical, problems)
    if root is not None and root.is_dir() and fmt in ("tensorboard", "lightning", "hf", "wide", "history", "notebook", "text"):
        first = target[0] if isinstance(target, list) else target
        folder = first.parent
        if isinstance(target, list):
            folder = tensorboard.keras_run(sorted({f.parent for f in target})) or folder
        try:
            rel = folder.relative_to(root)
        except ValueError:
            rel = None
        if rel is not None:
            shown = f"{root.name}/{rel.as_posix()}" if rel.parts else root.name
            for run in runs:
                run.label = f"{shown}/{run.name.rsplit('/', 1)[-1]}" if fmt in ("text", "wide", "history", "notebook") else shown
    return runs


def read_all(
    path: Path, items: list[tuple[str, Path | list[Path]]], canonical: bool = True, problems: Problems = STRICT
) -> list[ImportedRun]:
    """Read every item of :func:`detect`; leniently, a file that cannot be read at all is skipped.

    Examples
    --------
    >>> lenient = Problems(strict=False)                                  # doctest: +SKIP
    >>> runs = read_all(Path("logs"), detect("logs"), problems=lenient)   # doctest: +SKIP
    >>> [str(e) for e in lenient.skipped]                                 # doctest: +SKIP
    ['logs/a/trainer_state.json:line 3 column 14: invalid JSON: ...; the file was skipped']
    """
    runs: list[ImportedRun] = []
    for fmt, target in items:
        try:
            runs.extend(read(fmt, target, canonical, root=path, problems=problems))
        except ImportFormatError as exc:
            problems.skip(exc, "the file was skipped")
        except OSError as exc:
            where = target[0] if isinstance(target, list) else target
            problems.skip(
                ImportFormatError(where, "file", f"cannot be read: {exc.strerror or exc}"), "the file was skipped"
            )
    return runs


def load(path: str | Path, fmt: str = "auto", canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """Every run under ``path`` (see :func:`detect`), read."""
    path = Path(path)
    return read_all(path, detect(path, fmt), canonical, problems)
