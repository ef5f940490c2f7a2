"""What launchers put in front of each line of a process they run.

torchrun ``--tee``'s ``[default0]:``, PyTorch's ``[rank0]: ``, Ray's ``(RayTrainWorker pid=1234, ip=10.0.0.1) ``,
a host (``gpu250: ``, from DeepSpeed's pdsh launcher), docker compose's ``trainer-1  | ``, kubectl ``--prefix``'s
``[pod/train-0/main] ``. Parsers anchored at the start of a line try again behind one of these.

Examples
--------
>>> [bool(LAUNCHER_PREFIX.match(p + "x")) for p in ("[default0]:", "gpu250: ", "trainer-1  | ", "Epoch: ")]
[True, True, True, False]
"""

from __future__ import annotations

import re

__all__ = ["LAUNCHER_PREFIX", "PREFIX"]

# A host must hold a digit, so "Epoch: " or "INFO: " is no prefix.
PREFIX = r"(?:\[[\w/.:-]*\]:?|\(\w+ pid=\d+(?:, ip=[\d.]+)?\)|[A-Za-z][\w.-]*\d[\w.-]*:|[\w.-]+\s+\|)\s+|\[\w*\d+\]:"
LAUNCHER_PREFIX = re.compile(r"^\s*(?:" + PREFIX + ")")
