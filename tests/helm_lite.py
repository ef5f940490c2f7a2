"""Render deploy/helm/runwatch without Helm: the small subset of Go templates the chart uses.

Supported: ``{{ }}`` with ``-`` trim markers and ``/* comments */``; ``define``,
``include``, ``if``/``else``/``end``, ``with``/``end``; pipelines of ``quote``,
``default``, ``toYaml``, ``toJson``, ``nindent``, ``indent``, ``trunc``,
``trimSuffix``, ``printf``, ``sha256sum``, ``and``, ``or``, ``not``, ``eq``;
``.Values``, ``.Release``, ``.Chart``, ``.``, ``$`` and parentheses. Anything else
raises :class:`Unsupported`, so a chart edit that goes beyond it fails the test
loudly instead of rendering wrong: extend this file, or render with real Helm
(the test does too when ``helm`` is installed).

Examples
--------
>>> render_text('{{- if .Values.on }}x: {{ .Values.n | quote }}{{ end }}', {"Values": {"on": True, "n": 3}})
'x: "3"'
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.DOTALL)
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\(|\)|\||[^\s()|]+)')


class Unsupported(Exception):
    """A template construct this renderer does not know."""


@dataclass
class _Node:
    kind: str  # text, action, if, with, define
    value: Any = None  # text, or the pipeline's source
    body: list = field(default_factory=list)
    orelse: list = field(default_factory=list)


def _parse(source: str) -> list[_Node]:
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if m.group(1):
            text = text.rstrip()
        if parts and parts[-1][0] == "trim-next":
            parts.pop()
            text = text.lstrip()
        parts.append(("text", text))
        code = m.group(2).strip()
        if not (code.startswith("/*") and code.endswith("*/")):
            parts.append(("action", code))
        if m.group(3):
            parts.append(("trim-next", ""))
        pos = m.end()
    tail = source[pos:]
    if parts and parts[-1][0] == "trim-next":
        parts.pop()
        tail = tail.lstrip()
    parts.append(("text", tail))

    root: list[_Node] = []
    stack: list[tuple[_Node | None, list]] = [(None, root)]
    for kind, value in parts:
        if kind == "trim-next":
            # a trim marker followed directly by another action: trim the (empty) text between
            continue
        current = stack[-1][1]
        if kind == "text":
            if value:
                current.append(_Node("text", value))
            continue
        word = value.split(None, 1)[0] if value else ""
        rest = value[len(word) :].strip()
        if word in ("if", "with"):
            node = _Node(word, rest)
            current.append(node)
            stack.append((node, node.body))
        elif word == "define":
            node = _Node("define", json.loads(rest))
            current.append(node)
            stack.append((node, node.body))
        elif word == "else":
            node = stack[-1][0]
            if node is None or node.kind not in ("if", "with") or rest:
                raise Unsupported(f"{{{{ else {rest} }}}}")
            stack[-1] = (node, node.orelse)
        elif word == "end":
            stack.pop()
        elif word in ("range", "template", "block", "tpl", "required", "fail", "lookup"):
            raise Unsupported(f"{{{{ {value} }}}}")
        else:
            current.append(_Node("action", value))
    if len(stack) != 1:
        raise Unsupported("unbalanced {{ if/with/define }} ... {{ end }}")
    return root


def _tokens(code: str) -> list[str]:
    out, pos = [], 0
    while pos < len(code):
        m = _TOKEN.match(code, pos)
        if not m or not m.group(1):
            break
        out.append(m.group(1))
        pos = m.end()
    return out


def _empty(v: Any) -> bool:
    return v is None or v is False or v == 0 and not isinstance(v, str) or (hasattr(v, "__len__") and len(v) == 0)


def _go_quote(v: Any) -> str:
    return json.dumps("" if v is None else (v if isinstance(v, str) else _scalar(v)))


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _to_yaml(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n") if v not in (None, {}) else "{}"


def _indent(n: int, s: str) -> str:
    return "\n".join((" " * n + line) if line else line for line in str(s).split("\n"))


class Renderer:
    """The chart's templates, values and metadata; :meth:`render` returns ``{template file: text}``."""

    def __init__(self, chart_dir: Path, values: dict | None = None, release: str = "rw", namespace: str = "default"):
        chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
        base = yaml.safe_load((chart_dir / "values.yaml").read_text())
        self.root = {
            "Values": _merge(base, values or {}),
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
            "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart.get("appVersion", "")},
        }
        self.templates = {p.name: _parse(p.read_text()) for p in sorted((chart_dir / "templates").iterdir())}
        self.defines: dict[str, list[_Node]] = {}
        for nodes in self.templates.values():
            for n in nodes:
                if n.kind == "define":
                    self.defines[n.value] = n.body

    def render(self) -> dict[str, str]:
        return {name: self._run(nodes, self.root) for name, nodes in self.templates.items() if not name.startswith("_")}

    # -- evaluation ---------------------------------------------------------------------------

    def _run(self, nodes: list[_Node], dot: Any) -> str:
        out = []
        for n in nodes:
            if n.kind == "text":
                out.append(n.value)
            elif n.kind == "action":
                v = self._pipeline(n.value, dot)
                out.append("" if v is None else _scalar(v))
            elif n.kind == "if":
                out.append(self._run(n.orelse if _empty(self._pipeline(n.value, dot)) else n.body, dot))
            elif n.kind == "with":
                v = self._pipeline(n.value, dot)
                out.append(self._run(n.orelse, dot) if _empty(v) else self._run(n.body, v))
        return "".join(out)

    def _pipeline(self, code: str, dot: Any) -> Any:
        return self._eval_tokens(_tokens(code), dot)

    def _eval_tokens(self, tokens: list[str], dot: Any) -> Any:
        commands: list[list[Any]] = [[]]
        depth, group = 0, []
        for t in tokens:
            if depth:
                if t == "(":
                    depth += 1
                elif t == ")":
                    depth -= 1
                    if depth == 0:
                        commands[-1].append(("value", self._eval_tokens(group, dot)))
                        group = []
                        continue
                group.append(t)
            elif t == "(":
                depth = 1
            elif t == "|":
                commands.append([])
            else:
                commands[-1].append(t)
        value, first = None, True
        for cmd in commands:
            args = [self._term(a, dot) for a in cmd[1:]]
            if not first:
                args.append(value)
            value = self._command(cmd[0], args, dot) if cmd else None
            first = False
        return value

    def _term(self, t: Any, dot: Any) -> Any:
        if isinstance(t, tuple):
            return t[1]
        if t.startswith('"'):
            return json.loads(t)
        if re.fullmatch(r"-?\d+", t):
            return int(t)
        if t in ("true", "false"):
            return t == "true"
        if t == ".":
            return dot
        if t == "$":
            return self.root
        if t.startswith("."):
            return _path(dot, t[1:])
        if t.startswith("$."):
            return _path(self.root, t[2:])
        raise Unsupported(f"argument {t!r}")

    def _command(self, head: Any, args: list, dot: Any) -> Any:
        if isinstance(head, tuple) or head.startswith(('"', ".", "$")) or re.fullmatch(r"-?\d+|true|false", head):
            if args:
                raise Unsupported(f"a value with arguments: {head!r}")
            return self._term(head, dot)
        fn = {
            "quote": lambda v: _go_quote(v),
            "default": lambda d, v=None: d if _empty(v) else v,
            "toYaml": _to_yaml,
            "toJson": lambda v: json.dumps(v, sort_keys=True, separators=(",", ":")),
            "nindent": lambda n, s: "\n" + _indent(n, s),
            "indent": _indent,
            "trunc": lambda n, s: str(s)[:n],
            "trimSuffix": lambda suf, s: str(s)[: -len(suf)] if suf and str(s).endswith(suf) else str(s),
            "printf": lambda fmt, *a: fmt.replace("%v", "%s") % tuple(_scalar(x) for x in a),
            "sha256sum": lambda s: hashlib.sha256(str(s).encode()).hexdigest(),
            "and": lambda *a: next((x for x in a if _empty(x)), a[-1]),
            "or": lambda *a: next((x for x in a if not _empty(x)), a[-1]),
            "not": lambda v: _empty(v),
            "eq": lambda a, b: a == b,
            "include": lambda name, ctx: self._run(self.defines[name], ctx),
        }.get(head)
        if fn is None:
            raise Unsupported(f"function {head!r}")
        return fn(*args)


def _path(obj: Any, dotted: str) -> Any:
    for key in dotted.split(".") if dotted else ():
        if not isinstance(obj, dict):
            raise Unsupported(f"nil pointer evaluating .{dotted}")
        obj = obj.get(key)
    return obj


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render_text(source: str, root: dict) -> str:
    """Render one template string against ``root`` (``{"Values": ...}``); for tests of the renderer."""
    r = Renderer.__new__(Renderer)
    r.root, r.defines = root, {}
    return r._run(_parse(source), root)


def manifests(chart_dir: Path, values: dict | None = None) -> list[dict]:
    """Every Kubernetes object the chart renders to (NOTES.txt left out)."""
    docs = []
    for name, text in Renderer(chart_dir, values).render().items():
        if name.endswith(".txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs
