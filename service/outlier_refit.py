"""Each project's run-outlier detector, refitted from its own healthy finished runs, off the ingest path.

The policy is :mod:`runwatch.models.learned.project_refit`'s; a
:class:`ProjectRefitter` carries it out for one pipeline:

- at a run's end (:meth:`ProjectRefitter.run_ended`) an eligible run's prefix
  summaries go to the store (``run_summaries``), and its project is checked;
- a check, on the refitter's own thread, counts the project's stored runs and,
  at a new fit point, reads them, fits the project's model and puts it in
  :attr:`ProjectRefitter.models`, which every run of the project reads at its
  next checkpoint; each refit logs one INFO line;
- when started, it checks every project with stored runs; a project seen here
  later (a RunStart, a run read back from the store) is checked once, and a run
  moved here from another instance has its project checked again, so a restart
  or a handoff serves the model the store's rows make (same rows, same seed:
  the same trees).

Until its project's check is done, a run is scored by the shipped model.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

from runwatch.models.learned.artifacts import load_artifact
from runwatch.models.learned.detector import LearnedConfig
from runwatch.models.learned.project_models import ProjectModels
from runwatch.models.learned.project_refit import eligible, fit_point, fit_project_model, shipped_flag_rate
from runwatch.models.monitor import RunMonitor
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore, save_run_summaries_op

log = logging.getLogger("runwatch.service")

_ALL = "\0all"  # a queued check of every project with stored runs


class ProjectRefitter:
    """Keeps :attr:`models` (project -> refitted run-outlier model) in step with the store.

    Nothing is fitted before :meth:`start` (the server starts it; a bare pipeline
    only stores its eligible runs' rows).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> store = RunStore(Path(tempfile.mkdtemp()) / "runwatch.db")
    >>> refitter = ProjectRefitter(store, LearnedConfig())
    >>> refitter.start(); refitter.wait_idle(), refitter.models.projects()
    (True, [])
    >>> refitter.close(); store.close()
    """

    def __init__(self, store: RunStore, config: LearnedConfig) -> None:
        self.store = store
        self.config = config
        self.policy = config.project_refit
        self.models = ProjectModels()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._queued: set[str] = set()  # projects with a check waiting (an end's check waits for its write instead)
        self._seen: set[str] = set()
        self._busy = 0  # checks queued or running
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._shipped: tuple | None = None  # (detector, alert level, the share of its reference it flags)

    @classmethod
    def for_settings(cls, settings: ServiceSettings, store: RunStore) -> ProjectRefitter | None:
        """The refitter of a service's settings; None when the learned detector, its RUN_OUTLIER or refits are off."""
        if "learned" not in settings.diagnostics.enabled:
            return None
        config = LearnedConfig.model_validate(settings.diagnostics.settings.get("learned", {}))
        return cls(store, config) if config.project_refit.enabled and config.run_outlier else None

    # -- the pipeline's side ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start refitting, beginning with every project that has stored runs."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="runwatch-outlier-refit", daemon=True)
        self._thread.start()
        self._put(_ALL)

    def close(self, timeout: float = 10.0) -> None:
        """Stop: a refit in progress finishes, queued checks are dropped."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._queue.put(None)
        thread.join(timeout)

    def seen(self, project: str, moved: bool = False) -> None:
        """A run of ``project`` opened or was read back here; ``moved``: it came from another instance."""
        if self._thread is None:
            return
        with self._lock:
            if project in self._seen and not moved:
                return
            self._seen.add(project)
        self._put(project)

    def run_ended(self, project: str, run_id: str, finished: bool, monitor: RunMonitor) -> None:
        """A run ended: store its prefix summaries if it is eligible, then check its project."""
        learned = next((d for d in monitor.diagnostics if d.name == "learned"), None)
        if learned is None or not len(learned.checkpoint_summaries):
            return  # it never reached the first checkpoint
        if not eligible(finished, monitor.severities, self.policy, learned.project_outliers > 0):
            return
        rows = learned.checkpoint_summaries
        written = self.store.submit([save_run_summaries_op(run_id, project, rows)])
        if self._thread is not None:
            self._put(project, written)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every queued check is done; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._busy == 0, timeout)

    # -- the refit thread -------------------------------------------------------------------------------

    def _put(self, project: str, written: Future | None = None) -> None:
        with self._lock:
            if written is None:
                if project in self._queued:
                    return
                self._queued.add(project)
            self._busy += 1
        self._queue.put((project, written))

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            project, written = item
            try:
                if not self._stopping:
                    self._handle(project, written)
            except Exception:
                log.exception("project %s: run-outlier refit failed", project)
            finally:
                with self._lock:
                    self._busy -= 1
                    self._lock.notify_all()

    def _handle(self, project: str, written: Future | None) -> None:
        if written is None:
            with self._lock:
                self._queued.discard(project)
        else:
            written.result(timeout=60)  # the run's rows are committed: the count includes them
        for name in self.store.run_summary_projects() if project == _ALL else [project]:
            if self._stopping:
                return
            self._refresh(name)

    def _refresh(self, project: str) -> None:
        """Fit the project's model if the store's runs reached a fit point it was not fitted at."""
        at = fit_point(self.store.count_run_summaries(project), self.policy)
        current = self.models.get(project)
        if at == 0 or (current is not None and current.fit_at == at):
            return
        shipped, alert, rate = self._shipped_model()
        runs = self.store.run_summaries(project, at, self.policy.max_reference_runs)
        t0 = time.perf_counter()
        model = fit_project_model(shipped, alert, rate, runs, at)
        seconds = time.perf_counter() - t0
        self.models.put(project, model)
        log.info(
            "project %s: run-outlier model refitted on %d runs (%d prefixes) in %.2f s; alert level %.4f (shipped %.4f)",
            project, model.n_runs, sum(len(r) for r in runs), seconds, model.alert, alert,
        )

    def _shipped_model(self) -> tuple:
        if self._shipped is None:
            artifact = load_artifact(self.config.artifact or None)
            detector, alert = artifact.run_outlier, artifact.config.thresholds.run_outlier_alert
            self._shipped = (detector, alert, shipped_flag_rate(detector, alert))
        return self._shipped

