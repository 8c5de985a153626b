// The face-mask pane: ultralytics' letterbox, the raw YOLO head (1 × (4 + classes) × anchors, boxes as
// centre x, centre y, width, height in input pixels, class scores after the sigmoid), and class-aware
// greedy NMS — the steps of ultralytics' non_max_suppression, so the page matches the Python predictions.
import { ort, sizeOf } from "./runtime.js";
import { decode, letterboxGeometry, unletterbox } from "./boxes.js";

const PAD_GREY = 114;
export const CLASS_COLOURS = ["#00c853", "#d50000", "#ffab00", "#2962ff", "#aa00ff", "#00b8d4"];

/** Letterbox `source` into an imgsz × imgsz float tensor in [0, 1] (grey 114 borders, as ultralytics' LetterBox). */
export function letterbox(source, imgsz) {
  const [width, height] = sizeOf(source);
  const geometry = letterboxGeometry(width, height, imgsz);
  const { newWidth, newHeight, left, top } = geometry;
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
  return { tensor: new ort.Tensor("float32", data, [1, 3, imgsz, imgsz]), ...geometry };
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

/** The best face box in `source` for the recognise pane, or null: the detector on the photo, then, when it finds
 * none, on the photo centred in a grey canvas `pad` times its size (the detector learned faces a fraction of a
 * scene; a close-up face photo is larger than any it saw), the box mapped back and clipped to the photo. The rule
 * of experiments/export_web.py `face_box`, which crops the gallery's photos. */
export async function findFace(session, entry, source, conf, iouThreshold, pad) {
  const [found] = await detect(session, entry, source, conf, iouThreshold);
  if (found || !(pad > 1)) return found ?? null;
  const [width, height] = sizeOf(source);
  const canvas = new OffscreenCanvas(pad * width, pad * height);
  const left = Math.floor((pad * width - width) / 2);
  const top = Math.floor((pad * height - height) / 2);
  const context = canvas.getContext("2d");
  context.fillStyle = `rgb(${PAD_GREY}, ${PAD_GREY}, ${PAD_GREY})`;
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(source, left, top, width, height);
  const [far] = await detect(session, entry, canvas, conf, iouThreshold);
  if (!far) return null;
  const clip = (v, max) => Math.min(Math.max(v, 0), max);
  const box = { ...far, x0: clip(far.x0 - left, width), y0: clip(far.y0 - top, height), x1: clip(far.x1 - left, width), y1: clip(far.y1 - top, height) };
  return box.x1 > box.x0 && box.y1 > box.y0 ? box : null;
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

// The live view's colours, as the Python monitor's annotated video: red once the person raised an alert, orange
// while their smoothed state is an alert class, green otherwise (facemask/monitor.py _draw).
export const TRACK_COLOURS = { alerted: "#ff0000", unmasked: "#ffa500", masked: "#00a000" };

/** Draw `source` with each tracked person [{trackId, x0, y0, x1, y1}] boxed and labelled "id N state", coloured by
 * `alerts` (tracker.js MaskAlerts). Returns the colour of each box, in order. */
export function drawTracks(canvas, source, people, alerts) {
  const [width, height] = sizeOf(source);
  if (canvas.width !== width || canvas.height !== height) [canvas.width, canvas.height] = [width, height];
  const context = canvas.getContext("2d");
  context.drawImage(source, 0, 0, width, height);
  const line = Math.max(2, Math.round(Math.min(width, height) / 150));
  context.lineWidth = line;
  context.font = `${Math.max(12, 4 * line)}px sans-serif`;
  context.textBaseline = "bottom";
  return people.map((p) => {
    const record = alerts.tracks.get(p.trackId);
    const colour = record.alert ? TRACK_COLOURS.alerted : alerts.alertIds.has(record.state) ? TRACK_COLOURS.unmasked : TRACK_COLOURS.masked;
    context.strokeStyle = colour;
    context.strokeRect(p.x0, p.y0, p.x1 - p.x0, p.y1 - p.y0);
    const label = `id ${p.trackId} ${alerts.stateName(p.trackId)}`;
    const textTop = Math.max(p.y0, 4 * line + 4);
    context.fillStyle = colour;
    context.fillRect(p.x0 - line / 2, textTop - 4 * line - 4, context.measureText(label).width + 6, 4 * line + 4);
    context.fillStyle = "#fff";
    context.fillText(label, p.x0 + 3, textTop - 2);
    return colour;
  });
}
