#!/usr/bin/env python3
"""Convert face-api.js's FaceRecognitionNet (dlib ResNet-29 "metric" network) to ONNX.

Input: the npm tarball of @vladmandic/face-api (read in place, nothing is
extracted), namely
  package/model/face_recognition_model-weights_manifest.json
  package/model/face_recognition_model.bin

The graph rebuilt here follows package/src/faceRecognitionNet/*.ts exactly:

  x = (image - meanRgb) / 255          meanRgb = [122.782, 117.001, 104.298], RGB
  convDown  = conv(stride 2, 'valid') + bias, * scale.weights + scale.biases, relu
  conv      = conv(stride 1, 'same')  + bias, * scale.weights + scale.biases, relu
  convNoRelu= conv without the relu
  residual(x)     = relu(convNoRelu(conv(x)) + x)
  residualDown(x) = relu(pad(convNoRelu(convDown(x))) + chanpad(avgPool2x2(x)))
      (pad = zero row/column appended at the bottom/right when the spatial
       sizes differ; chanpad = zero channels appended when the widths differ)
  net = convDown(7x7/2) -> maxPool(3, 2, valid) -> 3x residual(32)
        -> residualDown(64) + 3x residual(64) -> residualDown(128) + 2x residual(128)
        -> residualDown(256) + 2x residual(256) -> residualDown(256)
        -> mean over H,W -> matMul(fc [256,128])

Two outputs:
  dlib-resnet29-f32.onnx  every weight dequantized to float32 exactly as tfjs
                          does: float32(q * scale + min) computed in float64
                          (tfjs-core io_utils decodeWeights).
  dlib-resnet29-u8w.onnx  the quantized tensors stored as their ORIGINAL bytes
                          (uint8, same order, each initializer's raw_data is the
                          exact byte range of face_recognition_model.bin) and
                          dequantized in-graph with
                              Cast(to=double) -> Mul(scale) -> Add(min) -> Cast(to=float)
                          which is the same float64 arithmetic as tfjs, so the
                          resulting float32 weights are bit-identical to the
                          f32 file. The 8 tensors that the upstream manifest
                          stores unquantized (float32) stay float32.

The output is byte-deterministic: no timestamps, names derive from the tfjs
weight names, nodes are emitted in a fixed order.

Usage: convert_dlib.py --tgz vladmandic-face-api-1.7.15.tgz --out-dir DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tarfile

import numpy as np
import onnx
from onnx import TensorProto, helper

MANIFEST = "package/model/face_recognition_model-weights_manifest.json"
WEIGHTS = "package/model/face_recognition_model.bin"
MEAN_RGB = [122.782, 117.001, 104.298]  # FaceRecognitionNet.ts
OPSET = 13
IR_VERSION = 7
PRODUCER = "facegate models/tools/convert_dlib.py"


def read_package(tgz_path: str):
    with tarfile.open(tgz_path, "r:gz") as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        blob = tar.extractfile(WEIGHTS).read()
    return manifest, blob


class Weights:
    """The tfjs weight map, keeping the raw bytes of each tensor."""

    def __init__(self, manifest, blob: bytes):
        assert len(manifest) == 1 and manifest[0]["paths"] == ["face_recognition_model.bin"]
        self.entries = {}
        off = 0
        for w in manifest[0]["weights"]:
            assert w["dtype"] == "float32", w
            shape = list(w["shape"])
            n = int(np.prod(shape))
            q = w.get("quantization")
            if q is not None:
                assert q["dtype"] == "uint8", q
                raw = blob[off : off + n]
                off += n
                u8 = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
                # tfjs: values[i] = v * quantization.scale + quantization.min  (JS doubles),
                # stored into a Float32Array.
                f32 = (u8.astype(np.float64) * float(q["scale"]) + float(q["min"])).astype(np.float32)
                self.entries[w["name"]] = dict(shape=shape, u8=u8, scale=float(q["scale"]),
                                               min=float(q["min"]), f32=f32)
            else:
                raw = blob[off : off + 4 * n]
                off += 4 * n
                f32 = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
                self.entries[w["name"]] = dict(shape=shape, u8=None, f32=f32)
        assert off == len(blob), (off, len(blob))
        self.used = set()

    def get(self, name):
        self.used.add(name)
        return self.entries[name]


class Builder:
    def __init__(self, weights: Weights, u8w: bool):
        self.w = weights
        self.u8w = u8w
        self.nodes = []
        self.inits = []
        self.n = 0

    def node(self, op, inputs, name, **attrs):
        out = name
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def const(self, name, arr: np.ndarray):
        self.inits.append(onnx.numpy_helper.from_array(arr, name))
        return name

    def weight(self, tfjs_name: str, kind: str):
        """Return the graph name of a float32 weight ready for use.

        kind: 'filters' -> OIHW conv weight, 'vec' -> [C] (conv bias),
              'chan' -> [1,C,1,1] (scale layer), 'fc' -> [256,128].
        """
        e = self.w.get(tfjs_name)
        shape = e["shape"]
        if kind == "chan":
            target_shape = [1, shape[0], 1, 1]
        else:
            target_shape = shape
        if not self.u8w or e["u8"] is None:
            arr = e["f32"]
            if kind == "filters":
                arr = np.ascontiguousarray(arr.transpose(3, 2, 0, 1))  # HWIO -> OIHW
            else:
                arr = arr.reshape(target_shape)
            return self.const(tfjs_name, arr)
        # u8w: original bytes, original order. Vectors are declared [1,C,1,1]
        # where needed (same bytes, same order).
        q = self.const(tfjs_name + "/q", e["u8"].reshape(target_shape))
        s = self.const(tfjs_name + "/scale", np.array(e["scale"], dtype=np.float64))
        m = self.const(tfjs_name + "/min", np.array(e["min"], dtype=np.float64))
        x = self.node("Cast", [q], tfjs_name + "/q_f64", to=TensorProto.DOUBLE)
        x = self.node("Mul", [x, s], tfjs_name + "/mul")
        x = self.node("Add", [x, m], tfjs_name + "/add")
        if kind == "filters":
            x = self.node("Cast", [x], tfjs_name + "/hwio", to=TensorProto.FLOAT)
            x = self.node("Transpose", [x], tfjs_name, perm=[3, 2, 0, 1])
        else:
            x = self.node("Cast", [x], tfjs_name, to=TensorProto.FLOAT)
        return x

    # --- layers, mirroring convLayer.ts / scaleLayer.ts / residualLayer.ts ---
    def conv_layer(self, x, prefix, stride, relu, valid):
        filters = self.w.entries[prefix + "/conv/filters"]["shape"]  # HWIO
        k = filters[0]
        pad = 0 if valid else (k - 1) // 2  # tfjs 'same' with stride 1, odd k
        wname = self.weight(prefix + "/conv/filters", "filters")
        bname = self.weight(prefix + "/conv/bias", "vec")
        y = self.node("Conv", [x, wname, bname], prefix + "/conv",
                      kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
                      dilations=[1, 1], group=1)
        sw = self.weight(prefix + "/scale/weights", "chan")
        sb = self.weight(prefix + "/scale/biases", "chan")
        y = self.node("Mul", [y, sw], prefix + "/scale/mul")
        y = self.node("Add", [y, sb], prefix + "/scale/add")
        if relu:
            y = self.node("Relu", [y], prefix + "/relu")
        return y

    def residual(self, x, prefix):
        y = self.conv_layer(x, prefix + "/conv1", 1, True, False)
        y = self.conv_layer(y, prefix + "/conv2", 1, False, False)
        y = self.node("Add", [y, x], prefix + "/add")
        return self.node("Relu", [y], prefix + "/relu")

    def residual_down(self, x, prefix, in_hw, in_c):
        out_c = self.w.entries[prefix + "/conv2/conv/filters"]["shape"][3]
        y = self.conv_layer(x, prefix + "/conv1", 2, True, True)
        y = self.conv_layer(y, prefix + "/conv2", 1, False, False)
        out_hw = (in_hw - 3) // 2 + 1  # 3x3 stride 2 'valid'
        pooled_hw = (in_hw - 2) // 2 + 1  # avgPool 2x2 stride 2 'valid'
        p = self.node("AveragePool", [x], prefix + "/avgpool",
                      kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0])
        if pooled_hw != out_hw:
            # residualLayer.ts: concat a zero row (axis H) then a zero column (axis W),
            # both at the end.
            assert pooled_hw == out_hw + 1, (pooled_hw, out_hw)
            pads = self.const(prefix + "/pad_hw", np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.int64))
            y = self.node("Pad", [y, pads], prefix + "/pad_out", mode="constant")
        if in_c != out_c:
            # concat zeros to the pooled input along channels, at the end.
            pads = self.const(prefix + "/pad_c",
                              np.array([0, 0, 0, 0, 0, out_c - in_c, 0, 0], dtype=np.int64))
            p = self.node("Pad", [p, pads], prefix + "/pad_pooled", mode="constant")
        y = self.node("Add", [p, y], prefix + "/add")
        return self.node("Relu", [y], prefix + "/relu"), pooled_hw, out_c

    def build(self):
        mean = self.const("input/mean_rgb", np.array(MEAN_RGB, dtype=np.float32).reshape(1, 3, 1, 1))
        div = self.const("input/divisor", np.array(255.0, dtype=np.float32))
        x = self.node("Sub", ["image", mean], "input/sub_mean")
        x = self.node("Div", [x, div], "input/div_255")

        x = self.conv_layer(x, "conv32_down", 2, True, True)
        hw = (150 - 7) // 2 + 1  # 72
        x = self.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 0, 0])
        hw = (hw - 3) // 2 + 1  # 35
        c = 32
        for name in ["conv32_1", "conv32_2", "conv32_3"]:
            x = self.residual(x, name)
        x, hw, c = self.residual_down(x, "conv64_down", hw, c)
        for name in ["conv64_1", "conv64_2", "conv64_3"]:
            x = self.residual(x, name)
        x, hw, c = self.residual_down(x, "conv128_down", hw, c)
        for name in ["conv128_1", "conv128_2"]:
            x = self.residual(x, name)
        x, hw, c = self.residual_down(x, "conv256_down", hw, c)
        for name in ["conv256_1", "conv256_2"]:
            x = self.residual(x, name)
        x, hw, c = self.residual_down(x, "conv256_down_out", hw, c)
        assert (hw, c) == (2, 256), (hw, c)
        x = self.node("GlobalAveragePool", [x], "global_avg")  # == mean over H,W
        x = self.node("Flatten", [x], "flatten", axis=1)
        fc = self.weight("fc", "fc")
        self.nodes.append(helper.make_node("MatMul", [x, fc], ["embedding"], name="fc/matmul"))

        unused = set(self.w.entries) - self.w.used
        assert not unused, unused

        image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 150, 150])
        emb = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 128])
        graph = helper.make_graph(self.nodes, "dlib_resnet29_facerecognitionnet", [image], [emb],
                                  initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name=PRODUCER, producer_version="1")
        model.ir_version = IR_VERSION
        model.doc_string = (
            "dlib face recognition ResNet-29 (128-d) as packaged by face-api.js "
            "(@vladmandic/face-api 1.7.15). Input: RGB, raw 0..255, NCHW 150x150 face chip; "
            "normalization ((x - [122.782, 117.001, 104.298]) / 255) is inside the graph. "
            "Output: the face-api.js descriptor (not re-normalized). "
            + ("Weights: original uint8 tfjs bytes, dequantized in-graph in float64."
               if self.u8w else "Weights: float32 (tfjs dequantization).")
        )
        return model


def convert(tgz_path: str, out_dir: str):
    manifest, blob = read_package(tgz_path)
    outs = {}
    for precision in ["f32", "u8w"]:
        w = Weights(manifest, blob)
        model = Builder(w, u8w=(precision == "u8w")).build()
        onnx.checker.check_model(model, full_check=True)
        data = model.SerializeToString(deterministic=True)
        path = os.path.join(out_dir, f"dlib-resnet29-{precision}.onnx")
        with open(path, "wb") as f:
            f.write(data)
        outs[precision] = path
        print(f"{path}: {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()}")
    return outs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tgz", required=True, help="vladmandic-face-api-1.7.15.tgz")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    convert(args.tgz, args.out_dir)


if __name__ == "__main__":
    sys.exit(main())
