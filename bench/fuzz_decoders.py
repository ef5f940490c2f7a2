"""The long decoder fuzz: ≥ 10,000 generated inputs through every decoder, with a table of what happened.

    python -m bench.fuzz_decoders                    # 2,500 cases per decoder (10,000 in all), seed 0
    python -m bench.fuzz_decoders --cases 5000 --seed 7

Decoders (inputs from :mod:`bench.fuzz_inputs`, properties from :mod:`bench.fuzz_checks`):
``grpc`` (EventBatch bytes into a real server over loopback, between two valid
batches on one stream), ``kafka`` (ingest records through the detector
consumer's decode-and-ingest path, between two valid records), ``importers``
(mutated real log files), ``configs`` (mutated ``--diagnostics-config`` /
settings JSON).

Prints, per decoder, the cases run and their outcomes by type: accepted, each
documented refusal, property failures (a refusal that names no field, a valid
batch lost beside a bad one, ...) and crashes (any other exception). Every
failing input is added to ``tests/fixtures/fuzz_regressions/cases.json``
(unless ``--no-save``), which ``tests/integration/test_fuzz_decoders.py`` replays.
The unit-test suite runs the same properties on a fixed budget of 200 cases.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

from bench import fuzz_checks as checks
from bench import fuzz_inputs as inputs

DECODERS = ("grpc", "kafka", "importers", "configs")


def run(decoder: str, cases: int, rng_seed: int, targets: dict, save: bool) -> tuple[collections.Counter, list, float]:
    """Fuzz one decoder: (outcome counts, failures [(kind, message, case)], seconds)."""
    counts: collections.Counter = collections.Counter()
    failures: list = []
    strategy, check, as_case = {
        "grpc": (inputs.batch_bytes(), lambda raw: checks.check_grpc(targets["grpc"], raw),
                 lambda raw: ("grpc", (raw,))),
        "kafka": (inputs.kafka_records(), lambda rec: checks.check_kafka(targets["kafka"], *rec),
                  lambda rec: ("kafka", rec)),
        "importers": (inputs.import_cases(), lambda c: checks.check_import(*c), lambda c: ("importer", c)),
        "configs": (inputs.config_texts(), lambda c: checks.check_config(*c), lambda c: ("config", c)),
    }[decoder]  # fmt: skip

    @seed(rng_seed)
    @settings(
        max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(strategy)
    def one(value) -> None:
        try:
            counts[check(value)] += 1
        except checks.PropertyFailure as exc:
            counts["PROPERTY FAILURE"] += 1
            failures.append(("property", str(exc), as_case(value)))
        except Exception as exc:  # noqa: BLE001 - a crash is what this looks for
            counts[f"CRASH {type(exc).__name__}"] += 1
            failures.append(("crash", "".join(traceback.format_exception_only(exc)).strip(), as_case(value)))

    t0 = time.perf_counter()
    one()
    elapsed = time.perf_counter() - t0
    if save:
        for kind, message, (name, args) in failures:
            checks.save_case(checks.encode_case(name, args, f"found by bench.fuzz_decoders (seed {rng_seed})",
                                                f"{kind}: {message[:300]}"))  # fmt: skip
    return counts, failures, elapsed


def _row(cells: list, widths: list[int], left: int = 1) -> str:
    """A markdown table row: the first ``left`` cells left-aligned, the rest right-aligned."""
    cells = [f"{c:<{w}}" if i < left else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))]
    return "| " + " | ".join(cells) + " |"


def print_tables(results: dict, rng_seed: int) -> None:
    """Per decoder: cases, accepted, refused, property failures, crashes, seconds; then outcomes by type."""
    total = sum(sum(c.values()) for c, _, _ in results.values())
    print(f"decoder fuzz: {total} cases, seed {rng_seed}\n")
    widths = [10, 6, 8, 7, 17, 7, 5]
    print(_row(["decoder", "cases", "accepted", "refused", "property failures", "crashes", "s"], widths))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for decoder, (counts, _, elapsed) in results.items():
        crashes = sum(n for k, n in counts.items() if k.startswith("CRASH"))
        props = counts.get("PROPERTY FAILURE", 0)
        ok = counts.get("accepted", 0) + counts.get("duplicates", 0)
        refused = sum(counts.values()) - ok - crashes - props
        print(_row([decoder, sum(counts.values()), ok, refused, props, crashes, f"{elapsed:.1f}"], widths))
    widths = [10, 28, 6]
    print("\n" + _row(["decoder", "outcome (refusals by type)", "cases"], widths, left=2))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for decoder, (counts, _, _) in results.items():
        for outcome, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            print(_row([decoder, outcome, n], widths, left=2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=2500, help="cases per decoder (default 2500: 10,000 in all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decoders", default=",".join(DECODERS), help=f"comma-separated subset of {','.join(DECODERS)}")
    ap.add_argument("--no-save", action="store_true", help="do not add failing inputs to the regression cases")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    chosen = [d.strip() for d in args.decoders.split(",") if d.strip()]
    with tempfile.TemporaryDirectory(prefix="runwatch-fuzz-") as tmp:
        targets = {}
        if "grpc" in chosen:
            targets["grpc"] = checks.GrpcIngest(Path(tmp) / "grpc")
        if "kafka" in chosen:
            targets["kafka"] = checks.KafkaIngest(Path(tmp) / "kafka")
        results = {}
        try:
            for decoder in chosen:
                results[decoder] = run(decoder, args.cases, args.seed, targets, not args.no_save)
        finally:
            for t in targets.values():
                t.close()
    bad = sum(len(f) for _, f, _ in results.values())
    print_tables(results, args.seed)
    for decoder, (_, failures, _) in results.items():
        seen = set()
        for kind, message, _ in failures:
            if message[:80] not in seen:
                seen.add(message[:80])
                print(f"\n{decoder} {kind}: {message[:500]}")
    if bad and not args.no_save:
        print(f"\nfailing inputs kept in {checks.REGRESSIONS}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
