// Opens a link printed by `python -m experiments.mlflow_ui` in headless Chromium (playwright-core, the system's
// browser) and prints what the MLflow UI shows as JSON; tests/test_mlflow_ui.py starts the UI, runs this and checks it.
// Usage: node e2e/mlflow_ui.mjs --url URL --screenshots DIR [--chromium PATH]
// Steps (each with its clicks counted and a screenshot): "landing", the printed link as it opens (0 clicks);
// "table", the runs table (1 click on the view-mode switch); "charts", back to the charts (1 more click).
import { chromium } from "playwright-core";
import { parseArgs } from "node:util";
import path from "node:path";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    screenshots: { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});
const TIMEOUT = 60_000;
const CARD = "[data-testid=experiment-view-compare-runs-card]";

// What the page shows: the experiment sidebar's links (they differ between the GenAI and the model-training view),
// the runs page's view mode, the chart sections in order and the cards of the first one (title, size, legend).
const observe = (page) => page.evaluate((card) => {
  const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const text = document.body.innerText;
  const sections = [...document.querySelectorAll("[data-testid=experiment-view-compare-runs-section-header]")]
    .filter(visible).map((el) => el.innerText.split("\n")[0].trim());
  const grid = document.querySelector("[data-testid=draggable-chart-cards-grid]");
  const cards = grid ? [...grid.querySelectorAll(card)].filter(visible).map((el) => {
    const box = el.getBoundingClientRect();
    const lines = el.innerText.split("\n").map((line) => line.trim()).filter(Boolean);
    return { title: lines[0], width: Math.round(box.width), height: Math.round(box.height), lines };
  }) : [];
  const mode = document.querySelector("input[name=runs-view-mode]:checked");
  return {
    url: location.href,
    sidebar: [...document.querySelectorAll("aside a")].filter(visible).map((a) => a.innerText.trim()).filter(Boolean),
    viewMode: mode ? mode.value : null,
    sections,
    cards,
    runRows: [...document.querySelectorAll("a")].filter(visible).map((a) => a.innerText.trim()),
    telemetryNotice: text.includes("Information about UI telemetry"),
    tracesOverview: /Detect Issues|Traces\s*0\b/.test(text),
  };
}, CARD);

const browser = await chromium.launch({
  executablePath: args.chromium,
  // as the machine notes say: no sandbox as root, and no background connections to a network that is closed
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const result = { console: [], steps: [] };
let clicks = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("pageerror", (error) => result.console.push(`pageerror: ${error.message}`));
  const step = async (name) => {
    // the page polls the runs every few seconds, so it never goes idle: the charts get time to draw their data
    await page.waitForTimeout(2500);
    const screenshot = path.join(args.screenshots, `${result.steps.length + 1}_${name}.png`);
    await page.screenshot({ path: screenshot });
    result.steps.push({ name, clicks, screenshot, ...(await observe(page)) });
  };
  const clickViewMode = async (mode) => {
    await page.locator(`label:has(input[name=runs-view-mode][value=${mode}])`).click();
    clicks += 1;
  };

  const checked = (mode) => `input[name=runs-view-mode][value=${mode}]:checked`; // the radio itself is hidden
  await page.goto(args.url);
  await page.waitForSelector(CARD, { timeout: TIMEOUT }).catch(() => {}); // a landing without charts is reported
  await step("landing");
  await clickViewMode("TABLE");
  await page.waitForSelector(checked("TABLE"), { state: "attached", timeout: TIMEOUT });
  await step("table");
  await clickViewMode("CHART");
  await page.waitForSelector(CARD, { timeout: TIMEOUT });
  await step("charts");
} catch (error) {
  result.error = String(error.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
