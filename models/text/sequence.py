"""Sequence-level log anomaly detection over template ids.

Three detectors, one score convention (**higher = more anomalous**), and
thresholds kept apart from scoring (:class:`QuantileThreshold`, or a rank
cut-off for the next-template model):

- :class:`TemplateNovelty` (streaming): a template never seen in the project
  before is worth a look, once the project is past its warm-up (a fresh project
  sees nothing but new templates) and at most ``max_per_run`` times per run.
- :class:`NextTemplateModel` (DeepLog, Du et al., CCS 2017): an LSTM reads the
  last ``window`` template ids and ranks every template as the next one; a
  session's score is the worst rank its actual next templates got (``0`` =
  the model's first guess; a template outside the vocabulary gets the vocabulary
  size). DeepLog's rule "anomalous unless the next template is in the top k" is
  ``score >= k``. Fitting needs torch; scoring is numpy. The artifact is
  ``config.json`` + ``weights.safetensors`` (no pickle).
- :class:`TemplateCountScorer`: a session (or window) becomes a vector of
  template counts, scored by PyOD's ``IForest`` fitted on normal sessions. The
  artifact stores the reference count matrix; loading refits deterministically.

Examples
--------
>>> normal = [[1, 2, 3, 4]] * 40 + [[1, 2, 2, 3, 4]] * 40
>>> model = NextTemplateModel(NextTemplateConfig(window=3, epochs=30, hidden=16, seed=0)).fit(normal)  # doctest: +SKIP
>>> model.score_samples([[1, 2, 3, 4], [1, 3, 2, 4]]).tolist()  # doctest: +SKIP
[0.0, 2.0]
>>> counts = TemplateCountScorer(CountScorerConfig(seed=0)).fit(normal)
>>> s = counts.score_samples([[1, 2, 3, 4], [1, 9, 9, 9, 9, 9]])
>>> bool(s[1] > s[0])
True
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from runwatch.models.base import DiagnosticConfig

# -- thresholds (separate from scoring) ------------------------------------------------------------


class QuantileThreshold:
    """Flag scores above the ``q`` quantile of scores seen on normal data.

    >>> t = QuantileThreshold(0.99).fit(np.arange(100.0))
    >>> t.predict(np.array([50.0, 120.0])).tolist()
    [False, True]
    """

    def __init__(self, q: float = 0.99) -> None:
        self.q = q
        self.threshold_ = np.inf

    def fit(self, normal_scores: np.ndarray) -> QuantileThreshold:
        self.threshold_ = float(np.quantile(np.asarray(normal_scores, dtype=float), self.q))
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=float) > self.threshold_


# -- novelty ----------------------------------------------------------------------------------------


class NoveltyConfig(DiagnosticConfig):
    """When a template never seen before becomes a finding.

    Parameters
    ----------
    warmup_lines
        The project must have seen this many lines first (its first runs teach it what is normal).
    max_per_run
        At most this many novelty findings per run (a run printing something new every line
        is one story, not hundreds).
    """

    warmup_lines: int = Field(default=2000, ge=0)
    max_per_run: int = Field(default=20, ge=0)


class TemplateNovelty:
    """Streaming check: a line whose template the project never saw before (see the module docstring).

    >>> n = TemplateNovelty(NoveltyConfig(warmup_lines=2))
    >>> n.observe(new=True, project_lines=1), n.observe(new=True, project_lines=3)
    (False, True)
    """

    def __init__(self, config: NoveltyConfig | None = None) -> None:
        self.config = config or NoveltyConfig()
        self.raised = 0

    def observe(self, new: bool, project_lines: int) -> bool:
        """Whether a line (``new``: it created its template) is a novelty finding."""
        if not new or project_lines <= self.config.warmup_lines or self.raised >= self.config.max_per_run:
            return False
        self.raised += 1
        return True

    def state_dict(self) -> dict:
        return {"raised": self.raised}

    def load_state_dict(self, state: dict) -> None:
        self.raised = int(state["raised"])


# -- vocabulary ---------------------------------------------------------------------------------------


class Vocabulary:
    """Template keys (ids or template strings) to dense indices; 0 pads, 1 begins, 2 ends, 3 is unknown."""

    PAD, BOS, EOS, OOV = 0, 1, 2, 3
    RESERVED = 4

    def __init__(self, keys: Sequence[Hashable] = ()) -> None:
        self.keys: list = []
        self.index: dict = {}
        for k in keys:
            self.add(k)

    def add(self, key: Hashable) -> int:
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = self.RESERVED + len(self.keys)
            self.keys.append(key)
        return i

    def encode(self, seq: Sequence[Hashable]) -> list[int]:
        return [self.index.get(k, self.OOV) for k in seq]

    def __len__(self) -> int:
        return self.RESERVED + len(self.keys)


# -- DeepLog next-template model ------------------------------------------------------------------------


class NextTemplateConfig(DiagnosticConfig):
    """The next-template LSTM and its training.

    Parameters
    ----------
    window
        Templates read before predicting the next (DeepLog's h).
    hidden, layers, embedding
        LSTM size.
    top_k
        Default rank cut-off of :meth:`NextTemplateModel.predict` (DeepLog's g).
    epochs, batch_size, learning_rate, seed
        Fitting (Adam, full passes over every window of the training sessions).
    """

    window: int = Field(default=10, ge=1)
    hidden: int = Field(default=64, ge=1)
    layers: int = Field(default=2, ge=1)
    embedding: int = Field(default=32, ge=1)
    top_k: int = Field(default=9, ge=1)
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=512, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    seed: int = 0


def _windows(encoded: list[list[int]], h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (window, next, session) of ``[BOS] + seq + [EOS]`` sequences, windows left-padded."""
    xs, ys, owners = [], [], []
    for s, seq in enumerate(encoded):
        full = [Vocabulary.BOS, *seq, Vocabulary.EOS]
        padded = [Vocabulary.PAD] * (h - 1) + full
        for i in range(1, len(full)):
            xs.append(padded[i - 1 : i - 1 + h])
            ys.append(full[i])
            owners.append(s)
    if not xs:
        return np.zeros((0, h), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.asarray(xs, np.int64), np.asarray(ys, np.int64), np.asarray(owners, np.int64)


class NextTemplateModel:
    """DeepLog-style next-template LSTM (see the module docstring)."""

    def __init__(self, config: NextTemplateConfig | None = None) -> None:
        self.config = config or NextTemplateConfig()
        self.vocab = Vocabulary()
        self.weights: dict[str, np.ndarray] = {}

    # -- fitting (torch) ----------------------------------------------------------------------

    def fit(self, sequences: Sequence[Sequence[Hashable]]) -> NextTemplateModel:
        """Fit on normal sessions (lists of template keys); needs torch."""
        import torch
        from torch import nn

        cfg = self.config
        self.vocab = Vocabulary(k for seq in sequences for k in seq)
        x, y, _ = _windows([self.vocab.encode(s) for s in sequences], cfg.window)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        net = _Net(len(self.vocab), cfg)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
        loss_fn = nn.CrossEntropyLoss()
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        net.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                opt.zero_grad()
                loss = loss_fn(net(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
        self.weights = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}
        return self

    # -- scoring (numpy) ----------------------------------------------------------------------

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """Next-template logits for a batch of index windows, shape ``(n, vocab)``."""
        w = self.weights
        h_in = w["embed.weight"][windows]  # (n, T, E)
        n, steps = windows.shape
        for layer in range(self.config.layers):
            w_ih, w_hh = w[f"lstm.weight_ih_l{layer}"], w[f"lstm.weight_hh_l{layer}"]
            b = w[f"lstm.bias_ih_l{layer}"] + w[f"lstm.bias_hh_l{layer}"]
            hidden = w_hh.shape[1]
            pre = h_in @ w_ih.T + b  # (n, T, 4H): input contributions of every step at once
            h = np.zeros((n, hidden), np.float32)
            c = np.zeros((n, hidden), np.float32)
            outs = np.empty((n, steps, hidden), np.float32)
            for t in range(steps):
                g = pre[:, t] + h @ w_hh.T
                i, f, gg, o = np.split(g, 4, axis=1)  # PyTorch's gate order
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(gg)
                h = _sigmoid(o) * np.tanh(c)
                outs[:, t] = h
            h_in = outs
        return h_in[:, -1] @ w["out.weight"].T + w["out.bias"]

    def ranks(self, windows: np.ndarray, targets: np.ndarray, batch: int = 4096) -> np.ndarray:
        """Rank of each target among the predicted next templates (0 = first guess)."""
        out = np.empty(len(targets), np.float64)
        for i in range(0, len(targets), batch):
            z = self.logits(windows[i : i + batch])
            t = targets[i : i + batch]
            mine = z[np.arange(len(t)), t]
            out[i : i + batch] = (z > mine[:, None]).sum(axis=1)
        out[targets == Vocabulary.OOV] = len(self.vocab)
        return out

    def position_scores(self, sequences: Sequence[Sequence[Hashable]]) -> tuple[np.ndarray, np.ndarray]:
        """Per position rank scores and the session each position belongs to."""
        x, y, owners = _windows([self.vocab.encode(s) for s in sequences], self.config.window)
        return (self.ranks(x, y) if len(y) else np.zeros(0)), owners

    def score_samples(self, sequences: Sequence[Sequence[Hashable]]) -> np.ndarray:
        """Per session: the worst rank its next templates got, shape ``(n_sessions,)``."""
        scores, owners = self.position_scores(sequences)
        out = np.zeros(len(sequences))
        np.maximum.at(out, owners, scores)
        return out

    def predict(self, sequences: Sequence[Sequence[Hashable]], top_k: int | None = None) -> np.ndarray:
        """DeepLog's rule: anomalous when a next template is outside the top ``k``."""
        return self.score_samples(sequences) >= (top_k or self.config.top_k)

    # -- artifact -----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """``config.json`` (config + vocabulary) and ``weights.safetensors``."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        doc = {"kind": "next_template", "config": self.config.to_dict(), "vocabulary": [_key_out(k) for k in self.vocab.keys]}
        (folder / "config.json").write_text(json.dumps(doc, indent=1))
        save_file(self.weights, str(folder / "weights.safetensors"))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> NextTemplateModel:
        from safetensors.numpy import load_file

        folder = Path(folder)
        doc = json.loads((folder / "config.json").read_text())
        if doc.get("kind") != "next_template":
            raise ValueError(f"{folder}: not a next-template artifact")
        model = cls(NextTemplateConfig.model_validate(doc["config"]))
        model.vocab = Vocabulary([_key_in(k) for k in doc["vocabulary"]])
        model.weights = {k: v.astype(np.float32) for k, v in load_file(str(folder / "weights.safetensors")).items()}
        return model


def _key_out(k: Hashable):
    if isinstance(k, (int, str)):
        return k
    raise TypeError(f"vocabulary keys must be int or str, got {type(k).__name__}")


def _key_in(k):
    if not isinstance(k, (int, str)):
        raise TypeError(f"vocabulary keys must be int or str, got {type(k).__name__}")
    return k


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _Net(vocab: int, cfg: NextTemplateConfig):
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, cfg.embedding)
            self.lstm = nn.LSTM(cfg.embedding, cfg.hidden, num_layers=cfg.layers, batch_first=True)
            self.out = nn.Linear(cfg.hidden, vocab)

        def forward(self, x):
            h, _ = self.lstm(self.embed(x))
            return self.out(h[:, -1])

    return Net()


# -- template counts + PyOD ------------------------------------------------------------------------------


class CountScorerConfig(DiagnosticConfig):
    """PyOD IForest over template-count vectors.

    ``n_estimators`` and ``seed`` make loading (a refit on the stored reference) deterministic.
    ``unknown_weight`` is added to the score of a session holding a template never seen in
    fitting: that column is all zeros in the reference, and an isolation tree never splits on
    a constant column, so the forest alone would not see it.
    """

    unknown_weight: float = Field(default=1.0, ge=0)
    n_estimators: int = Field(default=200, ge=1)
    max_samples: int = Field(default=256, ge=2)
    seed: int = 0


class TemplateCountScorer:
    """Template-count vectors per session, scored by PyOD ``IForest`` (see the module docstring)."""

    def __init__(self, config: CountScorerConfig | None = None) -> None:
        self.config = config or CountScorerConfig()
        self.vocab = Vocabulary()
        self.reference = np.zeros((0, 0))
        self._model = None

    def vectors(self, sequences: Sequence[Sequence[Hashable]]) -> np.ndarray:
        """Count of each known template (plus one column for unknown ones), shape ``(n, len(vocab) + 1)``."""
        n_known = len(self.vocab.keys)
        out = np.zeros((len(sequences), n_known + 1))
        for i, seq in enumerate(sequences):
            for idx in self.vocab.encode(seq):
                out[i, idx - Vocabulary.RESERVED if idx >= Vocabulary.RESERVED else n_known] += 1
        return out

    def fit(self, sequences: Sequence[Sequence[Hashable]]) -> TemplateCountScorer:
        self.vocab = Vocabulary(k for seq in sequences for k in seq)
        self.reference = self.vectors(sequences)
        self._build()
        return self

    def _build(self) -> None:
        from pyod.models.iforest import IForest

        cfg = self.config
        self._model = IForest(
            n_estimators=cfg.n_estimators, max_samples=min(cfg.max_samples, len(self.reference)),
            random_state=cfg.seed, n_jobs=1,
        ).fit(self.reference)

    def score_samples(self, sequences: Sequence[Sequence[Hashable]]) -> np.ndarray:
        """IForest anomaly scores (PyOD's sign: higher = more anomalous), shape ``(n,)``."""
        x = self.vectors(sequences)
        return self._model.decision_function(x) + self.config.unknown_weight * (x[:, -1] > 0)

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        doc = {"kind": "template_counts", "config": self.config.to_dict(), "vocabulary": [_key_out(k) for k in self.vocab.keys]}
        (folder / "config.json").write_text(json.dumps(doc, indent=1))
        save_file({"reference": self.reference.astype(np.float32)}, str(folder / "weights.safetensors"))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TemplateCountScorer:
        from safetensors.numpy import load_file

        folder = Path(folder)
        doc = json.loads((folder / "config.json").read_text())
        if doc.get("kind") != "template_counts":
            raise ValueError(f"{folder}: not a template-count artifact")
        scorer = cls(CountScorerConfig.model_validate(doc["config"]))
        scorer.vocab = Vocabulary([_key_in(k) for k in doc["vocabulary"]])
        scorer.reference = load_file(str(folder / "weights.safetensors"))["reference"].astype(np.float64)
        scorer._build()
        return scorer
