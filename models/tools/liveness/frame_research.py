"""Paper-edge / bezel detection around the face: straight edges enclosing the face.

Python reference of face/src/liveness/frame.rs. The face box (square, side = the
longer box side) expanded x3 is resampled to a 144x144 context image (box = 48 px).
Edges are thinned (non-maximum suppression along the gradient) so that each edge
pixel votes once, into a Hough space of (normal angle pointing away from the face
centre, distance from the face centre). A line's support is the number of edge
pixels within +-1 angle bin and +-1 px of it, in box lengths. The frame score is
the support of the third-strongest line among lines whose normals differ by at
least 45 degrees (a paper or screen edge encloses the face on three or four sides;
a door frame or a wall corner gives one or two).
"""

from __future__ import annotations

import pickle

import cv2
import numpy as np

import common as C
import texture_research as TR

EXPAND = float(__import__("os").environ.get("FRAME_EXPAND", "3.0"))
SIZE = int(round(48 * EXPAND))
BOX = 48.0
ANGLES = 64
MIN_GRAD = 6.0
MIN_RHO = 0.4 * BOX



def context(img, det):
    x, y, w, h = det[:4]
    side = max(w, h) * EXPAND
    cx, cy = x + w / 2, y + h / 2
    s = SIZE / side
    Y = TR.luma(img)
    if s < 1:
        f = int(np.floor(1 / s))
        if f >= 2:
            H, W = Y.shape
            Y = Y[: H // f * f, : W // f * f].reshape(H // f, f, W // f, f).mean((1, 3))
            s_rem = s * f
            M = np.array([[s_rem, 0, SIZE / 2 - s * cx + (f - 1) / 2 * s], [0, s_rem, SIZE / 2 - s * cy + (f - 1) / 2 * s]], np.float32)
        else:
            M = np.array([[s, 0, SIZE / 2 - s * cx], [0, s, SIZE / 2 - s * cy]], np.float32)
    else:
        M = np.array([[s, 0, SIZE / 2 - s * cx], [0, s, SIZE / 2 - s * cy]], np.float32)
    valid = cv2.warpAffine(np.ones_like(Y, np.float32), M, (SIZE, SIZE), flags=cv2.INTER_NEAREST, borderValue=0)
    out = cv2.warpAffine(Y.astype(np.float32), M, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, valid > 0


def lines(ctx, valid):
    gx = np.zeros_like(ctx)
    gy = np.zeros_like(ctx)
    p = np.pad(ctx, 1, mode="edge")
    gx = ((p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])) / 8
    gy = ((p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])) / 8
    mag = np.hypot(gx, gy)
    # non-maximum suppression along the gradient (4 directions)
    ang = (np.round(np.arctan2(gy, gx) / (np.pi / 4)) % 4).astype(int)
    mp = np.pad(mag, 1)
    nb = {0: ((0, 1), (0, -1)), 1: ((1, 1), (-1, -1)), 2: ((1, 0), (-1, 0)), 3: ((1, -1), (-1, 1))}
    keep = np.zeros_like(mag, bool)
    for k, ((dy1, dx1), (dy2, dx2)) in nb.items():
        a = mp[1 + dy1:1 + dy1 + SIZE, 1 + dx1:1 + dx1 + SIZE]
        b = mp[1 + dy2:1 + dy2 + SIZE, 1 + dx2:1 + dx2 + SIZE]
        keep |= (ang == k) & (mag >= a) & (mag > b)
    v = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    ys, xs = np.nonzero(keep & (mag > MIN_GRAD) & v)
    c = SIZE / 2 - 0.5
    px, py = xs - c, ys - c
    theta = np.arctan2(gy[ys, xs], gx[ys, xs])
    rho = px * np.cos(theta) + py * np.sin(theta)
    theta = np.where(rho < 0, theta + np.pi, theta) % (2 * np.pi)
    rho = np.abs(rho)
    sel = rho >= MIN_RHO
    ti = np.floor(theta[sel] / (2 * np.pi) * ANGLES).astype(int) % ANGLES
    ri = np.floor(rho[sel]).astype(int)
    nr = int(SIZE * 0.75) + 2
    acc = np.zeros((ANGLES, nr))
    np.add.at(acc, (ti, ri), 1)
    win = acc + np.roll(acc, 1, 0) + np.roll(acc, -1, 0)
    w2 = win.copy()
    w2[:, 1:] += win[:, :-1]
    w2[:, :-1] += win[:, 1:]
    # greedy: strongest lines with normals >= 45 degrees apart
    found = []
    order = np.argsort(w2.max(1))[::-1]
    best_per_angle = w2.max(1)
    for a in order:
        if all(min((a - b) % ANGLES, (b - a) % ANGLES) >= ANGLES // 8 for b, _ in found):
            found.append((a, best_per_angle[a] / BOX))
        if len(found) == 4:
            break
    s = sorted([f[1] for f in found], reverse=True) + [0.0] * 4
    return s[:4]


def frame_score(img, det):
    ctx, valid = context(img, det)
    s = lines(ctx, valid)
    return dict(line1=s[0], line2=s[1], line3=s[2], line4=s[3])


def main():
    rows = []
    known = TR.dev_detections()
    det = C.detector()
    for cls, key, img in TR.still_set():
        if key in known:
            drow = known[key]
        else:
            d = det.detect(img, 640, 320)
            p = C.rl.primary_face(d, img.shape[1], img.shape[0])
            drow = d[p] if p is not None else np.full(15, np.nan)
        if np.isfinite(drow[0]):
            rows.append((cls, key, frame_score(img, drow)))
    for cls, key, img, drow in TR.video_set():
        rows.append((cls, key, frame_score(img, drow)))
    with open(f"{C.CACHE}/frame_rows.pkl", "wb") as f:
        pickle.dump(rows, f)
    TR.report(rows)


if __name__ == "__main__":
    main()
