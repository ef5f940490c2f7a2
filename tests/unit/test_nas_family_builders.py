"""Genomes of the corpus' CNN, GRU/LSTM and transformer models rebuild into torch models and train after edits."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from bench.corpus.tasks import TASKS, build
from runwatch.client.torch_watch import describe_architecture
from runwatch.nas.architecture import Block, Genome
from runwatch.nas.families import Stem, family_edits, structure_problems
from runwatch.nas.family_builders import stem_of_model
from runwatch.nas.seeding import _deeper, _shallower
from runwatch.nas.space import SearchSpace, mutate, neighbours, within

torch.set_num_threads(1)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def corpus_model(arch: str, depth: int, width: int):
    torch.manual_seed(0)
    dataset = "digits" if arch == "cnn" else "copy"
    return build(arch, TASKS[dataset], depth, width, "tanh" if arch in ("gru", "lstm") else "relu", 0.1)


def inputs(arch: str, n: int = 8):
    if arch == "cnn":
        return torch.randn(n, 64), torch.randint(0, 10, (n,))
    x = torch.randint(1, 9, (n, 12))
    return x, x.roll(3, dims=1)


def weight_shapes(model, names) -> dict[str, tuple]:
    """Shapes of the first weight of every module whose (builder-)name ends with one of ``names``."""
    out = {}
    for module_name, module in model.named_modules():
        for n in names:
            if module_name.endswith((n.replace(".", "_"), n)):
                weight = next(iter(module.parameters(recurse=False)), None)
                if weight is not None:
                    out[n] = tuple(weight.shape)
    return out


def train_steps(model, arch: str, steps: int = 5) -> tuple[float, float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = inputs(arch, 32)
    losses = []
    for _ in range(steps):
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1]


CASES = [("cnn", 2, 64), ("gru", 2, 64), ("lstm", 1, 32), ("transformer", 2, 48)]


@pytest.mark.parametrize(("arch", "depth", "width"), CASES)
def test_a_recorded_genome_rebuilds_with_the_recorded_shapes(arch, depth, width):
    original = corpus_model(arch, depth, width)
    genome = Genome.from_architecture(describe_architecture(original))
    stem = stem_of_model(original)
    assert structure_problems(genome) == []
    rebuilt = genome.build(stem)
    assert n_params(rebuilt) == n_params(original) == genome.params()
    names = [b.name.split(".")[-1] for b in genome.blocks] + [genome.output_name]
    assert weight_shapes(rebuilt, names) == weight_shapes(original, names)
    x, _ = inputs(arch)
    assert rebuilt(x).shape == original(x).shape


@pytest.mark.parametrize(("arch", "depth", "width"), CASES)
def test_a_capacity_edit_rebuilds_and_trains(arch, depth, width):
    original = corpus_model(arch, depth, width)
    genome = Genome.from_architecture(describe_architecture(original))
    stem = stem_of_model(original)
    space = SearchSpace()
    smaller = _shallower(genome, space) if arch in ("gru", "transformer") else None
    edited = (smaller or genome).replace_block(0, width=genome.blocks[0].width * 2) if arch != "transformer" else None
    if arch == "transformer":  # heads x2 and a narrower feed-forward on the remaining layer
        heads = next(g for a, g in family_edits(smaller, space) if a == "heads")
        edited = heads.replace_block(1, width=48)
    assert within(edited, genome, space), [c.description for c in genome.diff(edited)]
    model = edited.build(stem)
    assert n_params(model) != n_params(original)
    first, last = train_steps(model, arch)
    assert last < first  # it trains


def test_edits_keep_every_family_rebuildable():
    space = SearchSpace()
    for arch, depth, width in CASES:
        original = corpus_model(arch, depth, width)
        genome = Genome.from_architecture(describe_architecture(original))
        stem = stem_of_model(original)
        x, _ = inputs(arch, 2)
        for g in [*neighbours(genome, space), *(mutate(genome, space, rng=i, grouped=True) for i in range(10))]:
            assert structure_problems(g) == [], (arch, [c.description for c in genome.diff(g)])
            assert g.build(stem)(x).shape[0] == 2


def test_family_edits_read_as_the_users_layers():
    gru = Genome.from_architecture(describe_architecture(corpus_model("gru", 2, 64)))
    texts = {c.description for _, g in family_edits(gru, SearchSpace()) for c in gru.diff(g)}
    assert texts == {"rnn (GRU 16→64): 2 -> 1 layers", "rnn (GRU 16→64): 2 -> 3 layers"}
    tf = Genome.from_architecture(describe_architecture(corpus_model("transformer", 2, 48)))
    shallower = _shallower(tf, SearchSpace())
    assert [c.description for c in tf.diff(shallower)] == [
        (
            "depth 6 -> 3 (remove blocks encoder.layers.1.self_attn (MultiheadAttention 48→48), "
            "encoder.layers.1.linear1 (Linear 48→96), encoder.layers.1.linear2 (Linear 96→48))"
        )
    ]
    assert _deeper(tf, SearchSpace()).depth == 9
    heads = {c.description for a, g in family_edits(tf, SearchSpace()) if a == "heads" for c in tf.diff(g)}
    assert "encoder.layers.0.self_attn (MultiheadAttention 48→48): 2 -> 4 heads" in heads


def test_heads_always_divide_the_width():
    attention = Block("attn", "attention", 20, attributes=(("num_heads", "4"),))
    ff = (Block("ff1", "linear", 40), Block("ff2", "linear", 20, normalization="layernorm"))
    g = Genome(20, 5, (attention, *ff), output_name="head", family="transformer")
    edits = [x for a, x in family_edits(g, SearchSpace()) if a == "heads"]
    assert [x.blocks[0].attribute_map()["num_heads"] for x in edits] == ["2"]  # 8 heads do not divide 20
    assert all(structure_problems(x) == [] for x in edits)


def test_token_models_need_their_stem():
    gru = Genome.from_architecture(describe_architecture(corpus_model("gru", 1, 32)))
    with pytest.raises(ValueError, match="Stem\\(tokens"):
        gru.build()
    assert gru.build(Stem(tokens=9))(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 9)


class _FeatureTransformer(torch.nn.Module):
    """A transformer fed 8 features per row through a Linear to its model width (no token embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 32)
        self.pos = torch.nn.Parameter(torch.zeros(1, 8, 32))
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2)
        self.cls_head = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.cls_head(self.encoder(self.proj(x.view(-1, 8, 8)) + self.pos).mean(1))


