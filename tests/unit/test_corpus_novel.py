"""The corpus' novel domain (bench/corpus, ``--domain novel``): datasets and architecture families
the default corpus never uses, drawn from their own random stream, trainable with every fault."""

from __future__ import annotations

import dataclasses

import pytest

from bench.corpus.specs import FAULTS, RunSpec, draw_spec, fault_plan, sample_specs
from bench.corpus.store import RunRecord
from bench.corpus.tasks import NOVEL_ARCHS, NOVEL_SEQUENCE, NOVEL_TABULAR, TASKS


def _seen(specs: list[RunSpec]) -> tuple[set[str], set[str]]:
    return {s.dataset for s in specs}, {s.arch for s in specs}


def test_novel_datasets_and_architectures_are_disjoint_from_the_default_ones():
    # every fault type, several attempts: the fault injection swaps datasets / architectures too
    default = [draw_spec(0, i, f, a) for i in range(40) for f in ("healthy", *FAULTS) for a in (0, 1)]
    novel = [draw_spec(21, i, f, a, domain="novel") for i in range(40) for f in ("healthy", *FAULTS) for a in (0, 1)]
    d_data, d_arch = _seen(default)
    n_data, n_arch = _seen(novel)
    assert n_data == set(NOVEL_TABULAR + NOVEL_SEQUENCE) and n_arch == set(NOVEL_ARCHS)
    assert not n_data & d_data and not n_arch & d_arch
    assert len(n_data) >= 2 and len(n_arch) >= 1
    assert all(s.domain == "novel" for s in novel) and all(s.domain == "default" for s in default)
    assert {s.fault for s in novel} == {"healthy", *FAULTS}


def test_novel_draws_are_reproducible_and_the_default_domain_ignores_them():
    a = sample_specs(30, seed=21, domain="novel")
    b = sample_specs(30, seed=21, domain="novel")
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    assert [s.fault for s in a] == fault_plan(30, 21)
    # the default domain's draw for the same (seed, index, fault) is a different, default run
    d = draw_spec(21, 0, a[0].fault)
    assert d.domain == "default" and d.to_dict() != a[0].to_dict()
    # specs written before the domain field existed still load, as the default domain
    old = d.to_dict()
    del old["domain"]
    assert RunSpec.from_dict(old).to_dict() == d.to_dict()
    assert RunSpec.from_dict(a[0].to_dict()).to_dict() == a[0].to_dict()
    with pytest.raises(ValueError):
        draw_spec(0, 0, "healthy", domain="other")


def _find(fault: str, want) -> RunSpec:
    for i in range(200):
        s = draw_spec(21, i, fault, domain="novel")
        if want(s):
            return s
    raise AssertionError(f"no {fault} draw found")


@pytest.mark.parametrize(
    ("dataset", "arch"), [("moons", "resmlp"), ("friedman", "resmlp"), ("running_max", "tcn")]
)
def test_a_tiny_novel_run_trains_and_logs_per_layer_telemetry(dataset, arch):
    import torch

    from bench.corpus import labels as L
    from bench.corpus.train import train_run

    torch.set_num_threads(1)
    spec = _find("healthy", lambda s: s.dataset == dataset and s.arch == arch)
    spec = dataclasses.replace(spec, steps=12, watch_every=1, val_every=5, pause_at=-1, params={**spec.params})
    events, facts = train_run(spec)
    assert facts["ended"] and len(events) == 12
    names = set().union(*(m for _, _, m in events))
    assert {"loss", "lr", "grad_norm", "val/loss"} <= names
    assert TASKS[dataset].regression or "val/acc" in names
    layer = "blocks.0.fc1" if arch == "resmlp" else "conv1"
    for metric in ("grad_norm", "weight_norm", "update_ratio", "act/mean", "act/zero_frac"):
        assert f"{metric}/{layer}" in names, metric
    assert any(n.startswith("dbg/") for n in names)
    rec = RunRecord.from_events(events, {"run_id": spec.run_id, "spec": spec.to_dict(), **facts})
    assert L.first_nonfinite_step(rec) is None


def test_mlp_layout_faults_are_adapted_to_the_novel_families():
    import torch

    from bench.corpus.train import train_run

    torch.set_num_threads(1)
    # vanishing gradient: the residual MLP with skips and norms switched off, a deep sigmoid / tanh stack
    vg = _find("vanishing_gradient", lambda s: True)
    assert vg.arch == "resmlp" and vg.params["arch_options"] == {"residual": False, "norm": False}
    assert vg.depth >= 5 and vg.activation in ("sigmoid", "tanh") and vg.dataset in NOVEL_TABULAR
    # dying ReLU keeps the TCN; negative biases silence its conv ReLUs from the first step
    dr = _find("dying_relu", lambda s: s.arch == "tcn" and s.cause == "neg_bias_init")
    dr = dataclasses.replace(dr, steps=5, watch_every=1, params={**dr.params})
    events, _ = train_run(dr)
    zero = [v for k, v in events[0][2].items() if k.startswith("act/zero_frac/conv")]
    assert zero and max(zero) >= 0.9
