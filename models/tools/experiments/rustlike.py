"""A Python copy of the Rust face pipeline (face/src/{decode,detect,align,quality,embed}.rs),
close enough to reproduce `facegate eval pairs` figures, with knobs for the experiments.

What is mirrored from the Rust side (file and function in brackets):
  * decoding [decode.rs decode_image]: 8-bit RGB, grey replicated, alpha over white;
  * detector input [detect.rs Detector::detect/input_geometry]: resize with image-rs'
    separable filters (Triangle when shrinking, CatmullRom when growing; weights in f32,
    vertical pass unrounded, horizontal pass rounded half away from zero) so the longer
    side is <= max_side and >= min_side, zero pad bottom/right to multiples of 32, BGR 0..255;
  * YuNet decoding + greedy NMS (max 32 faces) [detect.rs decode_level/non_max_suppression],
    via ../facelib.py (float64 there, f32 in Rust);
  * primary face [pipeline.rs primary_face];
  * chip [align.rs Similarity::estimate, ChipGeometry::cut, warp, box_downscale_region,
    bilinear], including the box pre-filter and the mirror about the reference axis;
  * quality gate [quality.rs assess, chip_statistics, Pose::from_landmarks] with its defaults;
  * embedding: raw 128-d output of the dlib ONNX model (templates are normalised later).

Knobs that do not exist in Rust (yet): `border` (pad the image with a constant border of
`border` x longer side before detection) and arbitrary reference points.
"""

from __future__ import annotations

import math
import os
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # models/tools
import facelib  # noqa: E402

MODELS = os.path.dirname(os.path.dirname(HERE))  # models/
REFERENCE = np.array([[47.5, 46.6], [100.5, 46.6], [74.0, 76.6], [50.4, 103.0], [97.6, 103.0]])
CHIP = 150
f32 = np.float32


