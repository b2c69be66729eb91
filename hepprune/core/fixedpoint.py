"""Fixed-point types, the one place they are parsed, built and reasoned about.

hls4ml describes every stored value by an ``ap_fixed<W,I[,Q[,O[,N]]]>``
string: W bits in all, I of them integer bits (sign included), then the
quantisation mode Q (what happens to bits below the last one kept) and the
overflow mode O (what happens to a value beyond the range). Config
validation, the hls4ml bridge, the bit-width scan and the analysis all go
through this module, so they agree on what a type means.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

QUANTIZATION_MODES = ("AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV", "AP_TRN",
                      "AP_TRN_ZERO")
OVERFLOW_MODES = ("AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM", "AP_WRAP", "AP_WRAP_SM")
# Truncation biases every value downwards (a response shift); wrap-around turns an overflow into a sign flip.
ROUND_SATURATE = ("AP_RND", "AP_SAT")
HEADROOM = 1.25  # values on unseen events may exceed what the sizing events showed

_TYPE = re.compile(r"\s*(ap_u?fixed)\s*<\s*(\d+)\s*,\s*(-?\d+)\s*((?:,[^,>]*)*)>\s*")


@dataclass(frozen=True)
class FixedPoint:
    """An ``ap_fixed<W,I[,Q[,O[,N]]]>`` (or ap_ufixed) type; ``str()`` writes it back."""

    kind: str
    width: int
    integer: int
    modes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}<{self.width},{self.integer}{''.join(',' + m for m in self.modes)}>"

    @property
    def fractional(self) -> int:
        return self.width - self.integer

    @property
    def truncates(self) -> bool:
        """True for hls4ml's default quantisation (no mode given) and the AP_TRN modes."""
        return not self.modes or self.modes[0].startswith("AP_TRN")

    def with_modes(self, modes: tuple[str, ...]) -> FixedPoint:
        return replace(self, modes=tuple(modes))

    @property
    def signed(self) -> bool:
        return self.kind == "ap_fixed"

    @property
    def rounding(self) -> str:
        """The quantisation mode, AP_TRN when none is given (as in the ap_types)."""
        return self.modes[0] if self.modes else "AP_TRN"

    @property
    def overflow(self) -> str:
        """The overflow mode, AP_WRAP when none is given (as in the ap_types)."""
        return self.modes[1] if len(self.modes) > 1 else "AP_WRAP"

    @property
    def kif(self) -> tuple[int, int, int]:
        """da4ml's (sign bit, integer bits without the sign, fractional bits)."""
        k = int(self.signed)
        return k, self.integer - k, self.width - self.integer

    @property
    def bounds(self) -> tuple[float, float]:
        """The smallest and largest value the type holds."""
        step = 2.0 ** -self.fractional
        top = 2.0 ** (self.integer - int(self.signed))
        return (-top if self.signed else 0.0), top - step


def parse_fixed(text: str) -> FixedPoint | None:
    """The FixedPoint of an hls4ml type string, or None if it is not one."""
    m = _TYPE.fullmatch(text)
    if not m or int(m.group(2)) < 1:
        return None
    return FixedPoint(m.group(1), int(m.group(2)), int(m.group(3)),
                      tuple(mode.strip() for mode in m.group(4).split(",")[1:]))


EMULATED_ROUNDING = ("AP_TRN", "AP_RND", "AP_RND_CONV")
EMULATED_OVERFLOW = ("AP_WRAP", "AP_SAT")


def quantise(values: np.ndarray, t: FixedPoint) -> np.ndarray:
    """``values`` (float64) converted to ``t`` exactly as an ap_fixed assignment
    from a double does: AP_TRN floors, AP_RND rounds half up, AP_RND_CONV half
    to even; AP_SAT clips, AP_WRAP wraps around. Other modes raise ValueError."""
    if t.rounding not in EMULATED_ROUNDING or t.overflow not in EMULATED_OVERFLOW:
        raise ValueError(f"{t}: only {', '.join(EMULATED_ROUNDING)} with {', '.join(EMULATED_OVERFLOW)} are emulated")
    scaled = np.asarray(values, dtype=np.float64) * 2.0 ** t.fractional
    if t.rounding == "AP_TRN":
        steps = np.floor(scaled)
    elif t.rounding == "AP_RND":
        steps = np.floor(scaled + 0.5)
    else:
        steps = np.round(scaled)  # numpy rounds half to even
    low, high = (b * 2.0 ** t.fractional for b in t.bounds)
    if t.overflow == "AP_SAT":
        steps = np.clip(steps, low, high)
    else:
        steps = np.mod(steps - low, 2.0 ** t.width) + low
    return steps * 2.0 ** -t.fractional


