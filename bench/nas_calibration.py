"""Do the advisor's 80 % intervals hold 80 % of the true outcomes? Coverage on FCNet and NAS-Bench-201.

    python -m bench.nas_calibration                          # -> bench/RESULTS.md, subsection "calibration"
    python -m bench.nas_calibration --repeats 3 --out /tmp/R.md

Protocol (nothing here is fitted on the held-out values; the surrogate's
calibration uses only its own history, :meth:`Surrogate.calibration`):

- FCNet (each shared dataset): every slice (training setting) held out in
  turn (``--slices N`` draws N of them with ``--seed`` instead: a sample of
  8 slices ranged 40-100 % per slice and averaged 74 % where all 48 average
  80 %, so a few slices say little); for each, the surrogate is fitted on
  ``--history`` configurations of the *other* slices (one random seed each,
  like ``bench/nas_fcnet.py``) and predicts ``--queries`` random
  configurations of the held-out slice; the truth is one random seed's val
  loss (a run's outcome). A second column predicts configurations of the
  other slices that are not in the history (the history's own distribution).
- Advisor, FCNet: the intervals the advisor reports for its top-3 suggestions
  (anchored on the start's observed value, :class:`~runwatch.nas.advisor.PredictedEffect`)
  on ``--starts`` poor starts per dataset, against one random seed of the
  suggested configuration.
- NAS-Bench-201 CIFAR-10: ``--repeats`` histories of ``--history`` random
  cells (one random seed each, target ``val/acc`` in percent: logit scale on
  [0, 100]); ``--queries`` other random cells, truth one random seed.

Coverage = share of truths inside the interval (target 75-85 %); also the
median interval width relative to the median prediction.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.nas_common import markdown_table, write_subsection

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parent.parent / "shared" / "data" / "hpo-benchmarks"


def _coverage(truth: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    return float(np.mean((truth >= lo) & (truth <= hi)))


def _spread(coverages: list[float]) -> str:
    """Mean coverage, with the median and the range over repeats."""
    c = 100 * np.asarray(coverages)
    return f"{c.mean():.1f}% (median {np.median(c):.1f}; {c.min():.0f}–{c.max():.0f})"


def fcnet_coverage(
    table, repeats: int, history: int, queries: int, seed: int, surrogate: dict | None = None
) -> dict[str, list[float]]:
    """Coverage per held-out slice (every slice when ``repeats`` <= 0, else ``repeats`` drawn ones) and on
    in-distribution held-out configurations."""
    from bench.nas_fcnet import history_for
    from runwatch.nas.features import run_features
    from runwatch.nas.surrogate import Surrogate, SurrogateConfig

    rng = np.random.default_rng([seed, 11])
    n_slices = len(table.slices)
    slices = range(n_slices) if repeats <= 0 or repeats >= n_slices else rng.choice(n_slices, size=repeats, replace=False)
    out: dict[str, list[float]] = {"held-out slice": [], "other slices": [], "width": []}
    for sl in slices:
        hrng = np.random.default_rng([seed, int(sl), 1])
        hist = history_for(table, int(sl), history, hrng)
        s = Surrogate(SurrogateConfig.from_dict({**(surrogate or {}), "seed": seed})).fit(hist, "val/loss")
        used = {o.run_id.split("/")[1] for o in hist}
        qrng = np.random.default_rng([seed, int(sl), 2])
        for name, pool in (
            ("held-out slice", table.rows_of_slice(int(sl))),
            (
                "other slices",
                np.array([r for r in np.flatnonzero(table.slice_of != sl) if table.config_ids[r] not in used]),
            ),
        ):
            rows = qrng.choice(pool, size=min(queries, len(pool)), replace=False)
            seeds = qrng.integers(0, table.val_loss.shape[1], size=len(rows))
            obs = [table.observation(int(r), int(k)) for r, k in zip(rows, seeds)]
            truth = np.array([o.outcome["val/loss"] for o in obs])
            mid, lo, hi = s.interval_rows([run_features(o) for o in obs])
            out[name].append(_coverage(truth, lo, hi))
            if name == "held-out slice":
                out["width"].append(float(np.median((hi - lo) / mid)))
    return out


def advisor_coverage(
    table, starts: int, history: int, seed: int, k: int = 3, surrogate: dict | None = None
) -> tuple[float, int]:
    """Coverage of the advisor's reported intervals for its top-k suggestions on poor FCNet starts."""
    from bench.nas_fcnet import history_for, search_space, select_starts
    from runwatch.nas.advisor import Advisor, AdvisorConfig, Constraints

    space = search_space(table, 6)
    picked = select_starts(table, starts, 0.75, np.random.default_rng([seed, 21]))
    inside, n = 0, 0
    fitted: dict[int, Advisor] = {}
    trng = np.random.default_rng([seed, 22])
    for st in picked:
        if st.slice not in fitted:
            hist = history_for(table, st.slice, history, np.random.default_rng([seed, st.slice, 1]))
            cfg = AdvisorConfig.from_dict({"seed": seed, "surrogate": dict(surrogate or {})})
            fitted[st.slice] = Advisor(cfg).fit(hist)
        run = table.observation(st.row, st.seed_idx)
        for s in fitted[st.slice].suggest(run, Constraints(num_suggestions=k), space):
            row = table.lookup(st.slice, s.genome)
            if row is None or not math.isfinite(s.effect.lower):
                continue
            truth = float(table.val_loss[row, trng.integers(0, table.val_loss.shape[1])])
            inside += s.effect.lower <= truth <= s.effect.upper
            n += 1
    return (inside / n if n else math.nan), n


