"""Stack-wide edits count once: edit distance, extent, group edits, merged diffs, grouped random edits, bottlenecks."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from runwatch.nas.architecture import Block, Genome
from runwatch.nas.space import (
    SearchSpace,
    change_extent,
    edit_distance,
    group_edits,
    insert_copies,
    mutate,
    neighbours,
    pyramid_width,
    remove_blocks,
    width_choices,
    within,
)

DEEP = Genome(64, 10, tuple(Block(f"fc{i}", "linear", 32, "sigmoid") for i in range(1, 13)))


def _all(genome: Genome, **changes) -> Genome:
    return genome.with_blocks(dataclasses.replace(b, **changes) for b in genome.blocks)


def test_a_change_applied_to_a_run_of_adjacent_blocks_is_one_edit_of_the_budget():
    ln = _all(DEEP, normalization="layernorm")
    relu = _all(DEEP, activation="relu")
    assert edit_distance(DEEP, ln) == 1 and edit_distance(DEEP, relu) == 1
    assert edit_distance(DEEP, _all(ln, activation="relu")) == 2
    assert within(ln, DEEP, SearchSpace()) and within(relu, DEEP, SearchSpace(max_changes=1))
    # ... but its extent (what the ranking's parsimony cost counts) is every block it touches
    assert change_extent(DEEP, ln) == 12 and change_extent(DEEP, _all(ln, activation="relu")) == 24
    # the same change on blocks that are not adjacent is one edit per run of blocks
    gapped = DEEP.replace_block(0, activation="relu").replace_block(2, activation="relu")
    assert edit_distance(DEEP, gapped) == 2 and change_extent(DEEP, gapped) == 2
    # different changes of one attribute on adjacent blocks are different edits
    mixed = DEEP.replace_block(0, width=64).replace_block(1, width=16)
    assert edit_distance(DEEP, mixed) == 2


def test_removing_or_adding_a_run_of_blocks_is_one_edit():
    halved = remove_blocks(DEEP, 6, 6)
    assert edit_distance(DEEP, halved) == 1 and change_extent(DEEP, halved) == 6
    assert edit_distance(DEEP, remove_blocks(remove_blocks(DEEP, 9), 3)) == 2  # two separate removals
    assert edit_distance(DEEP, insert_copies(DEEP, 11, 3)) == 1
    assert edit_distance(DEEP, insert_copies(insert_copies(DEEP, 11), 0)) == 2


def test_diff_merges_every_attribute_over_adjacent_blocks():
    res = DEEP.with_blocks(dataclasses.replace(b, residual=i > 0) for i, b in enumerate(_all(DEEP, width=64).blocks))
    base = _all(DEEP, width=64)
    assert [c.description for c in base.diff(res)] == ["add residual connections around fc2-fc12"]
    (change,) = base.diff(res)
    assert change.layer == ",".join(f"fc{i}" for i in range(2, 13)) and (change.before, change.after) == (
        "false",
        "true",
    )
    edited = _all(DEEP, normalization="layernorm", dropout=0.1).replace_block(0, width=16).replace_block(1, width=16)
    assert [c.description for c in DEEP.diff(edited)] == [
        "fc1-fc2: 32 -> 16 units",
        "add LayerNorm after fc1-fc12",
        "fc1-fc12: dropout 0.0 -> 0.1",
    ]
    single = DEEP.replace_block(3, residual=False, normalization="layernorm")
    assert [c.description for c in DEEP.diff(single)] == ["add LayerNorm after fc4 (Linear 32→32)"]


def test_group_edits_cover_whole_runs_of_equal_blocks_and_halve_deep_stacks():
    space = SearchSpace()
    found = Counter()
    for attribute, g in group_edits(DEEP, space):
        assert not g.validate() and within(g, DEEP, space) and edit_distance(DEEP, g) == 1, attribute
        found[attribute] += 1
    # widths x0.5 / x2 and the pyramid width (32 is already sqrt(64 * 10) rounded up: no extra), four
    # activations, LayerNorm, four dropouts, residuals around fc2-fc12 (fc1 reads 64 inputs, not 32), half the depth
    assert found == {"width": 2, "activation": 4, "normalization": 1, "dropout": 4, "residual": 1, "depth": 1}
    halved = next(g for a, g in group_edits(DEEP, space) if a == "depth")
    assert halved.depth == 6 and [b.name for b in halved.blocks] == [f"fc{i}" for i in range(1, 7)]
    # neighbours stay single-block edits
    assert all(change_extent(DEEP, g) == 1 for g in neighbours(DEEP, space))


def test_grouped_random_edits_draw_from_group_edits_too():
    rng = np.random.default_rng(0)
    extents = Counter(change_extent(DEEP, mutate(DEEP, SearchSpace(), rng, grouped=True)) for _ in range(200))
    assert all(edit_distance(DEEP, mutate(DEEP, SearchSpace(), rng, grouped=True)) == 1 for _ in range(50))
    # attribute, then one block or a run of blocks evenly (when it has both), then the edit
    assert extents[1] > 50 and sum(n for k, n in extents.items() if k > 1) > 60
    assert all(change_extent(DEEP, mutate(DEEP, SearchSpace(), rng)) == 1 for _ in range(50))  # default: single


def test_bottleneck_layers_may_grow_to_the_pyramid_width():
    narrow = Genome(64, 10, tuple(Block(f"fc{i}", "linear", 2, "relu") for i in (1, 2, 3)))
    assert pyramid_width(narrow) == 32  # sqrt(64 * 10) = 25.3 -> 32
    assert width_choices(narrow.blocks[0], SearchSpace(), narrow) == (2, 4, 32)
    assert width_choices(narrow.blocks[0], SearchSpace()) == (2, 4)  # without the genome: the multipliers only
    assert width_choices(narrow.blocks[0], SearchSpace(grow_bottlenecks=False), narrow) == (2, 4)
    grown = _all(narrow, width=32)
    assert within(grown, narrow, SearchSpace()) and edit_distance(narrow, grown) == 1
    assert not within(grown, narrow, SearchSpace(grow_bottlenecks=False))
    regression = Genome(10, 1, (Block("fc1", "linear", 2, "gelu"),))
    assert width_choices(regression.blocks[0], SearchSpace(), regression) == (2, 4)  # sqrt(10) -> 4 = x2 already
    wide = Genome(64, 10, (Block("fc1", "linear", 128, "relu"),))
    assert width_choices(wide.blocks[0], SearchSpace(), wide) == (64, 128, 256)  # not a bottleneck: unchanged
