"""Sequence detectors over template ids: novelty, DeepLog next-template LSTM, template counts + PyOD."""

from __future__ import annotations

import numpy as np

from runwatch.models.text.sequence import (
    CountScorerConfig,
    NextTemplateConfig,
    NextTemplateModel,
    NoveltyConfig,
    QuantileThreshold,
    TemplateCountScorer,
    TemplateNovelty,
)

NORMAL = [["a", "b", "c", "d"]] * 30 + [["a", "b", "b", "c", "d"]] * 30 + [["a", "c", "d"]] * 10


def test_novelty_warmup_and_cap():
    n = TemplateNovelty(NoveltyConfig(warmup_lines=10, max_per_run=2))
    assert [n.observe(True, k) for k in (5, 11, 12, 13)] == [False, True, True, False]
    assert not n.observe(False, 100)


def test_next_template_model_scores_and_artifact(tmp_path):
    model = NextTemplateModel(NextTemplateConfig(window=3, hidden=16, embedding=8, layers=1, epochs=40, seed=0))
    model.fit(NORMAL)
    test = [["a", "b", "c", "d"], ["a", "d", "c", "b"], ["a", "b", "zzz", "d"], ["a", "b", "c"]]
    scores = model.score_samples(test)
    assert scores.shape == (4,)
    assert scores[0] <= 1 and scores[1] > scores[0] and scores[2] == len(model.vocab)
    assert scores[3] > scores[0]  # ends early: the end of the session was not expected there
    folder = model.save(tmp_path / "deeplog")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]
    again = NextTemplateModel.load(folder)
    assert np.array_equal(again.score_samples(test), scores)
    assert again.predict(test, top_k=2).tolist() == (scores >= 2).tolist()


def test_numpy_inference_matches_torch():
    import torch

    from runwatch.models.text.sequence import _Net, _windows

    model = NextTemplateModel(NextTemplateConfig(window=4, hidden=8, embedding=4, layers=2, epochs=2, seed=1)).fit(NORMAL)
    net = _Net(len(model.vocab), model.config)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.weights.items()})
    x, _, _ = _windows([model.vocab.encode(s) for s in NORMAL[:5]], 4)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert np.allclose(model.logits(x), want, atol=1e-4)


def test_count_scorer_and_artifact(tmp_path):
    scorer = TemplateCountScorer(CountScorerConfig(seed=0)).fit(NORMAL)
    test = [["a", "b", "c", "d"], ["a", "b", "b", "b", "b", "b", "b", "c"], ["a", "new", "d"]]
    s = scorer.score_samples(test)
    assert s[1] > s[0] and s[2] > s[0] + 0.5
    again = TemplateCountScorer.load(scorer.save(tmp_path / "counts"))
    assert np.allclose(again.score_samples(test), s)


def test_quantile_threshold_is_separate_from_scores():
    t = QuantileThreshold(0.9).fit(np.arange(10.0))
    assert t.predict(np.array([1.0, 9.5])).tolist() == [False, True]
