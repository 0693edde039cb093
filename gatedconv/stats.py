"""Two-sample comparisons for the studies: Welch's t-test and the 95% confidence interval of a difference of
means, without SciPy (standard library only).

Welch (1947): for samples ``a`` and ``b`` with means ``ma, mb`` and sample variances ``va, vb``,
``se = sqrt(va / na + vb / nb)``, ``t = (ma - mb) / se`` with the Welch-Satterthwaite degrees of freedom
``df = se^4 / ((va / na)^2 / (na - 1) + (vb / nb)^2 / (nb - 1))``. The two-sided p-value is
``I_{df / (df + t^2)}(df / 2, 1 / 2)`` (the regularised incomplete beta function, evaluated by its continued
fraction, Numerical Recipes 6.4), and the interval ``diff +- t_{0.975, df} * se`` with the quantile found by
bisection on that p-value.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Comparison", "welch", "t_two_sided_p", "t_quantile", "format_p", "p_clause"]


def _betacf(a: float, b: float, x: float, iters: int = 300, eps: float = 1e-15) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iters + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile (q in (0.5, 1)) of Student's t with ``df`` degrees of freedom, by bisection."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_two_sided_p(mid, df) > 2 * (1 - q):
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Comparison:
    """``a`` minus ``b``: the difference of means, its interval (95% unless asked otherwise), Welch's t, df and
    two-sided p-value."""

    diff: float
    low: float
    high: float
    t: float
    df: float
    p: float
    n_a: int
    n_b: int


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Comparison:
    """Welch's t-test of mean(a) - mean(b) and the interval at ``level``; needs at least two values in each
    sample. With no spread in either sample the difference is known exactly: the interval is the point ``diff``,
    t is +-inf and p is 0, or t is 0 and p is 1 where the means are equal. The means are exact (correctly
    rounded), so samples of one repeated value have equal means whatever their sizes."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"welch needs >= 2 values per sample, got {len(a)} and {len(b)}")
    ma, mb = statistics.mean(a), statistics.mean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff, se2 = ma - mb, va + vb
    if se2 == 0.0:
        return Comparison(diff, diff, diff, math.copysign(math.inf, diff) if diff else 0.0, math.inf,
                          0.0 if diff else 1.0, len(a), len(b))
    se = math.sqrt(se2)
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    t = diff / se
    half = t_quantile(0.5 + level / 2, df) * se
    return Comparison(diff, diff - half, diff + half, t, df, t_two_sided_p(t, df), len(a), len(b))


def format_p(p: float) -> str:
    """A p-value as printed: three decimals, or ``< 0.001`` (three decimals would print a small one as 0.000)."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_clause(p: float) -> str:
    """``p = 0.049`` or ``p < 0.001``."""
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"
