// The face-mask head's post-processing, as ultralytics' non_max_suppression and scale_boxes do it; no browser APIs
// or onnxruntime-web here, so Node can check it against ultralytics on hand-made outputs (tests/test_web.py).

const MAX_CANDIDATES = 30000; // ultralytics' max_nms
export const MAX_DETECTIONS = 300;

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

/** Python's round(), halves to even, as ultralytics rounds (Math.round takes halves up). */
export function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Where ultralytics' LetterBox (auto=False) puts a width × height image in the imgsz × imgsz input: the scale
 * `ratio`, the rounded content size newWidth × newHeight (at least 1 px) and its offsets `left`, `top`, in pixels. */
export function letterboxGeometry(width, height, imgsz) {
  const ratio = Math.min(imgsz / width, imgsz / height);
  const newWidth = Math.max(roundHalfEven(width * ratio), 1);
  const newHeight = Math.max(roundHalfEven(height * ratio), 1);
  const left = roundHalfEven((imgsz - newWidth) / 2 - 0.1);
  const top = roundHalfEven((imgsz - newHeight) / 2 - 0.1);
  return { ratio, newWidth, newHeight, left, top, width, height };
}

/** Boxes from letterboxed input pixels back to the original image's pixels, clipped to it. As ultralytics'
 * scale_boxes, each axis is divided by its own gain, the rounded content size over the image's (newHeight / height
 * differs from `ratio` by up to half a pixel in the input). */
export function unletterbox(boxes, { newWidth, newHeight, left, top, width, height }) {
  const clip = (v, max) => Math.min(Math.max(v, 0), max);
  const gainX = newWidth / width;
  const gainY = newHeight / height;
  return boxes.map((b) => ({
    ...b,
    x0: clip((b.x0 - left) / gainX, width), y0: clip((b.y0 - top) / gainY, height),
    x1: clip((b.x1 - left) / gainX, width), y1: clip((b.y1 - top) / gainY, height),
  }));
}
