// The page: the style controls, a photo stylized and offered at full size, the webcam live.
// What it runs and how is stylize.js; what it was exported with is site.json.
// URL options: ?backend=wasm skips WebGPU, ?threads=N sets the WebAssembly threads.
import { finish, openNetwork, toPlanes } from './stylize.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const config = await (await fetch('site.json')).json();
const MIN_SIDE = 8; // the network's first 9x9 convolution pads 4 px by reflection
let network = null;
let photo = null; // { name, image: ImageData, stylized: planes, summary }
let stream = null;
let renders = 0;

document.title = $('title').textContent = `Style transfer: ${config.title}`;
$('limits').textContent =
  `Photos up to ${config.max_megapixels} megapixels; over ` +
  `${(config.pass_pixels / 1e6).toFixed(1)} megapixels they are stylized in tiles.`;
const sliders = setUpStyles(config.styles);

function setUpStyles(styles) {
  if (!styles) return [];
  $('style-choice').hidden = false;
  for (const name of [...styles, 'blend']) $('style').add(new Option(name, name));
  return styles.map((name) => {
    const label = document.createElement('label');
    const slider = Object.assign(document.createElement('input'), {
      type: 'range', min: 0, max: 1, step: 0.05, value: 1 / styles.length,
    });
    slider.dataset.style = name;
    label.append(`${name} `, slider);
    $('blend').append(label);
    slider.addEventListener('change', () => stylizePhoto());
    return slider;
  });
}

// The style input of a network of several styles: one style, or the blend's sliders
// normalized to sum to 1 (as nst-fast stylize --style a=1,b=3 is).
function styleWeights() {
  if (!config.styles) return null;
  const choice = $('style').value;
  if (choice !== 'blend') return Float32Array.from(config.styles, (name) => +(name === choice));
  const values = sliders.map((slider) => Number(slider.value));
  const total = values.reduce((a, b) => a + b, 0);
  if (total <= 0) throw new Error('a blend needs a style weight above 0');
  return Float32Array.from(values, (v) => v / total);
}

function styleName() {
  if (!config.styles) return config.title;
  const choice = $('style').value;
  if (choice !== 'blend') return choice;
  return sliders.map((s) => `${s.dataset.style}=${Number(s.value).toFixed(2)}`).join(',');
}

const finishing = () => ({
  strength: Number($('strength').value),
  preserveColour: $('preserve').checked,
});

const say = (line) => { $('status').textContent = line; };

async function readPhoto(file) {
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.src = url;
    // The size is known once the image loads, before it is drawn (decoded in full).
    await new Promise((loaded, failed) => { img.onload = loaded; img.onerror = failed; })
      .catch(() => { throw new Error(`${file.name}: not an image this browser reads; pick a photo`); });
    const { naturalWidth: w, naturalHeight: h } = img;
    const megapixels = (w * h) / 1e6;
    if (megapixels > config.max_megapixels) {
      throw new Error(`${file.name}: ${w}x${h} px is ${Number(megapixels.toPrecision(2))} megapixels; ` +
        `this page takes photos up to ${config.max_megapixels}`);
    }
    if (Math.min(w, h) < MIN_SIDE) throw new Error(`${file.name}: ${w}x${h} px; under ${MIN_SIDE} px a side`);
    const canvas = Object.assign(document.createElement('canvas'), { width: w, height: h });
    const context = canvas.getContext('2d', { willReadFrequently: true });
    context.drawImage(img, 0, 0);
    return context.getImageData(0, 0, w, h);
  } finally {
    URL.revokeObjectURL(url);
  }
}

async function pickPhoto() {
  const file = $('photo').files[0];
  if (!file) return;
  try {
    say(`${file.name}: reading…`);
    photo = { name: file.name, image: await readPhoto(file) };
  } catch (err) {
    say(`⚠ ${err.message}`);
    return;
  }
  const original = $('original');
  [original.width, original.height] = [photo.image.width, photo.image.height];
  original.getContext('2d').putImageData(photo.image, 0, 0);
  await stylizePhoto();
}

async function stylizePhoto() {
  if (!photo || !network) return;
  const { name, image } = photo;
  try {
    const started = performance.now();
    let passes = 1;
    say(`${name}: stylizing…`);
    photo.stylized = await network.stylize(image, styleWeights(), (done, total) => {
      passes = total;
      if (total > 1) say(`${name}: ${done} of ${total} tiles stylized`);
    });
    const ms = performance.now() - started;
    const how = passes > 1 ? `${passes} tiles` : 'one pass';
    photo.summary = `${name}: ${image.width}x${image.height} px stylized with ${styleName()} ` +
      `in ${ms.toFixed(0)} ms (${how}).`;
    await render();
  } catch (err) {
    say(`⚠ ${err.message}`);
  }
}

