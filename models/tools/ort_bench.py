#!/usr/bin/env python3
"""Time one ONNX model with onnxruntime on ONE thread.

  ort_bench.py --model FILE --input-shape 1,3,480,640 [--input-file raw_f32_le.bin]
               [--iterations 50] [--warmup 5] [--keep-qdq]

Session: CPUExecutionProvider, intra_op_num_threads=1, inter_op_num_threads=1,
ORT_SEQUENTIAL execution, graph optimizations ORT_ENABLE_ALL, and session config
"session.disable_quant_qdq" = "1" so that weight-only DequantizeLinear nodes on
constant weights are constant-folded at load (as tract does). Without it
onnxruntime keeps them to preserve QDQ patterns and dequantizes on every run
(YuNet int8w: ~3x slower than f32). --keep-qdq restores onnxruntime's default.
The option changes nothing for models without DequantizeLinear.
Input: the first model input, float32, filled from --input-file (raw
little-endian float32, exactly prod(shape) values) or else with a fixed
pseudo-random 0..255 pattern (seed 0).
If the requested shape differs from a static input shape the model declares
(YuNet declares 1x3x640x640), the model is loaded with its input dims made
symbolic and the output / value_info shapes cleared (in memory only); a note
goes to stderr.

Prints exactly one JSON line on stdout:
  {"model": FILE, "median_ms": .., "p95_ms": .., "mean_ms": .., "iterations": N}
Each iteration is one session.run() timed with time.perf_counter_ns().
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def relaxed(model: onnx.ModelProto) -> bytes:
    for i, d in enumerate(model.graph.input[0].type.tensor_type.shape.dim):
        d.Clear()
        d.dim_param = f"d{i}"
    for o in model.graph.output:
        for d in o.type.tensor_type.shape.dim:
            d.Clear()
    del model.graph.value_info[:]
    return model.SerializeToString()


def main(argv=None):
    ap = argparse.ArgumentParser(description="onnxruntime single-thread latency")
    ap.add_argument("--model", required=True)
    ap.add_argument("--input-shape", required=True, help="comma separated, e.g. 1,3,480,640")
    ap.add_argument("--input-file", help="raw little-endian float32")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--keep-qdq", action="store_true",
                    help="do not set session.disable_quant_qdq (onnxruntime default QDQ handling)")
    args = ap.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0:
        ap.error("--iterations must be >= 1 and --warmup >= 0")

    shape = [int(s) for s in args.input_shape.split(",")]
    model = onnx.load(args.model)
    inp = model.graph.input[0]
    declared = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(declared) != len(shape):
        ap.error(f"model input {inp.name} has rank {len(declared)}, got shape {shape}")
    if any(d is not None and d != s for d, s in zip(declared, shape)):
        print(f"ort_bench: {args.model}: declared input {declared} != {shape}; "
              "running with relaxed input/output shapes", file=sys.stderr)
        source = relaxed(model)
    else:
        source = args.model

    if args.input_file:
        x = np.fromfile(args.input_file, dtype="<f4")
        if x.size != int(np.prod(shape)):
            ap.error(f"{args.input_file}: {x.size} float32 values, shape {shape} needs {int(np.prod(shape))}")
        x = x.astype(np.float32).reshape(shape)
    else:
        x = np.random.default_rng(0).uniform(0, 255, size=shape).astype(np.float32)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if not args.keep_qdq:
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: x}
    for _ in range(args.warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(args.iterations):
        t0 = time.perf_counter_ns()
        sess.run(None, feeds)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    t = np.array(times)
    print(json.dumps({
        "model": args.model,
        "median_ms": round(float(np.median(t)), 4),
        "p95_ms": round(float(np.percentile(t, 95)), 4),
        "mean_ms": round(float(t.mean()), 4),
        "iterations": args.iterations,
    }))


if __name__ == "__main__":
    sys.exit(main())
