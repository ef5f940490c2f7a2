"""Log template mining: Drain3's parse tree behind masking, with plain-JSON state.

Variable parts of a line (UUIDs, IPs, paths, hex, ids, numbers) are masked
first, then Drain3 (:class:`drain3.drain.Drain`) mines the masked line into a
*template* with a stable integer id. Template ids are what counters, sequence
models and the novelty check speak in. One miner serves one project.

State is saved as plain JSON (:meth:`TemplateMiner.to_json`), never pickle:
Drain3's own ``TemplateMiner.save_state`` writes jsonpickle, which can build
arbitrary objects when loaded. :class:`JsonStatePersistence` is a Drain3
persistence handler that holds that JSON text; the service's store implements
it per project.

``nan`` and ``inf`` are kept as words, not masked as numbers: a template that
only ever held numbers there shows it, and Drain turns that position into
``<*>`` once both were seen.

Examples
--------
>>> miner = TemplateMiner()
>>> a = miner.add("Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106")
>>> b = miner.add("Receiving block blk_7503483334202473044 src: /10.250.10.6:40524")
>>> a.new, b.new, a.id == b.id, b.template
(True, False, True, 'Receiving block <ID> src: /<IP>')
>>> again = TemplateMiner.from_json(miner.to_json())
>>> again.match("Receiving block blk_-42424242 src: /10.0.0.1:1") == a.id
True
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from drain3.drain import Drain, LogCluster, LogClusterCache, Node
from drain3.persistence_handler import PersistenceHandler
from pydantic import Field

from runwatch.models.base import DiagnosticConfig

STATE_FORMAT = "runwatch.templates/1"

# (name, pattern, replacement), applied in this order: the specific shapes before plain numbers.
_MASKS: tuple[tuple[str, str, str], ...] = (
    ("uuid", r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "<UUID>"),
    ("ip", r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\d.])", "<IP>"),
    (
        "path",
        r"(?:(?<=[\s=\"'(\[,])|^)(?:[A-Za-z]:|~|\.{1,2})?(?:[/\\][^\s/\\:\"'()\[\],]+){2,}[/\\]?",
        "<PATH>",
    ),
    ("hex", r"\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b", "<HEX>"),
    ("id", r"\b[A-Za-z][A-Za-z0-9]*[_-]-?\d{4,}\b", "<ID>"),
    ("num", r"(?<![A-Za-z_<\d.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", "<NUM>"),
)
MASK_NAMES = tuple(name for name, _, _ in _MASKS)


class TemplateConfig(DiagnosticConfig):
    """How lines are masked and mined.

    Parameters
    ----------
    sim_th, depth, max_children
        Drain's similarity threshold, parse-tree depth and fan-out (Drain3's defaults).
    max_clusters
        At most this many templates per project; the least recently matched goes first.
    masks
        Which masks apply, from ``uuid``, ``ip``, ``path``, ``hex``, ``id``, ``num``.
    max_line_chars
        Lines are cut to this length before mining (a 64 KiB line is one template anyway).
    cache_size
        Masked lines remembered with their template, so a repeated shape skips the tree search.
    """

    sim_th: float = Field(default=0.4, gt=0.0, le=1.0)
    depth: int = Field(default=4, ge=3, le=16)
    max_children: int = Field(default=100, ge=2)
    max_clusters: int = Field(default=5000, ge=1)
    masks: tuple[str, ...] = MASK_NAMES
    max_line_chars: int = Field(default=2000, ge=16)
    cache_size: int = Field(default=50_000, ge=0)


def masker(names: tuple[str, ...] = MASK_NAMES, cache_size: int = 100_000):
    """A function masking the variable parts of a line (see the module docstring).

    Masks never span whitespace and only care whether a character is a digit, not
    which one, so each whitespace-separated token is masked once per *shape*
    (digits replaced by 0) and remembered: a line costs a ``translate``, a ``split``
    and a dictionary lookup per token. Runs of whitespace become one space, as
    Drain splits on whitespace anyway.

    >>> masker()("saved /tmp/ckpt/step_100.pt in 2.5s to 10.0.0.7:8080 (id 3f2a9c1e77)")
    'saved <PATH> in <NUM>s to <IP> (id <HEX>)'
    """
    unknown = set(names) - set(MASK_NAMES)
    if unknown:
        raise ValueError(f"unknown masks {sorted(unknown)}; known: {list(MASK_NAMES)}")
    subs = [(re.compile(p).sub, r) for name, p, r in _MASKS if name in names]
    shape = str.maketrans("123456789", "000000000")
    known: dict[str, str] = {}

    def mask_token(tok: str) -> str:
        for sub, repl in subs:
            tok = sub(repl, tok)
        return tok

    def mask(line: str) -> str:
        out = []
        for tok in line.translate(shape).split():
            m = known.get(tok)
            if m is None:
                m = mask_token(tok)
                if len(known) >= cache_size:
                    known.clear()
                known[tok] = m
            out.append(m)
        return " ".join(out)

    return mask


@dataclass(slots=True)
class TemplateMatch:
    """Where one line landed: its template id, the template now, whether the line created it, and the line as masked."""

    id: int
    template: str
    new: bool
    masked: str = ""


class JsonStatePersistence(PersistenceHandler):
    """A Drain3 persistence handler holding the miner's state as JSON text.

    ``save`` and ``load`` (optional callables) move the text to and from
    wherever it lives (the service passes store operations); without them the
    text is only kept in :attr:`state`.

    >>> p = JsonStatePersistence()
    >>> miner = TemplateMiner(persistence=p)
    >>> _ = miner.add("epoch 1 done")
    >>> miner.save()
    >>> TemplateMiner(persistence=p).lines_seen
    1
    """

    def __init__(self, load=None, save=None) -> None:
        self._load = load
        self._save = save
        self.state: str | None = None

    def save_state(self, state: str) -> None:
        self.state = state
        if self._save is not None:
            self._save(state)

    def load_state(self) -> str | None:
        if self._load is not None:
            self.state = self._load()
        return self.state


class TemplateMiner:
    """Masking plus Drain3 template mining for one project; state saved as JSON.

    Parameters
    ----------
    config
        Masking and Drain settings.
    persistence
        Where :meth:`save` writes the state and where the constructor looks for it.
    """

    def __init__(self, config: TemplateConfig | None = None, persistence: PersistenceHandler | None = None) -> None:
        self.config = config or TemplateConfig()
        self.persistence = persistence
        self._mask = masker(self.config.masks)
        self._reset()
        if persistence is not None:
            text = persistence.load_state()
            if text:
                self._load(text)

    def _reset(self) -> None:
        c = self.config
        self.drain = Drain(depth=c.depth, sim_th=c.sim_th, max_children=c.max_children, max_clusters=c.max_clusters)
        self.lines_seen = 0
        self.dirty = False  # changed since the last save (a template created or changed)
        self._cache: dict[str, int] = {}

    # -- mining ------------------------------------------------------------------------------

    def add(self, line: str) -> TemplateMatch:
        """Mine one line: the template it belongs to, created if none fits."""
        masked = self._mask(line[: self.config.max_line_chars])
        self.lines_seen += 1
        clusters = self.drain.id_to_cluster
        cid = self._cache.get(masked)
        if cid is not None:
            cluster = clusters.get(cid)
            if cluster is not None:
                cluster.size += 1
                clusters[cid]  # touch: keeps the cluster recent in Drain's LRU
                return TemplateMatch(cid, cluster.get_template(), False, masked)
        cluster, change = self.drain.add_log_message(masked)
        if change != "none":
            self.dirty = True
        if len(self._cache) >= self.config.cache_size:
            self._cache.clear()  # cheaper than LRU bookkeeping per line; refills in a few lines
        if self.config.cache_size:
            self._cache[masked] = cluster.cluster_id
        return TemplateMatch(cluster.cluster_id, cluster.get_template(), change == "cluster_created", masked)

    def match(self, line: str) -> int | None:
        """Id of the template ``line`` fits exactly, without learning from it; None if none does."""
        masked = self._mask(line[: self.config.max_line_chars])
        cid = self._cache.get(masked)
        if cid is not None and self.drain.id_to_cluster.get(cid) is not None:
            return cid
        cluster = self.drain.match(masked, "fallback")
        return None if cluster is None else cluster.cluster_id

    def template(self, template_id: int) -> str | None:
        cluster = self.drain.id_to_cluster.get(template_id)
        return None if cluster is None else cluster.get_template()

    @property
    def n_templates(self) -> int:
        return len(self.drain.id_to_cluster)

    def templates(self) -> dict[int, str]:
        """Every template by id."""
        return {cid: c.get_template() for cid, c in self._ordered_clusters()}

    # -- state -------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the state through the persistence handler (if any) and clear :attr:`dirty`."""
        if self.persistence is not None:
            self.persistence.save_state(self.to_json())
        self.dirty = False

    def _ordered_clusters(self) -> list[tuple[int, LogCluster]]:
        clusters = self.drain.id_to_cluster
        # cachetools keeps recency in a private OrderedDict; saving in that order keeps eviction order on load.
        order = getattr(clusters, "_LRUCache__order", None)
        keys = list(order) if order is not None else list(clusters.keys())
        return [(k, clusters.get(k)) for k in keys if clusters.get(k) is not None]

    def to_json(self) -> str:
        """The miner's state (config, templates, parse tree) as JSON text."""

        def node(n: Node) -> list:
            return [list(n.cluster_ids), {k: node(child) for k, child in n.key_to_child_node.items()}]

        doc = {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "lines_seen": self.lines_seen,
            "counter": self.drain.clusters_counter,
            "clusters": [[cid, c.size, list(c.log_template_tokens)] for cid, c in self._ordered_clusters()],
            "tree": node(self.drain.root_node),
        }
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(
        cls, text: str | bytes, config: TemplateConfig | None = None, persistence: PersistenceHandler | None = None
    ) -> TemplateMiner:
        """A miner restored from :meth:`to_json`; raises ValueError on bad text or a config that differs."""
        doc = _parse(text)
        saved = TemplateConfig.model_validate(doc["config"])
        if config is not None and config != saved:
            raise ValueError("template state was mined with another configuration")
        miner = cls(saved)
        miner.persistence = persistence
        miner._install(doc)
        return miner

    def _load(self, text: str | bytes) -> None:
        doc = _parse(text)
        if TemplateConfig.model_validate(doc["config"]) != self.config:
            raise ValueError("template state was mined with another configuration")
        self._install(doc)

    def _install(self, doc: dict) -> None:
        self._reset()
        drain = self.drain
        try:
            clusters = LogClusterCache(maxsize=self.config.max_clusters)
            for cid, size, tokens in doc["clusters"]:
                if not (isinstance(cid, int) and isinstance(size, int) and all(isinstance(t, str) for t in tokens)):
                    raise ValueError("bad cluster row")
                c = LogCluster(tokens, cid)
                c.size = size
                clusters[cid] = c
            drain.id_to_cluster = clusters
            drain.root_node = _node(doc["tree"], 0)
            drain.clusters_counter = int(doc["counter"])
            self.lines_seen = int(doc["lines_seen"])
        except (KeyError, TypeError, ValueError) as exc:
            self._reset()
            raise ValueError(f"template state: {type(exc).__name__}: {exc}") from None


def _parse(text: str | bytes) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"template state is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise ValueError(f"template state: expected format {STATE_FORMAT!r}")
    return doc


def _node(data: Any, depth: int) -> Node:
    if depth > 64 or not isinstance(data, list) or len(data) != 2:
        raise ValueError("bad parse-tree node")
    ids, children = data
    if not isinstance(children, dict) or not all(isinstance(i, int) for i in ids):
        raise ValueError("bad parse-tree node")
    n = Node()
    n.cluster_ids = list(ids)
    n.key_to_child_node = {str(k): _node(v, depth + 1) for k, v in children.items()}
    return n