// The finish (strength, colours) on the stylized photo, shown and offered as a PNG;
// changing it does not run the network again.
async function render() {
  if (!photo?.stylized) return;
  const out = finish(photo.stylized, photo.image, finishing());
  const canvas = $('result');
  [canvas.width, canvas.height] = [out.width, out.height];
  canvas.getContext('2d').putImageData(out, 0, 0);
  const blob = await new Promise((done) => canvas.toBlob(done, 'image/png'));
  const link = $('download');
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
  const stem = photo.name.replace(/\.[^.]*$/, '');
  link.download = `${stem}-${styleName().replace(/[^\w.-]+/g, '_')}.png`;
  link.hidden = false;
  link.dataset.renders = ++renders; // what tests wait on
  say(photo.summary);
}

async function toggleCamera() {
  if (stream) {
    stream.getTracks().forEach((track) => track.stop());
    stream = null;
    $('camera').textContent = 'Start the camera';
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (err) {
    $('fps').textContent = `⚠ no camera: ${err.message}`;
    return;
  }
  $('camera').textContent = 'Stop the camera';
  const video = $('video');
  video.srcObject = stream;
  await video.play();
  streamFrames(video);
}

// Frames one after another, each as soon as the last is shown: the rate is the network's.
async function streamFrames(video) {
  const grab = document.createElement('canvas');
  const context = grab.getContext('2d', { willReadFrequently: true });
  const live = $('live');
  let frames = 0;
  let rate = null;
  let last = performance.now();
  while (stream) {
    const longer = Number($('frame-size').value);
    const scale = Math.min(1, longer / Math.max(video.videoWidth, video.videoHeight));
    const w = Math.max(MIN_SIDE, Math.round(video.videoWidth * scale));
    const h = Math.max(MIN_SIDE, Math.round(video.videoHeight * scale));
    [grab.width, grab.height] = [w, h];
    context.drawImage(video, 0, 0, w, h);
    const frame = context.getImageData(0, 0, w, h);
    const started = performance.now();
    let stylized;
    try {
      stylized = await network.run(toPlanes(frame, 0, 0, w, h, w, h), styleWeights());
    } catch (err) {
      $('fps').textContent = `⚠ ${err.message}`;
      await new Promise((next) => setTimeout(next, 500));
      continue;
    }
    const ms = performance.now() - started;
    [live.width, live.height] = [w, h];
    live.getContext('2d').putImageData(finish(stylized, frame, finishing()), 0, 0);
    live.dataset.frames = ++frames;
    const now = performance.now();
    rate = rate === null ? 1000 / (now - last) : 0.7 * rate + 300 / (now - last);
    last = now;
    $('fps').textContent = `${ms.toFixed(0)} ms a frame at ${w}x${h} px, ${rate.toFixed(1)} frames/s`;
    await new Promise((next) => setTimeout(next, 0)); // let the page handle its events
  }
}

// For scripts/bench/web_export.py: milliseconds per pass at width x height, after one
// untimed pass (the first compiles and allocates).
async function timeFrames(width, height, runs = 5) {
  const planes = { data: new Float32Array(3 * width * height), width, height };
  for (let i = 0; i < planes.data.length; i++) planes.data[i] = (i % 97) / 96;
  await network.run(planes, styleWeights());
  const times = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await network.run(planes, styleWeights());
    times.push(performance.now() - started);
  }
  return times;
}

$('photo').addEventListener('change', pickPhoto);
$('style').addEventListener('change', () => {
  $('blend').hidden = $('style').value !== 'blend';
  stylizePhoto();
});
$('strength').addEventListener('input', () => { $('strength-value').value = $('strength').value; });
$('strength').addEventListener('change', render);
$('preserve').addEventListener('change', render);
$('camera').addEventListener('click', toggleCamera);

try {
  const threads = params.has('threads') ? Number(params.get('threads')) : null;
  network = await openNetwork(config, { backend: params.get('backend') ?? 'auto', threads });
  const weights = config.weights === 'fp16' ? ', fp16 weights' : '';
  $('engine').textContent = `Running in this browser on ${network.backend} (ONNX Runtime Web ` +
    `${config.runtime_version}${weights}).`;
  window.nstFast = { backend: network.backend, timeFrames };
  $('camera').disabled = false; // frames need the network; a photo waits for it
  await stylizePhoto(); // a photo picked while the network loaded
} catch (err) {
  $('engine').textContent = `⚠ The network did not load: ${err.message}`;
}