def nb201_coverage(
    table, repeats: int, history: int, queries: int, seed: int, surrogate: dict | None = None
) -> dict[str, list[float]]:
    from runwatch.nas.surrogate import Surrogate, SurrogateConfig

    out: dict[str, list[float]] = {"held-out cells": [], "width": []}
    for r in range(repeats):
        rng = np.random.default_rng([seed, 31, r])
        rows = rng.choice(len(table), size=history + queries, replace=False)
        hist, query = rows[:history], rows[history:]

        def pick(rs, rng=rng):
            return np.array([table.acc[i, rng.choice(table.seeds_of(int(i)))] for i in rs])

        cfg = SurrogateConfig.from_dict({**(surrogate or {}), "seed": seed})
        s = Surrogate(cfg).fit_rows(table.features(hist), pick(hist), "val/acc")
        truth = pick(query)
        _, lo, hi = s.interval_rows(table.features(query))
        out["held-out cells"].append(_coverage(truth, lo, hi))
        out["width"].append(float(np.median(hi - lo)))
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.nas_fcnet import load_tables
    from bench.nas_fcnet_table import FILES
    from bench.nas_nb201 import FILE, load_nb201

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "RESULTS.md")
    ap.add_argument("--repeats", type=int, default=8, help="NAS-Bench-201: random histories")
    ap.add_argument("--slices", type=int, default=0, help="FCNet: held-out slices drawn (0 = every slice in turn)")
    ap.add_argument("--history", type=int, default=400)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--starts", type=int, default=30, help="advisor check: poor starts per FCNet dataset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--surrogate-config", type=str, default="{}", help="JSON of SurrogateConfig overrides")
    args = ap.parse_args(argv)
    sur = json.loads(args.surrogate_config)
    t0 = time.perf_counter()
    rows = []
    for table in load_tables(args.data_dir, list(FILES)):
        cov = fcnet_coverage(table, args.slices, args.history, args.queries, args.seed, sur)
        adv, n = advisor_coverage(table, args.starts, args.history, args.seed, surrogate=sur)
        rows.append(
            [
                f"FCNet {table.name}",
                f"{len(cov['held-out slice'])} x {args.queries}",
                _spread(cov["held-out slice"]),
                f"{100 * np.mean(cov['other slices']):.1f}%",
                f"{100 * adv:.1f}% of {n}",
                f"x{np.median(cov['width']):.2f} of the prediction",
            ]
        )
        print(rows[-1], file=sys.stderr, flush=True)
    nb = nb201_coverage(load_nb201(args.data_dir / FILE), args.repeats, args.history, args.queries, args.seed, sur)
    rows.append(
        [
            "NAS-Bench-201 CIFAR-10 (val/acc, %)",
            f"{args.repeats} x {args.queries}",
            _spread(nb["held-out cells"]),
            "–",
            "–",
            f"{np.median(nb['width']):.2f} accuracy points",
        ]
    )
    command = "python -m bench.nas_calibration" + (
        "" if not (argv or sys.argv[1:]) else " " + " ".join(argv or sys.argv[1:])
    )
    lines = [
        "### Interval coverage (`bench/nas_calibration.py`)",
        "",
        (
            f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {time.perf_counter() - t0:.0f} s. "
            "Share of true outcomes (one random seed of the configuration: a run's outcome) inside the surrogate's 80 % "
            "interval, target 75–85 %. FCNet: history of "
            f"{args.history} configurations from the other training settings (slices), queries from a held-out slice "
            "(every slice held out in turn unless `--slices` says otherwise: mean over held-out slices, median and "
            "min–max in brackets; 8 slices drawn at random averaged 74.4 % on parkinsons_telemonitoring where all 48 "
            "average 79.9 %, one slice covering 40 %: a handful of slices is too few to judge) and from the history's "
            "own slices; the advisor column checks the "
            f"intervals it reports for its top-3 suggestions on {args.starts} poor starts per dataset (anchored in part "
            "on the start's observed value, the predicted difference shrunk by its held-out slope: `Surrogate.anchored`). "
            "NAS-Bench-201: history of random cells, queries other random cells. Intervals are computed on the log (loss) "
            "or logit (accuracy) scale and calibrated only on the history itself (cross-validated errors on "
            "hyperparameter groups the model did not see; pairs of runs of one group, with the cross-validated anchor "
            "weight and slope, for the anchored advisor intervals)."
        ),
        "",
    ]
    lines += markdown_table(
        [
            "data",
            "repeats x queries",
            "held-out coverage",
            "in-distribution coverage",
            "advisor's reported intervals",
            "median interval width",
        ],
        rows,
        "lrrrrr",
    )
    text = "\n".join(lines) + "\n"
    write_subsection(args.out, "calibration", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
