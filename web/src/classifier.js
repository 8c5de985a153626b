// The recognise-a-face pane: a square face crop (around the detector's best box when the face-mask model is
// loaded, else the centre of the photo) resized to the face model's input, then either a softmax over the
// identities (a "classifier" entry) or dlib's 128-d descriptor and the gallery identity whose photos lie nearest on
// average, when below the gallery's open-set threshold, else "unknown" (a "descriptor" entry, as `make recognize`).
import { ort, sizeOf } from "./runtime.js";

/** The square crop the Python side makes (faces/crop.py `face_square`, the same rule) (`margin` of the box added on each side), clipped to the image. */
export function faceSquare(source, box, margin) {
  const [width, height] = sizeOf(source);
  if (!box) {
    const side = Math.min(width, height);
    return { x: (width - side) / 2, y: (height - side) / 2, side };
  }
  const bw = box.x1 - box.x0;
  const bh = box.y1 - box.y0;
  const side = Math.min(Math.max(bw, bh) * (1 + 2 * margin), width, height);
  const cx = (box.x0 + box.x1) / 2;
  const cy = (box.y0 + box.y1) / 2;
  return {
    x: Math.min(Math.max(cx - side / 2, 0), width - side),
    y: Math.min(Math.max(cy - side / 2, 0), height - side),
    side,
  };
}

function softmax(logits) {
  const max = Math.max(...logits);
  const exps = logits.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / sum);
}

/** The crop `square` of `source` drawn on `canvas` at the entry's input size: float32 NCHW RGB × input_scale. */
function cropTensor(entry, source, square, canvas) {
  const size = entry.image_size;
  canvas.width = size;
  canvas.height = size;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  context.drawImage(source, square.x, square.y, square.side, square.side, 0, 0, size, size);
  const pixels = context.getImageData(0, 0, size, size).data;
  const plane = size * size;
  const data = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) data[c * plane + p] = pixels[4 * p + c] * entry.input_scale;
  }
  return new ort.Tensor("float32", data, [1, 3, size, size]);
}

/** Identities ranked by probability for the crop `square` of `source`; the crop is drawn on `canvas`. */
export async function recognise(session, entry, source, square, canvas) {
  const input = cropTensor(entry, source, square, canvas);
  const logits = Array.from((await session.run({ [entry.input]: input }))[entry.output].data);
  const probabilities = entry.output_kind === "probabilities" ? logits : softmax(logits);
  return probabilities
    .map((probability, index) => ({ name: entry.class_names[index] ?? String(index), probability }))
    .sort((a, b) => b.probability - a.probability);
}

/** dlib's descriptor (128 floats) of the crop `square` of `source`; the crop is drawn on `canvas`. */
export async function describe(session, entry, source, square, canvas) {
  const input = cropTensor(entry, source, square, canvas);
  return Array.from((await session.run({ [entry.input]: input }))[entry.output].data);
}

/** The gallery's identities ranked by their score for `descriptor`, lowest first: the mean Euclidean distance to
 * the identity's photos' descriptors (faces/gallery.py `Gallery.person_scores`); the name is the first identity's
 * when its score is below `threshold` (`Gallery.identify`, the gallery's open-set threshold), else "unknown"
 * (always for a null threshold). */
export function identify(gallery, descriptor, threshold) {
  const distance = (row) => Math.hypot(...row.map((v, i) => v - descriptor[i]));
  const ranked = gallery
    .map((g) => ({ name: g.name, distance: g.descriptors.reduce((sum, row) => sum + distance(row), 0) / g.descriptors.length }))
    .sort((a, b) => a.distance - b.distance);
  const nearest = ranked[0];
  const named = nearest && threshold !== null && nearest.distance < threshold;
  return { name: named ? nearest.name : "unknown", distance: nearest?.distance ?? null, ranked };
}
