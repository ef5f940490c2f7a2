"""Train/test splits for the learned detectors: whole datasets and architecture families are held out.

Corpus runs (``bench/corpus/data``, seed 0) go to the **test** split when
their dataset is in :data:`HELDOUT_DATASETS` *or* their architecture family is
in :data:`HELDOUT_ARCHS`; the learned detectors are fitted and calibrated on
the rest only. A fresh corpus of the ``novel`` domain (new datasets and
architecture families, ``python -m bench.corpus.generate --domain novel``) is
test data in full. Real logs are split by a hash of the run id: half of each
healthy source may be used for fitting, the other half only for testing.

Examples
--------
>>> corpus_split({"spec": {"dataset": "parity", "arch": "gru"}}), corpus_split({"spec": {"dataset": "digits", "arch": "lstm"}})
('test', 'test')
>>> corpus_split({"spec": {"dataset": "digits", "arch": "cnn"}})
'train'
"""

from __future__ import annotations

import hashlib

HELDOUT_DATASETS = ("parity", "wine")
HELDOUT_ARCHS = ("lstm",)


def corpus_split(meta: dict) -> str:
    spec = meta["spec"]
    return "test" if spec["dataset"] in HELDOUT_DATASETS or spec["arch"] in HELDOUT_ARCHS else "train"


def real_split(run_id: str) -> str:
    h = int(hashlib.sha1(f"real|{run_id}".encode()).hexdigest()[:8], 16)
    return "train" if h % 2 == 0 else "test"
