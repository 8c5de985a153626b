// Wires the three panes to the models listed in models/manifest.json. `window.playground` holds each pane's
// latest result, for the browser test (tests/test_web.py) and for curious users in the console.
import { createSession, decodeFile, loadManifest, missingNote } from "./runtime.js";
import { generateGrid } from "./generator.js";
import { detect, drawDetections } from "./detector.js";
import { faceSquare, recognise } from "./classifier.js";

const $ = (id) => document.getElementById(id);
const state = { generated: null, detections: null, recognised: null, errors: [] };
window.playground = state;

function fail(where, error) {
  state.errors.push(`${where}: ${error.message ?? error}`);
  $(`${where}-note`).textContent = `Error: ${error.message ?? error}`;
  $(`${where}-note`).classList.add("missing");
}

function showMissing(where, note) {
  $(`${where}-note`).textContent = note;
  $(`${where}-note`).classList.add("missing");
}

/** Run `task` for the latest request only: a slider dragged fast queues one run, not one per step. */
function latestOnly(task) {
  let running = false;
  let pending = null;
  return async function run(...args) {
    pending = args;
    if (running) return;
    running = true;
    while (pending) {
      const next = pending;
      pending = null;
      await task(...next);
    }
    running = false;
  };
}

async function setUpGenerator(manifest) {
  const select = $("dcgan-model");
  const seed = $("dcgan-seed");
  if (!manifest.generators.length) return showMissing("dcgan", missingNote(manifest, "generator"));
  for (const entry of manifest.generators) select.add(new Option(entry.task, entry.task));
  const sessions = new Map();
  const run = latestOnly(async () => {
    const entry = manifest.generators.find((g) => g.task === select.value);
    if (!sessions.has(entry.task)) sessions.set(entry.task, await createSession(entry.file));
    $("dcgan-seed-value").value = seed.value;
    state.generated = { task: entry.task, ...(await generateGrid(sessions.get(entry.task), entry, Number(seed.value), $("dcgan-canvas"))) };
    $("dcgan-note").textContent = `${entry.task}: ${state.generated.count} samples, ${entry.image_size}×${entry.image_size} px, seed ${seed.value}.`;
  });
  const guarded = () => run().catch((e) => fail("dcgan", e));
  seed.addEventListener("input", guarded);
  select.addEventListener("change", guarded);
  await guarded();
}

async function setUpDetectorAndClassifier(manifest) {
  const detector = manifest.facemask ? { entry: manifest.facemask, session: await createSession(manifest.facemask.file) } : null;
  const classifier = manifest.faces ? { entry: manifest.faces, session: await createSession(manifest.faces.file) } : null;
  if (!detector) showMissing("facemask", missingNote(manifest, "facemask"));
  if (!classifier) showMissing("faces", missingNote(manifest, "faces"));
  let source = null;

  const runDetector = latestOnly(async () => {
    if (!detector || !source) return;
    const conf = Number($("facemask-conf").value);
    const iou = Number($("facemask-iou").value);
    $("facemask-conf-value").value = conf.toFixed(3);
    $("facemask-iou-value").value = iou;
    const detections = await detect(detector.session, detector.entry, source, conf, iou);
    const colours = drawDetections($("facemask-canvas"), source, detections, detector.entry.class_names);
    state.detections = { conf, iou, boxes: detections.map((d, i) => ({ ...d, colour: colours[i] })) };
    $("facemask-list").replaceChildren(...detections.map((d) => {
      const item = document.createElement("li");
      item.textContent = `${detector.entry.class_names[d.cls]} ${d.score.toFixed(3)} [${[d.x0, d.y0, d.x1, d.y1].map((v) => v.toFixed(1)).join(", ")}]`;
      return item;
    }));
    $("facemask-note").textContent = `${detections.length} box(es) at confidence > ${conf}.`;
  });
  const detectGuarded = () => runDetector().catch((e) => fail("facemask", e));

  $("facemask-file").addEventListener("change", async (event) => {
    if (!event.target.files.length) return;
    stopWebcam();
    source = await decodeFile(event.target.files[0]);
    await detectGuarded();
  });
  $("facemask-conf").addEventListener("input", detectGuarded);
  $("facemask-iou").addEventListener("input", detectGuarded);

  let stream = null;
  function stopWebcam() {
    stream?.getTracks().forEach((t) => t.stop());
    stream = null;
    $("facemask-video").hidden = true;
  }
  $("facemask-webcam").addEventListener("click", async () => {
    if (stream) return stopWebcam();
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true });
    } catch (error) {
      return fail("facemask", new Error(`webcam not available here (${error.message}); upload an image instead`));
    }
    const video = $("facemask-video");
    video.srcObject = stream;
    await video.play();
    source = video;
    const loop = async () => {
      if (!stream) return;
      await detectGuarded();
      requestAnimationFrame(loop);
    };
    loop();
  });

  $("faces-file").addEventListener("change", async (event) => {
    if (!classifier || !event.target.files.length) return;
    try {
      const photo = await decodeFile(event.target.files[0]);
      // The face-mask detector finds the face when it is loaded; its best box is the one cropped.
      const faces = detector ? await detect(detector.session, detector.entry, photo, Number($("facemask-conf").value), 0.45) : [];
      const square = faceSquare(photo, faces[0], classifier.entry.margin ?? 0);
      const ranked = await recognise(classifier.session, classifier.entry, photo, square, $("faces-canvas"));
      state.recognised = { square, ranked, faceBox: faces[0] ?? null };
      $("faces-list").replaceChildren(...ranked.slice(0, 5).map((r) => {
        const item = document.createElement("li");
        item.textContent = `${r.name}: ${(100 * r.probability).toFixed(1)} %`;
        return item;
      }));
      $("faces-note").textContent = faces[0] ? "Crop around the detected face." : "No face box (no detector or none found): centre crop.";
    } catch (error) {
      fail("faces", error);
    }
  });
}

async function start() {
  const status = $("status");
  try {
    const manifest = await loadManifest();
    await Promise.all([setUpGenerator(manifest), setUpDetectorAndClassifier(manifest)]);
    status.textContent = "Models loaded.";
    status.dataset.state = "ready";
  } catch (error) {
    status.textContent = error.message;
    status.dataset.state = "error";
    state.errors.push(`start: ${error.message}`);
  }
}

start();
