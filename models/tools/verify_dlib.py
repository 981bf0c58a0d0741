#!/usr/bin/env python3
"""Compare the dlib ResNet-29 ONNX files with face-api.js's own descriptors.

  1. weights: every float32 weight the u8w graph computes in-graph (uint8 ->
     double -> *scale +min -> float) is compared bit for bit with the f32 file's
     initializer of the same name (onnxruntime, optimizations off).
  2. outputs: onnxruntime on each chip (f32 and u8w, batch of all chips) vs the
     face-api.js descriptors in the given JSON files (verify_faceapi.mjs output):
     max |diff|, min / mean cosine; f32 vs u8w bit-equality.

Usage: verify_dlib.py --models DIR --chips DIR --faceapi fa_cpu.json [--faceapi fa_wasm.json] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import facelib  # noqa: E402


def check_weights(f32_path: str, u8w_path: str) -> dict:
    f32 = onnx.load(f32_path)
    ref = {t.name: numpy_helper.to_array(t) for t in f32.graph.initializer}
    m = onnx.load(u8w_path)
    inits = {t.name for t in m.graph.initializer}
    # nodes that depend only on initializers compute the weights
    const = set(inits)
    wnodes = []
    for n in m.graph.node:
        if all(i in const for i in n.input):
            wnodes.append(n)
            const.update(n.output)
    produced = {o for n in wnodes for o in n.output}
    consumed = {i for n in m.graph.node if n not in wnodes for i in n.input}
    outs = sorted(produced & consumed)
    g = helper.make_graph(wnodes, "weights", [],
                          [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outs],
                          initializer=list(m.graph.initializer))
    wm = helper.make_model(g, opset_imports=list(m.opset_import))
    wm.ir_version = m.ir_version
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(wm.SerializeToString(), so, providers=["CPUExecutionProvider"])
    vals = dict(zip(outs, sess.run(None, {})))
    n_elems, n_diff, checked = 0, 0, 0
    for name, v in vals.items():
        r = ref[name]
        assert v.shape == r.shape and v.dtype == r.dtype, (name, v.shape, r.shape)
        n_elems += v.size
        n_diff += int((v.view(np.uint32) != r.view(np.uint32)).sum())
        checked += 1
    # the rest of the u8w file's float initializers are the upstream float32 tensors
    same_f32 = sum(1 for t in m.graph.initializer
                   if t.name in ref and np.array_equal(numpy_helper.to_array(t), ref[t.name]))
    return dict(dequantized_tensors=checked, dequantized_values=n_elems,
                values_not_bit_identical=n_diff, float_initializers_identical=same_f32)


def load_chips(chip_dir: str, names):
    xs = []
    for n in names:
        bgr = cv2.imread(os.path.join(chip_dir, n), cv2.IMREAD_COLOR)
        assert bgr is not None and bgr.shape == (150, 150, 3), n
        xs.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1).astype(np.float32))
    return np.stack(xs)


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    cos = [facelib.cosine(x, y) for x, y in zip(a, b)]
    return dict(max_abs_diff=float(np.abs(a.astype(np.float64) - b).max()),
                min_cosine=float(min(cos)), mean_cosine=float(np.mean(cos)),
                max_l2_dist=float(np.linalg.norm(a.astype(np.float64) - b, axis=1).max()))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--chips", required=True)
    ap.add_argument("--faceapi", action="append", required=True)
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    f32p = os.path.join(args.models, "dlib-resnet29-f32.onnx")
    u8p = os.path.join(args.models, "dlib-resnet29-u8w.onnx")
    report = {"weights_u8w_vs_f32": check_weights(f32p, u8p)}

    refs = {}
    names = None
    for path in args.faceapi:
        data = json.load(open(path))
        d = {e["chip"]: np.array(e["descriptor"], np.float32) for e in data["descriptors"]}
        names = names or sorted(d)
        assert sorted(d) == names, "face-api JSON files cover different chips"
        refs[f"faceapi_{data['meta']['backend']}"] = np.stack([d[n] for n in names])
    x = load_chips(args.chips, names)
    onnx_out = {}
    for p, path in (("onnx_f32", f32p), ("onnx_u8w", u8p)):
        sess = facelib.session(path, threads=2)
        onnx_out[p] = sess.run(["embedding"], {"image": x})[0]
    report["chips"] = len(names)
    allv = {**refs, **onnx_out}
    keys = list(allv)
    report["pairs"] = {f"{a} vs {b}": compare(allv[a], allv[b])
                       for i, a in enumerate(keys) for b in keys[i + 1:]}
    report["onnx_f32_bitwise_equal_u8w"] = bool(np.array_equal(onnx_out["onnx_f32"], onnx_out["onnx_u8w"]))
    norms = np.linalg.norm(onnx_out["onnx_f32"], axis=1)
    report["descriptor_l2_norm_range"] = [float(norms.min()), float(norms.max())]
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
