"""Promotion gates: ``"f1>=0.9"``, ``"rmse<3.5"``: a metric, a comparison, a number."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from nbmlops.promote.errors import GateSyntaxError

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_GATE = re.compile(r"^\s*(?P<metric>[\w.\-/ :]+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>\S+)\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    def passes(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_gate(text: str) -> Gate:
    match = _GATE.match(text)
    if not match:
        raise GateSyntaxError(
            f"gate {text!r} is not METRIC OP NUMBER",
            'write e.g. --gate "f1>=0.9" (operators: >=, <=, >, <, ==, !=)',
        )
    try:
        threshold = float(match["value"])
    except ValueError:
        threshold = math.nan
    if not math.isfinite(threshold):
        raise GateSyntaxError(
            f"gate {text!r}: {match['value']!r} is not a finite number",
            'write e.g. --gate "f1>=0.9"',
        )
    return Gate(match["metric"].strip(), match["op"], threshold)
