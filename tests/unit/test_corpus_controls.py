"""The corpus' matched controls (``python -m bench.corpus.generate --controls long_warmup``): healthy runs whose
learning rate warms up as long as a ``warmup_overshoot`` divergence does, towards a healthy one."""

from __future__ import annotations

from bench.corpus.specs import base_lr, draw_spec, long_warmup_control
from bench.splits import corpus_split


def test_a_control_is_a_healthy_draw_with_a_long_warm_up_to_a_healthy_lr():
    for i in range(30):
        spec = long_warmup_control(77, i, 0)
        plain = draw_spec(77, i, "healthy", 0)
        assert (spec.fault, spec.cause) == ("healthy", "long_warmup_control")
        assert (spec.dataset, spec.arch, spec.steps) == (plain.dataset, plain.arch, plain.steps)
        assert spec.schedule in ("warmup_const", "warmup_cosine", "warmup_linear")
        assert 0.3 <= spec.warmup / spec.steps <= 0.6  # as warmup_overshoot; healthy draws warm up over 2-10 %
        assert 0.5 <= spec.lr / base_lr(spec.optimizer, spec.arch, spec.width) <= 2.0  # overshoot: 10-2000x
        assert spec.lr_at(spec.steps - 1) <= spec.lr * (1 + 1e-9)


def test_controls_are_reproducible_and_fall_in_either_split():
    a = [long_warmup_control(78, i, 0).to_dict() for i in range(40)]
    assert a == [long_warmup_control(78, i, 0).to_dict() for i in range(40)]
    assert {corpus_split({"spec": s}) for s in a} == {"train", "test"}
