"""The parameters of GET /v1/usage, checked one by one: a bad one is named with what was expected."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .usage import DIMENSIONS, TICK, WINDOW

DEFAULT_STEP = 60
DIGITS = 12  # a Unix time in seconds for the next thirty thousand years


class QueryError(ValueError):
    def __init__(self, parameter: str, expected: str) -> None:
        super().__init__(f"{parameter}: {expected}")
        self.parameter = parameter


@dataclass(frozen=True)
class UsageQuery:
    by: str  # a dimension of usage.DIMENSIONS
    since: float
    until: float
    step: int
    key: str | None  # only this key of the dimension
    scope: str = "cluster"  # or "box": this box's figures only


SCOPES = ("cluster", "box")


def parse(params: Mapping[str, Sequence[str]], now: float) -> UsageQuery:
    """The query from the request's parameters (each name with every value given for it)."""
    for name, values in params.items():
        if len(values) != 1:
            raise QueryError(name, f"expected one value, found {len(values)}")
    one = {name: values[0] for name, values in params.items()}
    by = one.get("by", "app")
    if by not in DIMENSIONS:
        raise QueryError("by", f"expected one of {', '.join(DIMENSIONS)}, found {by!r}")
    for name in one:
        if name not in ("since", "until", "step", "by", "scope", by):
            raise QueryError(name, f"not a parameter here (since, until, step, by, scope, and with by={by}: {by})")
    scope = one.get("scope", "cluster")
    if scope not in SCOPES:
        raise QueryError("scope", f"expected \"cluster\" (every box's figures) or \"box\" (this box's), found {scope!r}")
    until = _time(one, "until", now)
    since = _time(one, "since", until - WINDOW)
    if since >= until:
        raise QueryError("since", f"expected a time before until ({until:g}), found {since:g}")
    step = one.get("step", str(DEFAULT_STEP))
    whole = step.isascii() and step.isdigit() and len(step) <= 5
    if not (whole and TICK <= int(step) <= WINDOW and int(step) % TICK == 0):
        raise QueryError("step", f"expected seconds, a multiple of {TICK} from {TICK} to {WINDOW}, found {step!r}")
    return UsageQuery(by, since, until, int(step), one.get(by), scope)


def _time(params: Mapping[str, str], name: str, default: float) -> float:
    value = params.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and len(value) <= DIGITS):
        raise QueryError(name, f"expected a Unix time in whole seconds, found {value!r}")
    return float(int(value))
