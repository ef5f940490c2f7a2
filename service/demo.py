"""``runwatch demo``: five real training runs streamed through a live runwatch server.

A server starts on a free loopback port (embedded, no Kafka), a watcher
prints every anomaly the moment it is raised, and five small PyTorch MLPs
train on scikit-learn's digits: a healthy one, two whose learning rate warms
up past what the net can take (SGD with momentum on a squared error, and
plain SGD on cross-entropy towards 40x a good rate), one that overfits, and
one whose learning rate is far too small to learn anything. A diverging
run's trainer also prints its stop message as text (``run.log_text``), which
runwatch reads like any log line. A per-run summary and seven checks close the
demo: the diverging run is flagged before its loss becomes non-finite, its
text message raises a LOG_PATTERN alert, the learned divergence forecaster
predicts the overshooting run's divergence before its loss turns non-finite,
the healthy run is never flagged, the overfitting run is flagged as such, and
the run that does not learn is flagged by the ``no_learning`` rule. The healthy
run's job is also preempted half-way and resumed under the same run id
(:class:`PreemptedJob`): one run, the re-logged steps dropped as duplicates.
Then a deployment whose only telemetry is its text-generation server's router log
(:mod:`runwatch.service.demo_serving`) is streamed as text: the eighth check
is its LATENCY alert once decoding slows down.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from runwatch.service.background import BackgroundServer
from runwatch.service.formatting import format_anomaly, format_suggestions, kind_name, status_name
from runwatch.service.settings import ServiceSettings
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc

ORDER = ("healthy", "diverging", "overshooting", "overfitting", "not_learning")
PREEMPT_AT, CHECKPOINT_AT = 150, 140  # the healthy run's job is preempted here and restarts from that checkpoint


@dataclass
class RunOutcome:
    """What happened to one demo run, from its trainer and from runwatch."""

    scenario: str
    run_id: str
    steps: int
    first_nonfinite_step: int | None
    final_val_acc: float
    anomalies: list[anomaly_pb2.Anomaly] = field(default_factory=list)
    #: For the preempted run: (status, events stored, re-logged steps the server dropped as duplicates).
    resumed: tuple[int, int, int] | None = None

    @property
    def flags(self) -> list[anomaly_pb2.Anomaly]:
        """Anomalies that alert (WARNING and above); INFO ones are context, e.g. rules the learned models gated."""
        return [a for a in self.anomalies if a.severity >= anomaly_pb2.SEVERITY_WARNING]

    @property
    def first_flag_step(self) -> int | None:
        return min((a.first_step for a in self.flags), default=None)

    def kinds(self) -> set[str]:
        return {kind_name(a.kind) for a in self.flags}


class PreemptedJob:
    """Logs a run the way a preempted job does: at ``PREEMPT_AT`` its client ends the run (SIGTERM) and a
    new one resumes it (``resume=True``), re-logging the steps since its ``CHECKPOINT_AT`` checkpoint, as a
    job restarted from that checkpoint would; the server drops those as duplicates. (The demo's training
    itself goes on in this process: what is shown is the run's side of a restart.)"""

    def __init__(self, run, reopen: Callable[[], object]) -> None:
        self.run, self.reopen = run, reopen
        self.since_checkpoint: list[tuple[int, dict]] = []

    def __call__(self, step: int, metrics: dict) -> None:
        if step == PREEMPT_AT:
            self.run.finish("killed", reason="SIGTERM (preempted)")
            self.run = self.reopen()
            for at, logged in self.since_checkpoint:
                self.run.log(logged, step=at)
        if CHECKPOINT_AT <= step < PREEMPT_AT:
            self.since_checkpoint.append((step, dict(metrics)))
        self.run.log(metrics, step=step)


@dataclass
class DemoReport:
    outcomes: dict[str, RunOutcome]
    checks: list[tuple[str, bool]]

    @property
    def ok(self) -> bool:
        return all(passed for _, passed in self.checks)


def _checks(outcomes: dict[str, RunOutcome], serving: list[anomaly_pb2.Anomaly]) -> list[tuple[str, bool]]:
    healthy, diverging, overshooting, overfit, stuck = (outcomes[n] for n in ORDER)
    latency = [a for a in serving if kind_name(a.kind) == "LATENCY" and a.severity >= anomaly_pb2.SEVERITY_WARNING]
    slow_at = min((a.first_step for a in latency), default=None)
    flag, bad = diverging.first_flag_step, diverging.first_nonfinite_step
    lead = f" ({bad - flag} steps ahead)" if flag is not None and bad is not None else ""
    not_learning = min((a.first_step for a in stuck.flags if a.detector == "no_learning"), default=None)
    forecast = min(
        (a for a in overshooting.flags if a.detector == "learned" and kind_name(a.kind) == "DIVERGENCE_PREDICTED"),
        key=lambda a: a.first_step, default=None,
    )
    predicted, overflow = (forecast.first_step if forecast else None), overshooting.first_nonfinite_step
    first = min(overshooting.flags, key=lambda a: a.first_step, default=None)
    ahead = f", {overflow - predicted} steps before its loss became non-finite at step {overflow}" if predicted and overflow else ""
    before = f"; first flag: {first.detector} at step {first.first_step}" if first is not None and first is not forecast else ""
    return [
        (
            f"diverging run flagged at step {flag} before its loss became non-finite at step {bad}{lead}",
            flag is not None and bad is not None and flag < bad,
        ),
        (
            "diverging run's stop message in its text log flagged as LOG_PATTERN",
            "LOG_PATTERN" in diverging.kinds(),
        ),
        (
            f"overshooting run: the learned forecaster predicted divergence at step {predicted or '-'}{ahead}{before}",
            predicted is not None and overflow is not None and predicted < overflow,
        ),
        (f"healthy run never flagged ({len(healthy.flags)} alerts)", not healthy.flags),
        _resume_check(healthy),
        ("overfitting run flagged as OVERFITTING", "OVERFITTING" in overfit.kinds()),
        (
            f"run with a far too small learning rate flagged as not learning at step {not_learning or '-'}",
            not_learning is not None,
        ),
        (
            f"serving deployment's router log: LATENCY flagged at request {slow_at if slow_at is not None else '-'} "
            f"(decoding slowed from request {SLOW_FROM}), nothing before",
            slow_at is not None and SLOW_FROM <= slow_at <= SLOW_FROM + 10
            and all(a.first_step >= SLOW_FROM for a in serving if a.severity >= anomaly_pb2.SEVERITY_WARNING),
        ),
    ]


def _resume_check(o: RunOutcome) -> tuple[str, bool]:
    status, stored, duplicates = o.resumed or (0, 0, 0)
    text = (
        f"healthy run preempted at step {PREEMPT_AT} and resumed from its step-{CHECKPOINT_AT} checkpoint: one "
        f"{status_name(status)} run of {stored} events, the {duplicates} re-logged steps dropped as duplicates"
    )
    return text, status == runs_pb2.RUN_STATUS_FINISHED and stored == o.steps and duplicates == PREEMPT_AT - CHECKPOINT_AT


SLOW_FROM = 200  # the request from which the demo deployment decodes ~4x slower


def _serve(client, suffix: str, seed: int, out: Callable[[str], None], stamp: Callable[[], str]) -> list[anomaly_pb2.Anomaly]:
    """Stream the demo deployment's router log as text lines; its anomalies once the run is finished."""
    from runwatch.service.demo_serving import router_log

    run_id = f"demo-serving-{suffix}"
    out(f"{stamp()} serving: run {run_id} sends only its text-generation router's log (one line per request) ...")
    run = client.start_run(run_id=run_id, project="demo", tags=["deployment"])
    for line in router_log(seed=seed, slow_from=SLOW_FROM):
        run.log_text(line)
    run.finish("finished", reason="completed")
    runs = service_pb2_grpc.RunServiceStub(client.channel)
    return list(runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30).anomalies)


