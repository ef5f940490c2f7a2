"""The docs cannot rot: README.md and docs/*.md are checked against the code.

- every fenced ```python block parses (``ast.parse``);
- every ```bash / ```sh / ```shell / ```console block passes ``bash -n`` (console blocks: ``$ `` prompts
  stripped, output lines dropped); README's indented command blocks too;
- every ``runwatch <command> [<subcommand>]`` in a shell block exists in the CLI
  (``runwatch.service.cli.app``), and so does every ``--option`` given to it;
- every relative link (and image) points to a file that exists, and an ``#anchor`` into a Markdown
  file to one of its headings;
- README's first two commands stay what CI (``.ci/run``) runs, and README links every docs page;
- every docstring example of every ``runwatch`` module runs and prints what it shows.

A block that is deliberately partial is skipped when the line above it is ``<!-- not-run -->``.
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARK = "<!-- not-run -->"
PAGES = ["sdk", "cli", "contract", "kafka", "detection", "advisor", "deployment", "security", "dashboard", "benchmarks"]
SHELL_LANGS = {"bash", "sh", "shell", "console"}

SETUP_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e '.[dev]' && .venv/bin/runwatch demo"
)
TEST_COMMAND = ".venv/bin/python -m pytest -q -n 2"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence (or of the first indented line)
    lang: str  # the fence's info string, lower case; "" for an untagged fence
    code: str
    indented: bool = False  # a 4-space indented block (read as shell, in README.md only)

    def __str__(self) -> str:
        kind = "indented" if self.indented else self.lang or "untagged"
        return f"{self.path.relative_to(ROOT)}:{self.line} ({kind})"


def _blocks(path: Path) -> list[Block]:
    """Fenced code blocks (and, in README.md, 4-space indented blocks) not marked ``<!-- not-run -->``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if m:
            indent, fence, lang = m.groups()
            start = i
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i].removeprefix(indent))
                i += 1
            skipped = start > 0 and lines[start - 1].strip() == SKIP_MARK
            if not skipped:
                blocks.append(Block(path, start + 1, lang.lower(), "\n".join(body) + "\n"))
            i += 1
            continue
        if path == README and lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            start = i
            body = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            if not (start > 1 and lines[start - 2].strip() == SKIP_MARK):
                blocks.append(Block(path, start + 1, "", "\n".join(body).strip() + "\n", indented=True))
            continue
        i += 1
    return blocks


ALL_BLOCKS = [b for p in DOC_FILES for b in _blocks(p)]
PY_BLOCKS = [b for b in ALL_BLOCKS if b.lang in {"python", "py", "python3"}]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in SHELL_LANGS or b.indented]


def _shell_text(block: Block) -> str:
    """The commands of a shell block: for ``console``, prompted lines (and their continuations) only."""
    if block.lang != "console":
        return block.code
    out: list[str] = []
    continuing = False
    for line in block.code.splitlines():
        if line.startswith("$ ") or line == "$":
            out.append(line[2:])
        elif continuing:
            out.append(line)
        else:
            continue
        continuing = line.rstrip().endswith("\\")
    return "\n".join(out) + "\n"


def test_docs_exist_and_have_blocks():
    names = {p.name for p in DOC_FILES}
    for page in PAGES:
        assert f"{page}.md" in names, f"docs/{page}.md is missing"
    assert PY_BLOCKS and SHELL_BLOCKS


@pytest.mark.parametrize("block", PY_BLOCKS, ids=str)
def test_python_blocks_parse(block: Block):
    try:
        ast.parse(block.code, filename=str(block))
    except SyntaxError as e:
        pytest.fail(f"{block}: line {e.lineno} of the block does not parse: {e.msg}\n{block.code}")


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_shell_blocks_parse():
    failures = []
    for block in SHELL_BLOCKS:
        proc = subprocess.run(
            ["bash", "-n"], check=False, input=_shell_text(block), capture_output=True, text=True, timeout=10
        )
        if proc.returncode != 0:
            failures.append(f"{block}: {proc.stderr.strip()}\n{block.code}")
    assert not failures, "\n\n".join(failures)


# -- runwatch commands named in shell blocks ------------------------------------------------------------------


@functools.cache
def _cli():
    import typer.main

    from runwatch.service.cli import app

    return typer.main.get_command(app)


def _options(command) -> set[str]:
    opts = {"--help"}
    for param in command.params:
        opts.update(getattr(param, "opts", ()))
        opts.update(getattr(param, "secondary_opts", ()))
    return opts


