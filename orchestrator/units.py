"""Sizes and durations as users write them in suite files ("2GiB", "300s").

Sizes take binary (IEC) units only: "2GB" is ambiguous between 2*10^9 and 2*2^30 bytes, and a
memory experiment must not guess, so it is refused with a hint.
"""

from __future__ import annotations

import re

_SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_AMBIGUOUS = {"K", "KB", "M", "MB", "G", "GB", "T", "TB", "k", "kb", "m", "mb", "g", "gb"}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Bytes from '512MiB', '2GiB', '4096B' (or a plain int of bytes)."""
    if isinstance(text, bool):
        raise ValueError("a size must be a number with a unit like 2GiB, not a boolean")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"cannot read size {text!r} (write it like 512MiB or 2GiB)")
    number, unit = int(match.group(1)), match.group(2) or "B"
    if unit in _AMBIGUOUS:
        iec = {"k": "KiB", "m": "MiB", "g": "GiB", "t": "TiB"}[unit[0].lower()]
        raise ValueError(f"ambiguous size {text!r}: use binary units, e.g. {number}{iec}")
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {text!r} (use B, KiB, MiB, GiB, TiB)")
    return number * _SIZE_UNITS[unit]


def format_size(n: int) -> str:
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if n >= _SIZE_UNITS[unit] and n % _SIZE_UNITS[unit] == 0:
            return f"{n // _SIZE_UNITS[unit]}{unit}"
    return f"{n}B"


def parse_duration(text: str | int | float) -> float:
    """Seconds from '300s', '5m', '1.5h', '250ms'. A bare number is refused: units matter."""
    if isinstance(text, bool) or isinstance(text, int | float):
        raise ValueError(f"duration {text!r} needs a unit, e.g. {text}s")
    match = _DURATION_RE.match(text)
    if not match or match.group(2) not in _DURATION_UNITS:
        raise ValueError(f"cannot read duration {text!r} (write it like 300s, 5m or 250ms)")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds
