"""Dashboard benchmark: time to render a 100k-step run with 10 metrics in headless Chromium.

Builds the run through the real ingest path (``DetectionPipeline`` into SQLite,
with a few loss spikes so it has anomaly markers), serves it with
``RunwatchServer`` (gRPC + dashboard, one event loop), and opens
``/runs/<id>`` in Debian's headless Chromium via Selenium, ``--repeats`` times.

    python bench/dashboard_render.py --steps 100000 --metrics 10 --repeats 5

Reports, per load: the page's own time from navigation start to the charts
painted (``performance.now()`` at the frame after the last chart's draw; it
includes fetching the page, the script, the run and its downsampled curves),
and the server's time for ``/api/series`` alone. The first load reads the run
from SQLite (cold); later loads reuse the server's column cache (warm).
Exits non-zero when the median warm render is over ``--budget`` seconds.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RUN_ID = "bench-100k"


def build_run(data_dir: Path, steps: int, n_metrics: int, batch: int, seed: int) -> tuple[int, float]:
    """Ingest one run of ``steps`` steps x ``n_metrics`` metrics; returns (anomalies, seconds)."""
    from runwatch.service.pipeline import DetectionPipeline
    from runwatch.service.settings import ServiceSettings
    from runwatch.service.store import RunStore
    from runwatch.v1 import runs_pb2

    rng = random.Random(seed)
    names = ["loss", "val/loss", "lr", "grad_norm", "grad_norm/fc1", "grad_norm/fc2", "act/zero_frac/fc1",
             "act/zero_frac/fc2", "step_time", "cpu_mem", "gpu_mem", "data_time"]  # fmt: skip
    names = names[:n_metrics] + [f"extra/m{i}" for i in range(max(0, n_metrics - len(names)))]
    spikes = {int(steps * f) for f in (0.25, 0.5, 0.8)}
    settings = ServiceSettings(port=0, data_dir=data_dir)
    store = RunStore(settings.db_path)
    pipeline = DetectionPipeline(settings, store)
    t0 = time.perf_counter()
    b = runs_pb2.EventBatch(sequence=0)
    b.starts.add(run_id=RUN_ID, project="bench")
    durable = []
    for step in range(steps):
        loss = 2.3 * (1 + step / 50.0) ** -0.5 * (1 + rng.gauss(0, 0.03)) * (8.0 if step in spikes else 1.0)
        values = {
            "loss": loss, "val/loss": loss * 1.05, "lr": 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps)),
            "grad_norm": 1 + rng.random() * 0.2, "grad_norm/fc1": 0.5 + rng.random() * 0.1,
            "grad_norm/fc2": 0.3 + rng.random() * 0.1, "act/zero_frac/fc1": 0.4 + rng.random() * 0.05,
            "act/zero_frac/fc2": 0.3 + rng.random() * 0.05, "step_time": 0.05 + rng.random() * 0.005,
            "cpu_mem": 1.2e9 + rng.random() * 1e6, "gpu_mem": 8e9 + rng.random() * 1e6, "data_time": 0.005,
        }  # fmt: skip
        ev = b.events.add(run_id=RUN_ID, step=step, wall_time=1.7e9 + step)
        ev.metrics.update({n: values.get(n, rng.random()) for n in names})
        if len(b.events) >= batch:
            durable.append(pipeline.ingest(b).durable)
            b = runs_pb2.EventBatch(sequence=len(durable))
    if len(b.events):
        durable.append(pipeline.ingest(b).durable)
    for fut in durable:
        fut.result()
    seconds = time.perf_counter() - t0
    store.close()
    return pipeline.counters["anomalies"], seconds


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        sys.exit("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1500,1000",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(driver_path))


def render_once(driver, url: str, timeout: float = 60.0) -> dict:
    driver.get("about:blank")
    t0 = time.perf_counter()
    driver.get(url)
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        info = driver.execute_script(
            "return document.body && document.body.dataset.rendered === '1' && window.__runwatch"
        )
        if info:
            info["wall"] = time.perf_counter() - t0
            return info
        time.sleep(0.01)
    raise TimeoutError(f"{url} did not render in {timeout} s")


def series_seconds(base: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"{base}/api/series?run={RUN_ID}&width=1000", timeout=60) as r:
        r.read()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--metrics", type=int, default=10)
    p.add_argument("--batch", type=int, default=1000, help="events per ingested batch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=float, default=1.0, help="seconds allowed for the median warm render")
    p.add_argument("--screenshot", type=Path, default=None, help="save the last render as this PNG")
    args = p.parse_args()

    from runwatch.service.background import BackgroundServer
    from runwatch.service.settings import ServiceSettings

    with tempfile.TemporaryDirectory() as tmp:
        anomalies, built = build_run(Path(tmp), args.steps, args.metrics, args.batch, args.seed)
        print(f"run: {args.steps} steps x {args.metrics} metrics ({args.steps * args.metrics:,} values), "
              f"{anomalies} anomaly revision(s); ingested in {built:.1f} s")  # fmt: skip
        srv = BackgroundServer(ServiceSettings(port=0, http_port=0, data_dir=Path(tmp))).start()
        base = f"http://127.0.0.1:{srv.server.http_port}"
        driver = browser()
        try:
            render_once(driver, base + "/")  # browser warm-up (process, fonts), not the run
            loads = [render_once(driver, f"{base}/runs/{RUN_ID}") for _ in range(args.repeats)]
            server = [series_seconds(base) for _ in range(args.repeats)]
            if args.screenshot:
                driver.save_screenshot(str(args.screenshot))
        finally:
            driver.quit()
            srv.stop()
    print()
    print("| load | charts | points drawn | render (page: navigation -> painted) | wall (selenium get -> seen) |")
    print("|---|---:|---:|---:|---:|")
    for i, info in enumerate(loads):
        label = "1 (cold: read from SQLite)" if i == 0 else f"{i + 1} (warm)"
        render, wall = info["renderedAt"] / 1e3, info["wall"]
        print(f"| {label} | {info['charts']} | {info['points']:,} | {render:.3f} s | {wall:.3f} s |")
    warm = [x["renderedAt"] / 1e3 for x in loads[1:]] or [loads[0]["renderedAt"] / 1e3]
    median = statistics.median(warm)
    print()
    print(f"median warm render {median:.3f} s, cold {loads[0]['renderedAt'] / 1e3:.3f} s (budget {args.budget:.1f} s)")
    print(f"/api/series (all {args.metrics} metrics, 1000 px) server round trip: "
          f"median {statistics.median(server) * 1e3:.1f} ms, best {min(server) * 1e3:.1f} ms")  # fmt: skip
    if median > args.budget or loads[0]["renderedAt"] / 1e3 > args.budget:
        sys.exit(1)


if __name__ == "__main__":
    main()