def _show_advice(channel, run_id: str, out: Callable[[str], None], stamp: Callable[[], str], n: int = 2) -> None:
    """Ask the advisor about one run (shown, not checked: five runs are a thin history)."""
    out(f"{stamp()} asking the architecture advisor about {run_id} ...")
    request = service_pb2.SuggestRequest(run_id=run_id, constraints=service_pb2.SuggestConstraints(num_suggestions=n))
    try:
        response = service_pb2_grpc.AdvisorServiceStub(channel).Suggest(request, timeout=120)
    except grpc.RpcError as exc:
        out(f"  advisor: {exc.code().name}: {exc.details()}")
        return
    out("  " + format_suggestions(response).replace("\n", "\n  "))


def run_demo(
    data_dir: Path | None = None,
    seed: int = 0,
    out: Callable[[str], None] = print,
    port: int = 0,
    keep_serving: Callable[[], None] | None = None,
) -> DemoReport:
    """Run the demo end to end and return what happened (``out`` receives every printed line).

    ``keep_serving``, when given, is called before the server stops (e.g. to wait for Ctrl-C while
    someone looks at the dashboard).
    """
    try:
        from runwatch.client import RunwatchClient
        from runwatch.service.demo_training import HYPERPARAMETERS, SCENARIOS, build_model
    except ImportError as exc:  # torch / scikit-learn are the `torch` extra
        raise RuntimeError(f"runwatch demo needs PyTorch and scikit-learn ({exc}); pip install 'runwatch[torch]'")

    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="runwatch-demo-")
        data_dir = Path(tmp.name)
    settings = ServiceSettings(port=port, data_dir=data_dir, http_port=0)  # the dashboard, loopback, any free port
    t0 = time.perf_counter()
    stamp = lambda: f"[{time.perf_counter() - t0:6.1f}s]"
    suffix = uuid.uuid4().hex[:6]
    try:
        with BackgroundServer(settings) as server, RunwatchClient(server.target) as client:
            out(f"{stamp()} runwatch serving on {server.target} (data: {data_dir})")
            dashboard = f"http://{settings.http_host}:{server.server.http_port}"
            out(f"{stamp()} dashboard: {dashboard}/projects/demo (live while the demo runs; --keep-serving keeps it up)")
            feed = client.watch_anomalies(project="demo")
            shown: set[str] = set()
            shown_changed = threading.Condition()

            def show(anomaly) -> None:
                out(f"{stamp()} ANOMALY {format_anomaly(anomaly)}")
                with shown_changed:
                    shown.add(anomaly.id)
                    shown_changed.notify_all()

            watcher = threading.Thread(target=lambda: [show(a) for a in feed])
            watcher.start()
            runs = service_pb2_grpc.RunServiceStub(client.channel)
            outcomes: dict[str, RunOutcome] = {}
            for name in ORDER:
                run_id = f"demo-{name}-{suffix}"
                out(f"{stamp()} training {name!r} as run {run_id} ...")
                start = {"run_id": run_id, "project": "demo", "hyperparameters": HYPERPARAMETERS[name], "tags": [name]}
                run = client.start_run(**start, model=build_model(name, seed=seed))
                if name == "healthy":
                    duplicates = client.stats().duplicates
                    job = PreemptedJob(run, lambda start=start: client.start_run(**start, resume=True))
                    summary = SCENARIOS[name](job, seed=seed)
                    run = job.run
                    out(f"{stamp()} {name!r} was preempted at step {PREEMPT_AT} (its run ended: SIGTERM) and resumed "
                        f"from its step-{CHECKPOINT_AT} checkpoint under the same run id")
                else:
                    summary = SCENARIOS[name](lambda step, metrics, run=run: run.log(metrics, step=step), seed=seed)
                bad = summary["first_nonfinite_step"]
                if bad is not None:
                    # What a training script prints when it gives up (DETR's wording); runwatch reads text too.
                    run.log_text(f"Epoch 0 step {bad}: loss is nan, stopping training", level="error", step=bad)
                if bad is None:
                    run.finish("finished", reason="completed")
                else:
                    run.finish("failed", reason=f"loss became non-finite at step {bad}")
                outcomes[name] = RunOutcome(name, run_id, summary["steps"], bad, summary["final_val_acc"])
                if name == "healthy":
                    info = runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30).run
                    outcomes[name].resumed = (info.status, info.event_count, client.stats().duplicates - duplicates)
                # The watch stream and the final ack race; show the run's anomalies before its summary line.
                raised = {a.id for a in runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30).anomalies}
                with shown_changed:
                    shown_changed.wait_for(lambda: raised <= shown, timeout=5)
                out(
                    f"{stamp()} {name!r} done: {summary['steps']} steps, val acc {summary['final_val_acc']:.3f}"
                    + (f", loss non-finite at step {bad}" if bad is not None else "")
                )
            serving = _serve(client, suffix, seed, out, stamp)
            feed.cancel()
            watcher.join(timeout=5)
            for outcome in outcomes.values():
                reply = runs.GetRun(service_pb2.GetRunRequest(run_id=outcome.run_id), timeout=30)
                outcome.anomalies = list(reply.anomalies)
            _show_advice(client.channel, outcomes["overfitting"].run_id, out, stamp)
            _show_advice(client.channel, outcomes["not_learning"].run_id, out, stamp, n=1)
            out("  (a history of four other runs: the edits come from the diagnosis, the predicted effect is unknown;")
            out("   with more runs, or `serve --advisor-history`, the surrogate ranks them: docs/advisor.md)")
            if keep_serving is not None:
                out(f"{stamp()} dashboard: {dashboard}/runs/{outcomes['diverging'].run_id} (Ctrl-C to stop)")
                keep_serving()
    finally:
        if tmp is not None:
            tmp.cleanup()

    out("")
    out("summary")
    out(f"  {'run':<26} {'steps':>5} {'val acc':>7} {'first flag':>10} {'non-finite':>10}  anomalies")
    for o in outcomes.values():
        kinds = ", ".join(sorted(o.kinds())) or "-"
        out(
            f"  {o.run_id:<26} {o.steps:>5} {o.final_val_acc:>7.3f} {o.first_flag_step or '-'!s:>10} "
            f"{o.first_nonfinite_step or '-'!s:>10}  {kinds}"
        )
    checks = _checks(outcomes, serving)
    out("")
    for text, passed in checks:
        out(f"  [{'ok' if passed else 'FAILED'}] {text}")
    return DemoReport(outcomes, checks)