def test_a_transformers_input_projection_is_its_stem_not_a_block():
    model = _FeatureTransformer()
    g = Genome.from_architecture(describe_architecture(model))
    assert g.family == "transformer" and g.input_size == 32 and "proj" in g.fixed
    assert g.blocks[0].name == "encoder.layers.0.self_attn" and structure_problems(g) == []
    assert g.params() == sum(p.numel() for p in model.parameters())
    # the transformer's own edits (heads, a whole encoder layer), not "remove block proj" or Tanh inside a layer
    assert {"heads", "depth"} <= {attribute for attribute, _ in family_edits(g, SearchSpace())}
    with pytest.raises(ValueError, match="input projection"):
        g.build()


def test_a_cnn_genome_without_square_positions_is_refused():
    conv = (("kernel_size", "3x3"), ("padding", "1x1"))
    g = Genome(1, 10, (Block("c1", "conv", 4, "relu", attributes=conv),), output_name="fc", family="cnn")
    assert g.build(Stem(image=(1, 8, 8)))(torch.zeros(2, 64)).shape == (2, 10)  # global pool: 1 position
    with pytest.raises(ValueError, match="square grid"):
        dataclasses.replace(g, output_in_scale=6.0).build(Stem(image=(1, 8, 8)))


@pytest.mark.parametrize(("arch", "depth", "width"), [("cnn", 2, 64), ("transformer", 1, 32)])
def test_run_trials_rebuilds_and_trains_non_mlp_families(arch, depth, width):
    """The entry `runwatch nas run` uses: every trial a rebuilt model of the family, trained by the user's function."""
    pytest.importorskip("nni")
    from runwatch.nas.trials import run_trials

    original = corpus_model(arch, depth, width)
    genome = Genome.from_architecture(describe_architecture(original))
    seen = []

    def trainer(model) -> float:
        seen.append(type(model).__name__)
        return train_steps(model, arch, steps=3)[1]

    result = run_trials(genome, SearchSpace(max_changes=1), trainer, budget=3, seed=0, stem=stem_of_model(original))
    assert len(result.trials) == 3 and all(t.value > 0 for t in result.trials)
    assert result.trials[0].params == n_params(original)
    assert set(seen) == {"ImageCNN" if arch == "cnn" else "TransformerTagger"}


def test_a_transformer_model_width_edit_rebuilds_embedding_and_layers_and_trains():
    original = corpus_model("transformer", 2, 48)
    genome = Genome.from_architecture(describe_architecture(original))
    stem = stem_of_model(original)
    widths = {g.input_size: g for a, g in family_edits(genome, SearchSpace()) if g.input_size != genome.input_size}
    assert sorted(widths) == [24, 96]
    for width, edited in widths.items():
        assert structure_problems(edited) == []
        assert within(edited, genome, SearchSpace())
        (change,) = genome.diff(edited)
        assert change.attribute == "width" and (change.before, change.after) == ("48", str(width))
        assert change.description.startswith(f"model width (d_model) 48 -> {width} (the embedding")
        model = edited.build(stem)
        assert n_params(model) == edited.params()  # the fixed layers (embedding, positions, norms) scale with it
        assert model.embed.embedding_dim == width
        first, last = train_steps(model, "transformer")
        assert last < first
    gru = Genome.from_architecture(describe_architecture(corpus_model("gru", 2, 64)))
    assert all(g.input_size == gru.input_size for _, g in family_edits(gru, SearchSpace()))
