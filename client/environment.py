"""What a run records about where it ran, and the system metrics it logs as it goes.

:func:`capture_environment` fills ``RunStart.environment`` without user code:
the git commit, branch and dirty state of the training script's repository,
Python / PyTorch / CUDA versions, the device, host and process. Keys:

================  ============================================================
``git.commit``    ``HEAD`` of the repository holding the script (or the cwd)
``git.branch``    current branch, ``(detached)`` when none
``git.dirty``     ``true`` when tracked files differ from ``HEAD``
``git.root``      the repository's top folder
``git.remote``    ``origin``'s URL, with any user/password removed
``script``        the script being run (``sys.argv[0]``), absolute
``python``        Python version (also ``platform``, ``host``, ``pid``)
``torch``         torch version, when torch is imported (also ``cuda``,
                  ``cudnn``)
``device``        e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu``
``gpu_count``     visible CUDA devices
``cpu_count``     logical CPUs
``runwatch``      this client's version
================  ============================================================

Git is asked read-only (``GIT_OPTIONAL_LOCKS=0``, so ``git status`` never
rewrites the index) with a 2-second timeout; without git or a repository
the ``git.*`` keys are absent.

:class:`SystemSampler` measures ``cpu_mem`` (resident set size of this
process, bytes) and ``gpu_mem`` (bytes allocated by torch on the current CUDA
device, when CUDA is in use), at most once per ``interval`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runwatch.client import convert

__all__ = ["SystemSampler", "capture_environment", "describe_device", "git_info"]

_GIT_TIMEOUT = 2.0


def _git(args: list[str], cwd: Path) -> str | None:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip()


def _strip_credentials(url: str) -> str:
    """``https://user:token@host/x.git`` -> ``https://host/x.git``."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", url)


