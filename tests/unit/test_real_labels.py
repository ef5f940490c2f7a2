"""The labels of the real Hugging Face Trainer runs (bench/real_labels/) are well formed.

CSV checks need only the committed CSV; checks against the data folder
(``../shared/data/training-logs/hf_trainer_state_more``) skip where it is absent.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LABELS_CSV = ROOT / "bench" / "real_labels" / "hf_trainer_state_more.csv"
DATA = ROOT.parent / "shared" / "data" / "training-logs" / "hf_trainer_state_more"
ALLOWED = {"healthy", "nan", "divergence", "collapse", "overfitting", "no_learning"}
COLUMNS = ["folder", "path", "label", "manifest_step", "n_loss_points", "n_eval_points", "reason", "reviewed", "note"]

needs_data = pytest.mark.skipif(
    not (DATA / "INDEX.csv").is_file(),
    reason=f"{DATA} is not present (shared real data; the CSV-only checks still ran)",
)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with open(LABELS_CSV, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def test_rows_are_well_formed(rows):
    assert len(rows) == 131
    keys = [(r["folder"], r["path"]) for r in rows]
    assert len(set(keys)) == len(keys), "a run is labelled twice"
    for r in rows:
        assert r["folder"] and r["path"].endswith("trainer_state.json"), r
        assert r["label"] in ALLOWED, r
        assert r["reviewed"] in ("0", "1"), r
        assert int(r["n_loss_points"]) >= 0 and int(r["n_eval_points"]) >= 0, r
        if r["label"] == "healthy":
            assert r["manifest_step"] == "", r
        else:
            assert r["manifest_step"].isdigit(), r
            assert r["reason"], r
            assert r["reviewed"] == "1", f"non-healthy runs are all reviewed: {r}"


def test_every_label_has_a_rule_and_positives_exist(rows):
    readme = (LABELS_CSV.parent / "README.md").read_text()
    counts = Counter(r["label"] for r in rows)
    for label in counts:
        assert f"**`{label}`**" in readme, f"label {label} has no written rule"
    assert counts["healthy"] > len(rows) / 2
    assert sum(v for k, v in counts.items() if k != "healthy") > 0


def test_overrides_name_labelled_runs_with_reasons(rows):
    from bench.real_labels import label_hf

    keys = {(r["folder"], r["path"]): r for r in rows}
    for key, (label, step, reason) in label_hf.OVERRIDES.items():
        assert key in keys, key
        assert label in ALLOWED and reason, key
        r = keys[key]
        assert r["label"] == label and r["reviewed"] == "1" and "OVERRIDE" in r["note"], r
        assert r["manifest_step"] == ("" if step is None else str(step)), r
    assert set(label_hf.REVIEWED) <= set(keys)
    assert set(label_hf.REVIEW_NOTES) <= set(keys)


@needs_data
def test_every_indexed_run_is_labelled_once(rows):
    with open(DATA / "INDEX.csv", newline="") as fh:
        index = [(r["folder"], r["path"]) for r in csv.DictReader(fh)]
    assert Counter((r["folder"], r["path"]) for r in rows) == Counter(index)
    for folder, path in index:
        assert (DATA / folder / path).is_file(), (folder, path)


@needs_data
def test_csv_is_what_the_script_writes(rows, tmp_path):
    """The committed CSV is up to date with the criteria and the review tables."""
    from bench.real_labels import label_hf

    assert label_hf.main(["--data", str(DATA), "--out", str(tmp_path / "out.csv")]) == 0
    with open(tmp_path / "out.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == rows


@needs_data
def test_harness_source_carries_the_labels(rows):
    from bench import real_logs

    recs = real_logs.load_hf_labelled(DATA)
    assert len(recs) == len(rows)
    by_name = {r.meta["name"]: r for r in recs}
    for row in rows:
        rec = by_name[f"{row['folder']}/{row['path']}"]
        t = real_logs.truth(rec)
        assert t.faulty == (row["label"] != "healthy") and t.fault == row["label"] and t.onset == 0
        assert "loss" in rec.columns
        if t.faulty:
            assert t.manifest == int(row["manifest_step"]) and t.manifest in set(rec.steps.tolist())
            assert t.healthy_steps == int((rec.steps < t.manifest).sum())
        else:
            assert t.manifest is None and t.healthy_steps == len(rec)


def test_loader_skips_cleanly_without_data(tmp_path):
    from bench import real_logs

    assert real_logs.load_hf_labelled(tmp_path / "absent") == []
    assert real_logs.load_hf_labelled(tmp_path, labels_csv=tmp_path / "absent.csv") == []


GITHUB_CSV = ROOT / "bench" / "real_labels" / "github_run_logs.csv"
GITHUB_DATA = DATA.parent / "github_run_logs"


def test_github_labels_are_well_formed_and_use_the_hf_labels():
    with open(GITHUB_CSV, newline="") as fh:
        reader = csv.DictReader(fh)
        from bench.real_labels.label_github import COLUMNS as GH_COLUMNS

        assert reader.fieldnames == list(GH_COLUMNS)
        gh = list(reader)
    assert len({r["path"] for r in gh}) == len(gh) > 100
    for r in gh:
        assert r["format"] in ("lightning", "tensorboard") and r["label"] in ALLOWED, r
        assert (r["manifest_step"] == "") == (r["label"] == "healthy"), r
        assert r["label"] == "healthy" or r["reason"], r
    counts = Counter(r["label"] for r in gh)
    assert counts["healthy"] > len(gh) / 2 and counts["no_learning"] > 0


def test_a_flat_loss_is_no_learning_by_the_hf_rule():
    from bench.real_labels.label_github import series_of
    from bench.real_labels.label_hf import label_run

    steps = list(range(0, 6000, 50))
    flat = [{"loss": 0.25 + 0.002 * 0.97**i} for i in range(len(steps))]  # 0.252 -> 0.250
    finding, _ = label_run(series_of(steps, flat))
    assert finding.label == "no_learning" and finding.step is not None
    falling = [{"loss": 0.25 + 0.4 * 0.97**i} for i in range(len(steps))]  # 0.65 -> 0.25
    assert label_run(series_of(steps, falling))[0].label == "healthy"


@pytest.mark.skipif(not GITHUB_DATA.is_dir(), reason=f"{GITHUB_DATA} is not present")
def test_github_csv_is_what_the_script_writes_and_the_harness_reads_it(tmp_path):
    from bench import real_logs
    from bench.real_labels import label_github

    assert label_github.main(["--data", str(GITHUB_DATA), "--out", str(tmp_path / "out.csv")]) == 0
    assert (tmp_path / "out.csv").read_text() == GITHUB_CSV.read_text()
    labels = label_github.read_labels(GITHUB_CSV)
    sources = real_logs.load_all(DATA.parent)
    recs = sources["github lightning"] + sources["github tensorboard"]
    faulty = [r for r in recs if r.meta["label_faulty"]]
    assert faulty and all(r.meta["fault"] != "healthy" for r in faulty)
    assert sum(label != "healthy" for label, _ in labels.values()) >= len(faulty)
