"""``runwatch export``: runs, metric histories or anomalies from a server, to CSV or Parquet.

Examples
--------
::

    runwatch export --project mnist --what runs --out runs.csv
    runwatch export --run run-42 --what history --metrics loss --metrics lr --out run-42.parquet
    runwatch export --project mnist --what history --out mnist-history.parquet   # every run, a run_id column
    runwatch export --what anomalies --min-severity ERROR --out - | head
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import grpc
import typer

WHAT = ("runs", "history", "anomalies")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _reader_gone() -> None:
    """The reader of standard output went away (``| head``): stop quietly, as Unix tools do, 128 + SIGPIPE."""
    # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail too.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(128 + signal.SIGPIPE)


def export(
    out: Annotated[str, typer.Option("--out", help="file to write ('-' = standard output, CSV only)")],
    what: Annotated[str, typer.Option("--what", help="runs, history or anomalies")] = "runs",
    run: Annotated[str, typer.Option("--run", help="only this run")] = "",
    project: Annotated[str, typer.Option("--project", help="only this project")] = "",
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or parquet [default: from --out's suffix, else csv]")
    ] = None,
    metrics: Annotated[list[str] | None, typer.Option("--metrics", help="history: only this metric (repeat)")] = None,
    min_step: Annotated[int | None, typer.Option(help="history: first step")] = None,
    max_step: Annotated[int | None, typer.Option(help="history: last step")] = None,
    min_severity: Annotated[str, typer.Option(help="anomalies: INFO, WARNING, ERROR or CRITICAL")] = "INFO",
    limit: Annotated[int, typer.Option(min=1, help="most runs (runs, history with --project) or anomalies")] = 1000,
    target: Annotated[
        str,
        typer.Option(
            "--target",
            envvar="RUNWATCH_TARGET",
            show_envvar=True,
            help="server address: host:port or https://host:port",
        ),
    ] = "127.0.0.1:50051",
    token: Annotated[
        str | None, typer.Option("--token", help="access token [default: $RUNWATCH_TOKEN]", show_default=False)
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="PEM CA bundle [default: $RUNWATCH_CA_FILE]")
    ] = None,
    client_cert: Annotated[
        Path | None, typer.Option("--client-cert", help="PEM client certificate [default: $RUNWATCH_CLIENT_CERT]")
    ] = None,
    client_key: Annotated[
        Path | None, typer.Option("--client-key", help="PEM key of --client-cert [default: $RUNWATCH_CLIENT_KEY]")
    ] = None,
) -> None:
    """Write runs (with params.* columns), a run's metric history, or anomalies to CSV or Parquet."""
    from runwatch.client.frames import format_of, write_frame
    from runwatch.client.query import Api

    if what not in WHAT:
        _fail(f"--what: expected runs, history or anomalies, got {what!r}")
    if run and project:
        _fail("--run and --project: give one of them")
    if what == "history" and not (run or project):
        _fail("--what history: needs --run (one run) or --project (every run of it)")
    try:
        chosen = format_of(out, fmt)
    except ValueError as exc:
        _fail(f"--{exc}")
    try:
        api = Api(target, token=token, ca_file=ca_file, cert_file=client_cert, key_file=client_key, timeout=300)
    except ValueError as exc:
        _fail(str(exc))
    try:
        with api:
            df = _frame(api, what, run, project, metrics, min_step, max_step, min_severity, limit)
            write_frame(df, out, chosen)
            if out == "-":
                sys.stdout.flush()  # here, where a reader that went away is caught, not at exit
    except BrokenPipeError:
        _reader_gone()
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            _fail(f"no runwatch server at {target} ({exc.details()})")
        _fail(f"{exc.code().name}: {exc.details()}")
    except (ImportError, ValueError, OSError) as exc:
        _fail(str(exc))
    if out != "-":
        typer.echo(f"wrote {len(df)} row(s), {len(df.columns)} column(s) of {what} to {out} ({chosen})", err=True)


def _frame(api, what, run, project, metrics, min_step, max_step, min_severity, limit):
    if what == "runs":
        if run:
            from runwatch.client.frames import runs_frame

            return runs_frame([api.summary(run).run])
        return api.runs(project, limit=limit)
    if what == "anomalies":
        return api.anomalies(project, run_id=run, min_severity=min_severity, limit=limit)
    if run:
        return api.history(run, metrics, min_step=min_step, max_step=max_step)
    from runwatch.client.frames import concat_histories

    infos = list(api.run_infos(project, limit=limit))
    frames = [api.history(info.run_id, metrics, min_step=min_step, max_step=max_step) for info in infos]
    return concat_histories(frames, "run_id", [info.run_id for info in infos])
