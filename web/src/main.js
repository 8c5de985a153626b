// Wires the three panes to the models listed in models/manifest.json. `window.playground` holds each pane's
// latest result, for the browser test (tests/test_web.py) and for curious users in the console.
import { createSession, decodeFile, fetchExample, loadManifest } from "./runtime.js";
import { galleryNote, missingNote, trainedNote } from "./notes.js";
import { generateGrid } from "./generator.js";
import { detect, detectWithInputs, drawDetections, drawTracks, findFace } from "./detector.js";
import { ByteTracker, MaskAlerts } from "./tracker.js";
import { describe, faceSquare, identify, recognise } from "./classifier.js";

const $ = (id) => document.getElementById(id);
const state = { generated: null, detections: null, live: null, recognised: null, errors: [] };
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

/** The pane's line on what its model learned (notes.js `trainedNote`), marked when the model did not learn. */
function showTrained(where, { text, learned }) {
  $(`${where}-trained`).textContent = text;
  $(`${where}-trained`).classList.toggle("missing", learned === false);
}

/** `photo` drawn whole on `canvas`, its longer side 150 px: what the faces pane looked at when it found no face. */
function showPhoto(canvas, photo) {
  const scale = 150 / Math.max(photo.width, photo.height);
  canvas.width = Math.round(photo.width * scale);
  canvas.height = Math.round(photo.height * scale);
  canvas.getContext("2d").drawImage(photo, 0, 0, canvas.width, canvas.height);
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
    showTrained("dcgan", trainedNote(entry));
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
  const examples = manifest.examples ?? { facemask: [], faces: [] };
  const isDescriptor = classifier?.entry.face_model === "descriptor";
  if (!detector) showMissing("facemask", missingNote(manifest, "facemask"));
  else showTrained("facemask", trainedNote(detector.entry));
  if (!classifier) showMissing("faces", missingNote(manifest, "faces"));
  else {
    $("faces-title").textContent = isDescriptor
      ? "Recognise a face (dlib's face descriptor and a gallery of known people)"
      : "Recognise a face (VGG16 transfer learning)";
    const run = classifier.entry.trained?.run_id;
    showTrained("faces", isDescriptor
      ? { text: galleryNote(classifier.entry) + (run ? ` Identities from MLflow run ${run} (${classifier.entry.trained.experiment}).` : ""), learned: null }
      : trainedNote(classifier.entry));
  }
  let source = null;
  let sourceName = null;

  const runDetector = latestOnly(async () => {
    if (!detector || !source) return;
    const conf = Number($("facemask-conf").value);
    const iou = Number($("facemask-iou").value);
    $("facemask-conf-value").value = conf.toFixed(3);
    $("facemask-iou-value").value = iou;
    const { detections, ...steps } = await detectWithInputs(detector.session, detector.entry, source, conf, iou);
    const colours = drawDetections($("facemask-canvas"), source, detections, detector.entry.class_names);
    state.detections = { source: sourceName, conf, iou, ...steps, boxes: detections.map((d, i) => ({ ...d, colour: colours[i] })) };
    $("facemask-list").replaceChildren(...detections.map((d) => {
      const item = document.createElement("li");
      item.textContent = `${detector.entry.class_names[d.cls]} ${d.score.toFixed(3)} [${[d.x0, d.y0, d.x1, d.y1].map((v) => v.toFixed(1)).join(", ")}]`;
      return item;
    }));
    $("facemask-note").textContent = `${detections.length} box(es) at confidence > ${conf}.`;
  });
  const detectGuarded = () => runDetector().catch((e) => fail("facemask", e));

  // An upload and the built-in example take the same path: a Blob, decoded, then detected.
  async function detectPhoto(blob, name) {
    stopLive();
    source = await decodeFile(blob);
    sourceName = name;
    await detectGuarded();
  }
  $("facemask-file").addEventListener("change", async (event) => {
    if (event.target.files.length) await detectPhoto(event.target.files[0], event.target.files[0].name);
  });
  const facemaskExample = examples.facemask[0];
  $("facemask-example").hidden = !(detector && facemaskExample);
  $("facemask-example").addEventListener("click", () => {
    $("facemask-file").value = ""; // the picker must not name a file the pane no longer shows
    fetchExample(facemaskExample.file).then((blob) => detectPhoto(blob, facemaskExample.file)).catch((e) => fail("facemask", e));
  });
  $("facemask-conf").addEventListener("input", detectGuarded);
  $("facemask-iou").addEventListener("input", detectGuarded);

  // The live view, webcam or video file: every frame the page manages to process is detected, tracked (tracker.js,
  // ultralytics' ByteTrack settings) and judged (one alert per person unmasked for alert_after_s seconds) with the
  // settings of `make monitor-facemask`, which the manifest carries. Time is the video's for a file, the wall
  // clock's for the webcam, as in the Python monitor. `state.live` holds the counts and the alerts so far.
  let live = null; // { video, stream } or { video, url }
  function stopLive() {
    if (!live) return;
    $("facemask-webcam").textContent = "Use the webcam";
    live.stream?.getTracks().forEach((t) => t.stop());
    live.video.pause();
    if (live.url) URL.revokeObjectURL(live.url);
    live = null;
  }

  async function startLive(name, session) {
    const monitor = manifest.monitor;
    if (!monitor) throw new Error("the manifest has no tracker settings (an older export): run make export-web again");
    live = session;
    const { video } = session;
    await video.play();
    source = null; // the sliders act on the next live frame, not through the still-image path
    sourceName = name;
    const tracker = new ByteTracker(monitor.tracker);
    const alerts = new MaskAlerts(detector.entry.class_names, monitor.alert_classes, monitor.alert_after_s, monitor.smooth_frames, name);
    const started = performance.now();
    state.live = { source: name, frames: 0, people: [], events: [], summary: alerts.summary(), ended: false };
    $("facemask-list").replaceChildren();
    $("facemask-warnings").replaceChildren();
    $("facemask-live").hidden = false;
    $("facemask-note").textContent = `Tracking ${name}: one warning per person ${monitor.alert_classes.join(" or ")} for ${monitor.alert_after_s} s.`;
    let lastTime = null;
    async function track() {
      if (session.url && video.ended) {
        state.live.ended = true;
        $("facemask-note").textContent = `${name}: done, ${state.live.frames} frames tracked.`;
        return false;
      }
      const timeS = session.url ? video.currentTime : (performance.now() - started) / 1000;
      if (timeS === lastTime || video.readyState < 2) return true; // no new frame yet
      lastTime = timeS;
      const frame = await createImageBitmap(video); // one picture for the detector and the drawing
      const conf = Number($("facemask-conf").value);
      const iou = Number($("facemask-iou").value);
      $("facemask-conf-value").value = conf.toFixed(3);
      $("facemask-iou-value").value = iou;
      try {
        const detections = await detect(detector.session, detector.entry, frame, conf, iou);
        if (live !== session) return false;
        const people = tracker.update(detections);
        const events = alerts.update(state.live.frames, timeS, people);
        drawTracks($("facemask-canvas"), frame, people, alerts);
        state.live.frames += 1;
        state.live.people = people.map((p) => ({ ...p, state: alerts.stateName(p.trackId) }));
        state.live.events.push(...events);
        state.live.summary = alerts.summary();
        $("facemask-people").value = state.live.summary.people;
        $("facemask-unmasked-people").value = state.live.summary.unmasked_people;
        $("facemask-alerts").value = state.live.summary.alerts;
        $("facemask-warnings").append(...events.map((e) => {
          const item = document.createElement("li");
          item.textContent = `id ${e.track_id}: ${e.class} at ${e.time_s.toFixed(1)} s`;
          return item;
        }));
      } finally {
        frame.close();
      }
      return true;
    }
    function step() {
      if (live !== session) return;
      track().then((more) => more && requestAnimationFrame(step)).catch((e) => {
        stopLive();
        fail("facemask", e);
      });
    }
    requestAnimationFrame(step);
  }

  $("facemask-webcam").addEventListener("click", async () => {
    if (live?.stream) return stopLive();
    stopLive();
    if (!detector) return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true });
    } catch (error) {
      return fail("facemask", new Error(`webcam not available here (${error.message}); upload an image or a video instead`));
    }
    const video = $("facemask-video");
    video.removeAttribute("src");
    video.srcObject = stream;
    $("facemask-webcam").textContent = "Stop the webcam";
    await startLive("webcam", { video, stream }).catch((e) => fail("facemask", e));
  });
  $("facemask-video-file").addEventListener("change", async (event) => {
    stopLive();
    if (!detector || !event.target.files.length) return;
    const file = event.target.files[0];
    const video = $("facemask-video");
    const url = URL.createObjectURL(file);
    video.srcObject = null;
    video.src = url;
    await startLive(file.name, { video, url }).catch((e) => fail("facemask", e));
  });

  // The face-mask detector finds the face when the export says it crops the faces (manifest faces.face_boxes: one
  // that learned); its best box is the one cropped. No box from it: nobody is named (a centre crop of a whole photo
  // describes no face). Without it the centre square is described, as the gallery's photos were.
  const faceFinder = classifier?.entry.face_boxes === "facemask" ? detector : null;
  async function recognisePhoto(blob, name) {
    if (!classifier) return;
    try {
      const photo = await decodeFile(blob);
      const conf = Number($("facemask-conf").value);
      const box = faceFinder
        ? await findFace(faceFinder.session, faceFinder.entry, photo, conf, 0.45, classifier.entry.face_pad)
        : null;
      const common = { source: name, size: [photo.width, photo.height], faceBox: box };
      if (faceFinder && !box) {
        showPhoto($("faces-canvas"), photo);
        state.recognised = { ...common, square: null, name: null, noFace: true, ranked: [] };
        $("faces-list").replaceChildren();
        $("faces-result").textContent = "No face found: nobody named.";
        $("faces-note").textContent = `The face-mask detector found no face at confidence > ${conf}.`;
        return;
      }
      const square = faceSquare(photo, box, classifier.entry.margin ?? 0);
      if (isDescriptor) {
        const { threshold } = classifier.entry;
        const descriptor = await describe(classifier.session, classifier.entry, photo, square, $("faces-canvas"));
        const found = identify(classifier.entry.gallery, descriptor, threshold);
        state.recognised = { ...common, square, noFace: false, ...found, threshold, descriptor };
        $("faces-list").replaceChildren(...found.ranked.slice(0, 5).map((r, k) => {
          const item = document.createElement("li");
          const named = k === 0 && found.name !== "unknown" ? " (named)" : "";
          item.textContent = `${r.name}: mean distance ${r.distance.toFixed(3)}${named}`;
          return item;
        }));
        const limit = threshold === null ? "no threshold" : `not below ${threshold.toFixed(3)}`;
        $("faces-result").textContent = found.name === "unknown"
          ? `unknown: nearest ${found.ranked[0]?.name} at mean distance ${found.distance?.toFixed(3)}, ${limit}`
          : `${found.name} (mean distance ${found.distance.toFixed(3)} < ${threshold.toFixed(3)})`;
      } else {
        const ranked = await recognise(classifier.session, classifier.entry, photo, square, $("faces-canvas"));
        state.recognised = { ...common, square, noFace: false, name: ranked[0]?.name ?? null, ranked };
        $("faces-list").replaceChildren(...ranked.slice(0, 5).map((r) => {
          const item = document.createElement("li");
          item.textContent = `${r.name}: ${(100 * r.probability).toFixed(1)} %`;
          return item;
        }));
        $("faces-result").textContent = ranked[0] ? ranked[0].name : "";
      }
      $("faces-note").textContent = box ? "Crop around the detected face." : `${classifier.entry.face_boxes_note ?? "the centre square is described"}.`;
    } catch (error) {
      fail("faces", error);
    }
  }
  $("faces-file").addEventListener("change", async (event) => {
    if (event.target.files.length) await recognisePhoto(event.target.files[0], event.target.files[0].name);
  });
  const picker = $("faces-example-name");
  for (const example of examples.faces) picker.add(new Option(example.name, example.file));
  $("faces-example-controls").hidden = !(classifier && examples.faces.length);
  $("faces-example").addEventListener("click", () => {
    const example = examples.faces.find((e) => e.file === picker.value);
    $("faces-file").value = "";
    fetchExample(example.file).then((blob) => recognisePhoto(blob, example.file)).catch((e) => fail("faces", e));
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
