"""Planar-motion test on face chips: the Python reference of face/src/liveness/motion.rs.

Between two chips of one track (150x150 luma, cut by the landmark similarity),
textured points on a grid are block-matched (zero-mean SSD, integer search then
parabolic sub-pixel), a homography is fitted by RANSAC + least squares, and the
residual of the matches says how far the motion is from a plane.
"""

from __future__ import annotations

import numpy as np

GRID_STEP = 10
MARGIN = 14
HALF = 5  # 11x11 patches
SEARCH = 6
MIN_TEXTURE = 2.0  # min eigenvalue of the structure tensor (mean over the patch), grey levels^2
MAX_POINTS = 64


def luma(img):
    x = img.astype(np.float32)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def select_points(a):
    """Grid points whose patch has two-dimensional texture, strongest first."""
    gx = np.zeros_like(a)
    gy = np.zeros_like(a)
    gx[:, 1:-1] = (a[:, 2:] - a[:, :-2]) * 0.5
    gy[1:-1, :] = (a[2:, :] - a[:-2, :]) * 0.5
    n = a.shape[0]
    pts = []
    for y in range(MARGIN, n - MARGIN + 1, GRID_STEP):
        for x in range(MARGIN, n - MARGIN + 1, GRID_STEP):
            sl = (slice(y - HALF, y + HALF + 1), slice(x - HALF, x + HALF + 1))
            xx = (gx[sl] ** 2).mean()
            yy = (gy[sl] ** 2).mean()
            xy = (gx[sl] * gy[sl]).mean()
            tr, det = xx + yy, xx * yy - xy * xy
            lmin = tr / 2 - np.sqrt(max(tr * tr / 4 - det, 0))
            if lmin >= MIN_TEXTURE:
                pts.append((lmin, x, y))
    pts.sort(reverse=True)
    return [(x, y) for _, x, y in pts[:MAX_POINTS]]


def match(a, b, pts):
    """Displacements of `pts` from chip a to chip b: list of (x, y, x', y', cost)."""
    out = []
    n = a.shape[0]
    for x, y in pts:
        p = a[y - HALF:y + HALF + 1, x - HALF:x + HALF + 1]
        p = p - p.mean()
        best = None
        costs = np.full((2 * SEARCH + 1, 2 * SEARCH + 1), np.inf)
        for dy in range(-SEARCH, SEARCH + 1):
            for dx in range(-SEARCH, SEARCH + 1):
                yy, xx = y + dy, x + dx
                if yy - HALF < 0 or xx - HALF < 0 or yy + HALF >= n or xx + HALF >= n:
                    continue
                q = b[yy - HALF:yy + HALF + 1, xx - HALF:xx + HALF + 1]
                q = q - q.mean()
                costs[dy + SEARCH, dx + SEARCH] = ((p - q) ** 2).mean()
        iy, ix = np.unravel_index(np.argmin(costs), costs.shape)
        if iy in (0, 2 * SEARCH) or ix in (0, 2 * SEARCH):
            continue  # on the search border: motion too large or no match
        c0 = costs[iy, ix]

        def parab(cm, c, cp):
            d = cm - 2 * c + cp
            return 0.0 if d <= 0 else 0.5 * (cm - cp) / d

        sx = parab(costs[iy, ix - 1], c0, costs[iy, ix + 1])
        sy = parab(costs[iy - 1, ix], c0, costs[iy + 1, ix])
        out.append((x, y, x + ix - SEARCH + sx, y + iy - SEARCH + sy, c0 / (p.var() + 1e-6)))
    return np.array(out).reshape(-1, 5)


def fit_homography(src, dst):
    """Normalised DLT least squares. src, dst [n, 2]."""
    def norm(p):
        m = p.mean(0)
        s = np.sqrt(2) / max(np.sqrt(((p - m) ** 2).sum(1)).mean(), 1e-9)
        T = np.array([[s, 0, -s * m[0]], [0, s, -s * m[1]], [0, 0, 1]])
        return T
    Ts, Td = norm(src), norm(dst)
    hs = np.c_[src, np.ones(len(src))] @ Ts.T
    hd = np.c_[dst, np.ones(len(dst))] @ Td.T
    A = []
    for (x, y, _), (u, v, _) in zip(hs, hd):
        A.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        A.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    _, _, Vt = np.linalg.svd(np.array(A))
    H = Vt[-1].reshape(3, 3)
    H = np.linalg.inv(Td) @ H @ Ts
    return H / H[2, 2]


def apply(H, p):
    q = np.c_[p, np.ones(len(p))] @ H.T
    return q[:, :2] / q[:, 2:3]


def fit_affine(src, dst):
    A = np.c_[src, np.ones(len(src))]
    M, *_ = np.linalg.lstsq(A, dst, rcond=None)
    return M


def ransac_homography(src, dst, thresh=1.0, iters=64, rng=None):
    rng = rng or np.random.default_rng(0)
    n = len(src)
    best = None
    for _ in range(iters):
        idx = rng.choice(n, 4, replace=False)
        try:
            H = fit_homography(src[idx], dst[idx])
        except np.linalg.LinAlgError:
            continue
        r = np.linalg.norm(apply(H, src) - dst, axis=1)
        inl = r < thresh
        if best is None or inl.sum() > best.sum():
            best = inl
    if best is None or best.sum() < 8:
        return None, best
    H = fit_homography(src[best], dst[best])
    return H, best


def planarity(chip_a, chip_b):
    """dict: points, matched, rms of LS homography residual, robust (median) residual,
    affine rms, ransac inlier fraction, mean displacement."""
    a, b = luma(chip_a), luma(chip_b)
    pts = select_points(a)
    m = match(a, b, pts)
    out = dict(points=len(pts), matched=len(m))
    if len(m) < 12:
        return out
    src, dst = m[:, :2], m[:, 2:4]
    H = fit_homography(src, dst)
    r = np.linalg.norm(apply(H, src) - dst, axis=1)
    M = fit_affine(src, dst)
    ra = np.linalg.norm(np.c_[src, np.ones(len(src))] @ M - dst, axis=1)
    Hr, inl = ransac_homography(src, dst)
    out.update(h_rms=float(np.sqrt((r ** 2).mean())), h_med=float(np.median(r)), h_p90=float(np.percentile(r, 90)),
               a_rms=float(np.sqrt((ra ** 2).mean())), inliers=float(inl.mean()) if inl is not None else 0.0,
               disp=float(np.linalg.norm(dst - src, axis=1).mean()))
    return out
