"""dlib's own alignment, as the reference the ResNet-29 was trained with.

dlib's 68-point shape predictor (PyPI face-recognition-models 0.1.3, run by PyPI dlib-bin)
gives landmarks; dlib's get_face_chip_details(shape, 150, 0.25) maps 33 of them (27-54 and
60-64: nose, eyes, outer lips, upper inner lip) onto its mean face by least squares. We use
that transform to (a) see where YuNet's 5 landmarks land in dlib's canonical 150x150 chip
(their mean = YuNet reference points in dlib's frame) and (b) embed dlib's own chips.

Optional dependency, installed outside the pinned venv:
  python -m pip install --target ~/.cache/facegate-models/dlib-extra --only-binary=:all: \
      dlib-bin face-recognition-models
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import cache
import rustlike as rl

EXTRA = os.environ.get("FACEGATE_DLIB_EXTRA", os.path.expanduser("~/.cache/facegate-models/dlib-extra"))

# dlib/image_transforms/interpolation.h: mean face, points 17..67
MEAN_X = np.array([
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689])
MEAN_Y = np.array([
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182])
USED = [i for i in range(17, 68) if not (55 <= i <= 59 or 65 <= i <= 67 or 17 <= i <= 26)]


def canonical_chip_points(size=150, padding=0.25):
    """dlib's target points (its chip coordinates) for the USED landmarks."""
    m = np.stack([MEAN_X, MEAN_Y], 1)[[i - 17 for i in USED]]
    return (padding + m) / (2 * padding + 1) * size


def to_pixels(q, size=150):
    """dlib chip coordinates -> chip pixel centres (dlib maps its rect corners to pixels
    0 and size-1: a 149/150 scale about the centre)."""
    return (size - 1) / 2 + (np.asarray(q) - size / 2) * (size - 1) / size


def yunet_points_from_mean_face(size=150, padding=0.25):
    """YuNet-order 5 points read straight off dlib's mean face (no data): eye centroids
    (36-41, 42-47), nose tip 30, mouth corners 48, 54 -- in pixel-centre coordinates."""
    m = np.stack([MEAN_X, MEAN_Y], 1)
    pts = np.array([m[[i - 17 for i in range(36, 42)]].mean(0), m[[i - 17 for i in range(42, 48)]].mean(0),
                    m[30 - 17], m[48 - 17], m[54 - 17]])
    return to_pixels((padding + pts) / (2 * padding + 1) * size)


def landmarks68(name="faces", det=None):
    """dlib 68 points for the face matching YuNet's primary face (HOG box with the best IoU,
    else YuNet's box). Cached."""
    path = os.path.join(cache.CACHE, f"dlib68-{name}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return {k: z[k] for k in z.files}
    sys.path.insert(0, EXTRA)
    import dlib
    import face_recognition_models as frm

    hog = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(frm.pose_predictor_model_location())
    d = cache.detections(name, **(det or {}))
    keys = list(d["keys"])
    pts = np.full((len(keys), 68, 2), np.nan)
    src = np.zeros(len(keys), int)  # 0 none, 1 HOG box, 2 YuNet box
    t = time.time()
    for i, (k, img) in enumerate(cache._images(name, keys)):
        if img is None or not np.isfinite(d["det"][i, 0]):
            continue
        x, y, w, h = d["det"][i, :4]
        up = 2 if max(img.shape[:2]) < 300 else 1
        best, best_iou = None, 0.3
        for r in hog(img, up):
            b = (r.left(), r.top(), r.width(), r.height())
            iou = rl.facelib.iou(b, (x, y, w, h))
            if iou > best_iou:
                best, best_iou = r, iou
        if best is None:
            best = dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
            src[i] = 2
        else:
            src[i] = 1
        s = sp(img, best)
        pts[i] = [(s.part(j).x, s.part(j).y) for j in range(68)]
    print(f"  dlib 68 points {name}: {time.time() - t:.1f}s", flush=True)
    out = dict(keys=np.array(keys), pts=pts, src=src)
    np.savez(path, **out)
    return out


def dlib_transform(p68):
    """Image -> chip-pixel similarity (a, b, tx, ty) of get_face_chip_details(., 150, 0.25)."""
    dst = to_pixels(canonical_chip_points())
    return rl.estimate(p68[USED], dst)


def yunet_in_dlib_chip(D68, det):
    """[N, 5, 2] YuNet landmarks mapped into dlib's chip (nan where unavailable)."""
    out = np.full((len(D68["keys"]), 5, 2), np.nan)
    for i in range(len(out)):
        if D68["src"][i] == 0:
            continue
        a, b, tx, ty = dlib_transform(D68["pts"][i])
        lm = det["det"][i, 4:14].reshape(5, 2)
        out[i, :, 0] = a * lm[:, 0] - b * lm[:, 1] + tx
        out[i, :, 1] = b * lm[:, 0] + a * lm[:, 1] + ty
    return out


def dlib_chip_embeddings(name="faces"):
    """Embeddings of chips cut with dlib's own 68-point transform (our warp, same sampling)."""
    path = os.path.join(cache.CACHE, f"emb-dlib68-{name}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return {k: z[k] for k in z.files}
    D68 = landmarks68(name)
    keys = list(D68["keys"])
    n = len(keys)
    chips = np.zeros((n, 150, 150, 3), np.uint8)
    mchips = np.zeros((n, 150, 150, 3), np.uint8)
    ok = D68["src"] > 0
    qpass = np.zeros(n, bool)
    dst = to_pixels(canonical_chip_points())
    det = cache.detections(name)
    for i, (k, img) in enumerate(cache._images(name, keys)):
        if not ok[i]:
            continue
        p = D68["pts"][i][USED]
        chips[i] = rl.cut_chip(img, p, dst)
        # mirror: flip the chip about its centre column (dlib's mean face is symmetric about x=0.490127)
        axis = to_pixels(np.array([(0.25 + 0.490127) / 1.5 * 150, 0]))[0]
        ref5 = np.array([[axis - 10, 0], [axis + 10, 0], [axis, 10], [axis - 10, 20], [axis + 10, 20]])
        a, b, tx, ty = rl.estimate(p, dst)
        # cut the mirrored chip: same transform, chip x -> 2*axis - x (done by the generic warp with a
        # reference symmetric about `axis`, composed through the 5 virtual points)
        src5 = np.stack([((ref5[:, 0] - tx) * a + (ref5[:, 1] - ty) * b) / (a * a + b * b),
                         (-(ref5[:, 0] - tx) * b + (ref5[:, 1] - ty) * a) / (a * a + b * b)], 1)
        mchips[i] = rl.cut_chip(img, src5, ref5, mirror=True)
        lm = det["det"][i, 4:14].reshape(5, 2)
        qpass[i] = rl.quality_passed(lm, chips[i]) if np.isfinite(lm).all() else False
    emb = cache._model("emb")
    e = np.zeros((n, 128), np.float32)
    em = np.zeros((n, 128), np.float32)
    e[ok] = emb(chips[ok])
    em[ok] = emb(mchips[ok])
    out = dict(keys=np.array(keys), emb=e, embm=em, ok=ok, qpass=qpass)
    np.savez(path, **out)
    return out
