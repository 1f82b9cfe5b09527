"""Series for the time-series demo: real series bundled in PyPI packages (statsmodels, sktime;
nothing is downloaded) and seeded generated seasonal / trend / cycle / noise series.

Every series is univariate, float64, oldest first. The last HORIZON steps of every series are the
held-out tail: training only ever sees what comes before it (`train_part`).
"""

import warnings

import numpy as np

HORIZON = 12


def _real():
    """[(name, values, seasonal period, frequency, source)]. The seasonal period is the calendar
    one (12 monthly, 1 yearly: seasonal-naive is then the naive last value)."""
    warnings.filterwarnings("ignore")
    import statsmodels.api as sm
    from sktime.datasets import load_airline, load_lynx, load_shampoo_sales

    co2 = sm.datasets.co2.load_pandas().data["co2"]
    # weekly with 59 missing weeks -> monthly means (5 months have no week: linear interpolation)
    co2 = co2.resample("MS").mean().interpolate().values
    elnino = sm.datasets.elnino.load_pandas().data.iloc[:, 1:].values.reshape(-1)  # 1950-2010
    return [
        ("airline", load_airline().values, 12, "monthly", "sktime load_airline (1949-1960)"),
        ("co2", co2, 12, "monthly", "statsmodels co2 (Mauna Loa 1958-2001, weekly -> monthly mean)"),
        ("elnino", elnino, 12, "monthly", "statsmodels elnino (Nino 1+2 SST 1950-2010)"),
        ("shampoo", load_shampoo_sales().values, 12, "monthly", "sktime load_shampoo_sales (3 years)"),
        ("sunspots", sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].values, 1, "yearly",
         "statsmodels sunspots (1700-2008)"),
        ("nile", sm.datasets.nile.load_pandas().data["volume"].values, 1, "yearly",
         "statsmodels nile (1871-1970)"),
        ("lynx", load_lynx().values, 1, "yearly", "sktime load_lynx (1821-1934)"),
    ]


def _ar1(rng, n, phi):
    """A stationary AR(1) path of unit variance."""
    e = rng.normal(0, 1, n)
    ar = np.zeros(n)
    ar[0] = e[0]
    for i in range(1, n):
        ar[i] = phi * ar[i - 1] + np.sqrt(1 - phi ** 2) * e[i]
    return ar


def _seasonal_anomaly(rng, n):
    """A fixed seasonal profile (a few harmonics of a calendar-like period) plus a persistent AR(1)
    anomaly that seasonal-naive copies with last year's value (sea-surface-temperature like), at
    times a slow trend and white measurement noise."""
    t = np.arange(n, dtype=np.float64)
    m = int(rng.choice([12, 12, 12, 12, 4, 6, 7, 24]))
    s = np.zeros(n)
    for k in range(1, int(rng.integers(1, 4)) + 1):
        s += rng.normal(0, 1.0 / k) * np.sin(2 * np.pi * k * t / m + rng.uniform(0, 6.3))
    s /= max(s.std(), 1e-6)
    y = s + rng.uniform(0.15, 0.9) * _ar1(rng, n, rng.uniform(0.6, 0.98))
    if rng.random() < 0.3:
        y += rng.normal(0, 1.0) * t / n
    return y + rng.uniform(0, 0.25) * rng.normal(0, 1, n)


def _local_level(rng, n):
    """Noise around a level that wanders slowly and shifts now and then (Nile-like): the best
    forecast is a flat, smoothed level."""
    level = rng.uniform(0, 0.25) * np.cumsum(rng.normal(0, 1, n)) / np.sqrt(n) * 4
    for _ in range(int(rng.integers(0, 3))):
        level += rng.normal(0, 1.5) * (np.arange(n) >= rng.integers(n))
    return level + _ar1(rng, n, rng.uniform(-0.2, 0.4))


