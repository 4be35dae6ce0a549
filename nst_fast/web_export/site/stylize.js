// The network in the browser: ONNX Runtime Web and the model loaded, an image stylized
// (in overlapping tiles when it is large, as nst_fast/tiling.py does) and finished
// (preserve colours, strength) as nst_fast/colour.py does. Images here are "planes":
// { data: Float32Array of 3 x height x width RGB in [0, 1], width, height }.

// ONNX Runtime Web: the WebGPU build where the browser offers a WebGPU adapter, else the
// smaller WebAssembly-only build. backend 'wasm' skips WebGPU; threads overrides the
// number of WebAssembly threads (more than one needs a cross-origin isolated page).
export async function openNetwork(config, { backend = 'auto', threads = null } = {}) {
  const base = new URL(config.runtime, location.href).href;
  const response = await fetch(config.model);
  if (!response.ok) throw new Error(`${config.model}: ${response.status} ${response.statusText}`);
  const model = new Uint8Array(await response.arrayBuffer());
  if (backend !== 'wasm' && navigator.gpu) {
    const adapter = await navigator.gpu.requestAdapter().catch(() => null);
    if (adapter) {
      try {
        const ort = await import(`${base}ort.webgpu.min.mjs`);
        ort.env.wasm.wasmPaths = base;
        const session = await ort.InferenceSession.create(model.slice(), {
          executionProviders: ['webgpu'],
        });
        return new Network(ort, session, 'WebGPU', config);
      } catch (err) {
        console.warn('WebGPU did not start; WebAssembly instead:', err);
      }
    }
  }
  const ort = await import(`${base}ort.wasm.min.mjs`);
  ort.env.wasm.wasmPaths = base;
  // ONNX Runtime's default is half the cores; a page stylizing is the one thing running.
  const cores = navigator.hardwareConcurrency || 1;
  const count = threads ?? (self.crossOriginIsolated ? Math.min(4, cores) : 1);
  ort.env.wasm.numThreads = count;
  const session = await ort.InferenceSession.create(model, { executionProviders: ['wasm'] });
  const label = `WebAssembly, ${count} thread${count === 1 ? '' : 's'}`;
  return new Network(ort, session, label, config);
}

class Network {
  constructor(ort, session, backend, config) {
    this.ort = ort;
    this.session = session;
    this.backend = backend;
    this.config = config;
    this.queue = Promise.resolve(); // a session runs one call at a time
  }

  // One pass: planes in, planes out (clamped to [0, 1]); weights: the style weights of a
  // network of several styles (a Float32Array summing to 1), null for one of one style.
  run(planes, weights) {
    const job = this.queue.then(async () => {
      const { width, height } = planes;
      const feeds = { image: new this.ort.Tensor('float32', planes.data, [1, 3, height, width]) };
      if (weights) feeds.style = new this.ort.Tensor('float32', weights, [weights.length]);
      const results = await this.session.run(feeds);
      const output = results[this.session.outputNames[0]];
      const data = Float32Array.from(output.data, (v) => Math.min(1, Math.max(0, v)));
      output.dispose?.();
      return { data, width, height };
    });
    this.queue = job.catch(() => {});
    return job;
  }

  // A whole image (ImageData): one pass where it has at most config.pass_pixels pixels,
  // else overlapping tiles blended with a cosine ramp, as nst_fast.tiling.stylize_tiled
  // (each tile normalized with its own statistics, as for any exported network: seams
  // can show faintly). tick(done, total) reports tiles.
  async stylize(image, weights, tick = () => {}) {
    const { width, height } = image;
    const { pass_pixels: passPixels, overlap: asked, multiple } = this.config;
    if (width * height <= passPixels) {
      const result = await this.run(toPlanes(image, 0, 0, width, height, width, height), weights);
      tick(1, 1);
      return result;
    }
    const wanted = Math.max(4 * asked, Math.floor(Math.sqrt(passPixels)));
    const tile = Math.max(multiple, Math.floor(wanted / multiple) * multiple);
    const overlap = Math.floor(Math.min(asked, Math.floor(tile / 2)) / multiple) * multiple;
    // Tiles of the image reflection-padded to a multiple of the stride, as the network
    // pads a whole image, so they line up with one pass over it.
    const paddedW = Math.ceil(width / multiple) * multiple;
    const paddedH = Math.ceil(height / multiple) * multiple;
    const tileW = Math.min(tile, paddedW);
    const tileH = Math.min(tile, paddedH);
    const xs = tileStarts(paddedW, tileW, overlap, multiple);
    const ys = tileStarts(paddedH, tileH, overlap, multiple);
    const sum = new Float32Array(3 * width * height);
    // Every tile's weight is a row ramp times a column ramp, so their sum is too.
    const totalX = new Float32Array(width);
    const totalY = new Float32Array(height);
    let done = 0;
    for (const y of ys) {
      const wy = ramp(tileH, overlap, y > 0, y + tileH < paddedH);
      for (const x of xs) {
        const wx = ramp(tileW, overlap, x > 0, x + tileW < paddedW);
        const crop = toPlanes(image, x, y, tileW, tileH, width, height);
        const out = (await this.run(crop, weights)).data;
        for (let c = 0; c < 3; c++) {
          for (let j = 0; j < tileH && y + j < height; j++) {
            const row = (c * height + y + j) * width + x;
            const tileRow = (c * tileH + j) * tileW;
            for (let i = 0; i < tileW && x + i < width; i++) {
              sum[row + i] += wy[j] * wx[i] * out[tileRow + i];
            }
          }
        }
        if (y === ys[0]) for (let i = 0; i < tileW && x + i < width; i++) totalX[x + i] += wx[i];
        tick(++done, xs.length * ys.length);
      }
      for (let j = 0; j < tileH && y + j < height; j++) totalY[y + j] += wy[j];
    }
    for (let c = 0; c < 3; c++) {
      for (let j = 0; j < height; j++) {
        for (let i = 0; i < width; i++) sum[(c * height + j) * width + i] /= totalY[j] * totalX[i];
      }
    }
    return { data: sum, width, height };
  }
}

