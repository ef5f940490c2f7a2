"""Replayed runs are named `<repo-or-parent>/<run folder>`, generic folders passed over (client/importers/util.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from runwatch.client.importers import load

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "training_logs"
HISTORY = '{"log_history": [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9}]}'


def _tree(root: Path) -> None:
    """Three repos' `lightning_logs/version_1` (two CSV, one event file) and one repo's three checkpoints."""
    for repo in ("alice+vision", "bob+speech"):
        shutil.copytree(LOGS / "lightning" / "camels_ch_version_0", root / repo / "lightning_logs" / "version_1")
    shutil.copytree(LOGS / "tensorboard" / "vae_mirt_version_4", root / "carol+vae" / "lightning_logs" / "version_1")
    for step in (500, 1000, 1500):
        folder = root / "dave+bert" / "results" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(HISTORY)


def test_runs_say_their_repo_and_run_folder(tmp_path):
    _tree(tmp_path / "github_run_logs")
    runs = load(tmp_path / "github_run_logs")
    assert sorted((r.format, r.name) for r in runs) == [
        ("hf", "dave+bert/checkpoint-1000"),
        ("hf", "dave+bert/checkpoint-1500"),
        ("hf", "dave+bert/checkpoint-500"),
        ("lightning", "alice+vision/version_1"),
        ("lightning", "bob+speech/version_1"),
        ("tensorboard", "carol+vae/version_1"),
    ]
    ids = [r.run_id() for r in runs]
    assert len(set(ids)) == len(ids) and not [i for i in ids if "lightning_logs" in i or "results" in i]
    assert any(i.startswith("replay-lightning-alice_vision_version_1-") for i in ids)
    assert any(i.startswith("replay-hf-dave_bert_checkpoint-500-") for i in ids)


def test_names_do_not_depend_on_where_the_replay_starts(tmp_path):
    _tree(tmp_path / "github_run_logs")
    whole = {str(r.source): r.run_id() for r in load(tmp_path / "github_run_logs")}
    one_repo = load(tmp_path / "github_run_logs" / "bob+speech" / "lightning_logs")
    assert [whole[str(r.source)] for r in one_repo] == [r.run_id() for r in one_repo]


def test_accented_folder_names_keep_their_letters_in_the_run_id(tmp_path):
    folder = tmp_path / "équipe+modèle" / "results" / "checkpoint-500"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(HISTORY)
    (run,) = load(tmp_path)
    assert run.name == "équipe+modèle/checkpoint-500"  # shown as written; the id keeps the allowed alphabet
    assert run.run_id().startswith("replay-hf-equipe_modele_checkpoint-500-")
