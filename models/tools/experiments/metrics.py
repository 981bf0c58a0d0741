"""Verification metrics exactly as daemon/src/evaluation.rs and face/src/eval.rs compute them.

Scores are "higher = more alike" float32; a pair with a failed photo scores -inf
(a failed genuine pair is a miss, a failed impostor pair never matches)."""

from __future__ import annotations

import numpy as np

FMRS = (1e-2, 1e-3, 1e-4)


def threshold_for_fmr(impostor, target):
    s = np.sort(np.asarray(impostor, np.float32))[::-1]
    allowed = int(np.floor(target * len(s)))
    if allowed < len(s) and np.isfinite(s[allowed]):
        return np.nextafter(s[allowed], np.float32(np.inf))
    fin = s[np.isfinite(s)]
    return fin[-1] if len(fin) else np.float32(-1)


def fmr(impostor, t):
    impostor = np.asarray(impostor)
    return float((impostor >= t).mean()) if len(impostor) else 0.0


def fnmr(genuine, t):
    genuine = np.asarray(genuine)
    return float((genuine < t).mean()) if len(genuine) else 0.0


def eer(genuine, impostor):
    g = np.asarray(genuine, np.float32)
    i = np.asarray(impostor, np.float32)
    ng, ni = max(len(g), 1), max(len(i), 1)
    fin = np.concatenate([g[np.isfinite(g)], i[np.isfinite(i)]])
    if len(fin) == 0:
        return 1.0, 1.0
    ts = np.unique(fin)
    gs, is_ = np.sort(g), np.sort(i)
    below = np.searchsorted(gs, ts, side="left")  # genuine < t (includes -inf)
    at_or_above = len(is_) - np.searchsorted(is_, ts, side="left")
    fm, fn = at_or_above / ni, below / ng
    k = int(np.argmin(np.abs(fm - fn)))  # first minimum = lowest threshold, like Rust's strict <
    return float((fm[k] + fn[k]) / 2), float(ts[k])


def summary(genuine, impostor):
    e, et = eer(genuine, impostor)
    out = dict(genuine=len(genuine), impostor=len(impostor), eer=e, eer_t=et)
    for f in FMRS:
        t = threshold_for_fmr(impostor, f)
        out[f"t{f:g}"] = float(t)
        out[f"fnmr{f:g}"] = fnmr(genuine, t)
    return out