def _logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def _invocations(text: str) -> list[list[str]]:
    """Each ``runwatch ...`` in a shell text, as its words up to the end of that command."""
    found = []
    for line in _logical_lines(text):
        if line.lstrip().startswith("#"):
            # a comment may name commands (`runwatch watch/runs/show`): check the command names only
            for m in re.finditer(r"(?<![\w.-])runwatch ([a-z][a-z-]*)", line):
                found.append([m.group(1)])
            continue
        code = re.split(r"\s#", line, maxsplit=1)[0]
        for m in re.finditer(r"(?:^|[\s/;|&(])runwatch((?:\s+[^\s;|&)]+)*)", code):
            words = m.group(1).split()
            if "--" in words:  # `runwatch pipe ... -- python train.py`: the child's arguments are not ours
                words = words[: words.index("--")]
            found.append(words)
    return found


def _check_invocation(words: list[str]) -> list[str]:
    group = _cli()
    if not words or words[0].startswith("-"):
        return []
    name = words[0]
    command = group.commands.get(name)
    if command is None:
        return [f"`runwatch {name}`: no such command (commands: {', '.join(sorted(group.commands))})"]
    rest = words[1:]
    label = f"runwatch {name}"
    if hasattr(command, "commands"):  # a group: tokens, nas, detectors
        if not rest or rest[0].startswith("-"):
            return []
        sub = command.commands.get(rest[0])
        if sub is None:
            return [f"`{label} {rest[0]}`: no such subcommand (has: {', '.join(sorted(command.commands))})"]
        command, label, rest = sub, f"{label} {rest[0]}", rest[1:]
    known = _options(command)
    problems = []
    for word in rest:
        opt = word.strip("[]").split("=", 1)[0]
        if re.fullmatch(r"--[a-z][a-z0-9-]*", opt) and opt not in known:
            problems.append(f"`{label}` has no option {opt}")
    return problems


def test_runwatch_commands_in_shell_blocks_exist():
    problems = []
    seen = 0
    for block in SHELL_BLOCKS:
        for words in _invocations(_shell_text(block)):
            seen += 1
            problems += [f"{block}: {p}" for p in _check_invocation(words)]
    assert seen > 10
    assert not problems, "\n".join(problems)


def test_invocation_checker_catches_rot():
    assert _check_invocation(["serve", "--port", "1"]) == []
    assert _check_invocation(["tokens", "create", "--file", "t.json"]) == []
    assert _check_invocation(["sevre"])
    assert _check_invocation(["tokens", "mint"])
    assert _check_invocation(["serve", "--no-such-flag"])
    assert _invocations("python train.py 2>&1 | runwatch pipe --project p -- python x.py --lr 3\n") == [
        ["pipe", "--project", "p"]
    ]


# -- links -----------------------------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # links keep their text
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def _anchors(path: Path) -> frozenset[str]:
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.match(r"^\s*(```|~~~)", line):
            in_fence = not in_fence
            continue
        m = None if in_fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            n = counts.get(slug, 0)
            anchors.add(slug if n == 0 else f"{slug}-{n}")
            counts[slug] = n + 1
    return frozenset(anchors)


def _links(path: Path) -> list[tuple[int, str]]:
    links = []
    in_fence = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if re.match(r"^\s*(```|~~~)", line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        line = re.sub(r"`[^`]*`", "", line)  # code spans are not links
        for m in re.finditer(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
            links.append((n, m.group(1)))
        for m in re.finditer(r"<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"", line):
            links.append((n, m.group(1)))
    return links


def test_relative_links_point_to_existing_files():
    problems = []
    for path in DOC_FILES:
        for line, target in _links(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}:{line}: {target}"
            if not dest.exists():
                problems.append(f"{where}: {file_part} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not problems, "\n".join(problems)


# -- README ----------------------------------------------------------------------------------------------------


def test_readme_starts_with_the_two_commands_ci_runs():
    blocks = [b for b in _blocks(README) if b.indented]
    assert [b.code.strip() for b in blocks[:2]] == [SETUP_COMMAND, TEST_COMMAND]
    head = README.read_text(encoding="utf-8").splitlines()[:10]
    assert "    " + SETUP_COMMAND in head and "    " + TEST_COMMAND in head, "the two commands must come first"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert TEST_COMMAND in ci, ".ci/run must run README's test command verbatim"
    assert _check_invocation(["demo"]) == []


def test_readme_is_one_screen_and_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 60, "README.md is meant to fit one screen: move reference text to docs/"
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in _links(README)}
    missing = [p.name for p in DOC_FILES[1:] if p.resolve() not in linked]
    assert not missing, f"README.md does not link docs page(s): {missing}"


def _modules() -> list[str]:
    import importlib
    import pkgutil

    names = []
    for package in ("runwatch.models", "runwatch.nas", "runwatch.service", "runwatch.client"):
        path = importlib.import_module(package).__path__
        names += [package] + [m.name for m in pkgutil.walk_packages(path, package + ".")]
    return names


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples fail (python -m doctest -v)"
