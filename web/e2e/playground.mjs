// Drives the built playground in headless Chromium (playwright-core, the system's browser) and prints what
// the page produced as JSON; tests/test_web.py starts the server, runs this and checks the numbers.
// Usage: node e2e/playground.mjs --url URL --screenshot PNG [--facemask-image IMG --conf C]
//   [--facemask-example --example-conf C] [--face-example NAME] [--face-image IMG ...] [--shots DIR]
// --shots DIR: a screenshot of each pane in DIR (dcgan-<task>.png per generator, facemask.png, faces-<image>.png per
// recognised photo, each as the pane stood after it).
// Face-mask results carry the page's letterboxed input (uint8) and raw head output, to rerun each step in Python;
// a recognised face carries the crop the classifier was fed (the faces canvas, RGB rows).
import { chromium } from "playwright-core";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    screenshot: { type: "string" },
    "facemask-image": { type: "string" },
    "face-image": { type: "string", multiple: true, default: [] },
    shots: { type: "string" },
    "facemask-example": { type: "boolean", default: false },
    "example-conf": { type: "string", default: "0.25" },
    "face-example": { type: "string" },
    conf: { type: "string", default: "0.25" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});
const TIMEOUT = 90_000;

// As the machine notes say: no sandbox as root, and no background connections to a network that is closed.
const browser = await chromium.launch({
  executablePath: args.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const result = { console: [], generator: null, trained: {}, detections: null, example_detections: null, recognised: [], example_recognised: null };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on("console", (message) => result.console.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => result.console.push(`pageerror: ${error.message}`));
  await page.goto(args.url);
  await page.waitForFunction(() => document.getElementById("status").dataset.state !== "loading", null, { timeout: TIMEOUT });
  result.status = await page.evaluate(() => ({ state: document.getElementById("status").dataset.state, text: document.getElementById("status").textContent }));
  // Each pane's line on what its model learned, and whether it is marked as a model that did not learn.
  const trainedLine = (pane) => page.evaluate((p) => {
    const line = document.getElementById(`${p}-trained`);
    return { text: line.textContent, marked: line.classList.contains("missing") };
  }, pane);
  const shot = (pane, name) => args.shots && page.locator(`#${pane}`).screenshot({ path: `${args.shots}/${name}.png` });

  // The grid's tiles without the 2 px gaps, as RGB rows of tiles: [tile][y][x][channel] flattened.
  const tiles = () => page.evaluate(() => {
    const canvas = document.getElementById("dcgan-canvas");
    const { width, height, count } = window.playground.generated;
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const columns = Math.round((canvas.width - 2) / (width + 2));
    const out = [];
    for (let n = 0; n < count; n++) {
      const left = 2 + (n % columns) * (width + 2);
      const top = 2 + Math.floor(n / columns) * (height + 2);
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const i = 4 * ((top + y) * canvas.width + left + x);
          out.push(pixels[i], pixels[i + 1], pixels[i + 2]);
        }
      }
    }
    return { canvas: [canvas.width, canvas.height], pixels: out };
  });
  const waitForSeed = (seed) => page.waitForFunction((s) => window.playground.generated?.seed === s, seed, { timeout: TIMEOUT });
  if (await page.evaluate(() => document.getElementById("dcgan-model").options.length > 0)) {
    await waitForSeed(0);
    const first = await tiles();
    await page.locator("#dcgan-seed").fill("1");
    await waitForSeed(1);
    const second = await tiles();
    const generated = await page.evaluate(() => window.playground.generated);
    result.trained.dcgan = {};
    for (const task of await page.evaluate(() => Array.from(document.getElementById("dcgan-model").options, (o) => o.value))) {
      await page.locator("#dcgan-model").selectOption(task);
      await page.waitForFunction((t) => window.playground.generated?.task === t, task, { timeout: TIMEOUT });
      result.trained.dcgan[task] = await trainedLine("dcgan");
      await shot("dcgan", `dcgan-${task}`);
    }
    const std = (values) => {
      const mean = values.reduce((a, b) => a + b, 0) / values.length;
      return Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
    };
    const tileSize = 3 * generated.width * generated.height;
    result.generator = {
      task: generated.task, seed: generated.seed, count: generated.count, tile: [generated.width, generated.height], canvas: first.canvas,
      tile_std: Array.from({ length: generated.count }, (_, n) => std(second.pixels.slice(n * tileSize, (n + 1) * tileSize))),
      differing_fraction: first.pixels.filter((v, i) => v !== second.pixels[i]).length / first.pixels.length,
      // The first tile of seed 1 and its noise vector, for the comparison with ONNX Runtime in Python.
      z0: generated.z.slice(0, generated.z.length / generated.count), tile0: second.pixels.slice(0, tileSize),
    };
  }

  // Set the confidence slider, run `load` (an upload or an example button), wait for the detections of `source`.
  const detectionsOf = async (conf, source, load) => {
    await page.locator("#facemask-conf").fill(conf);
    const taken = Number(await page.locator("#facemask-conf").inputValue());
    if (taken !== Number(conf)) throw new Error(`the confidence slider took ${taken}, not ${conf}`);
    await load();
    await page.waitForFunction(([c, s]) => (window.playground.detections?.conf === c && window.playground.detections.source === s)
      || window.playground.errors.length, [taken, source], { timeout: TIMEOUT });
    return page.evaluate(() => {
      if (!window.playground.detections) return null;
      const canvas = document.getElementById("facemask-canvas");
      const context = canvas.getContext("2d");
      const hex = (c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
      // Each box's left edge, halfway down, must carry the colour of the last box drawn over that spot:
      // the box itself, or a later one whose left edge lies on it (boxes are drawn in order).
      const { input, raw, ...detections } = window.playground.detections;
      const boxes = detections.boxes;
      const drawn = boxes.map((box, i) => {
        const y = Math.round((box.y0 + box.y1) / 2);
        const top = boxes.slice(i).filter((b) => Math.abs(b.x0 - box.x0) <= 2 && b.y0 <= y && y <= b.y1).at(-1);
        const target = hex(top.colour);
        let best = Infinity;
        for (let x = Math.round(box.x0) - 2; x <= Math.round(box.x0) + 2; x++) {
          const p = context.getImageData(Math.min(Math.max(x, 0), canvas.width - 1), Math.min(y, canvas.height - 1), 1, 1).data;
          best = Math.min(best, Math.max(...target.map((t, k) => Math.abs(t - p[k]))));
        }
        return best;
      });
      return {
        ...detections, canvas: [canvas.width, canvas.height], edge_colour_error: drawn,
        input: { dims: Array.from(input.dims), data: Array.from(input.data, (v) => Math.round(v * 255)) },
        raw: { dims: Array.from(raw.dims), data: Array.from(raw.data) },
      };
    });
  };
  // The classifier's input: the crop drawn on the faces canvas, RGB rows.
  const recognisedOf = async (source, load) => {
    await load();
    await page.waitForFunction((s) => window.playground.recognised?.source === s || window.playground.errors.length, source, { timeout: TIMEOUT });
    return page.evaluate(() => {
      if (!window.playground.recognised) return null;
      const canvas = document.getElementById("faces-canvas");
      const rgba = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      return { ...window.playground.recognised, canvas: [canvas.width, canvas.height], crop: Array.from(rgba).filter((_, i) => i % 4 !== 3) };
    });
  };
  const examples = (await page.evaluate(() => fetch("models/manifest.json").then((r) => r.json()))).examples;

  if (args["facemask-image"]) {
    const name = args["facemask-image"].split("/").at(-1);
    result.detections = await detectionsOf(args.conf, name, () => page.locator("#facemask-file").setInputFiles(args["facemask-image"]));
  }
  if (args["facemask-example"]) {
    result.example_detections = await detectionsOf(args["example-conf"], examples.facemask[0].file, () => page.locator("#facemask-example").click());
  }
  if (args["face-example"]) {
    const example = examples.faces.find((e) => e.name === args["face-example"]);
    await page.locator("#faces-example-name").selectOption(example.file);
    result.example_recognised = await recognisedOf(example.file, () => page.locator("#faces-example").click());
  }
  await shot("facemask", "facemask");
  for (const image of args["face-image"]) {
    const name = image.split("/").at(-1);
    result.recognised.push(await recognisedOf(name, () => page.locator("#faces-file").setInputFiles(image)));
    await shot("faces", `faces-${name.replace(/\.[^.]*$/, "")}`);
  }
  for (const pane of ["facemask", "faces"]) result.trained[pane] = await trainedLine(pane);
  result.errors = await page.evaluate(() => window.playground.errors);
  await page.screenshot({ path: args.screenshot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
