"""The ``runwatch`` command line."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Optional

import grpc
import typer
from pydantic import ValidationError

from runwatch.service.formatting import format_anomaly, format_runs, format_summary
from runwatch.service.settings import ServiceSettings
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc

app = typer.Typer(
    help="runwatch: live anomaly detection for deep-learning training and deployment logs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

_DEFAULTS = ServiceSettings.model_fields
TargetOption = Annotated[
    str, typer.Option("--target", envvar="RUNWATCH_TARGET", show_envvar=True, help="address of a runwatch server")
]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _settings(**values) -> ServiceSettings:
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return ServiceSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        _fail(f"invalid settings: {problems}")
        raise  # unreachable


def _rpc_error(exc: grpc.RpcError, target: str) -> None:
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        _fail(f"no runwatch server at {target} ({exc.details()})")
    _fail(f"{exc.code().name}: {exc.details()}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="RUNWATCH_HOST", show_envvar=True, help="bind address")] = _DEFAULTS["host"].default,
    port: Annotated[int, typer.Option(envvar="RUNWATCH_PORT", show_envvar=True, help="gRPC port (0 = any free port)")] = _DEFAULTS["port"].default,
    data_dir: Annotated[Path, typer.Option(envvar="RUNWATCH_DATA_DIR", show_envvar=True, help="folder for runwatch.db")] = _DEFAULTS["data_dir"].default,
    metrics_port: Annotated[int, typer.Option(envvar="RUNWATCH_METRICS_PORT", show_envvar=True, help="Prometheus /metrics port (0 = off)")] = 0,
    auto_create_runs: Annotated[bool, typer.Option(envvar="RUNWATCH_AUTO_CREATE_RUNS", show_envvar=True, help="open runs implicitly for events without a RunStart")] = False,
    allow_unknown_fields: Annotated[bool, typer.Option(envvar="RUNWATCH_ALLOW_UNKNOWN_FIELDS", show_envvar=True, help="accept items with fields this server does not know")] = False,
    max_batch_bytes: Annotated[int, typer.Option(envvar="RUNWATCH_MAX_BATCH_BYTES", show_envvar=True, help="largest accepted batch")] = _DEFAULTS["max_batch_bytes"].default,
    stall_check_seconds: Annotated[float, typer.Option(envvar="RUNWATCH_STALL_CHECK_SECONDS", show_envvar=True, help="period of time-based checks")] = _DEFAULTS["stall_check_seconds"].default,
    diagnostics_config: Annotated[Optional[Path], typer.Option(envvar="RUNWATCH_DIAGNOSTICS_CONFIG", show_envvar=True, help="JSON file: enabled diagnostics, their settings, alert policy")] = None,
    log_level: Annotated[str, typer.Option(envvar="RUNWATCH_LOG_LEVEL", show_envvar=True, help="DEBUG, INFO, WARNING, ERROR")] = "INFO",
) -> None:
    """Run the runwatch service (gRPC ingest, anomaly watch, run queries)."""
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        _fail(f"--log-level: unknown level {log_level!r}; use DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(
        host=host, port=port, data_dir=data_dir, metrics_port=metrics_port, auto_create_runs=auto_create_runs,
        allow_unknown_fields=allow_unknown_fields, max_batch_bytes=max_batch_bytes,
        stall_check_seconds=stall_check_seconds,
        diagnostics=f"@{diagnostics_config}" if diagnostics_config else None,
    )
    from runwatch.service.server import serve as run_server

    def ready(bound: int) -> None:
        typer.echo(f"runwatch serving on {settings.host}:{bound} (data: {settings.data_dir})", err=True)

    try:
        asyncio.run(run_server(settings, ready))
    except OSError as exc:
        _fail(str(exc))


@app.command()
def demo(
    data_dir: Annotated[Optional[Path], typer.Option(help="keep the demo's store here (default: a temporary folder)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the three training runs")] = 0,
    port: Annotated[int, typer.Option(min=0, max=65535, help="gRPC port of the embedded server (0 = any free port)")] = 0,
) -> None:
    """Train three small models (healthy, diverging, overfitting) and watch runwatch flag them live."""
    from runwatch.service.demo import run_demo

    try:
        report = run_demo(data_dir=data_dir, seed=seed, port=port, out=typer.echo)
    except RuntimeError as exc:
        _fail(str(exc))
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def watch(
    target: TargetOption = "127.0.0.1:50051",
    project: Annotated[str, typer.Option(help="only this project")] = "",
    run: Annotated[str, typer.Option(help="only this run id")] = "",
    min_severity: Annotated[str, typer.Option(help="INFO, WARNING, ERROR or CRITICAL")] = "INFO",
    history: Annotated[bool, typer.Option(help="first print stored anomalies")] = False,
) -> None:
    """Print anomalies as they are raised (Ctrl-C to stop)."""
    try:
        severity = anomaly_pb2.Severity.Value("SEVERITY_" + min_severity.upper())
    except ValueError:
        _fail(f"--min-severity: unknown severity {min_severity!r}; use INFO, WARNING, ERROR or CRITICAL")
    request = service_pb2.WatchRequest(project=project, run_id=run, min_severity=severity, include_history=history)
    with grpc.insecure_channel(target) as channel:
        try:
            for anomaly in service_pb2_grpc.WatchServiceStub(channel).WatchAnomalies(request):
                typer.echo(format_anomaly(anomaly))
        except grpc.RpcError as exc:
            _rpc_error(exc, target)
        except KeyboardInterrupt:
            pass


@app.command()
def runs(
    target: TargetOption = "127.0.0.1:50051",
    project: Annotated[str, typer.Option(help="only this project")] = "",
    status: Annotated[str, typer.Option(help="RUNNING, FINISHED, FAILED or KILLED")] = "",
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="at most this many")] = 50,
) -> None:
    """List runs, newest first."""
    code = 0
    if status:
        try:
            code = runs_pb2.RunStatus.Value("RUN_STATUS_" + status.upper())
        except ValueError:
            _fail(f"--status: unknown status {status!r}; use RUNNING, FINISHED, FAILED or KILLED")
    with grpc.insecure_channel(target) as channel:
        try:
            reply = service_pb2_grpc.RunServiceStub(channel).ListRuns(
                service_pb2.ListRunsRequest(project=project, status=code, limit=limit), timeout=30
            )
        except grpc.RpcError as exc:
            _rpc_error(exc, target)
    typer.echo(format_runs(list(reply.runs)))


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="the run id")],
    target: TargetOption = "127.0.0.1:50051",
) -> None:
    """Show one run: status, anomalies, metric summary."""
    with grpc.insecure_channel(target) as channel:
        try:
            summary = service_pb2_grpc.RunServiceStub(channel).GetRun(
                service_pb2.GetRunRequest(run_id=run_id), timeout=60
            )
        except grpc.RpcError as exc:
            _rpc_error(exc, target)
    typer.echo(format_summary(summary))


if __name__ == "__main__":
    app()
