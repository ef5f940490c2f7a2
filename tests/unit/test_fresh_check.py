"""bench.fresh_check: the scorer of the fresh-data records, on the repository's real fixtures and a written text log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench import fresh_check

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "training_logs"


def test_hf_and_lightning_files_are_read_labelled_and_scored(tmp_path, capsys):
    hf = tmp_path / "hf"
    hf.mkdir()
    shutil.copy(FIXTURES / "hf" / "lora_imdb_distilbert" / "trainer_state.json", hf / "01__a__b__trainer_state.json")
    (hf / "notes.md").write_text("not a collected file")
    assert fresh_check.main(["hf", str(hf)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[-1].startswith("read 1/1; healthy flagged ")

    lightning = tmp_path / "lightning"
    lightning.mkdir()
    shutil.copy(FIXTURES / "lightning" / "camels_ch_version_0" / "metrics.csv", lightning / "01__a__b__metrics.csv")
    (scored,) = [fresh_check.score_lightning(p) for p in fresh_check.files(lightning)]
    assert scored.read and scored.label and scored.note.endswith("steps")


def test_a_text_log_is_matched_to_its_truth_by_value_and_split(tmp_path):
    log = tmp_path / "01__a__b__train.log"
    log.write_text(
        "".join(f"Epoch {e}: train_loss: {2.0 - 0.1 * e:.4f}, val_loss: {2.1 - 0.1 * e:.4f}\n" for e in range(1, 13))
    )
    truth = [[e, "train", round(2.0 - 0.1 * e, 4)] for e in range(1, 13)] + [
        [e, "val", round(2.1 - 0.1 * e, 4)] for e in range(1, 13)
    ]
    truth.append([13, "val", 9.99])  # a value the log never prints: not read
    (tmp_path / "01__a__b__train.log.truth.json").write_text(json.dumps(truth))
    scored = fresh_check.score_text(log)
    assert (
        scored.truth_read == {"train": (12, 12), "val": (12, 13)} and scored.label == "healthy" and scored.alerts == []
    )
    assert fresh_check.summary([scored]) == (
        "read 1/1; healthy flagged 0/1; problems caught 0/0; train values read 12/12; val values read 12/13"
    )
