"""Generate the liveness-model slot's test fixture: a tiny *real* ONNX network
(no trained weights: a hand-set colour-stripe detector) and its manifest.

    models/tools/python.sh models/tools/liveness/make_pad_fixture.py

Writes models/testdata/liveness/{tiny-pad.onnx, tiny-pad.toml, tiny-pad.golden.json}.
The network is NOT an anti-spoofing model. It exists to prove that a
`kind = "liveness"` manifest is loaded, its crop cut, its input normalised and
its output read the way the manifest says, through tract, against onnxruntime:

  input  "crop"   float32 [1, 3, 32, 32], RGB, (x - 127.5) / 127.5
  Conv   1x3 horizontal second difference of R-G and B-G   -> 2 channels
  Conv   +/- copies, Relu                                  -> |d2 chroma|, 4 channels
  GlobalAveragePool, Flatten                               -> [1, 4]
  Gemm   -> logits [1, 2]: s = sum of the 4 features; index 0 "spoof" =
         SLOPE * (s - CROSSOVER), index 1 "live" = -SLOPE * (s - CROSSOVER)
  output "logits" float32 [1, 2]; the manifest says: softmax, live index 1.

Fine vertical colour stripes (a screen's sub-pixel pattern) raise s and the
spoof logit; a camera photo of a face has little fine chroma and reads live.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "testdata", "liveness")
SIZE = 32
# Sum of the four features (mean |second difference of chroma|, normalised units) where live and spoof
# logits cross, and the slope: chosen so that the committed fixture photos read
# live and the same photos under 6-px RGB stripes read spoof (face/tests/liveness.rs checks it).
CROSSOVER = 0.2
SLOPE = 20.0


def build() -> onnx.ModelProto:
    w1 = np.zeros((2, 3, 1, 3), np.float32)
    d2 = np.array([-1.0, 2.0, -1.0], np.float32)
    w1[0, 0, 0], w1[0, 1, 0] = d2, -d2  # R - G
    w1[1, 2, 0], w1[1, 1, 0] = d2, -d2  # B - G
    w2 = np.zeros((4, 2, 1, 1), np.float32)
    w2[0, 0], w2[1, 0], w2[2, 1], w2[3, 1] = 1, -1, 1, -1
    gemm_w = np.array([[SLOPE] * 4, [-SLOPE] * 4], np.float32)  # [2, 4]
    gemm_b = np.array([-SLOPE * CROSSOVER, SLOPE * CROSSOVER], np.float32)
    nodes = [
        helper.make_node("Conv", ["crop", "w1"], ["d2"], kernel_shape=[1, 3]),
        helper.make_node("Conv", ["d2", "w2"], ["signed"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["signed"], ["rectified"]),
        helper.make_node("GlobalAveragePool", ["rectified"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("Gemm", ["features", "gemm_w", "gemm_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_pad_fixture",
        [helper.make_tensor_value_info("crop", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(gemm_w, "gemm_w"), numpy_helper.from_array(gemm_b, "gemm_b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="facegate")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def golden_input() -> np.ndarray:
    """The deterministic input the Rust test rebuilds: ((c*7 + y*3 + x*5) % 17) / 256 - 0.03."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(SIZE), np.arange(SIZE), indexing="ij")
    k = ((c * 7 + y * 3 + x * 5) % 17).astype(np.float32)
    return (k / np.float32(256.0) - np.float32(0.03))[None].astype(np.float32)


def main():
    os.makedirs(OUT, exist_ok=True)
    model = build()
    data = model.SerializeToString()
    path = os.path.join(OUT, "tiny-pad.onnx")
    with open(path, "wb") as f:
        f.write(data)
    sha = hashlib.sha256(data).hexdigest()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    x = golden_input()
    logits = sess.run(None, {"crop": x})[0].ravel()
    stripes = np.zeros((1, 3, SIZE, SIZE), np.float32)
    for col in range(SIZE):
        stripes[0, (col // 2) % 3, :, col] = 0.5
    stripe_logits = sess.run(None, {"crop": stripes})[0].ravel()
    flat_logits = sess.run(None, {"crop": np.zeros((1, 3, SIZE, SIZE), np.float32)})[0].ravel()
    assert stripe_logits[0] > stripe_logits[1] and flat_logits[1] > flat_logits[0], (stripe_logits, flat_logits)
    with open(os.path.join(OUT, "tiny-pad.golden.json"), "w") as f:
        json.dump({"input": "((c*7 + y*3 + x*5) % 17) / 256 - 0.03, NCHW [1, 3, 32, 32]",
                   "onnxruntime": ort.__version__, "logits": [float(v) for v in logits]}, f, indent=1)
        f.write("\n")
    manifest = f"""# Test fixture for the liveness-model slot: a tiny hand-set network (a colour-stripe
# detector), NOT an anti-spoofing model. Generated by models/tools/liveness/make_pad_fixture.py.
schema = 1
id = "tiny-pad-fixture"
kind = "liveness"
family = "pad-crop"
license = "Apache-2.0"

[source]
registry = "generated"
package = "models/tools/liveness/make_pad_fixture.py"
version = "1"
artifact = "tiny-pad.onnx"
artifact_sha256 = "{sha}"
path = "tiny-pad.onnx"
sha256 = "{sha}"

[[files]]
precision = "f32"
file = "tiny-pad.onnx"
sha256 = "{sha}"
default = true

[input]
name = "crop"
layout = "nchw"
channels = "rgb"
mean = [127.5, 127.5, 127.5]
scale = 0.0078431373
width = {SIZE}
height = {SIZE}

[output]
name = "logits"
dim = 2

[liveness]
crop_scale = 0.6
live_index = 1
activation = "softmax"
"""
    with open(os.path.join(OUT, "tiny-pad.toml"), "w") as f:
        f.write(manifest)
    print(f"wrote {path} ({len(data)} bytes, sha256 {sha}); golden logits {logits}")


if __name__ == "__main__":
    main()
