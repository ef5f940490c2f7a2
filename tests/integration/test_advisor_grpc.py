"""AdvisorService over real gRPC: real PyTorch runs streamed by the client SDK, then suggestions for one of them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest
import torch
from torch import nn

from runwatch.client import RunwatchClient
from runwatch.v1 import service_pb2

pytestmark = pytest.mark.slow
torch.set_num_threads(1)


def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order[:1400]], y[order[:1400]], x[order[1400:]], y[order[1400:]]


def _mlp(width: int, depth: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    n_in = 64
    for _ in range(depth):
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        n_in = width
    layers.append(nn.Linear(n_in, 10))
    return nn.Sequential(*layers)


def _named_mlp(width: int) -> nn.Module:
    """An MLP whose modules the user named: encoder.fc1, encoder.fc2, head."""
    from collections import OrderedDict

    encoder = nn.Sequential(OrderedDict(
        fc1=nn.Linear(64, width), act1=nn.ReLU(), fc2=nn.Linear(width, width), act2=nn.ReLU(),
    ))
    return nn.Sequential(OrderedDict(encoder=encoder, head=nn.Linear(width, 10)))


def train_and_stream(client: RunwatchClient, run_id: str, width: int, depth: int, dropout: float, n_train: int,
                     steps: int = 120, with_architecture: bool = True, project: str = "advice",
                     model: nn.Module | None = None, lr: float = 3e-3, sgd: bool = False) -> float:
    """Train an MLP on (a subset of) digits for real, logging loss and val/loss; returns the final val/loss."""
    torch.manual_seed(len(run_id))
    xt, yt, xv, yv = _digits()
    xt, yt = xt[:n_train], yt[:n_train]
    model = model if model is not None else _mlp(width, depth, dropout)
    hyperparameters = {"lr": lr, "batch_size": 32, "width": width, "depth": depth, "dropout": dropout}
    if sgd:
        hyperparameters["optimizer"] = "sgd"
    run = client.start_run(
        run_id=run_id, project=project, model=model if with_architecture else None, hyperparameters=hyperparameters,
    )
    opt = torch.optim.SGD(model.parameters(), lr=lr) if sgd else torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(1)
    val = float("nan")
    for step in range(steps):
        model.train()
        idx = torch.randint(len(xt), (32,), generator=gen)
        opt.zero_grad()
        loss = loss_fn(model(xt[idx]), yt[idx])
        loss.backward()
        opt.step()
        metrics = {"loss": loss.item()}
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                val = float(loss_fn(model(xv), yv))
            metrics["val/loss"] = val
        run.log(metrics, step=step)
    assert run.finish(reason="completed", timeout=30)
    return val


@pytest.fixture(scope="module")
def advised(tmp_path_factory):
    """A server holding 14 finished runs of one project (varied width/depth/dropout/data) and one without architecture."""
    from runwatch.service.background import BackgroundServer
    from runwatch.service.settings import ServiceSettings

    srv = BackgroundServer(ServiceSettings(port=0, data_dir=tmp_path_factory.mktemp("advice"))).start()
    client = RunwatchClient(srv.target, flush_on_exit=False)
    finals = {}
    grid = [(w, d, p, n) for w, d, p, n in [
        (8, 1, 0.0, 1400), (16, 1, 0.0, 1400), (32, 1, 0.0, 1400), (64, 1, 0.0, 1400), (128, 1, 0.2, 1400),
        (32, 2, 0.0, 1400), (64, 2, 0.2, 1400), (16, 2, 0.0, 1400), (256, 2, 0.0, 60), (128, 2, 0.5, 60),
        (32, 1, 0.3, 60), (64, 1, 0.0, 200), (256, 1, 0.0, 1400), (8, 2, 0.0, 200),
    ]]
    for i, (w, d, p, n) in enumerate(grid):
        finals[f"hist-{i}"] = train_and_stream(client, f"hist-{i}", w, d, p, n)
    # The run to improve: a wide two-layer net on 60 examples (it overfits).
    finals["wide-small-data"] = train_and_stream(client, "wide-small-data", 512, 2, 0.0, 60)
    train_and_stream(client, "no-arch", 32, 1, 0.0, 1400, steps=20, with_architecture=False)
    # Issue 14's cases: a run whose loss explodes to inf/NaN (SGD at lr 1e4), one with the user's module names, and
    # a project of two runs (too little history to predict). Other projects: the history above stays as it was.
    train_and_stream(client, "exploded", 64, 2, 0.0, 1400, steps=40, project="unstable", lr=1e4, sgd=True)
    for i, w in enumerate((8, 16, 32, 64, 128, 16, 32, 64, 128)):
        train_and_stream(client, f"unstable-{i}", w, 1 + i % 2, 0.0, 1400, steps=40, project="unstable")
    finals["named"] = train_and_stream(client, "named", 32, 2, 0.0, 1400, model=_named_mlp(32))
    for i, w in enumerate((16, 64)):
        train_and_stream(client, f"tiny-{i}", w, 1, 0.0, 1400, steps=40, project="tiny")
    client.close(timeout=5)
    channel = grpc.insecure_channel(srv.target)
    yield srv, channel, finals
    channel.close()
    srv.stop()


def suggest(channel, **fields) -> service_pb2.SuggestResponse:
    from runwatch.v1 import service_pb2_grpc

    return service_pb2_grpc.AdvisorServiceStub(channel).Suggest(service_pb2.SuggestRequest(**fields), timeout=120)


def test_suggestions_are_ranked_diffs_with_effect_uncertainty_evidence_and_cost(advised):
    _, channel, _ = advised
    r = suggest(channel, run_id="wide-small-data", constraints=service_pb2.SuggestConstraints(num_suggestions=3))
    assert r.run_id == "wide-small-data"
    assert [s.rank for s in r.suggestions] == [1, 2, 3]
    deltas = [s.effect.delta for s in r.suggestions]
    # Best first by the risk-adjusted prediction (an uncertain gain ranks below a slightly smaller sure one),
    # so the predicted deltas are in order up to the uncertainty that trades them off.
    spread = max(s.effect.stddev for s in r.suggestions)
    assert all(d < 0 for d in deltas) and all(a <= b + spread for a, b in zip(deltas, deltas[1:]))
    for s in r.suggestions:
        assert s.changes and all(c.description and c.attribute for c in s.changes)
        assert s.effect.metric == "val/loss" and s.effect.stddev > 0
        assert s.evidence
    # An overfitting 512-wide net: the best suggestion removes capacity or adds regularisation.
    top = r.suggestions[0]
    assert any(
        (c.attribute == "width" and int(c.after) < int(c.before))
        or (c.attribute == "dropout" and float(c.after) > float(c.before))
        or (c.attribute == "depth" and int(c.after) < int(c.before))
        for c in top.changes
    ), [c.description for c in top.changes]


def test_a_target_named_another_tools_way_is_the_same_metric(advised):
    _, channel, _ = advised
    as_runwatch = suggest(channel, run_id="wide-small-data", constraints=service_pb2.SuggestConstraints(num_suggestions=1))
    as_keras = suggest(channel, run_id="wide-small-data", target_metric="val_loss",
                       constraints=service_pb2.SuggestConstraints(num_suggestions=1))
    assert as_keras.suggestions[0].effect.metric == "val/loss"
    assert as_keras.suggestions[0].effect.predicted == as_runwatch.suggestions[0].effect.predicted


def test_max_params_is_honoured(advised):
    srv, channel, _ = advised
    current = srv.server.store.get_run("wide-small-data").start.architecture.total_params
    limit = current // 2
    r = suggest(
        channel, run_id="wide-small-data",
        constraints=service_pb2.SuggestConstraints(max_params=limit, num_suggestions=5),
    )
    assert r.suggestions
    assert all(current + s.cost.params <= limit for s in r.suggestions), [s.cost.params for s in r.suggestions]


def _interval(evidence) -> tuple[float, float]:
    import re

    line = next(e for e in evidence if e.startswith("predicted ") and "80% interval" in e)
    lo, hi = re.search(r"80% interval ([-\d.e+]+)–([-\d.e+]+)", line).groups()
    return float(lo), float(hi)


def test_predictions_come_with_an_80_percent_interval_inside_the_metrics_range(advised):
    _, channel, _ = advised
    r = suggest(channel, run_id="wide-small-data", constraints=service_pb2.SuggestConstraints(num_suggestions=3))
    for s in r.suggestions:
        lo, hi = _interval(s.evidence)
        e = s.effect
        assert 0 < lo <= e.predicted <= hi  # a loss interval never goes below zero
        assert e.predicted - 1.2815 * e.stddev >= lo * 0.999  # the +- summary stays inside it


def test_a_diverged_run_gets_stability_advice_first_and_no_invented_delta(advised):
    import math

    _, channel, _ = advised
    r = suggest(channel, run_id="exploded", constraints=service_pb2.SuggestConstraints(num_suggestions=3))
    top = r.suggestions[0]
    assert top.evidence[0].startswith("stability first: the run diverged: loss became")
    stability = {"lr", "warmup_steps", "init", "grad_clip", "normalization", "residual"}
    assert all(any(c.attribute in stability for c in s.changes) for s in r.suggestions), [
        [c.description for c in s.changes] for s in r.suggestions
    ]
    for s in r.suggestions:
        assert math.isnan(s.effect.delta)
        assert any("so there is no baseline value to compare with" in e for e in s.evidence), s.evidence
        risk = next(e for e in s.evidence if e.startswith("divergence risk"))
        assert "1 of 10 runs diverged, this run among them" in risk, risk
    assert all(s.effect.predicted > 0 and _interval(s.evidence)[0] > 0 for s in r.suggestions)


def test_the_users_module_names_name_the_layers(advised):
    _, channel, _ = advised
    r = suggest(channel, run_id="named", constraints=service_pb2.SuggestConstraints(num_suggestions=3))
    texts = [c.description for s in r.suggestions for c in s.changes]
    assert any("encoder.fc" in t and "(Linear " in t for t in texts), texts
    assert not any("new." in t or "layer " in t for t in texts), texts
    seq = suggest(channel, run_id="wide-small-data", constraints=service_pb2.SuggestConstraints(num_suggestions=3))
    assert all("(Linear " in c.description for s in seq.suggestions for c in s.changes if c.layer)


def test_too_little_history_says_so_instead_of_a_guess(advised):
    import math

    _, channel, _ = advised
    r = suggest(channel, run_id="tiny-0", constraints=service_pb2.SuggestConstraints(num_suggestions=2))
    assert r.suggestions
    for s in r.suggestions:
        assert math.isnan(s.effect.predicted) and math.isnan(s.effect.stddev)
        assert any(e.startswith("not enough history to predict val/loss (n=1 ") for e in s.evidence), s.evidence


def test_a_budget_no_edit_fits_is_named_with_the_smallest_candidate(advised):
    srv, channel, _ = advised
    with pytest.raises(grpc.RpcError) as err:
        suggest(channel, run_id="wide-small-data", constraints=service_pb2.SuggestConstraints(max_params=1000))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    detail = err.value.details()
    assert detail.startswith("constraints.max_params: no edit fits the 1,000-parameter budget: the smallest candidate")
    exe = Path(sys.executable).with_name("runwatch")
    cli = subprocess.run(
        [str(exe), "suggest", "wide-small-data", "--max-params", "1000", "--target", srv.target],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert cli.returncode != 0 and "no edit fits the 1,000-parameter budget" in cli.stderr, (cli.stdout, cli.stderr)


def test_project_request_improves_the_projects_best_run(advised):
    _, channel, finals = advised
    r = suggest(channel, project="advice")
    best = min((v, k) for k, v in finals.items())[1]
    assert r.run_id == best


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        ({"run_id": "no-arch"}, grpc.StatusCode.FAILED_PRECONDITION, "no architecture record"),
        ({"run_id": "nobody"}, grpc.StatusCode.NOT_FOUND, "run_id: no run 'nobody'"),
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "run_id: set run_id, or project"),
        (
            {"run_id": "wide-small-data", "constraints": service_pb2.SuggestConstraints(max_params=-5)},
            grpc.StatusCode.INVALID_ARGUMENT, "constraints.max_params: must be >= 0",
        ),
        (
            {"run_id": "wide-small-data", "constraints": service_pb2.SuggestConstraints(num_suggestions=500)},
            grpc.StatusCode.INVALID_ARGUMENT, "constraints.num_suggestions: at most 20",
        ),
        ({"project": "nobody-here"}, grpc.StatusCode.FAILED_PRECONDITION, "no finished run of project 'nobody-here'"),
        (
            {"run_id": "wide-small-data", "project": "someone-else"},
            grpc.StatusCode.INVALID_ARGUMENT, "project: run 'wide-small-data' belongs to project",
        ),
        (
            {"run_id": "wide-small-data", "target_metric": "step_time"},
            grpc.StatusCode.INVALID_ARGUMENT, "target_metric: 'step_time' is not an outcome the advisor predicts",
        ),
    ],
)
def test_bad_requests_get_a_named_error_and_the_service_keeps_serving(advised, fields, code, text):
    srv, channel, _ = advised
    with pytest.raises(grpc.RpcError) as err:
        suggest(channel, **fields)
    assert err.value.code() == code
    assert text in err.value.details()
    assert srv.server.store.get_run("hist-0") is not None


def test_cli_suggest_prints_the_ranked_diff(advised):
    srv, _, _ = advised
    exe = Path(sys.executable).with_name("runwatch")
    r = subprocess.run(
        [str(exe), "suggest", "wide-small-data", "-n", "2", "--target", srv.target],
        capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("run wide-small-data: 2 suggestion(s)")
    assert "1. val/loss" in r.stdout and "2. val/loss" in r.stdout and "because:" in r.stdout
    bad = subprocess.run([str(exe), "suggest", "nobody", "--target", srv.target], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "NOT_FOUND: run_id: no run 'nobody'" in bad.stderr


def test_without_the_nas_extra_the_advisor_answers_failed_precondition(tmp_path):
    # A real server in a process where NNI cannot be imported (as without `pip install runwatch[nas]`).
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["nni"] = None  # import nni -> ImportError
        import grpc
        from runwatch.service.background import BackgroundServer
        from runwatch.service.settings import ServiceSettings
        from runwatch.v1 import service_pb2, service_pb2_grpc
        srv = BackgroundServer(ServiceSettings(port=0, data_dir={str(tmp_path)!r})).start()
        with grpc.insecure_channel(srv.target) as ch:
            try:
                service_pb2_grpc.AdvisorServiceStub(ch).Suggest(service_pb2.SuggestRequest(run_id="r"), timeout=30)
            except grpc.RpcError as e:
                print(e.code().name, "|", e.details())
        srv.stop()
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=os.environ)
    assert r.returncode == 0, r.stderr[-2000:]
    code, details = r.stdout.strip().split(" | ", 1)
    assert code == "FAILED_PRECONDITION"
    assert "'nas' extra" in details and "nni" in details and "pip install 'runwatch[nas]'" in details


@pytest.fixture(scope="module")
def corpus_history(tmp_path_factory) -> Path:
    """The 40-run fixture corpus exported as an advisor history file (real runs, runwatch's own findings)."""
    from bench.export_history import export

    path = tmp_path_factory.mktemp("history") / "corpus-history.json"
    written, _ = export(Path(__file__).resolve().parents[1] / "fixtures" / "corpus", path, max_points=100)
    assert written >= 30
    return path


def test_a_history_file_gives_a_new_project_a_fitted_surrogate(corpus_history, tmp_path):
    import re

    from runwatch.service.background import BackgroundServer
    from runwatch.service.settings import ServiceSettings

    srv = BackgroundServer(ServiceSettings(port=0, data_dir=tmp_path, advisor_history=corpus_history)).start()
    try:
        client = RunwatchClient(srv.target, flush_on_exit=False)
        train_and_stream(client, "lonely", 256, 2, 0.0, 60)  # the only run of its project
        client.close(timeout=5)
        with grpc.insecure_channel(srv.target) as channel:
            r = suggest(channel, run_id="lonely")
        assert r.suggestions
        def fitted_on(response) -> set[int]:
            return {int(m) for s in response.suggestions for e in s.evidence for m in re.findall(r"(\d+) runs with val/loss", e)}

        assert fitted_on(r) and min(fitted_on(r)) >= 30, [e for s in r.suggestions for e in s.evidence]
        # A run that finishes in the project afterwards is learned from on the next question (no stale fit).
        client = RunwatchClient(srv.target, flush_on_exit=False)
        train_and_stream(client, "second", 64, 1, 0.0, 1400)
        client.close(timeout=5)
        with grpc.insecure_channel(srv.target) as channel:
            again = suggest(channel, run_id="lonely")
        assert fitted_on(again) == {n + 1 for n in fitted_on(r)}
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"format": "something-else", "runs": []}', "format: expected 'runwatch.nas-history/1'"),
        ('{"format": "runwatch.nas-history/1", "runs": [{"genome": null}]}', "runs[0]: KeyError"),
        ("not json", "not JSON"),
    ],
)
def test_serve_refuses_a_bad_history_file_naming_the_setting(tmp_path, content, message):
    bad = tmp_path / "history.json"
    bad.write_text(content)
    exe = Path(sys.executable).with_name("runwatch")
    r = subprocess.run(
        [str(exe), "serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--advisor-history", str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2
    assert "advisor_history" in r.stderr and message in r.stderr, r.stderr
