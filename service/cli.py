"""The ``runwatch`` command line."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import grpc
import typer
from pydantic import ValidationError

from runwatch.service.formatting import format_anomaly, format_runs, format_suggestions, format_summary, is_folded
from runwatch.service.kafka.config import KafkaSettings
from runwatch.service.settings import ServiceSettings
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc

app = typer.Typer(
    help="runwatch: live anomaly detection for deep-learning training and deployment logs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

_DEFAULTS = ServiceSettings.model_fields
_KAFKA = KafkaSettings.model_fields
TargetOption = Annotated[
    str,
    typer.Option(
        "--target", envvar="RUNWATCH_TARGET", show_envvar=True,
        help="address of a runwatch server: host:port (plaintext) or https://host:port (TLS)",
    ),
]  # fmt: skip
# No envvar= on these: the client reads RUNWATCH_TOKEN etc. itself (runwatch.client.connection).
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", help="access token [default: $RUNWATCH_TOKEN; prefer it, a flag shows in `ps`]", show_default=False
    ),
]
CaFileOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-file", help="PEM CA bundle to check an https:// server [default: $RUNWATCH_CA_FILE, else system CAs]"
    ),
]
ClientCertOption = Annotated[
    Path | None,
    typer.Option("--client-cert", help="PEM client certificate for mutual TLS [default: $RUNWATCH_CLIENT_CERT]"),
]
ClientKeyOption = Annotated[
    Path | None, typer.Option("--client-key", help="PEM key of --client-cert [default: $RUNWATCH_CLIENT_KEY]")
]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _settings(**values) -> ServiceSettings:
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return ServiceSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        _fail(f"invalid settings: {problems}")
        raise  # unreachable


def _problem(error: dict) -> str:
    # Checks across fields name their field in the message, and have no location of their own.
    message = error["msg"].removeprefix("Value error, ")
    return f"{'.'.join(map(str, error['loc']))}: {message}" if error["loc"] else message


def _channel(target: str, token: str | None, ca_file: Path | None, client_cert: Path | None, client_key: Path | None):
    from runwatch.client.connection import make_channel

    try:
        return make_channel(target, token=token, ca_file=ca_file, cert_file=client_cert, key_file=client_key)
    except ValueError as exc:
        message = str(exc)
        for name, flag in (("ca_file", "--ca-file"), ("cert_file", "--client-cert"), ("key_file", "--client-key")):
            message = message.replace(f"{name}:", f"{flag}:")
        _fail(message)
        raise  # unreachable


def _rpc_error(exc: grpc.RpcError, target: str) -> None:
    if exc.code() == grpc.StatusCode.UNAVAILABLE and (exc.details() or "").startswith("store unavailable"):
        _fail(f"{target}: {exc.details()}")  # the server answered; its database did not
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        from runwatch.client.connection import unavailable_hint

        _fail(f"no runwatch server at {target} ({exc.details()}{unavailable_hint(target, exc.details() or '')})")
    _fail(f"{exc.code().name}: {exc.details()}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="RUNWATCH_HOST", show_envvar=True, help="bind address")] = _DEFAULTS["host"].default,
    port: Annotated[int, typer.Option(envvar="RUNWATCH_PORT", show_envvar=True, help="gRPC port (0 = any free port)")] = _DEFAULTS["port"].default,
    data_dir: Annotated[Path, typer.Option(envvar="RUNWATCH_DATA_DIR", show_envvar=True, help="folder for runwatch.db")] = _DEFAULTS["data_dir"].default,
    store: Annotated[str | None, typer.Option(envvar="RUNWATCH_STORE", show_envvar=True, help="postgresql://USER:PASSWORD@HOST:PORT/DB: keep everything in a PostgreSQL database several instances share (postgresql extra; prefer the variable, it holds a password); unset: SQLite in --data-dir", show_default=False)] = None,
    metrics_port: Annotated[int, typer.Option(envvar="RUNWATCH_METRICS_PORT", show_envvar=True, help="Prometheus /metrics port (0 = off)")] = 0,
    auto_create_runs: Annotated[bool, typer.Option(envvar="RUNWATCH_AUTO_CREATE_RUNS", show_envvar=True, help="open runs implicitly for events without a RunStart")] = False,
    allow_unknown_fields: Annotated[bool, typer.Option(envvar="RUNWATCH_ALLOW_UNKNOWN_FIELDS", show_envvar=True, help="accept items with fields this server does not know")] = False,
    max_batch_bytes: Annotated[int, typer.Option(envvar="RUNWATCH_MAX_BATCH_BYTES", show_envvar=True, help="largest accepted batch")] = _DEFAULTS["max_batch_bytes"].default,
    stall_check_seconds: Annotated[float, typer.Option(envvar="RUNWATCH_STALL_CHECK_SECONDS", show_envvar=True, help="period of time-based checks")] = _DEFAULTS["stall_check_seconds"].default,
    diagnostics_config: Annotated[Path | None, typer.Option(envvar="RUNWATCH_DIAGNOSTICS_CONFIG", show_envvar=True, help="JSON file: enabled diagnostics, their settings, alert policy")] = None,
    alerts_config: Annotated[Path | None, typer.Option(envvar="RUNWATCH_ALERTS_CONFIG", show_envvar=True, help="alert sinks and routes (JSON, TOML or YAML; see deploy/alerts.example.json)")] = None,
    log_level: Annotated[str, typer.Option(envvar="RUNWATCH_LOG_LEVEL", show_envvar=True, help="DEBUG, INFO, WARNING, ERROR")] = "INFO",
    advisor_history: Annotated[Path | None, typer.Option(envvar="RUNWATCH_ADVISOR_HISTORY", show_envvar=True, help="JSON file of past runs the advisor learns from besides the store (python -m bench.export_history)")] = None,
    kafka_bootstrap: Annotated[str | None, typer.Option(envvar="RUNWATCH_KAFKA_BOOTSTRAP", show_envvar=True, help="Kafka HOST:PORT[,...]; when set, ingest goes through Kafka (see docs/kafka.md)")] = None,
    kafka_ingest_topic: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_INGEST_TOPIC", show_envvar=True, help="topic of log events (key = run id)")] = _KAFKA["ingest_topic"].default,
    kafka_anomaly_topic: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_ANOMALY_TOPIC", show_envvar=True, help="topic anomalies are published to (key = run id)")] = _KAFKA["anomaly_topic"].default,
    kafka_dlq_topic: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_DLQ_TOPIC", show_envvar=True, help="dead-letter topic for unusable ingest records")] = _KAFKA["dlq_topic"].default,
    kafka_state_topic: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_STATE_TOPIC", show_envvar=True, help="compacted topic of per-run detector checkpoints")] = _KAFKA["state_topic"].default,
    kafka_logs_topic: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_LOGS_TOPIC", show_envvar=True, help="topic of raw text log lines (key = run id, value = the line, as Fluent Bit / Vector / kcat write them), e.g. runwatch.logs; off unless set")] = _KAFKA["logs_topic"].default,
    kafka_group: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_GROUP", show_envvar=True, help="consumer group shared by the detector instances")] = _KAFKA["group"].default,
    kafka_anomaly_format: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_ANOMALY_FORMAT", show_envvar=True, help="json or protobuf")] = _KAFKA["anomaly_format"].default,
    kafka_consume: Annotated[bool, typer.Option(envvar="RUNWATCH_KAFKA_CONSUME", show_envvar=True, help="run the detector consumer (--no-kafka-consume: gRPC-to-Kafka front only)")] = True,
    kafka_create_topics: Annotated[bool, typer.Option(envvar="RUNWATCH_KAFKA_CREATE_TOPICS", show_envvar=True, help="create missing topics at start")] = True,
    kafka_partitions: Annotated[int, typer.Option(envvar="RUNWATCH_KAFKA_PARTITIONS", show_envvar=True, help="partitions of topics runwatch creates")] = _KAFKA["partitions"].default,
    kafka_acks: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_ACKS", show_envvar=True, help="producer acks: all, 1 or 0")] = _KAFKA["acks"].default,
    kafka_linger_ms: Annotated[int, typer.Option(envvar="RUNWATCH_KAFKA_LINGER_MS", show_envvar=True, help="producer linger")] = _KAFKA["linger_ms"].default,
    kafka_batch_size: Annotated[int, typer.Option(envvar="RUNWATCH_KAFKA_BATCH_SIZE", show_envvar=True, help="producer batch size in bytes")] = _KAFKA["batch_size"].default,
    kafka_compression: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_COMPRESSION", show_envvar=True, help="none, gzip, snappy, lz4 or zstd")] = _KAFKA["compression"].default,
    kafka_max_message_bytes: Annotated[int, typer.Option(envvar="RUNWATCH_KAFKA_MAX_MESSAGE_BYTES", show_envvar=True, help="largest record runwatch produces (the gRPC door splits batches to fit)")] = _KAFKA["max_message_bytes"].default,
    kafka_commit_interval_ms: Annotated[int, typer.Option(envvar="RUNWATCH_KAFKA_COMMIT_INTERVAL_MS", show_envvar=True, help="longest detection cycle before anomalies, checkpoints and offsets are flushed")] = _KAFKA["commit_interval_ms"].default,
    kafka_session_timeout_ms: Annotated[int, typer.Option(envvar="RUNWATCH_KAFKA_SESSION_TIMEOUT_MS", show_envvar=True, help="consumer group session timeout")] = _KAFKA["session_timeout_ms"].default,
    kafka_heartbeat_interval_ms: Annotated[int, typer.Option(envvar="RUNWATCH_KAFKA_HEARTBEAT_INTERVAL_MS", show_envvar=True, help="consumer heartbeat interval")] = _KAFKA["heartbeat_interval_ms"].default,
    kafka_security_protocol: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_SECURITY_PROTOCOL", show_envvar=True, help="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")] = _KAFKA["security_protocol"].default,
    kafka_sasl_mechanism: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_SASL_MECHANISM", show_envvar=True, help="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")] = "",
    kafka_sasl_username: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_SASL_USERNAME", show_envvar=True, help="SASL user")] = "",
    kafka_sasl_password: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_SASL_PASSWORD", show_envvar=True, help="SASL password (prefer the variable to the flag)", show_default=False)] = "",
    kafka_ssl_cafile: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_SSL_CAFILE", show_envvar=True, help="CA bundle for SSL")] = "",
    kafka_ssl_certfile: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_SSL_CERTFILE", show_envvar=True, help="client certificate for SSL")] = "",
    kafka_ssl_keyfile: Annotated[str, typer.Option(envvar="RUNWATCH_KAFKA_SSL_KEYFILE", show_envvar=True, help="client key for SSL")] = "",
    tls_cert: Annotated[Path | None, typer.Option(envvar="RUNWATCH_TLS_CERT", show_envvar=True, help="PEM certificate chain: serve gRPC over TLS (with --tls-key)")] = None,
    tls_key: Annotated[Path | None, typer.Option(envvar="RUNWATCH_TLS_KEY", show_envvar=True, help="PEM private key of --tls-cert")] = None,
    tls_client_ca: Annotated[Path | None, typer.Option(envvar="RUNWATCH_TLS_CLIENT_CA", show_envvar=True, help="PEM CA bundle: require client certificates it signed (mutual TLS)")] = None,
    auth_tokens: Annotated[Path | None, typer.Option(envvar="RUNWATCH_AUTH_TOKENS", show_envvar=True, help="token file (runwatch tokens create): every call but health needs a token; re-read on change or SIGHUP")] = None,
    allow_insecure: Annotated[bool, typer.Option(envvar="RUNWATCH_ALLOW_INSECURE", show_envvar=True, help="allow a non-loopback --host without TLS and authentication")] = False,
    http_port: Annotated[int | None, typer.Option(envvar="RUNWATCH_HTTP_PORT", show_envvar=True, help="serve the dashboard and Prometheus /metrics on this HTTP port (off unless set; 0 = any free port)")] = None,
    http_host: Annotated[str, typer.Option(envvar="RUNWATCH_HTTP_HOST", show_envvar=True, help="dashboard bind address (non-loopback: needs TLS and authentication, or --allow-insecure)")] = _DEFAULTS["http_host"].default,
    log_format: Annotated[str, typer.Option(envvar="RUNWATCH_LOG_FORMAT", show_envvar=True, help="text, or json: one JSON object per line (time, level, logger, message, extra fields)")] = "text",
    idle_evict_s: Annotated[float, typer.Option(envvar="RUNWATCH_IDLE_EVICT_S", show_envvar=True, help="seconds a run may send nothing before its detector state moves to the store (restored on its next item; stalls still fire)")] = _DEFAULTS["idle_evict_s"].default,
    max_active_runs: Annotated[int, typer.Option(envvar="RUNWATCH_MAX_ACTIVE_RUNS", show_envvar=True, help="runs held in memory at most; the least recently active beyond it move to the store")] = _DEFAULTS["max_active_runs"].default,
    max_active_runs_per_project: Annotated[int, typer.Option(envvar="RUNWATCH_MAX_ACTIVE_RUNS_PER_PROJECT", show_envvar=True, help="runs of one project in memory at most; a new run beyond it is refused with RESOURCE_EXHAUSTED (gRPC ingest)")] = _DEFAULTS["max_active_runs_per_project"].default,
    max_streams: Annotated[int, typer.Option(envvar="RUNWATCH_MAX_STREAMS", show_envvar=True, help="StreamEvents streams open at once; more are refused with RESOURCE_EXHAUSTED")] = _DEFAULTS["max_streams"].default,
    max_streams_per_peer: Annotated[int, typer.Option(envvar="RUNWATCH_MAX_STREAMS_PER_PEER", show_envvar=True, help="StreamEvents streams open at once from one client connection")] = _DEFAULTS["max_streams_per_peer"].default,
    max_watchers: Annotated[int, typer.Option(envvar="RUNWATCH_MAX_WATCHERS", show_envvar=True, help="WatchAnomalies streams open at once; more are refused with RESOURCE_EXHAUSTED")] = _DEFAULTS["max_watchers"].default,
    max_watchers_per_peer: Annotated[int, typer.Option(envvar="RUNWATCH_MAX_WATCHERS_PER_PEER", show_envvar=True, help="WatchAnomalies streams open at once from one client connection")] = _DEFAULTS["max_watchers_per_peer"].default,
    max_unary_calls: Annotated[int, typer.Option(envvar="RUNWATCH_MAX_UNARY_CALLS", show_envvar=True, help="unary calls in progress at once beyond streams and watchers; more are refused with RESOURCE_EXHAUSTED")] = _DEFAULTS["max_unary_calls"].default,
    shutdown_grace_s: Annotated[float, typer.Option(envvar="RUNWATCH_SHUTDOWN_GRACE_S", show_envvar=True, help="on SIGTERM: seconds to finish in-flight batches, commit and exit (even with the broker gone)")] = _DEFAULTS["shutdown_grace_s"].default,
) -> None:
    """Run the runwatch service (gRPC ingest, anomaly watch, run queries; Kafka ingest with --kafka-bootstrap)."""
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        _fail(f"--log-level: unknown level {log_level!r}; use DEBUG, INFO, WARNING or ERROR")
    kafka_options = {name.removeprefix("kafka_"): value for name, value in locals().items() if name.startswith("kafka_")}
    from runwatch.service.log_format import LOG_FORMATS, configure_logging

    if log_format not in LOG_FORMATS:
        _fail(f"--log-format: expected text or json, got {log_format!r}")
    configure_logging(log_level, log_format)
    if log_level.upper() != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python logs every connection at INFO
    settings = _settings(
        host=host, port=port, data_dir=data_dir, store=store, metrics_port=metrics_port,
        auto_create_runs=auto_create_runs, allow_unknown_fields=allow_unknown_fields, max_batch_bytes=max_batch_bytes,
        stall_check_seconds=stall_check_seconds,
        diagnostics=f"@{diagnostics_config}" if diagnostics_config else None,
        alerts=f"@{alerts_config}" if alerts_config else None,
        advisor_history=advisor_history,
        kafka={**kafka_options, "bootstrap": kafka_bootstrap or ""},
        tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca, auth_tokens=auth_tokens,
        allow_insecure=allow_insecure, http_port=http_port, http_host=http_host,
        idle_evict_s=idle_evict_s, max_active_runs=max_active_runs,
        max_active_runs_per_project=max_active_runs_per_project, max_streams=max_streams,
        max_streams_per_peer=max_streams_per_peer, max_watchers=max_watchers, max_watchers_per_peer=max_watchers_per_peer,
        max_unary_calls=max_unary_calls,
        shutdown_grace_s=shutdown_grace_s,
    )
    from runwatch.nas.nni_adapter import MissingExtraError
    from runwatch.service.server import serve as run_server

    def ready(bound: int) -> None:
        via = f", kafka: {settings.kafka.bootstrap} group {settings.kafka.group}" if settings.kafka.enabled else ""
        tls = ("mutual TLS" if settings.tls_client_ca else "TLS") if settings.tls_cert else "plaintext"
        auth = f"tokens from {settings.auth_tokens}" if settings.auth_tokens else "no tokens"
        data = redact(settings.store) if settings.store else settings.data_dir
        message = f"runwatch serving on {settings.host}:{bound} ({tls}, {auth}; data: {data}{via})"
        if log_format == "json":  # every line on stderr stays one JSON object
            logging.getLogger("runwatch.service").info(message, extra={"grpc_port": bound})
        else:
            typer.echo(message, err=True)

    from runwatch.nas.history_file import HistoryFileError
    from runwatch.service.store_location import StoreError, redact
    from runwatch.service.tls import TLSConfigError
    from runwatch.service.tokens import TokenFileError

    try:
        asyncio.run(run_server(settings, ready))
    except OSError as exc:
        _fail(str(exc))
    except TokenFileError as exc:
        _fail(f"auth_tokens: {exc}")
    except TLSConfigError as exc:
        _fail(str(exc))
    except HistoryFileError as exc:
        _fail(f"advisor_history: {exc}")
    except MissingExtraError as exc:
        _fail(str(exc))
    except StoreError as exc:
        _fail(str(exc))


@app.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="keep the demo's store here (default: a temporary folder)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the three training runs")] = 0,
    port: Annotated[int, typer.Option(min=0, max=65535, help="gRPC port of the embedded server (0 = any free port)")] = 0,
    keep_serving: Annotated[bool, typer.Option(help="keep the server and its dashboard up until Ctrl-C")] = False,
) -> None:
    """Train five small models (healthy, two diverging, overfitting, not learning) and watch runwatch flag them live."""
    from runwatch.service.demo import run_demo

    def wait_for_ctrl_c() -> None:
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass

    try:
        report = run_demo(data_dir=data_dir, seed=seed, port=port, out=typer.echo,
                          keep_serving=wait_for_ctrl_c if keep_serving else None)
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
    all_anomalies: Annotated[bool, typer.Option("--all", help="also INFO findings attributed to another incident (its other layers, symptoms)")] = False,
    token: TokenOption = None,
    ca_file: CaFileOption = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
) -> None:
    """Print anomalies as they are raised (Ctrl-C to stop).

    When the server goes away (a restart, a deploy) the watch reconnects, and prints the anomalies raised
    meanwhile, each revision once.
    """
    try:
        severity = anomaly_pb2.Severity.Value("SEVERITY_" + min_severity.upper())
    except ValueError:
        _fail(f"--min-severity: unknown severity {min_severity!r}; use INFO, WARNING, ERROR or CRITICAL")
    with _channel(target, token, ca_file, client_cert, client_key) as channel:
        try:
            if run and not _run_exists(channel, run):
                # Watching a run before it starts is allowed; a typo should not look like a quiet run.
                typer.echo(f"note: no run {run!r} on {target} yet; waiting for its anomalies (Ctrl-C to stop)", err=True)
            elif not run:  # a server that is not there at all is an error, not a restart to wait out
                service_pb2_grpc.RunServiceStub(channel).ListRuns(service_pb2.ListRunsRequest(limit=1), timeout=30)
            _follow_anomalies(channel, target, project, run, severity, history, all_anomalies)
        except grpc.RpcError as exc:
            _rpc_error(exc, target)
        except KeyboardInterrupt:
            pass


def _follow_anomalies(
    channel: grpc.Channel, target: str, project: str, run: str, severity: int, history: bool, all_anomalies: bool = False
) -> None:
    """Print anomalies until Ctrl-C; across a lost server, reconnect and print what was raised meanwhile.

    A reconnection asks for the stored anomalies too, and prints those detected since the watch began (all of
    them with ``history``) that it has not printed yet: what a restart's gap would otherwise lose, and no repeats.
    INFO findings attributed to another incident (its other layers, its symptoms) are left out unless ``all_anomalies``.
    """
    stub = service_pb2_grpc.WatchServiceStub(channel)
    began = time.time()
    printed: set[tuple[str, int]] = set()
    reconnecting, wait = False, 0.5
    while True:
        request = service_pb2.WatchRequest(
            project=project, run_id=run, min_severity=severity, include_history=history or reconnecting
        )
        try:
            for anomaly in stub.WatchAnomalies(request):
                if reconnecting:
                    typer.echo(f"note: watching {target} again", err=True)
                    reconnecting, wait = False, 0.5
                key = (anomaly.id, anomaly.revision)
                if key in printed or (not history and anomaly.detected_time < began):
                    continue
                if not all_anomalies and is_folded(anomaly):
                    continue
                printed.add(key)
                typer.echo(format_anomaly(anomaly))
            ended = "the server closed the stream"
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            ended = "the server is unavailable"
        if not reconnecting:
            typer.echo(f"note: lost {target} ({ended}); reconnecting (Ctrl-C to stop)", err=True)
            reconnecting = True
        time.sleep(wait)
        wait = min(2 * wait, 5.0)


def _run_exists(channel: grpc.Channel, run_id: str) -> bool:
    try:
        service_pb2_grpc.RunServiceStub(channel).GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


@app.command()
def runs(
    target: TargetOption = "127.0.0.1:50051",
    project: Annotated[str, typer.Option(help="only this project")] = "",
    status: Annotated[str, typer.Option(help="RUNNING, FINISHED, FAILED or KILLED")] = "",
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="at most this many")] = 50,
    token: TokenOption = None,
    ca_file: CaFileOption = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
) -> None:
    """List runs, newest first."""
    code = 0
    if status:
        try:
            code = runs_pb2.RunStatus.Value("RUN_STATUS_" + status.upper())
        except ValueError:
            _fail(f"--status: unknown status {status!r}; use RUNNING, FINISHED, FAILED or KILLED")
    with _channel(target, token, ca_file, client_cert, client_key) as channel:
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
    all_anomalies: Annotated[bool, typer.Option("--all", help="list INFO findings folded into their incident too (other layers, symptoms)")] = False,
    token: TokenOption = None,
    ca_file: CaFileOption = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
) -> None:
    """Show one run: status, anomalies, metric summary."""
    with _channel(target, token, ca_file, client_cert, client_key) as channel:
        try:
            summary = service_pb2_grpc.RunServiceStub(channel).GetRun(
                service_pb2.GetRunRequest(run_id=run_id), timeout=60
            )
        except grpc.RpcError as exc:
            _rpc_error(exc, target)
    typer.echo(format_summary(summary, all_anomalies=all_anomalies))


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="log file or folder: TensorBoard events, Lightning metrics.csv, HF trainer_state.json, mlruns/, long CSV/JSONL, wide tables (Keras CSVLogger, W&B history exports), text logs (.log, .txt, .out; JSONL of log records), or a runwatch spool folder")],
    target: TargetOption = "127.0.0.1:50051",
    project: Annotated[str | None, typer.Option(help="project of the replayed runs (default: the source's, else 'replay')")] = None,
    pace: Annotated[str, typer.Option(help="'fast' (as fast as the server acknowledges) or 'original' (the run's own timing)")] = "fast",
    speed: Annotated[float, typer.Option(min=1e-6, help="with --pace original: play this many times faster")] = 1.0,
    max_gap: Annotated[float, typer.Option(min=0.0, help="with --pace original: longest wait between two events, seconds")] = 60.0,
    format: Annotated[str, typer.Option("--format", help="auto, tensorboard, lightning, hf, mlflow, csv, jsonl, wide, history, dvclive, notebook, text or spool")] = "auto",
    keep_names: Annotated[bool, typer.Option(help="keep metric names as written (default: map train_loss -> loss, eval_loss -> val/loss, ...)")] = False,
    new_ids: Annotated[bool, typer.Option(help="replay runs the server already has, under fresh run ids")] = False,
    dry_run: Annotated[bool, typer.Option(help="read and summarise only; send nothing")] = False,
    strict: Annotated[bool, typer.Option(help="send nothing if any file or entry is malformed (default: skip each with a warning, send the rest)")] = False,
    token: TokenOption = None,
    ca_file: CaFileOption = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
) -> None:
    """Stream training logs already on disk into runwatch, so their history becomes anomalies.

    Exit status: 0 all sent and accepted; 1 something was rejected, dropped, or skipped as malformed
    (each named in a warning on stderr); 2 nothing was sent (no logs, no server, or --strict and a problem).
    """
    from runwatch.client.importers import FORMATS, ImportFormatError
    from runwatch.client.replay import replay as run_replay

    if pace not in ("fast", "original"):
        _fail(f"--pace: expected 'fast' or 'original', got {pace!r}")
    if format not in ("auto", "spool", *FORMATS):
        _fail(f"--format: expected auto, spool or one of {', '.join(FORMATS)}, got {format!r}")
    try:
        report = run_replay(
            path, target=target, project=project, pace=pace, speed=speed, max_gap=max_gap, fmt=format,
            canonical=not keep_names, new_ids=new_ids, dry_run=dry_run, out=typer.echo,
            strict=strict, warn=lambda line: typer.echo(line, err=True),
            token=token, ca_file=ca_file, cert_file=client_cert, key_file=client_key,
        )
    except (ImportFormatError, FileNotFoundError, ConnectionError, ValueError) as exc:
        _fail(str(exc))
    except grpc.RpcError as exc:
        _rpc_error(exc, target)
    sent = [r for r in report.runs if not r.skipped]
    skipped = len(report.runs) - len(sent)
    anomalies = sum(max(r.anomalies, 0) for r in sent)
    left_out = f", {len(report.warnings)} malformed entr{'y' if len(report.warnings) == 1 else 'ies'} skipped" if report.warnings else ""
    if dry_run:
        typer.echo(f"{len(report.runs)} run(s) read in {report.seconds:.1f} s{left_out} (dry run: nothing sent)")
        if report.warnings:  # the exit status the help promises: something would be skipped as malformed
            raise typer.Exit(1)
        return
    typer.echo(
        f"{len(sent)} run(s) replayed, {skipped} skipped, {report.accepted} item(s) accepted, "
        f"{report.rejected} rejected, {report.dropped} dropped, {anomalies} anomaly incident(s){left_out}, "
        f"{report.seconds:.1f} s"
    )
    for r in sent:
        if r.anomalies > 0:
            typer.echo(f"  {r.anomalies:3d} anomalies  runwatch show {r.run_id}")
    for seq, field, reason in report.violations[:5]:
        typer.echo(f"  rejected: {field}: {reason}", err=True)
    if not report.complete:
        raise typer.Exit(1)


@app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def pipe(
    command: Annotated[list[str] | None, typer.Argument(help="the program to run and its arguments, after --; without one, lines are read from stdin", show_default=False)] = None,
    project: Annotated[str, typer.Option(help="project of the run")] = "default",
    run_id: Annotated[str | None, typer.Option(help="id of the run (default: generated)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue --run-id even if it ended (a restarted job)")] = False,
    kind: Annotated[str, typer.Option(help="training or deployment")] = "training",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="tag of the run (repeat)")] = None,
    target: TargetOption = "127.0.0.1:50051",
    spool_dir: Annotated[Path | None, typer.Option(help="keep undelivered lines here until the server has them [default: $RUNWATCH_SPOOL_DIR, else ~/.cache/runwatch/spool]")] = None,
    no_spool: Annotated[bool, typer.Option("--no-spool", help="keep undelivered lines in memory only")] = False,
    finish_timeout: Annotated[float, typer.Option(min=0.0, help="seconds to wait at the end for the server to acknowledge")] = 10.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print nothing of runwatch's own (the run id, what was not delivered)")] = False,
    token: TokenOption = None,
    ca_file: CaFileOption = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
) -> None:
    """Stream a program's stdout and stderr (or stdin) into a run as log lines; the program's output is unchanged.

    runwatch pipe --project p -- python train.py --lr 3e-4      (exit code -> run status; exits as the program did)

    python train.py 2>&1 | runwatch pipe --project p             (the run finishes at end of input)
    """
    from runwatch.client.pipe import pipe as run_pipe

    if kind not in ("training", "deployment"):
        _fail(f"--kind: expected training or deployment, got {kind!r}")
    try:
        report = run_pipe(
            command or None, project=project, run_id=run_id, target=target, kind=kind, tags=tag or (),
            spool_dir=False if no_spool else spool_dir, finish_timeout=finish_timeout,
            notify=None if quiet else (lambda line: typer.echo(line, err=True)),
            token=token, ca_file=ca_file, cert_file=client_cert, key_file=client_key, resume=resume, watchdog_s=30.0,
        )  # fmt: skip
    except FileNotFoundError as exc:
        _fail(f"COMMAND: {exc.filename or (command or [''])[0]}: no such program")
    except (ValueError, OSError) as exc:  # PermissionError, "Exec format error": a program that cannot start
        _fail(str(exc))
    # The run is delivered (or spooled) and reported: end here, without the interpreter's teardown, where gRPC's
    # background threads have been seen to hang a finished pipe for good (grpc/grpc#5084 and its kin; here once in
    # about ten full test runs, the child's output all forwarded).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(report.exit_code)


@app.command()
def suggest(
    run_id: Annotated[str, typer.Argument(help="the run to improve ('' with --project: the project's best run)")] = "",
    project: Annotated[str, typer.Option(help="improve this project's best finished run when no run id is given")] = "",
    target_metric: Annotated[str, typer.Option("--target-metric", help="metric to optimise, e.g. val/loss or val/acc")] = "val/loss",
    num: Annotated[int, typer.Option("--num", "-n", min=1, max=20, help="how many suggestions")] = 3,
    max_params: Annotated[int, typer.Option(min=0, max=2**63 - 1, help="largest parameter count allowed (0 = no limit)")] = 0,
    max_latency_ms: Annotated[float, typer.Option(min=0.0, help="largest predicted latency, ms (0 = no limit)")] = 0.0,
    target: TargetOption = "127.0.0.1:50051",
    token: TokenOption = None,
    ca_file: CaFileOption = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
) -> None:
    """Ask the server's architecture advisor for ranked changes to a run's architecture."""
    if not run_id and not project:
        _fail("RUN_ID: give a run id, or --project to improve that project's best run")
    request = service_pb2.SuggestRequest(
        run_id=run_id,
        project=project,
        target_metric=target_metric,
        constraints=service_pb2.SuggestConstraints(
            max_params=max_params, max_latency_ms=max_latency_ms, num_suggestions=num
        ),
    )
    with _channel(target, token, ca_file, client_cert, client_key) as channel:
        try:
            response = service_pb2_grpc.AdvisorServiceStub(channel).Suggest(request, timeout=300)
        except grpc.RpcError as exc:
            _rpc_error(exc, target)
    typer.echo(format_suggestions(response))


tokens_app = typer.Typer(
    help="access tokens of a server started with --auth-tokens FILE (the file keeps their hashes only)",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="tokens")
TokenFileOption = Annotated[
    Path, typer.Option("--file", envvar="RUNWATCH_AUTH_TOKENS", show_envvar=True, help="the server's token file")
]


@tokens_app.command("create")
def tokens_create(
    file: TokenFileOption,
    project: Annotated[
        list[str], typer.Option("--project", help="project the token may touch (repeat; '*' = every project)")
    ],
    scope: Annotated[list[str], typer.Option("--scope", help="ingest, read, advise or admin (repeat)")],
    description: Annotated[str, typer.Option(help="who or what uses it")] = "",
) -> None:
    """Add a token to the file and print it (it is shown only this once). The server picks it up at once."""
    from runwatch.service.tokens import SCOPES, TokenFileError, create_token

    for s in scope:
        if s not in SCOPES:
            _fail(f"--scope: unknown scope {s!r}; use {', '.join(SCOPES)}")
    try:
        token, record = create_token(file, projects=project, scopes=scope, description=description)
    except TokenFileError as exc:
        _fail(str(exc))
    typer.echo(token)
    typer.echo(
        f"created token {record.id} (scopes: {', '.join(record.scopes)}; projects: {', '.join(record.projects)}) "
        f"in {file}; store it now, it is not shown again",
        err=True,
    )


@tokens_app.command("list")
def tokens_list(file: TokenFileOption) -> None:
    """List the tokens of the file: id, scopes, projects, creation time, description (no secrets)."""
    import time as _time

    from runwatch.service.tokens import TokenFileError, read_token_file

    try:
        content = read_token_file(file)
    except TokenFileError as exc:
        _fail(str(exc))
    if not content.tokens:
        typer.echo(f"no tokens in {file}")
    for t in content.tokens:
        created = _time.strftime("%Y-%m-%d %H:%M", _time.localtime(t.created)) if t.created else "-"
        typer.echo(f"{t.id}  {','.join(t.scopes):24} {','.join(t.projects):30} {created}  {t.description}")


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id (as `runwatch tokens list` shows it) or the token")],
    file: TokenFileOption,
) -> None:
    """Remove a token from the file; the server refuses it from its next call on."""
    from runwatch.service.tokens import TokenFileError, revoke_token

    try:
        record = revoke_token(file, token_id)
    except TokenFileError as exc:
        _fail(str(exc))
    typer.echo(f"revoked token {record.id} ({', '.join(record.scopes)} on {', '.join(record.projects)})")


nas_app = typer.Typer(help="architecture search with real training trials (needs the 'nas' extra)", no_args_is_help=True)
app.add_typer(nas_app, name="nas")
from runwatch.service.detectors_command import detectors_app

app.add_typer(detectors_app, name="detectors")
from runwatch.service.export_command import export

app.command("export")(export)


@nas_app.command("run")
def nas_run(
    trainer: Annotated[str, typer.Option(help="module:function that trains a torch model and returns the metric to minimise")],
    model: Annotated[str, typer.Option(help="module:function returning the starting torch model (nn.Module)")],
    budget: Annotated[int, typer.Option(min=1, max=1000, help="number of real training trials")] = 8,
    strategy: Annotated[str, typer.Option(help="'evolution' (NNI RegularizedEvolution) or 'random'")] = "evolution",
    seed: Annotated[int, typer.Option(help="random seed of the search")] = 0,
    space: Annotated[Path | None, typer.Option(help="JSON file of runwatch.nas.space.SearchSpace settings")] = None,
    out: Annotated[Path | None, typer.Option(help="write every trial (genome, value, cost) to this JSON file")] = None,
) -> None:
    """Search around a model's architecture with real short training trials, in-process through NNI."""
    from runwatch.service.nas_command import run_search

    if strategy not in ("evolution", "random"):
        _fail(f"--strategy: expected 'evolution' or 'random', got {strategy!r}")
    try:
        report = run_search(trainer=trainer, model=model, budget=budget, strategy=strategy, seed=seed, space_file=space, out=out)
    except (ValueError, ImportError) as exc:
        _fail(str(exc))
    typer.echo(report)


if __name__ == "__main__":
    app()
