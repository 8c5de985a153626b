// The face-mask pane: ultralytics' letterbox, the raw YOLO head (1 × (4 + classes) × anchors, boxes as
// centre x, centre y, width, height in input pixels, class scores after the sigmoid), and class-aware
// greedy NMS — the steps of ultralytics' non_max_suppression, so the page matches the Python predictions.
import { ort, sizeOf } from "./runtime.js";

const PAD_GREY = 114;
const MAX_CANDIDATES = 30000; // ultralytics' max_nms
export const MAX_DETECTIONS = 300;
export const CLASS_COLOURS = ["#00c853", "#d50000", "#ffab00", "#2962ff", "#aa00ff", "#00b8d4"];

/** Letterbox `source` into an imgsz × imgsz float tensor in [0, 1] (grey 114 borders, as ultralytics' LetterBox). */
export function letterbox(source, imgsz) {
  const [width, height] = sizeOf(source);
  const ratio = Math.min(imgsz / width, imgsz / height);
  const newWidth = Math.round(width * ratio);
  const newHeight = Math.round(height * ratio);
  const left = Math.round((imgsz - newWidth) / 2 - 0.1);
  const top = Math.round((imgsz - newHeight) / 2 - 0.1);
  const canvas = new OffscreenCanvas(imgsz, imgsz);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.fillStyle = `rgb(${PAD_GREY}, ${PAD_GREY}, ${PAD_GREY})`;
  context.fillRect(0, 0, imgsz, imgsz);
  context.imageSmoothingQuality = "high";
  context.drawImage(source, left, top, newWidth, newHeight);
  const pixels = context.getImageData(0, 0, imgsz, imgsz).data;
  const plane = imgsz * imgsz;
  const data = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) data[c * plane + p] = pixels[4 * p + c] / 255;
  }
  return { tensor: new ort.Tensor("float32", data, [1, 3, imgsz, imgsz]), ratio, left, top, width, height };
}

function iou(a, b) {
  const w = Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0);
  const h = Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  return inter / ((a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter);
}

/** Detections from the raw head output: score > conf, then greedy NMS per class at `iouThreshold`. */
export function decode(output, conf, iouThreshold, maxDetections = MAX_DETECTIONS) {
  const [, rows, anchors] = output.dims;
  const classes = rows - 4;
  const data = output.data;
  let candidates = [];
  for (let i = 0; i < anchors; i++) {
    let best = -Infinity;
    let cls = 0;
    for (let c = 0; c < classes; c++) {
      const score = data[(4 + c) * anchors + i];
      if (score > best) [best, cls] = [score, c];
    }
    if (best <= conf) continue;
    const [cx, cy, w, h] = [0, 1, 2, 3].map((k) => data[k * anchors + i]);
    candidates.push({ x0: cx - w / 2, y0: cy - h / 2, x1: cx + w / 2, y1: cy + h / 2, score: best, cls });
  }
  candidates.sort((a, b) => b.score - a.score);
  candidates = candidates.slice(0, MAX_CANDIDATES);
  const kept = [];
  for (const box of candidates) {
    if (kept.length >= maxDetections) break;
    if (kept.every((k) => k.cls !== box.cls || iou(k, box) <= iouThreshold)) kept.push(box);
  }
  return kept;
}

/** Boxes from letterboxed input pixels back to the original image's pixels, clipped to it. */
export function unletterbox(boxes, { ratio, left, top, width, height }) {
  const clip = (v, max) => Math.min(Math.max(v, 0), max);
  return boxes.map((b) => ({
    ...b,
    x0: clip((b.x0 - left) / ratio, width), y0: clip((b.y0 - top) / ratio, height),
    x1: clip((b.x1 - left) / ratio, width), y1: clip((b.y1 - top) / ratio, height),
  }));
}

/** Detections in `source`'s pixels, with what produced them: the letterboxed input (its tensor and geometry) and
 * the raw head output, so that a test can rerun each step in Python. */
export async function detectWithInputs(session, entry, source, conf, iouThreshold) {
  const input = letterbox(source, entry.image_size);
  const output = (await session.run({ [entry.input]: input.tensor }))[entry.output];
  const { tensor, ...geometry } = input;
  return { detections: unletterbox(decode(output, conf, iouThreshold), input), input: tensor, letterbox: geometry, raw: output };
}

export async function detect(session, entry, source, conf, iouThreshold) {
  return (await detectWithInputs(session, entry, source, conf, iouThreshold)).detections;
}

/** Draw the source at its own size with each box and its label; `canvas` pixels map 1:1 to image pixels.
 * Returns the colour of each box, in order. */
export function drawDetections(canvas, source, detections, classNames) {
  const [width, height] = sizeOf(source);
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.drawImage(source, 0, 0, width, height);
  const line = Math.max(2, Math.round(Math.min(width, height) / 150));
  context.lineWidth = line;
  context.font = `${Math.max(12, 4 * line)}px sans-serif`;
  context.textBaseline = "bottom";
  return detections.map((d) => {
    const colour = CLASS_COLOURS[d.cls % CLASS_COLOURS.length];
    context.strokeStyle = colour;
    context.strokeRect(d.x0, d.y0, d.x1 - d.x0, d.y1 - d.y0);
    const label = `${classNames[d.cls] ?? d.cls} ${d.score.toFixed(2)}`;
    const textWidth = context.measureText(label).width;
    const textTop = Math.max(d.y0, 4 * line + 4);
    context.fillStyle = colour;
    context.fillRect(d.x0 - line / 2, textTop - 4 * line - 4, textWidth + 6, 4 * line + 4);
    context.fillStyle = "#fff";
    context.fillText(label, d.x0 + 3, textTop - 2);
    return colour;
  });
}
