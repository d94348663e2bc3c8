"""Sizes, durations and fractions as users write them in suite files ("2GiB", "300s", "2%").

Sizes take binary (IEC) units only: "2GB" is ambiguous between 2*10^9 and 2*2^30 bytes, and a
memory experiment must not guess, so it is refused with a hint.

Both are bounded: a size must fit the C workloads' 64-bit `long`, a duration is at most a week
(a trial, a boot or a nightly deadline beyond that is a typo, and `1e400s` would be infinite).
"""

from __future__ import annotations

import math
import re

MAX_INT64 = (1 << 63) - 1
MAX_DURATION_S = 7 * 86400.0

_SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_AMBIGUOUS = {"K", "KB", "M", "MB", "G", "GB", "T", "TB", "k", "kb", "m", "mb", "g", "gb"}
# ASCII only: \d and \s would take other scripts' digits and spaces, which int() also reads.
# \Z, not $: `$` also matches before a trailing newline.
_SIZE_RE = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*\Z", re.ASCII)
# 20 digits are already beyond 64 bits; the bound also spares int() the work on 10,000 digits
_MAX_DIGITS = 20

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*\Z", re.ASCII)
_PERCENT_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%\s*\Z", re.ASCII)


def parse_size(text: str | int) -> int:
    """Bytes from '512MiB', '2GiB', '4096B' (or a plain int of bytes)."""
    if isinstance(text, bool):
        raise ValueError("a size must be a number with a unit like 2GiB, not a boolean")
    if isinstance(text, int):
        return _size_in_range(int(text))
    if not isinstance(text, str):
        raise ValueError(f"a size must be a number with a unit like 2GiB, not a "
                         f"{type(text).__name__}")
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"cannot read size {_shown(text)} (write it like 512MiB or 2GiB)")
    digits, unit = match.group(1), match.group(2) or "B"
    if len(digits.lstrip("0")) > _MAX_DIGITS:
        raise ValueError(f"size {_shown(text)} is beyond 64 bits: at most 8388607TiB")
    number = int(digits)
    if unit in _AMBIGUOUS:
        iec = {"k": "KiB", "m": "MiB", "g": "GiB", "t": "TiB"}[unit[0].lower()]
        raise ValueError(f"ambiguous size {_shown(text)}: use binary units, e.g. {number}{iec}")
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit[:20]!r} in {_shown(text)} "
                         "(use B, KiB, MiB, GiB, TiB)")
    return _size_in_range(number * _SIZE_UNITS[unit])


def _size_in_range(n: int) -> int:
    if n < 0:
        raise ValueError("a size cannot be negative")
    if n > MAX_INT64:
        raise ValueError("a size beyond 64 bits: at most 8388607TiB")
    return n


def format_size(n: int) -> str:
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if n >= _SIZE_UNITS[unit] and n % _SIZE_UNITS[unit] == 0:
            return f"{n // _SIZE_UNITS[unit]}{unit}"
    return f"{n}B"


def parse_duration(text: str | int | float) -> float:
    """Seconds from '300s', '5m', '1.5h', '250ms'. A bare number is refused: units matter."""
    if isinstance(text, bool) or isinstance(text, int | float):
        raise ValueError(f"duration {text!r} needs a unit, e.g. {text}s")
    if not isinstance(text, str):
        raise ValueError(f"a duration must be written like 300s or 5m, not a "
                         f"{type(text).__name__}")
    match = _DURATION_RE.match(text)
    if not match or match.group(2) not in _DURATION_UNITS:
        raise ValueError(f"cannot read duration {_shown(text)} (write it like 300s, 5m or 250ms)")
    # float() of 400 digits is inf, never an exception: the bound below catches it
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration {_shown(text)} must be positive")
    if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
        raise ValueError(f"duration {_shown(text)} is longer than the limit of 7 days (168h)")
    return seconds


def parse_fraction(text: str | int | float) -> float:
    """A fraction from '2%' or 0.02. Bounds are the caller's: what makes sense differs."""
    if isinstance(text, bool):
        raise ValueError("a fraction must be written like 2% or 0.02, not a boolean")
    if isinstance(text, int | float):
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"a fraction must be written like 2% or 0.02, not a "
                         f"{type(text).__name__}")
    match = _PERCENT_RE.match(text)
    if not match:
        raise ValueError(f"cannot read fraction {_shown(text)} (write it like 2% or 0.02)")
    return float(match.group(1)) / 100


def _shown(text: str) -> str:
    """The text for an error message, cut short: a hostile value may be megabytes long."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."