def precision_bits(precision: str) -> tuple[int, int] | None:
    """(W, I) of an ap_fixed<W,I> / ap_ufixed<W,I> string, or None."""
    p = parse_fixed(precision)
    return (p.width, p.integer) if p else None


def check_precision(text: str, key: str) -> FixedPoint:
    """The parsed type, or ValueError naming ``key`` and the valid modes."""
    parsed = parse_fixed(text)
    if parsed is None:
        raise ValueError(f"{key} must look like ap_fixed<W,I>, got {text!r}")
    for mode, valid in zip(parsed.modes, (QUANTIZATION_MODES, OVERFLOW_MODES)):
        if mode not in valid:
            raise ValueError(f"{key} {text!r}: unknown mode {mode!r}; valid: {', '.join(valid)}")
    if len(parsed.modes) > 3 or (len(parsed.modes) == 3 and not parsed.modes[2].isdigit()):
        raise ValueError(f"{key} {text!r}: after W and I come at most a quantisation mode, an overflow mode "
                         "and a number of saturation bits")
    return parsed


def int_bits(max_abs: float) -> int:
    """Integer bits I (sign included) of the narrowest ap_fixed<W,I> whose
    range [-2^(I-1), 2^(I-1)) holds +-max_abs. Below 0.5 it is <= 0: small
    weights need no integer bits, and spending none keeps their precision."""
    return int(math.floor(math.log2(max(float(max_abs), 2.0 ** -24)))) + 2


def fixed(width: int, integer: int, modes: tuple[str, ...] = ROUND_SATURATE) -> str:
    """``ap_fixed<W,I>`` rounded and saturating by default. I is capped at W:
    a value that needs more saturates, and a scan shows it."""
    return str(FixedPoint("ap_fixed", width, min(integer, width), tuple(modes)))


def sized(max_abs: float, fractional: int, headroom: float = 1.0) -> str:
    """The ``ap_fixed`` holding ``headroom * max_abs`` with ``fractional`` bits below the point."""
    integer = int_bits(headroom * max_abs)
    return str(FixedPoint("ap_fixed", integer + fractional, integer))


def with_modes(precision: str, default: str) -> str:
    """``precision`` (ap_fixed<W,I>) with ``default``'s quantisation and
    overflow modes (e.g. AP_RND,AP_SAT) unless it names its own; "auto" as is."""
    p, d = parse_fixed(precision), parse_fixed(default)
    if p is None or d is None or p.modes or not d.modes:
        return precision
    return str(p.with_modes(d.modes))


def widened(precision: str, integer: int) -> str:
    """``precision`` with ``integer`` integer bits and as many fractional bits as before."""
    p = parse_fixed(precision)
    if p is None:
        raise ValueError(f"not a fixed-point type: {precision!r}")
    return str(FixedPoint("ap_fixed", integer + p.fractional, integer))


def accumulator_precision(precision: str) -> str:
    """``precision`` with wrap-around overflow: hls4ml adds a layer's products
    into its accumulator one at a time, and a partial sum that leaves the
    range but ends inside it is exact when it wraps, wrong when it saturates.
    The quantisation mode (rounding each product) is kept."""
    p = parse_fixed(precision)
    if p is None or len(p.modes) < 2:  # wrap-around already (hls4ml's default overflow mode)
        return precision
    return str(p.with_modes((p.modes[0], "AP_WRAP")))


def rounding_advice(precision: str) -> str:
    """What to change when a firmware at ``precision`` strays from the float model."""
    p = parse_fixed(precision)
    if p is not None and p.truncates:
        # Truncation (hls4ml's default mode) biases every product downwards, a
        # bias that grows with the number of terms summed (a CNN's many products).
        return f"round instead of truncating: --set 'hls.precision={p.with_modes(ROUND_SATURATE)}'"
    return "find the width it needs with ptq/bitwidth_scan.py, or set a wider hls.precision"
