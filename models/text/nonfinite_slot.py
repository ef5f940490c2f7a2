"""A number that a run's log prints in the same place every time, printed as NaN or Inf.

Custom loops print values in shapes no metric reader knows (``76930 2.6496577``,
``step 100 | 0.532 0.611``). Masked as templates (numbers become ``<NUM>``),
such lines share one shape. :class:`NonfiniteSlotWatch` remembers the recent
masked shapes that held a number; a later line whose ``nan``/``inf`` tokens,
read as numbers, give one of those shapes has a value that was finite there and
no longer is. The line's metric values were not read (the caller checks only
lines nothing else explained), so this is the only way such a NaN is seen.

It is a WARNING, not an ERROR: which value turned NaN (a loss, or a metric that
is NaN by design for a while) is not known.

Examples
--------
>>> from runwatch.models.text.templates import masker
>>> mask, watch = masker(), NonfiniteSlotWatch()
>>> watch.observe(mask("76930 2.6496577"), "76930 2.6496577", 0)
>>> watch.observe(mask("76980 nan"), "76980 nan", 1).message
'76980 nan'
>>> watch.observe(mask("epoch nan done"), "epoch nan done", 2) is None  # no earlier line of that shape
True
"""

from __future__ import annotations

import re

from runwatch.models.findings import Severity
from runwatch.models.text.signatures import LogFinding

#: A NaN/Inf token where the masker would have put ``<NUM>`` (the same boundaries as its number mask).
_NONFINITE = re.compile(r"(?<![A-Za-z_<\d.])[-+]?(?:nan|inf(?:inity)?)(?![A-Za-z0-9_])", re.IGNORECASE)
_TITLE = "a value printed in the same place in earlier lines is now NaN/Inf"
_HINT = (
    "if it is the loss or a gradient: lower the learning rate or add warm-up, clip gradients, use bf16 instead of "
    "fp16, and check the data batch at that step"
)


class NonfiniteSlotWatch:
    """Masked line shapes holding a number, and lines that print NaN/Inf in one of them (see the module docstring).

    Parameters
    ----------
    max_shapes
        Distinct shapes remembered, the most recent kept (training logs print a handful).
    """

    signature = "nonfinite_message"

    def __init__(self, max_shapes: int = 32) -> None:
        self.max_shapes = max_shapes
        self._shapes: dict[str, None] = {}  # insertion-ordered: the oldest goes first
        self.reported = False

    def observe(self, masked: str, line: str, index: int, report: bool = True) -> LogFinding | None:
        """One masked line (``line`` as written, ``index`` its place in the run); a finding for the run's first NaN/Inf
        slot. ``report=False``: a line already explained (its values read, a signature's), only learned from."""
        low = masked.lower()
        if ("nan" in low or "inf" in low) and _NONFINITE.search(masked):
            if report and not self.reported and _NONFINITE.sub("<NUM>", masked) in self._shapes:
                self.reported = True  # one incident per run: values that turn NaN mostly stay NaN
                return LogFinding(self.signature, Severity.WARNING, index, [line], line.strip()[:500], _TITLE, _HINT)
            return None
        if "<NUM>" not in masked:
            return None
        self._shapes.pop(masked, None)
        self._shapes[masked] = None
        if len(self._shapes) > self.max_shapes:
            del self._shapes[next(iter(self._shapes))]
        return None

    def state_dict(self) -> dict:
        return {"shapes": list(self._shapes), "reported": self.reported}

    def load_state_dict(self, state: dict) -> None:
        self._shapes = dict.fromkeys(str(s) for s in state.get("shapes", [])[-self.max_shapes :])
        self.reported = bool(state.get("reported", False))
