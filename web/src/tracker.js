// Persistent person ids and the mask alerts of the face-mask pane, as the Python monitor does them
// (facemask/monitor.py with ultralytics' BYTETracker, facemask/alerts.py). No browser APIs or
// onnxruntime-web here, so Node can run it on box sequences (tests/test_web.py).
//
// ByteTracker follows ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection
// Box", ECCV 2022) in the order of ultralytics' trackers/byte_tracker.py BYTETracker.update, with the settings of
// its cfg/trackers/bytetrack.yaml (exported into the manifest by experiments/export_web.py):
//   1. detections with score ≥ track_high_thresh are matched to the confirmed and the lost tracks by IoU (fused
//      with the score when fuse_score: cost 1 - IoU·score), cost ≤ match_thresh;
//   2. detections with track_low_thresh < score < track_high_thresh are matched by plain IoU (cost ≤ 0.5) to the
//      confirmed tracks still unmatched; those left unmatched become lost;
//   3. unconfirmed tracks (seen on one frame) are matched to the remaining high-score detections (cost ≤ 0.7) and
//      confirmed, or removed;
//   4. a remaining detection with score ≥ new_track_thresh starts a new, unconfirmed track (confirmed at once on
//      the first frame) and takes the next id;
//   5. a track lost for more than track_buffer frames is removed: a person who comes back later gets a new id.
// Simplified against ultralytics: the Kalman filter (x, y, aspect, height and their velocities) is replaced by a
// constant-velocity prediction of the box (the last displacement per frame, kept while lost), and lapjv's optimal
// assignment by a greedy one (lowest cost first). Both give the same matches when people do not overlap.

/** Intersection over union of two boxes {x0, y0, x1, y1} (pixels); 0 when they do not overlap. */
export function iou(a, b) {
  const w = Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0);
  const h = Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  return inter / ((a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter);
}

/** Pairs [track index, detection index] of a greedy assignment: lowest cost first, each cost ≤ `thresh`. */
function assign(tracks, detections, cost, thresh) {
  const pairs = [];
  tracks.forEach((t, i) => detections.forEach((d, j) => {
    const c = cost(t, d);
    if (c <= thresh) pairs.push([c, i, j]);
  }));
  pairs.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
  const usedT = new Set();
  const usedD = new Set();
  const matches = [];
  for (const [, i, j] of pairs) {
    if (usedT.has(i) || usedD.has(j)) continue;
    usedT.add(i);
    usedD.add(j);
    matches.push([i, j]);
  }
  return {
    matches,
    unmatchedTracks: tracks.map((_, i) => i).filter((i) => !usedT.has(i)),
    unmatchedDetections: detections.map((_, j) => j).filter((j) => !usedD.has(j)),
  };
}

const TRACKED = "tracked";
const LOST = "lost";
const REMOVED = "removed";
export const BYTETRACK_KEYS = ["track_high_thresh", "track_low_thresh", "new_track_thresh", "track_buffer", "match_thresh", "fuse_score"];

class Track {
  constructor(detection, id, frame) {
    this.id = id;
    this.box = boxOf(detection);
    this.velocity = { x0: 0, y0: 0, x1: 0, y1: 0 };
    this.score = detection.score;
    this.state = TRACKED;
    this.confirmed = frame === 1; // ultralytics: only tracks born on the first frame start confirmed
    this.startFrame = frame;
    this.endFrame = frame;
  }

  /** The box expected at `frame`: the last one moved on at the last velocity. */
  predicted(frame) {
    const k = frame - this.endFrame;
    return { x0: this.box.x0 + k * this.velocity.x0, y0: this.box.y0 + k * this.velocity.y0, x1: this.box.x1 + k * this.velocity.x1, y1: this.box.y1 + k * this.velocity.y1 };
  }

  update(detection, frame) {
    const box = boxOf(detection);
    const gap = Math.max(frame - this.endFrame, 1);
    for (const key of ["x0", "y0", "x1", "y1"]) this.velocity[key] = (box[key] - this.box[key]) / gap;
    this.box = box;
    this.score = detection.score;
    this.state = TRACKED;
    this.confirmed = true;
    this.endFrame = frame;
  }
}

