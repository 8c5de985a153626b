// Drives the face-mask pane's live view in headless Chromium with a fake webcam that plays a Y4M file (Chromium
// loops it), and prints what the page counted as JSON; tests/test_web.py starts the server and checks the counts.
// Usage: node e2e/live.mjs --url URL --video FILE.y4m --seconds S --screenshot PNG [--chromium PATH]
// It stops the webcam once the page has tracked for S seconds of its own time and at least 10 frames.
import { chromium } from "playwright-core";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    video: { type: "string" },
    seconds: { type: "string", default: "4" },
    screenshot: { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});
const TIMEOUT = 120_000;

const browser = await chromium.launch({
  executablePath: args.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", `--use-file-for-fake-video-capture=${args.video}`],
});
const result = { console: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on("console", (message) => result.console.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => result.console.push(`pageerror: ${error.message}`));
  await page.goto(args.url);
  await page.waitForFunction(() => document.getElementById("status").dataset.state !== "loading", null, { timeout: TIMEOUT });
  await page.locator("#facemask-webcam").click();
  await page.waitForFunction(() => window.playground.live?.frames > 0 || window.playground.errors.length, null, { timeout: TIMEOUT });
  const started = await page.evaluate(() => performance.now());
  await page.waitForFunction(([t0, s]) => window.playground.errors.length
    || (window.playground.live.frames >= 10 && performance.now() - t0 >= 1000 * s), [started, Number(args.seconds)], { timeout: TIMEOUT, polling: 200 });
  await page.locator("#facemask-webcam").click(); // stops the webcam: the counts stay as they are
  result.live = await page.evaluate(() => ({
    ...window.playground.live,
    shown: ["facemask-people", "facemask-unmasked-people", "facemask-alerts"].map((id) => document.getElementById(id).value),
    warnings: Array.from(document.querySelectorAll("#facemask-warnings li"), (li) => li.textContent),
  }));
  result.errors = await page.evaluate(() => window.playground.errors);
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