# ---------------------------------------------------------------- decoding
def read_rgb(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read {path}")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        a = img[:, :, 3:].astype(np.uint32)
        rgb = img[:, :, 2::-1].astype(np.uint32)
        return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(img[:, :, ::-1])


# ---------------------------------------------------------------- image-rs resize
def _triangle(x):
    a = np.abs(x)
    return np.where(a < 1, 1 - a, 0).astype(f32)


def _catmullrom(x):
    a = np.abs(x).astype(f32)
    b, c = f32(0), f32(0.5)
    k1 = (12 - 9 * b - 6 * c) * a**3 + (-18 + 12 * b + 6 * c) * a**2 + (6 - 2 * b)
    k2 = (-b - 6 * c) * a**3 + (6 * b + 30 * c) * a**2 + (-12 * b - 48 * c) * a + (8 * b + 24 * c)
    return (np.where(a < 1, k1, np.where(a < 2, k2, 0)) / 6).astype(f32)


def _weights(n_in: int, n_out: int, kernel, support: float) -> np.ndarray:
    W = np.zeros((n_out, n_in), f32)
    ratio = f32(n_in) / f32(n_out)
    sratio = max(ratio, f32(1))
    src_support = f32(support) * sratio
    for o in range(n_out):
        x = (f32(o) + f32(0.5)) * ratio
        left = min(max(math.floor(x - src_support), 0), n_in - 1)
        right = min(max(math.ceil(x + src_support), left + 1), n_in)
        x = x - f32(0.5)
        idx = np.arange(left, right)
        w = kernel((idx.astype(f32) - x) / sratio)
        W[o, left:right] = w / w.sum(dtype=f32)
    return W


def resize(img: np.ndarray, nw: int, nh: int, grow: bool) -> np.ndarray:
    h, w = img.shape[:2]
    if (nw, nh) == (w, h):
        return img.copy()
    kernel, support = (_catmullrom, 2.0) if grow else (_triangle, 1.0)
    Wv = _weights(h, nh, kernel, support)
    Wh = _weights(w, nw, kernel, support)
    x = img.astype(f32)
    tmp = np.einsum("oh,hwc->owc", Wv, x, dtype=f32)
    out = np.einsum("pw,owc->opc", Wh, tmp, dtype=f32)
    out = np.clip(out, 0, 255)
    return np.floor(out + 0.5).astype(np.uint8)  # values >= 0: half away from zero


# ---------------------------------------------------------------- detection
class Detector:
    def __init__(self, precision="int8w", threads=1):
        name = {"int8w": "yunet-2023mar-int8w.onnx", "f32": "yunet-2023mar-f32.onnx"}[precision]
        self.sess = facelib.session(facelib.relaxed_model_bytes(os.path.join(MODELS, name)), threads)

    def detect(self, rgb: np.ndarray, max_side=640, min_side=160, border=0.0, score=0.6, nms_iou=0.3):
        """All faces (float64 [K, 15]: x, y, w, h, 5 x (lx, ly), score) in `rgb` coordinates."""
        off = 0
        if border > 0:
            off = int(round(border * max(rgb.shape[:2])))
            rgb = cv2.copyMakeBorder(rgb, off, off, off, off, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        h, w = rgb.shape[:2]
        long = f32(max(w, h, 1))
        if long > max_side:
            scale = f32(max_side) / long
        elif long < min_side:
            scale = f32(min_side) / long
        else:
            scale = f32(1)

        def round_up(v):
            return -(-max(int(np.round(v)), 1) // 32) * 32

        pw, ph = round_up(f32(w) * scale), round_up(f32(h) * scale)
        if abs(scale - 1) > np.finfo(f32).eps:
            tw = min(max(int(np.round(f32(w) * scale)), 1), pw)
            th = min(max(int(np.round(f32(h) * scale)), 1), ph)
            rgb = resize(rgb, tw, th, grow=scale > 1)
        x = np.zeros((1, 3, ph, pw), f32)
        rh, rw = rgb.shape[:2]
        x[0, :, : min(rh, ph), : min(rw, pw)] = rgb[:ph, :pw, ::-1].transpose(2, 0, 1)
        d = facelib.yunet_decode(facelib.yunet_run(self.sess, x), pw, ph, score, nms_iou, top_k=5000)[:32]
        d[:, :14] *= float(f32(1) / scale)
        d[:, 0] -= off
        d[:, 1] -= off
        d[:, 4:14:2] -= off
        d[:, 5:14:2] -= off
        return d


def primary_face(d: np.ndarray, width: int, height: int):
    if len(d) == 0:
        return None
    cx, cy = width * 0.5, height * 0.5
    half = max(math.hypot(cx, cy), 1.0)
    bc = d[:, :2] + d[:, 2:4] * 0.5
    off = np.hypot(bc[:, 0] - cx, bc[:, 1] - cy) / half
    area = np.clip(d[:, 2], 0, None) * np.clip(d[:, 3], 0, None)
    return int(np.argmax(area * (1 - 0.5 * np.minimum(off, 1))))


# ---------------------------------------------------------------- alignment
def estimate(src: np.ndarray, dst: np.ndarray):
    """Rust Similarity::estimate: (a, b, tx, ty) with p -> [a -b; b a] p + t."""
    fm, tm = src.mean(0), dst.mean(0)
    f, t = src - fm, dst - tm
    dot = (f * t).sum()
    cross = (f[:, 0] * t[:, 1] - f[:, 1] * t[:, 0]).sum()
    norm = (f * f).sum()
    if not (np.isfinite(norm) and norm > 1e-9):
        return None
    a, b = dot / norm, cross / norm
    return a, b, tm[0] - (a * fm[0] - b * fm[1]), tm[1] - (b * fm[0] + a * fm[1])


def _inverse(s):
    a, b, tx, ty = s
    det = a * a + b * b
    ia, ib = a / det, -b / det
    return ia, ib, -(ia * tx - ib * ty), -(ib * tx + ia * ty)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    x = x.astype(f32)
    y = y.astype(f32)
    inside = (x > -1) & (y > -1) & (x < w) & (y < h)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]

    def fetch(xi, yi):
        ok = (xi >= 0) & (yi >= 0) & (xi < w) & (yi < h)
        v = np.zeros((len(xi), 3), f32)
        v[ok] = img[yi[ok], xi[ok]]
        return v

    p00, p10, p01, p11 = fetch(x0, y0), fetch(x0 + 1, y0), fetch(x0, y0 + 1), fetch(x0 + 1, y0 + 1)
    top = p00 + (p10 - p00) * fx
    bot = p01 + (p11 - p01) * fx
    v = np.floor(np.clip(top + (bot - top) * fy, 0, 255) + f32(0.5))
    v[~inside] = 0
    return v.astype(np.uint8)


def _box_region(img, inv, size, factor):
    a, b, tx, ty = inv

    def ap(x, y):
        return a * x - b * y + tx, b * x + a * y + ty

    cs = [ap(0, 0), ap(size, 0), ap(0, size), ap(size, size)]
    ih, iw = img.shape[:2]
    min_x = min(max(math.floor(min(c[0] for c in cs)), 0), iw)
    min_y = min(max(math.floor(min(c[1] for c in cs)), 0), ih)
    max_x = min(max(math.ceil(max(c[0] for c in cs)), 0), iw)
    max_y = min(max(math.ceil(max(c[1] for c in cs)), 0), ih)
    sw, sh = (max_x - min_x) // factor, (max_y - min_y) // factor
    small = np.zeros((max(sh, 1), max(sw, 1), 3), np.uint8)
    if sw > 0 and sh > 0:
        blk = img[min_y : min_y + sh * factor, min_x : min_x + sw * factor].astype(np.uint32)
        s = blk.reshape(sh, factor, sw, factor, 3).sum(axis=(1, 3))
        area = factor * factor
        small[:sh, :sw] = (s + area // 2) // area
    return small, (min_x, min_y)


def cut_chip(img: np.ndarray, lm: np.ndarray, reference: np.ndarray, mirror=False, size=CHIP):
    """Rust ChipGeometry::cut. `lm` [5, 2] image coordinates. None if degenerate."""
    fwd = estimate(lm, reference)
    if fwd is None:
        return None
    inv = _inverse(fwd)
    scale = math.hypot(fwd[0], fwd[1])
    step = 1.0 / scale if scale > 0 else 1.0
    factor = int(math.floor(step))
    shift = 0.0
    src = img
    if factor >= 2:
        src, (ox, oy) = _box_region(img, inv, size, factor)
        k = 1.0 / factor
        inv = (inv[0] * k, inv[1] * k, (inv[2] - ox) * k, (inv[3] - oy) * k)
        shift = (factor - 1) * 0.5 * k
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    if mirror:
        axis = (reference[0, 0] + reference[1, 0] + reference[3, 0] + reference[4, 0]) * 0.25
        u = 2 * axis - u
    a, b, tx, ty = inv
    x = a * u - b * v + tx - shift
    y = b * u + a * v + ty - shift
    return _bilinear(src, x.ravel(), y.ravel()).reshape(size, size, 3)


# ---------------------------------------------------------------- quality gate
QUALITY = dict(min_eye_distance=18.0, min_sharpness=12.0, min_brightness=40.0, max_brightness=220.0,
               max_clipped=0.25, max_yaw=40.0, max_pitch=35.0, max_roll=35.0)


def chip_statistics(chip: np.ndarray):
    h, w = chip.shape[:2]
    x0, x1, y0, y1 = w // 5, w - w // 5, h // 5, h - h // 5
    c = chip.astype(f32)
    luma = f32(0.299) * c[:, :, 0] + f32(0.587) * c[:, :, 1] + f32(0.114) * c[:, :, 2]
    reg = luma[y0:y1, x0:x1]
    mean = float(reg.astype(np.float64).mean())
    clipped = float(((reg < 8) | (reg > 247)).mean())
    L = luma
    lap = L[y0:y1 - 2, x0 + 1:x1 - 1] + L[y0 + 2:y1, x0 + 1:x1 - 1] + L[y0 + 1:y1 - 1, x0:x1 - 2] + \
        L[y0 + 1:y1 - 1, x0 + 2:x1] - 4 * L[y0 + 1:y1 - 1, x0 + 1:x1 - 1]
    lap = lap.astype(np.float64)
    var = max(float((lap * lap).mean() - lap.mean() ** 2), 0.0)
    return var, mean, clipped


def pose(lm: np.ndarray):
    el, er = lm[0], lm[1]
    roll = math.atan2(er[1] - el[1], er[0] - el[0])
    c, s = math.cos(roll), math.sin(roll)
    o = (el + er) / 2

    def unroll(p):
        dx, dy = p[0] - o[0], p[1] - o[1]
        return dx * c + dy * s, -dx * s + dy * c

    span = max(math.hypot(*(er - el)), 1e-3)
    nose = unroll(lm[2])
    mouth = unroll((lm[3] + lm[4]) / 2)
    yaw = math.atan(nose[0] / span / 0.6)
    height = nose[1] / mouth[1] if abs(mouth[1]) > 1e-3 else 0.53
    pitch = math.asin(min(max((height - 0.53) * 2, -1), 1))
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def quality_passed(lm, chip, q=QUALITY):
    eye = math.hypot(*(lm[1] - lm[0]))
    sharp, bright, clip = chip_statistics(chip)
    yaw, pitch, roll = pose(lm)
    return (eye >= q["min_eye_distance"] and sharp >= q["min_sharpness"] and q["min_brightness"] <= bright <= q["max_brightness"]
            and clip <= q["max_clipped"] and abs(yaw) <= q["max_yaw"] and abs(pitch) <= q["max_pitch"] and abs(roll) <= q["max_roll"])


# ---------------------------------------------------------------- embedding
class Embedder:
    def __init__(self, threads=1):
        self.sess = facelib.session(os.path.join(MODELS, "dlib-resnet29-f32.onnx"), threads)

    def __call__(self, chips: np.ndarray, batch=32) -> np.ndarray:
        out = []
        for i in range(0, len(chips), batch):
            x = np.ascontiguousarray(chips[i : i + batch].transpose(0, 3, 1, 2).astype(f32))
            out.append(self.sess.run(None, {"image": x})[0])
        return np.concatenate(out) if out else np.zeros((0, 128), f32)


def reference_points(scale=1.0, dx=0.0, dy=0.0, base=REFERENCE, centre=(74.5, 74.5)):
    c = np.asarray(centre, float)
    return c + scale * (np.asarray(base, float) - c) + np.array([dx, dy])
