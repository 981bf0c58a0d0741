"""Texture / screen cue distributions: live photos and frames vs synthetic print and replay.

Prints per-cue quantiles for each class, to choose which cues to implement in Rust.
"""

from __future__ import annotations

import sys

import numpy as np

import common as C


def luma(img):
    x = img.astype(np.float32)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def native_crop(img, det, frac=0.7, lo=32, hi=128):
    """Square native-resolution crop around the face centre, side a power of two."""
    x, y, w, h = det[:4]
    side = min(w, h) * frac
    n = lo
    while n * 2 <= min(side, hi):
        n *= 2
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - n / 2)), int(round(cy - n / 2))
    H, W = img.shape[:2]
    x0 = min(max(x0, 0), max(W - n, 0))
    y0 = min(max(y0, 0), max(H - n, 0))
    crop = img[y0:y0 + n, x0:x0 + n]
    if crop.shape[0] != n or crop.shape[1] != n:
        pad = np.zeros((n, n, 3), img.dtype)
        pad[:crop.shape[0], :crop.shape[1]] = crop
        crop = pad
    return crop


def spectrum(ch):
    n = ch.shape[0]
    win = np.hanning(n)
    w2 = np.outer(win, win)
    c = (ch - ch.mean()) * w2
    return np.abs(np.fft.fftshift(np.fft.fft2(c))) ** 2


def radii(n):
    f = np.fft.fftshift(np.fft.fftfreq(n))
    fx, fy = np.meshgrid(f, f)
    return np.hypot(fx, fy)


def fft_cues(crop):
    x = crop.astype(np.float32)
    Y = luma(crop)
    cr = x[..., 0] - x[..., 1]
    cb = x[..., 2] - 0.5 * (x[..., 0] + x[..., 1])
    n = crop.shape[0]
    r = radii(n)
    band = (r >= 1 / 16) & (r <= 0.25)
    high = r > 0.25
    mid = (r >= 1 / 16) & (r <= 0.25)
    SY, SR, SB = spectrum(Y), spectrum(cr), spectrum(cb)
    SC = SR + SB
    eps = 1e-6
    chroma_ratio = SC[band].sum() / (SY[band].sum() + eps)
    chroma_peak = SC[band].max() / (np.median(SC[band]) + eps)
    luma_peak = SY[band].max() / (np.median(SY[band]) + eps)
    luma_hf = SY[high].sum() / (SY[mid].sum() + eps)
    # chroma spectral flatness within band (periodic -> low flatness)
    v = SC[band] + eps
    flat = np.exp(np.log(v).mean()) / v.mean()
    return dict(chroma_ratio=chroma_ratio, chroma_peak=chroma_peak, luma_peak=luma_peak, luma_hf=luma_hf, chroma_flat=flat)


def colour_cues(chip):
    c = chip[30:120, 30:120].astype(np.float32) / 255
    mx, mn = c.max(-1), c.min(-1)
    s = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    spec = ((mx > 0.92) & (s < 0.15)).mean()
    Y = luma(chip[30:120, 30:120])
    return dict(sat_mean=s.mean(), sat_p95=np.percentile(s, 95), specular=spec, contrast=Y.std())


def sharpness(Y):
    lap = Y[:-2, 1:-1] + Y[2:, 1:-1] + Y[1:-1, :-2] + Y[1:-1, 2:] - 4 * Y[1:-1, 1:-1]
    return lap.var()


def surround_cues(img, det):
    x, y, w, h = det[:4]
    H, W = img.shape[:2]
    Y = luma(img)
    cx, cy = x + w / 2, y + h / 2
    inner = Y[int(max(cy - h * 0.3, 0)):int(min(cy + h * 0.3, H)), int(max(cx - w * 0.3, 0)):int(min(cx + w * 0.3, W))]
    s_in = sharpness(inner) if min(inner.shape) > 4 else np.nan
    # annulus: box x2.2 minus box x1.2
    def box(f):
        return (int(max(cx - w * f / 2, 0)), int(max(cy - h * f / 2, 0)), int(min(cx + w * f / 2, W)), int(min(cy + h * f / 2, H)))
    X0, Y0, X1, Y1 = box(2.4)
    mask = np.zeros_like(Y, bool)
    mask[Y0:Y1, X0:X1] = True
    a0, b0, a1, b1 = box(1.3)
    mask[b0:b1, a0:a1] = False
    lap = np.zeros_like(Y)
    lap[1:-1, 1:-1] = Y[:-2, 1:-1] + Y[2:, 1:-1] + Y[1:-1, :-2] + Y[1:-1, 2:] - 4 * Y[1:-1, 1:-1]
    s_out = lap[mask].var() if mask.sum() > 50 else np.nan
    return dict(sharp_in=s_in, sharp_ratio=s_out / (s_in + 1e-6))


def cues(img, det):
    out = {}
    out.update(fft_cues(native_crop(img, det)))
    ch = C.chip(img, det)
    out.update(colour_cues(ch))
    out.update(surround_cues(img, det))
    out["eye_distance"] = np.linalg.norm(C.landmarks(det)[1] - C.landmarks(det)[0])
    return out


def still_set():
    """(class, key, rgb) for live dev photos and the still spoofs."""
    spoof_rows = C.spoofs()
    for r in spoof_rows:
        if r["attack"] in ("print", "replay"):
            yield r["attack"], r["path"], C.read_rgb(r["path"])
    for r in C.manifest():
        yield "live", r["path"], C.read_rgb(r["path"])


def dev_detections():
    """Primary detections of the dev photos, cached by ../experiments (min side 320)."""
    sys.path.insert(0, C.os.path.join(C.os.path.dirname(C.HERE), "experiments"))
    import cache

    z = cache.detections("faces", min_side=320)
    return {str(k): z["det"][i] for i, k in enumerate(z["keys"])}


def video_set(step=10):
    for clip, att in C.CLIPS.items():
        d = C.detections(clip)
        for i, img in C.frames(clip):
            if i % step == 0 and np.isfinite(d[i, 0]):
                yield ("v-" + (att or "live")), f"{clip}#{i}", img, d[i]


def main():
    det = C.detector()
    known = dev_detections()
    rows = []
    for cls, key, img in still_set():
        if key in known:
            drow = known[key]
        else:
            d = det.detect(img, 640, 320)
            p = C.rl.primary_face(d, img.shape[1], img.shape[0])
            drow = d[p] if p is not None else np.full(15, np.nan)
        if not np.isfinite(drow[0]):
            continue
        rows.append((cls, key, cues(img, drow)))
    for cls, key, img, drow in video_set():
        rows.append((cls, key, cues(img, drow)))
    import pickle
    with open(f"{C.CACHE}/texture_rows.pkl", "wb") as f:
        pickle.dump(rows, f)
    report(rows)


def report(rows):
    names = list(rows[0][2].keys())
    classes = sorted({r[0] for r in rows})
    for n in names:
        print(f"\n{n}")
        for c in classes:
            v = np.array([r[2][n] for r in rows if r[0] == c], float)
            v = v[np.isfinite(v)]
            q = np.percentile(v, [0, 5, 50, 95, 100])
            print(f"  {c:9s} n={len(v):4d}  " + "  ".join(f"{x:9.4g}" for x in q))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        import pickle
        report(pickle.load(open(f"{C.CACHE}/texture_rows.pkl", "rb")))
    else:
        main()
