"""Just enough YAML for ``hparams.yaml`` and MLflow ``meta.yaml``: PyYAML when installed, else flat ``key: value``."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def scalar(text: str) -> Any:
    """A YAML-ish scalar: null, bool, int, float, or the (unquoted) string."""
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    low = t.lower()
    if low in ("", "~", "null", "none"):
        return None
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if re.fullmatch(r"[-+]?\d+", t):
        return int(t)
    if _NUMBER.fullmatch(t) or low in (".nan", ".inf", "-.inf"):
        return float(t.replace(".nan", "nan").replace(".inf", "inf"))
    return t


def load_flat(path: Path) -> dict[str, Any]:
    """Top-level mapping of a YAML file: PyYAML's ``safe_load`` if it can, else top-level ``key: value`` lines.

    Never raises for content it cannot read: such keys are left out (tags
    such as ``!!python/object`` that safe_load refuses included).
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    data: Any = False
    with contextlib.suppress(Exception):  # PyYAML missing, or a tag safe_load refuses
        import yaml

        data = yaml.safe_load(text)
    if isinstance(data, dict):
        return {str(k): v for k, v in data.items()}
    if data is None:
        return {}
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if not line or line[0] in " \t#-" or ":" not in line:
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if value.startswith("!!") or value in ("|", ">"):
            continue
        out[key.strip()] = scalar(value) if value else None
    return {k: v for k, v in out.items() if v is not None or k}
