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
