// The notes under a pane whose model is not in the manifest; no browser APIs, so Node can test them
// (tests/test_web.py).

/** One sentence per missing model of `kind`: the command that trains it, or, for a checkpoint that cannot run in
 * the page (manifest "missing" with a "reason"), why not and the command that trains one that can. */
export function missingNote(manifest, kind) {
  return manifest.missing
    .filter((m) => m.kind === kind)
    .map((m) =>
      m.reason
        ? `${m.task} cannot run in the browser (${m.reason}): train one that can with ${m.command}, then run make export-web.`
        : `${m.task} is not trained yet: train it with ${m.command}, then run make export-web.`,
    )
    .join(" ");
}

const figure = (value) => (Math.abs(value) >= 0.001 || value === 0 ? value.toFixed(3) : value.toPrecision(3));

/** What the model of a manifest entry learned, one line from its `trained` record (experiments/export_web.py
 * `training_summary`): the data and epochs, the validation figure and the MLflow run; `learned` false when the
 * run's metric never moved, with `reason`, the run's own record of why. Returns { text, learned }. */
export function trainedNote(entry) {
  const trained = entry.trained;
  if (!trained) return { text: "", learned: null };
  if (!trained.run_id) {
    return { text: `Exported from ${trained.checkpoint}; no MLflow run in this store records what it learned.`, learned: null };
  }
  const parts = [`Trained on ${trained.data} data, ${trained.epochs} epoch${trained.epochs === 1 ? "" : "s"}`
    + (trained.scale === "full" ? "" : `, ${trained.scale}`)];
  const metric = trained.metric;
  if (metric) {
    const when = metric.epoch ? ` (epoch ${metric.epoch})` : " (last validation)";
    parts.push(`${metric.key === "val/map50" ? "best " : ""}${metric.name} ${figure(metric.value)}${when}`);
  }
  parts.push(`MLflow run ${trained.run_id} (${trained.experiment}, ${trained.checkpoint})`);
  const text = parts.join(" · ") + ".";
  if (trained.learned === false) return { text: `Did not learn: ${trained.reason}. ${text}`, learned: false };
  return { text, learned: trained.learned };
}

/** The descriptor pane's gallery and threshold in one line (export_web `descriptor_gallery`). */
export function galleryNote(entry) {
  const photos = entry.gallery.reduce((n, g) => n + g.images, 0);
  const skipped = entry.gallery_skipped ? `; ${entry.gallery_skipped} photo(s) without a detected face left out` : "";
  const threshold = entry.threshold === null
    ? "no threshold: nobody is named"
    : `named below a mean distance of ${entry.threshold.toFixed(3)} to a person's photos`
      + (entry.target_far === null ? "" : ` (false-positive identification rate ${entry.target_far})`) + ` — ${entry.threshold_rule}`;
  return `dlib's descriptor network (trained by dlib) against a gallery of ${entry.gallery.length} identities, ${photos} photos`
    + ` (${entry.gallery_crop}${skipped}); ${threshold}.`;
}