def git_info(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Commit, branch, dirty state, root and remote of the git repository holding ``path``.

    Parameters
    ----------
    path
        A file or folder inside the repository; default: the training script
        (``sys.argv[0]``), else the current folder.

    Returns
    -------
    dict
        ``git.commit``, ``git.branch``, ``git.dirty``, ``git.root`` and
        ``git.remote`` when known; empty outside a repository or without git.
    """
    start = Path(path) if path is not None else _script_dir()
    if start.is_file():
        start = start.parent
    if not start.is_dir():
        return {}
    root = _git(["rev-parse", "--show-toplevel"], start)
    if not root:
        return {}
    info = {"git.root": root}
    commit = _git(["rev-parse", "HEAD"], start)
    if commit:
        info["git.commit"] = commit
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], start)
    if branch:
        info["git.branch"] = "(detached)" if branch == "HEAD" else branch
    status = _git(["status", "--porcelain", "--untracked-files=no"], start)
    if status is not None:
        info["git.dirty"] = "true" if status else "false"
    remote = _git(["config", "--get", "remote.origin.url"], start)
    if remote:
        info["git.remote"] = _strip_credentials(remote)
    return info


def _script_path() -> Path | None:
    main = sys.modules.get("__main__")
    candidate = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else None)
    if not candidate or candidate in ("-c", "-m"):
        return None
    p = Path(candidate)
    return p.resolve() if p.exists() else None


def _script_dir() -> Path:
    script = _script_path()
    return script.parent if script is not None else Path.cwd()


def describe_device(model: Any = None) -> dict[str, str]:
    """Device facts: where ``model``'s parameters live, torch/CUDA versions, GPU count.

    Uses torch only when the program already imported it.
    """
    torch = sys.modules.get("torch")
    out: dict[str, str] = {}
    if torch is None or not hasattr(torch, "__version__"):
        return out
    out["torch"] = str(torch.__version__)
    cuda_version = getattr(getattr(torch, "version", None), "cuda", None)
    if cuda_version:
        out["cuda"] = str(cuda_version)
    device = None
    if model is not None:
        try:
            device = next(model.parameters()).device
        except (StopIteration, AttributeError, TypeError):
            device = None
    try:
        cuda_ok = bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken driver must not stop training
        cuda_ok = False
    if cuda_ok:
        out["gpu_count"] = str(torch.cuda.device_count())
        with contextlib.suppress(Exception):
            out["cudnn"] = str(torch.backends.cudnn.version())
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device())
    else:
        out["gpu_count"] = "0"
    if device is None:
        device = torch.device("cpu")
    text = str(device)
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            text += f" ({torch.cuda.get_device_name(device)})"
    out["device"] = text
    return out


def capture_environment(model: Any = None, extra: Mapping[str, Any] | None = None, *, git: bool = True) -> dict[str, str]:
    """Everything :mod:`this module <runwatch.client.environment>` records, as ``RunStart.environment``.

    Parameters
    ----------
    model
        The model, to name the device it lives on.
    extra
        More facts; they win over captured ones.
    git
        Ask git about the script's repository.

    Examples
    --------
    >>> env = capture_environment(git=False)
    >>> {"python", "host", "pid", "cpu_count", "runwatch"} <= set(env)
    True
    """
    env = convert.default_environment()
    env["cpu_count"] = str(os.cpu_count() or 0)
    env["runwatch"] = _version()
    script = _script_path()
    if script is not None:
        env["script"] = str(script)
    if git:
        env.update(git_info(script))
    env.update(describe_device(model))
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("runwatch")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


class SystemSampler:
    """``cpu_mem`` and ``gpu_mem`` in bytes, sampled at most once per ``interval`` seconds.

    ``cpu_mem`` is the resident set size from ``/proc/self/statm`` (Linux) or
    psutil when installed; ``gpu_mem`` is ``torch.cuda.memory_allocated()``
    on the current device, only once the program has initialised CUDA.

    Examples
    --------
    >>> s = SystemSampler(interval=0.0)
    >>> m = s.sample()
    >>> m.get("cpu_mem", 1) > 0
    True
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = float(interval)
        self._last = -float("inf")
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._statm: int | None = None
        try:
            self._statm = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._statm = None
        self._psutil = None
        if self._statm is None:
            try:
                import psutil

                self._psutil = psutil.Process()
            except Exception:  # noqa: BLE001 - optional
                self._psutil = None

    def due(self, now: float | None = None) -> bool:
        """Whether :meth:`sample` would measure now."""
        now = time.monotonic() if now is None else now
        return now - self._last >= self.interval

    def sample(self, force: bool = False) -> dict[str, float]:
        """The metrics, or ``{}`` when the last sample is younger than ``interval``."""
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return {}
        self._last = now
        out: dict[str, float] = {}
        rss = self._rss()
        if rss is not None:
            out["cpu_mem"] = float(rss)
        torch = sys.modules.get("torch")
        if torch is not None:
            with contextlib.suppress(Exception):  # never fail a training step over telemetry
                if torch.cuda.is_initialized():
                    out["gpu_mem"] = float(torch.cuda.memory_allocated())
        return out

    def _rss(self) -> int | None:
        if self._statm is not None:
            try:
                fields = os.pread(self._statm, 128, 0).split()
                return int(fields[1]) * self._page
            except (OSError, IndexError, ValueError):
                return None
        if self._psutil is not None:
            try:
                return int(self._psutil.memory_info().rss)
            except Exception:  # noqa: BLE001
                return None
        return None

    def close(self) -> None:
        if self._statm is not None:
            os.close(self._statm)
            self._statm = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class StepClock:
    """Step timing for framework callbacks, with the system metrics that are due.

    ``step_time`` runs from the end of one training step to the end of the next,
    ``data_time`` from the end of a step to the start of the next (waiting for
    data). After :meth:`pause` (evaluation, validation) the next step is not timed.

    Examples
    --------
    >>> clock = StepClock()
    >>> clock.step_end({})  # the first step has nothing to time from
    {}
    >>> clock.step_begin()
    >>> sorted(clock.step_end({"loss": 1.0}))
    ['data_time', 'loss', 'step_time']
    >>> clock.pause()
    >>> clock.step_end({})
    {}
    """

    def __init__(self, sampler: SystemSampler | None = None) -> None:
        self.sampler = sampler
        self._last_end: float | None = None
        self._data_time: float | None = None

    def step_begin(self) -> None:
        if self._last_end is not None:
            self._data_time = time.perf_counter() - self._last_end

    def step_end(self, metrics: dict[str, float]) -> dict[str, float]:
        """Add the step's timings and due system metrics to ``metrics``; returns it."""
        now = time.perf_counter()
        if self._last_end is not None:
            metrics["step_time"] = now - self._last_end
            if self._data_time is not None:
                metrics["data_time"] = self._data_time
        if self.sampler is not None:
            metrics.update(self.sampler.sample())
        self._last_end = now
        self._data_time = None
        return metrics

    def pause(self) -> None:
        self._last_end = None
