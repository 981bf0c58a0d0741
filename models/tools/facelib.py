"""Shared reference pre/post-processing for the verification tools.

This is the Python reference of what the Rust side implements:
  * YuNet input: letterbox (scale to fit, keep aspect, zero pad bottom/right),
    BGR float 0..255, NCHW, no normalization.
  * YuNet decoding (strides 8/16/32) + greedy NMS.
  * dlib face chip: least-squares similarity transform from YuNet's 5 landmarks
    to the 150x150 reference points, inverse-mapped bilinear sampling.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import onnx
import onnxruntime as ort

STRIDES = (8, 16, 32)
# YuNet landmark order (OpenCV FaceDetectorYN): right eye, left eye, nose tip,
# right mouth corner, left mouth corner -- "right" is the subject's right, i.e.
# the eye on the image LEFT in a frontal photo.
LANDMARK_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth", "left_mouth")
# dlib chip reference points (150x150), same order as YuNet's landmarks.
CHIP_SIZE = 150
CHIP_REFERENCE = np.array(
    [[47.5, 46.6], [100.5, 46.6], [74.0, 76.6], [50.4, 103.0], [97.6, 103.0]], dtype=np.float64
)


def read_bgr(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read {path}")
    return img


def letterbox(img_bgr: np.ndarray, width: int, height: int):
    """Scale to fit inside width x height keeping aspect, pad bottom/right with 0.

    Returns (NCHW float32 BGR 0..255 tensor, scale)."""
    h, w = img_bgr.shape[:2]
    s = min(width / w, height / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    resized = cv2.resize(img_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:nh, :nw] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None].astype(np.float32)), s


def relaxed_model_bytes(path: str) -> bytes:
    """The model with input H, W made symbolic and output/value_info shapes
    cleared, so onnxruntime accepts sizes other than the declared 640x640."""
    m = onnx.load(path)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for i, name in ((2, "H"), (3, "W")):
        dims[i].Clear()
        dims[i].dim_param = name
    for o in m.graph.output:
        for d in o.type.tensor_type.shape.dim:
            d.Clear()
    del m.graph.value_info[:]
    return m.SerializeToString()


def session(model, threads: int = 0) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def yunet_run(sess: ort.InferenceSession, x: np.ndarray) -> dict:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))


def yunet_decode(out: dict, width: int, height: int, score_threshold=0.6, nms_iou=0.3, top_k=5000):
    """Returns float64 array [K, 15]: x, y, w, h, 5 x (lx, ly), score (input pixels)."""
    dets = []
    for s in STRIDES:
        cols, rows = width // s, height // s
        cls = out[f"cls_{s}"][0, :, 0].astype(np.float64)
        obj = out[f"obj_{s}"][0, :, 0].astype(np.float64)
        bbox = out[f"bbox_{s}"][0].astype(np.float64)
        kps = out[f"kps_{s}"][0].astype(np.float64)
        assert cls.shape[0] == rows * cols, (cls.shape, rows, cols)
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        idx = np.nonzero(score >= score_threshold)[0]
        r, c = idx // cols, idx % cols
        cx = (c + bbox[idx, 0]) * s
        cy = (r + bbox[idx, 1]) * s
        w = np.exp(bbox[idx, 2]) * s
        h = np.exp(bbox[idx, 3]) * s
        d = np.zeros((len(idx), 15))
        d[:, 0], d[:, 1], d[:, 2], d[:, 3] = cx - w / 2, cy - h / 2, w, h
        for k in range(5):
            d[:, 4 + 2 * k] = (kps[idx, 2 * k] + c) * s
            d[:, 5 + 2 * k] = (kps[idx, 2 * k + 1] + r) * s
        d[:, 14] = score[idx]
        dets.append(d)
    d = np.concatenate(dets)
    return d[nms(d, nms_iou, top_k)]


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def nms(d: np.ndarray, thr: float, top_k: int):
    order = sorted(range(len(d)), key=lambda i: -d[i, 14])[:top_k]
    keep = []
    for i in order:
        if all(iou(d[i], d[j]) <= thr for j in keep):
            keep.append(i)
    return keep


def similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix [[a, -b, tx], [b, a, ty]] minimising sum |M*src - dst|^2."""
    n = len(src)
    A = np.zeros((2 * n, 4))
    y = np.zeros(2 * n)
    for i, ((sx, sy), (dx, dy)) in enumerate(zip(src, dst)):
        A[2 * i] = [sx, -sy, 1, 0]
        A[2 * i + 1] = [sy, sx, 0, 1]
        y[2 * i], y[2 * i + 1] = dx, dy
    a, b, tx, ty = np.linalg.lstsq(A, y, rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def warp_chip(img_rgb: np.ndarray, landmarks5: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """150x150 RGB uint8 chip. For every chip pixel (u, v) (integer coords =
    pixel centres) the source point is M^-1 (u, v); it is sampled bilinearly,
    neighbours outside the image count as 0, result rounded half up."""
    M = similarity_lstsq(landmarks5, CHIP_REFERENCE * (size / CHIP_SIZE))
    R, t = M[:, :2], M[:, 2]
    Rinv = np.linalg.inv(R)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    pts = np.stack([u.ravel() - t[0], v.ravel() - t[1]])
    sx, sy = Rinv @ pts
    h, w = img_rgb.shape[:2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = sx - x0, sy - y0
    img = img_rgb.astype(np.float64)
    out = np.zeros((size * size, 3))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xx, yy = x0 + dx, y0 + dy
            ok = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
            vals = np.zeros((size * size, 3))
            vals[ok] = img[yy[ok], xx[ok]]
            out += (wx * wy)[:, None] * vals
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8).reshape(size, size, 3)


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    return float(a @ b / (na * nb))


def detect_faces(sess, img_bgr, width=640, height=640, score_threshold=0.6, nms_iou=0.3):
    """Detections in ORIGINAL image coordinates (float64 [K, 15])."""
    x, s = letterbox(img_bgr, width, height)
    d = yunet_decode(yunet_run(sess, x), width, height, score_threshold, nms_iou)
    d[:, :14] /= s
    return d


def select_photos(root: str, per_source: dict) -> list:
    """Deterministic photo selection: sorted paths, first k of each source."""
    out = []
    for src, k in per_source.items():
        files = []
        for dp, _, fns in os.walk(os.path.join(root, src)):
            for fn in fns:
                if fn.lower().endswith((".jpg", ".jpeg", ".png", ".pgm")):
                    files.append(os.path.relpath(os.path.join(dp, fn), root))
        out.extend(sorted(files)[:k])
    return out