def generate(rng, n, families=0.0, level_share=0.5):
    """One generated series of n steps. With probability `families` one of the two plain families
    above (the local level with probability `level_share`, else the seasonal anomaly); otherwise
    level + trend + seasonality + cycle + AR noise, optionally made positive and multiplicative
    (exp), all parameters drawn from rng."""
    if families > 0 and rng.random() < families:
        y = _seasonal_anomaly(rng, n) if rng.random() < 1 - level_share else _local_level(rng, n)
        return y * rng.uniform(0.1, 100) + rng.normal(0, 100)
    t = np.arange(n, dtype=np.float64)
    y = np.zeros(n)
    if rng.random() < 0.7:  # trend: linear, damped, or with a change point
        slope = rng.normal(0, 2.0) / n
        kind = rng.integers(3)
        if kind == 0:
            y += slope * t
        elif kind == 1:
            phi = rng.uniform(0.9, 0.995)
            y += slope * (1 - phi ** t) / (1 - phi) * 8
        else:
            cp = rng.integers(n // 4, n)
            y += slope * t + rng.normal(0, 2.0) / n * np.maximum(t - cp, 0)
    if rng.random() < 0.7:  # seasonality: a few harmonics of a calendar-like period
        m = int(rng.choice([4, 6, 7, 12, 12, 12, 12, 24]))
        phase = rng.integers(m)
        s = np.zeros(n)
        for k in range(1, int(rng.integers(1, 4)) + 1):
            s += rng.normal(0, 1.0 / k) * np.sin(2 * np.pi * k * (t + phase) / m + rng.uniform(0, 6.3))
        s *= rng.uniform(0.2, 2.0) / max(s.std(), 1e-6)
        if rng.random() < 0.3:  # amplitude drifting over time
            s *= 1 + rng.uniform(-0.8, 1.5) * t / n
        y += s
    if rng.random() < 0.35:  # quasi-periodic cycle (sunspot / lynx like), period 6..16 steps
        period = rng.uniform(6, 16)
        ph = np.cumsum(2 * np.pi / period * (1 + rng.normal(0, 0.08, n)))
        amp = np.exp(np.cumsum(rng.normal(0, 0.05, n)))
        c = (np.sin(ph + rng.uniform(0, 6.3)) + 1) ** rng.uniform(1, 2.5)
        y += rng.uniform(0.5, 3) * amp * (c - c.mean())
    e = rng.normal(0, 1, n)
    phi = rng.uniform(-0.3, 0.95)
    ar = np.zeros(n)
    for i in range(n):
        ar[i] = (phi * ar[i - 1] if i else 0) + e[i]
    y += rng.uniform(0.02, 0.6) * ar * np.sqrt(1 - phi ** 2)
    if rng.random() < 0.1:  # random-walk component
        y += rng.uniform(0.02, 0.2) * np.cumsum(rng.normal(0, 1, n))
    if rng.random() < 0.25:  # positive, multiplicative (airline-like)
        y = np.exp(y * rng.uniform(0.1, 0.5))
    return y * rng.uniform(0.1, 100) + rng.normal(0, 100)


# Generated held-out series: fixed recipes (not drawn from `generate`), each with its own seed.
def _generated_heldout():
    out = []
    t = np.arange(180, dtype=np.float64)
    r = np.random.default_rng(5001)
    out.append(("gen_seasonal_trend",
                50 + 0.15 * t + 6 * np.sin(2 * np.pi * t / 12) + 2 * np.cos(4 * np.pi * t / 12)
                + r.normal(0, 1.0, t.size), 12, "monthly", "generated, seed 5001"))
    t = np.arange(200, dtype=np.float64)
    r = np.random.default_rng(5002)
    ph = np.cumsum(2 * np.pi / 11 * (1 + r.normal(0, 0.05, t.size)))
    out.append(("gen_cycle", 40 + 30 * (np.sin(ph) + 1) ** 1.5 + r.normal(0, 3, t.size), 1,
                "yearly", "generated, seed 5002"))
    t = np.arange(150, dtype=np.float64)
    r = np.random.default_rng(5003)
    ar = np.zeros(t.size)
    e = r.normal(0, 1, t.size)
    for i in range(1, t.size):
        ar[i] = 0.7 * ar[i - 1] + e[i]
    out.append(("gen_mult_seasonal",
                np.exp(3 + 0.01 * t + 0.15 * np.sin(2 * np.pi * t / 12) + 0.05 * ar), 12,
                "monthly", "generated, seed 5003"))
    return out


def heldout_series():
    """Every evaluated series: [dict(name, values, period, freq, source)]."""
    return [dict(name=n, values=np.asarray(v, np.float64), period=p, freq=f, source=s)
            for n, v, p, f, s in _real() + _generated_heldout()]


def train_part(values, horizon=HORIZON):
    return values[:-horizon]


def split(values, context, horizon=HORIZON):
    """(input: the last `context` steps before the tail (fewer if the series is shorter), tail)."""
    hist = values[:-horizon]
    return hist[-context:], values[-horizon:]


def seasonal_naive(history, period, horizon=HORIZON):
    """y[T + h] = y[T + h - m * ceil((h + 1) / m)]; m = 1 is the naive last value."""
    n = len(history)
    return np.array([history[n - period + (h % period)] for h in range(horizon)])
