"""Reading settings from the environment, with validation."""

from __future__ import annotations

import os


class SettingsError(ValueError):
    """A setting in the environment is malformed: the process must not start."""


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


# The bounds every part of Reactions keeps, as one number each (README, Invariants):
# - the staleness bound: an unmarked answer at the entry point counts every
#   event acknowledged this long before it (Invariants 5; the aggregators'
#   refresh interval and nginx's GET cache are chosen to keep it);
STALENESS_BOUND_S = 2.0
# - the settle bound S: an event answered unknown is, from S after its answer
#   on, either counted in every unmarked answer or never counted (Invariants 8);
SETTLE_BOUND_S = 5.0
# - how far apart the clocks of nginx, the writers and PostgreSQL may be
#   (NTP keeps them within milliseconds; the writers measure it).
CLOCK_SKEW_MARGIN_S = 0.5


def write_budget_s(settle_s: float, staleness_s: float, skew_margin_s: float) -> float:
    """How long after nginx sent a write it may still become visible: S − staleness − skew margin.

    A write visible by then is in every unmarked answer by the stamp + S − skew
    margin by nginx's clock, so by its unknown answer + S whichever clock reads it.
    """
    return settle_s - staleness_s - skew_margin_s