// A width x height crop of an ImageData at (x, y) as planes; rows and columns past the
// image's right and bottom edges mirror it (PyTorch's reflection padding).
export function toPlanes(image, x, y, width, height, imageW, imageH) {
  const data = new Float32Array(3 * width * height);
  const reflect = (i, n) => (i < n ? i : 2 * (n - 1) - i);
  for (let j = 0; j < height; j++) {
    const sy = reflect(y + j, imageH);
    for (let i = 0; i < width; i++) {
      const at = 4 * (sy * imageW + reflect(x + i, imageW));
      for (let c = 0; c < 3; c++) data[(c * height + j) * width + i] = image.data[at + c] / 255;
    }
  }
  return { data, width, height };
}

// nst_fast.tiling.tile_starts: tiles of `tile` px covering `length`, overlapping by at
// least `overlap`, starting on multiples of `multiple`, the last one flush with the end.
export function tileStarts(length, tile, overlap, multiple) {
  if (length <= tile) return [0];
  const step = Math.max(multiple, Math.floor((tile - overlap) / multiple) * multiple);
  const starts = [];
  for (let s = 0; s < length - tile; s += step) starts.push(s);
  const last = Math.floor((length - tile) / multiple) * multiple;
  if (starts[starts.length - 1] !== last) starts.push(last);
  return starts;
}

// nst_fast.tiling.ramp: a tile's blend weights along one side: 0 over the outer quarter of
// the overlap where it meets a neighbour (what edge padding disturbs), a raised cosine
// over the middle half, 1 elsewhere.
export function ramp(length, overlap, rise, fall) {
  const weights = new Float32Array(length).fill(1);
  const n = Math.min(overlap, Math.floor(length / 2));
  const margin = Math.floor(n / 4);
  if (n === 0) return weights;
  const up = new Float32Array(n);
  const middle = n - 2 * margin;
  for (let i = 0; i < middle; i++) up[margin + i] = 0.5 - 0.5 * Math.cos((Math.PI * (i + 0.5)) / middle);
  up.fill(1, n - margin);
  if (rise) weights.set(up, 0);
  if (fall) for (let i = 0; i < n; i++) weights[length - 1 - i] = up[i];
  return weights;
}

// nst_fast.colour.Finish: the stylized luma with the photo's chroma (ITU-R BT.601) when
// preserving colours, then strength 1 the stylization, 0 the photo. Into an ImageData
// (the photo's alpha kept, as nst-fast stylize keeps it).
export function finish(stylized, content, { strength = 1, preserveColour = false } = {}) {
  const { width, height, data } = stylized;
  const out = new ImageData(width, height);
  const n = width * height;
  for (let p = 0; p < n; p++) {
    const r0 = content.data[4 * p] / 255;
    const g0 = content.data[4 * p + 1] / 255;
    const b0 = content.data[4 * p + 2] / 255;
    let r = data[p];
    let g = data[n + p];
    let b = data[2 * n + p];
    if (preserveColour) {
      const luma = 0.299 * r + 0.587 * g + 0.114 * b;
      const cb = -0.168736 * r0 - 0.331264 * g0 + 0.5 * b0;
      const cr = 0.5 * r0 - 0.418688 * g0 - 0.081312 * b0;
      r = clamp(luma + 1.402 * cr);
      g = clamp(luma - 0.344136 * cb - 0.714136 * cr);
      b = clamp(luma + 1.772 * cb);
    }
    if (strength < 1) {
      r = r0 + strength * (r - r0);
      g = g0 + strength * (g - g0);
      b = b0 + strength * (b - b0);
    }
    out.data[4 * p] = 255 * r; // a Uint8ClampedArray rounds to the nearest level
    out.data[4 * p + 1] = 255 * g;
    out.data[4 * p + 2] = 255 * b;
    out.data[4 * p + 3] = content.data[4 * p + 3]; // a photo's transparency kept
  }
  return out;
}

const clamp = (v) => Math.min(1, Math.max(0, v));