const boxOf = (d) => ({ x0: d.x0, y0: d.y0, x1: d.x1, y1: d.y1 });

/** ByteTrack-style tracker (see the file's head). `settings`: ultralytics' bytetrack.yaml keys (BYTETRACK_KEYS),
 * as the manifest's `tracker` carries them; a missing key throws an Error naming it. */
export class ByteTracker {
  constructor(settings) {
    const missing = BYTETRACK_KEYS.filter((k) => settings?.[k] === undefined);
    if (missing.length) throw new Error(`tracker settings lack ${missing.join(", ")}: run make export-web again`);
    this.settings = { ...settings };
    this.frame = 0;
    this.nextId = 1;
    this.tracks = []; // tracked (confirmed or not) and lost, never removed ones
  }

  /** One frame's detections [{x0, y0, x1, y1, score, cls}] (pixels) → the confirmed tracks matched in this frame:
   * [{trackId, x0, y0, x1, y1, score, cls, index}] with the detection's own box, class and index in `detections`. */
  update(detections) {
    const s = this.settings;
    const frame = ++this.frame;
    const valid = detections.map((d, index) => ({ ...d, index })).filter((d) => d.x1 > d.x0 && d.y1 > d.y0);
    const high = valid.filter((d) => d.score >= s.track_high_thresh);
    const low = valid.filter((d) => d.score > s.track_low_thresh && d.score < s.track_high_thresh);
    const unconfirmed = this.tracks.filter((t) => t.state === TRACKED && !t.confirmed);
    const pool = this.tracks.filter((t) => (t.state === TRACKED && t.confirmed) || t.state === LOST);
    const fused = (t, d) => 1 - iou(t.predicted(frame), d) * (s.fuse_score ? d.score : 1);
    const matched = new Map(); // track → detection

    const first = assign(pool, high, fused, s.match_thresh);
    for (const [i, j] of first.matches) matched.set(pool[i], high[j]);
    const remaining = first.unmatchedTracks.map((i) => pool[i]).filter((t) => t.state === TRACKED);
    const second = assign(remaining, low, (t, d) => 1 - iou(t.predicted(frame), d), 0.5);
    for (const [i, j] of second.matches) matched.set(remaining[i], low[j]);
    const newlyLost = second.unmatchedTracks.map((i) => remaining[i]);

    const leftHigh = first.unmatchedDetections.map((j) => high[j]);
    const third = assign(unconfirmed, leftHigh, fused, 0.7);
    for (const [i, j] of third.matches) matched.set(unconfirmed[i], leftHigh[j]);
    for (const i of third.unmatchedTracks) unconfirmed[i].state = REMOVED;

    for (const [track, detection] of matched) track.update(detection, frame);
    for (const track of newlyLost) track.state = LOST;
    const born = [];
    for (const j of third.unmatchedDetections) {
      const detection = leftHigh[j];
      if (detection.score < s.new_track_thresh) continue;
      const track = new Track(detection, this.nextId++, frame);
      born.push(track);
      matched.set(track, detection);
    }
    for (const track of this.tracks) {
      if (track.state === LOST && frame - track.endFrame > s.track_buffer) track.state = REMOVED;
    }
    this.tracks = [...this.tracks, ...born].filter((t) => t.state !== REMOVED);
    this.removeDuplicates();
    return this.tracks
      .filter((t) => t.state === TRACKED && t.confirmed && matched.has(t))
      .map((t) => ({ trackId: t.id, ...boxOf(matched.get(t)), score: matched.get(t).score, cls: matched.get(t).cls, index: matched.get(t).index }));
  }

  /** As ultralytics' remove_duplicate_stracks: a tracked and a lost track with IoU > 0.85 are one person; the
   * shorter-lived one goes (the tracked one on a tie). */
  removeDuplicates() {
    const tracked = this.tracks.filter((t) => t.state === TRACKED);
    const lost = this.tracks.filter((t) => t.state === LOST);
    const drop = new Set();
    for (const a of tracked) {
      for (const b of lost) {
        if (1 - iou(a.predicted(this.frame), b.predicted(this.frame)) >= 0.15) continue;
        drop.add(a.endFrame - a.startFrame > b.endFrame - b.startFrame ? b : a);
      }
    }
    if (drop.size) this.tracks = this.tracks.filter((t) => !drop.has(t));
  }
}

