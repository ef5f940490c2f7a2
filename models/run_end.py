"""A run that ended badly: its ``RunEnd`` status and reason as a finding.

The quietest failure of a training job is the process dying: the host's OOM killer sends SIGKILL and the job
prints nothing, a ``sys.exit(1)`` after a caught exception, a node lost. Its metrics just stop (and the stall
check would speak up only after its timeout). The ``RunEnd`` a client, ``runwatch pipe`` or an integration sends
says it at once: ``failed`` with a reason (``exit code 1``), ``killed`` with the signal. :func:`run_end_finding`
makes it a ``RUN_FAILED`` finding (ERROR) when the run ended ``failed``, or ``killed`` by SIGKILL (the OOM
killer's signal) or a crash signal (SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE: a sender that reports those as
``killed``), and nothing flagged it at ERROR or worse before: otherwise its root cause is already an
incident (one failing run, one incident), a run killed by SIGTERM or SIGINT was stopped on purpose (a
scheduler, a user, a stop runwatch itself asked for), and a finished run is fine; the run's status says the
rest.

Examples
--------
>>> f = run_end_finding("failed", "exit code 137", step=4200)
>>> f.kind.name, f.severity.name, f.step
('RUN_FAILED', 'ERROR', 4200)
>>> f.explanation
'the run ended failed (exit code 137) at step 4200'
>>> run_end_finding("killed", "SIGKILL", step=10).severity.name
'ERROR'
>>> run_end_finding("failed", "loss became non-finite", step=220, worst=Severity.CRITICAL) is None
True
>>> run_end_finding("killed", "SIGSEGV", step=10).explanation
'the run ended killed (SIGSEGV) at step 10; a crash signal: a native library failed (collect the core dump)'
>>> run_end_finding("killed", "SIGINT", step=10), run_end_finding("finished", "", step=10)
(None, None)
"""

from __future__ import annotations

from runwatch.models.findings import AnomalyKind, Finding, Severity

DETECTOR = "run_end"
_KILLER_SIGNALS = ("SIGKILL", "signal 9", "exit code 137", "-9")
_CRASH_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE", "SIGSYS")


def run_end_finding(status: str, reason: str, step: int, worst: Severity | int = 0) -> Finding | None:
    """The finding for a run that ended ``status`` (``finished``, ``failed``, ``killed``) for ``reason`` at ``step``,
    or None when its end needs no alert. ``worst`` is the highest severity the run's incidents reached before.
    """
    reason = reason.strip()
    killed_hard = status == "killed" and any(s in reason for s in _KILLER_SIGNALS)
    crashed = status == "killed" and any(s in reason for s in _CRASH_SIGNALS)
    if not (status == "failed" or killed_hard or crashed) or worst >= Severity.ERROR:
        return None
    why = f" ({reason})" if reason else ""
    hint = (
        "; SIGKILL is usually the host's OOM killer (check dmesg)" if killed_hard
        else "; a crash signal: a native library failed (collect the core dump)" if crashed else ""
    )
    finding = Finding(
        AnomalyKind.RUN_FAILED,
        Severity.ERROR,
        1.0,
        max(int(step), 0),
        "",
        f"the run ended {status}{why} at step {max(int(step), 0)}{hint}",
        key="run_end",
    )
    finding.detector = DETECTOR
    return finding
