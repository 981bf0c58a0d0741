#!/usr/bin/env node
// Reference descriptors from face-api.js itself.
//
// Runs faceapi.nets.faceRecognitionNet.computeFaceDescriptor(tensor) of
// @vladmandic/face-api 1.7.15 (dist/face-api.node-wasm.js, which loads
// @tensorflow/tfjs 4.22.0 and @tensorflow/tfjs-backend-wasm) on 150x150 RGB PNG
// face chips, with the real weights from the package's model/ directory.
// No tfjs-node (it would download a native library).
//
// Must run from a directory whose node_modules holds the packages of
// models/tools/package.json (npm ci there).
//
// usage: node verify_faceapi.mjs [--backend cpu|wasm] [--base DIR] --out FILE chip.png...
//   --base: chip paths are written relative to DIR in the output.
// output: JSON [{ "chip": PATH, "descriptor": [128 floats] }, ...], plus a
// "meta" object with the versions and backend, as { meta, descriptors }.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(path.join(process.cwd(), 'noop.js'));

function parseArgs(argv) {
  const args = { backend: 'cpu', base: null, out: null, chips: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--backend') args.backend = argv[++i];
    else if (a === '--base') args.base = argv[++i];
    else if (a === '--out') args.out = argv[++i];
    else args.chips.push(a);
  }
  if (!args.out || args.chips.length === 0) {
    console.error('usage: node verify_faceapi.mjs [--backend cpu|wasm] [--base DIR] --out FILE chip.png...');
    process.exit(2);
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const tf = require('@tensorflow/tfjs');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
const { PNG } = require('pngjs');

if (faceapi.tf.version_core !== tf.version_core) throw new Error('face-api and the script see different tfjs');
await tf.setBackend(args.backend);
await tf.ready();
if (tf.getBackend() !== args.backend) throw new Error(`backend ${args.backend} not active`);

const modelDir = path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json')), 'model');
await faceapi.nets.faceRecognitionNet.loadFromDisk(modelDir);

const descriptors = [];
for (const file of args.chips) {
  const png = PNG.sync.read(fs.readFileSync(file), { skipRescale: false });
  if (png.width !== 150 || png.height !== 150) throw new Error(`${file}: ${png.width}x${png.height}, want 150x150`);
  // pngjs gives RGBA 8-bit; keep RGB, 0..255, HWC.
  const rgb = new Float32Array(150 * 150 * 3);
  for (let i = 0; i < 150 * 150; i++) {
    rgb[3 * i] = png.data[4 * i];
    rgb[3 * i + 1] = png.data[4 * i + 1];
    rgb[3 * i + 2] = png.data[4 * i + 2];
  }
  const t = tf.tensor3d(rgb, [150, 150, 3], 'float32');
  const d = await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(t);
  t.dispose();
  const chip = args.base ? path.relative(args.base, file) : file;
  descriptors.push({ chip, descriptor: Array.from(d) });
}

const pkg = JSON.parse(fs.readFileSync(require.resolve('@vladmandic/face-api/package.json'), 'utf8'));
const meta = {
  face_api: `${pkg.name}@${pkg.version}`,
  tfjs: tf.version_core,
  backend: tf.getBackend(),
  node: process.version,
};
fs.writeFileSync(args.out, `${JSON.stringify({ meta, descriptors }, null, 1)}\n`);
console.log(JSON.stringify({ ...meta, chips: descriptors.length, out: args.out }));