/** Per-track smoothed mask state and the one-alert-per-person rule of facemask/alerts.py MaskAlerts: a track's
 * state is the majority class of its last `window` (smooth_frames) detections, a tie going to the most recent of
 * the tied classes; a person whose state is an alert class for `alertAfterS` seconds without interruption raises
 * ONE alert. `names`: the detector's class names; `alertClasses`: names among them (else an Error naming the key). */
export class MaskAlerts {
  constructor(names, alertClasses, alertAfterS, window, source = "") {
    const unknown = alertClasses.filter((n) => !names.includes(n));
    if (unknown.length) throw new Error(`alert_classes: ${unknown.join(", ")} are not classes of the detector: ${names.join(", ")}`);
    if (!(window >= 1) || !(alertAfterS >= 0)) throw new Error(`smooth_frames=${window}, alert_after_s=${alertAfterS}: need smooth_frames ≥ 1 and alert_after_s ≥ 0`);
    this.names = [...names];
    this.alertIds = new Set(alertClasses.map((n) => names.indexOf(n)));
    this.alertAfterS = Number(alertAfterS);
    this.window = Math.trunc(window);
    this.source = source;
    this.tracks = new Map();
  }

  /** One frame's tracked people [{trackId, x0, y0, x1, y1, score, cls}] at `timeS` seconds since the start → the
   * alerts this frame raises, as core/mask_alerts AlertEvent.to_dict (without wall_time): {event, time_s,
   * track_id, class, confidence, box, frame, source}. */
  update(frame, timeS, people) {
    const events = [];
    for (const p of people) {
      let record = this.tracks.get(p.trackId);
      if (!record) {
        record = { trackId: p.trackId, firstFrame: frame, firstTimeS: timeS, recent: [], state: -1, unmaskedSinceS: null, everUnmasked: false, alert: null };
        this.tracks.set(p.trackId, record);
      }
      record.lastFrame = frame;
      record.lastTimeS = timeS;
      record.recent.push(p.cls);
      if (record.recent.length > this.window) record.recent.shift();
      record.state = smoothed(record.recent);
      if (!this.alertIds.has(record.state)) {
        record.unmaskedSinceS = null;
        continue;
      }
      record.everUnmasked = true;
      if (record.unmaskedSinceS === null) record.unmaskedSinceS = timeS;
      if (record.alert === null && timeS - record.unmaskedSinceS >= this.alertAfterS - 1e-9) {
        const round = (v, digits) => Math.round(v * 10 ** digits) / 10 ** digits;
        record.alert = {
          event: "unmasked_person", time_s: round(timeS, 3), track_id: p.trackId, class: this.names[p.cls],
          confidence: round(p.score, 4), box: [p.x0, p.y0, p.x1, p.y1].map((v) => round(v, 1)), frame, source: this.source,
        };
        events.push(record.alert);
      }
    }
    return events;
  }

  /** The smoothed class name of a track ('' before it is seen). */
  stateName(trackId) {
    const record = this.tracks.get(trackId);
    return record && record.state >= 0 ? this.names[record.state] : "";
  }

  /** {people: tracks seen, unmasked_people: tracks whose smoothed state was ever an alert class, alerts: raised}. */
  summary() {
    const records = [...this.tracks.values()];
    return { people: records.length, unmasked_people: records.filter((r) => r.everUnmasked).length, alerts: records.filter((r) => r.alert).length };
  }
}

/** The majority class of `recent`, a tie going to the most recent of the tied classes. */
function smoothed(recent) {
  const counts = new Map();
  for (const c of recent) counts.set(c, (counts.get(c) ?? 0) + 1);
  const best = Math.max(...counts.values());
  for (let i = recent.length - 1; i >= 0; i--) if (counts.get(recent[i]) === best) return recent[i];
  return -1;
}
