// status_page_live_test.mjs: the status page of a real `tide run DIR`, in a
// real browser (headless Debian Chromium via playwright-core), against a
// development broker in its own process. Files are dropped into and broken
// in the folder while the page stays open; every wait is for a DOM condition
// with a timeout, never a fixed sleep.
//
//   TIDE_BIN=build/tide node --test spec/05-browser/status_page_live_test.mjs
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { launch } from "./browser.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const TIDE = process.env.TIDE_BIN || path.resolve(here, "../../build/tide");
const WAIT = { timeout: 20000 };

let browser, page, work, broker, host;

const detector = (name, input, output) => `return {
  name = "${name}", inputs = { "${input}" }, outputs = { "${output}" },
  process = function(rec, ctx) ctx:emit("${output}", rec.key, rec.value) end,
}
`;

/* Write beside and rename into place, as a deploy would. */
function drop(file, text) {
  const tmp = path.join(work, "dets", `.${file}.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, path.join(work, "dets", file));
}

/* Start a process; resolve with the first match of `re` in its `stream`. */
function startAndWatch(args, stream, re) {
  return new Promise((resolve, reject) => {
    // tide reads every TIDE_* variable as configuration: ours are not
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TIDE_")));
    const child = spawn(TIDE, args, { stdio: ["ignore", "pipe", "pipe"], env });
    let text = "";
    const timer = setTimeout(() => reject(new Error(`${args[0]}: no match for ${re} in 20 s:\n${text}`)), 20000);
    child.on("error", (e) => { clearTimeout(timer); reject(e); });
    child[stream].on("data", (chunk) => {
      text += chunk;
      const m = text.match(re);
      if (m) { clearTimeout(timer); resolve({ child, match: m }); }
    });
    // drain the other stream so the child never blocks on a full pipe
    child[stream === "stdout" ? "stderr" : "stdout"].on("data", () => {});
  });
}

async function row(name) {
  return page.waitForSelector(`tbody[data-detector="${name}"]`, WAIT);
}

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), "tide-live-"));
  mkdirSync(path.join(work, "dets"));
  broker = await startAndWatch(["broker", "--topic", "live-in:2", "--topic", "live-out:2"],
    "stdout", /^(127\.0\.0\.1:\d+)\n/);
  drop("alpha.lua", detector("alpha", "live-in", "live-out"));
  drop("beta.lua", detector("beta", "live-in", "live-out"));
  host = await startAndWatch(["run", path.join(work, "dets"), "-b", broker.match[1],
    "-D", "application.id=live", "-D", "admin.port=0", "-D", "reload.debounce.ms=50"],
    "stderr", /admin server listening on (http:\/\/127\.0\.0\.1:\d+\/)/);

  browser = await launch();
  page = browser.page;
  await page.goto(host.match[1]);
  // A marker that reloading the page would wipe out.
  await page.evaluate(() => { window.__tideNoReload = true; });
});

after(async () => {
  if (browser) await browser.close();
  if (host) host.child.kill("SIGTERM");
  if (broker) broker.child.kill("SIGTERM");
  if (work) rmSync(work, { recursive: true, force: true });
});

test("the page of a live host lists its running detectors", async () => {
  for (const name of ["alpha", "beta"]) {
    await page.waitForSelector(`tbody[data-detector="${name}"][data-state="running"]`, WAIT);
  }
});

test("a detector dropped into the folder appears, running, without reloading the page", async () => {
  drop("gamma.lua", detector("gamma", "live-in", "live-out"));
  const gamma = await page.waitForSelector('tbody[data-detector="gamma"][data-state="running"]', WAIT);
  assert.match(await gamma.$eval("[data-field=version]", (e) => e.textContent), /^[0-9a-f]{8}/);
  assert.equal(await page.evaluate(() => window.__tideNoReload), true);
});

test("a DSL detector shows what it does: its graph, as its description", async () => {
  drop("epsilon.lua", 'tide.stream("live-in"):map_values(string.upper):to("live-out")\n' +
    'return tide.topology{ name = "epsilon" }\n');
  const eps = await page.waitForSelector('tbody[data-detector="epsilon"][data-state="running"]', WAIT);
  await eps.$eval("tr.main", (tr) => tr.click());
  await page.waitForFunction(() => {
    const f = document.querySelector('tbody[data-detector="epsilon"] [data-fact=description] .v');
    return f && f.textContent === "live-in > map_values > to live-out";
  }, null, WAIT);
});

test("a DSL detector's topology is drawn from what its worker published", async () => {
  const eps = await page.waitForSelector('tbody[data-detector="epsilon"][data-state="running"]', WAIT);
  if (await eps.$eval("tr.main", (tr) => tr.getAttribute("aria-expanded")) !== "true") {
    await eps.$eval("tr.main", (tr) => tr.click());
  }
  await page.waitForSelector('tbody[data-detector="epsilon"] [data-role=topology] svg[data-subtopology="0"]', WAIT);
  const nodes = await eps.$$eval("[data-role=topology] g[data-node]", (gs) =>
    gs.map((g) => [g.getAttribute("data-type"), g.getAttribute("data-node")]));
  assert.deepEqual(nodes, [["source", "KSTREAM-SOURCE-0000000000"], ["processor", "KSTREAM-MAPVALUES-0000000001"],
    ["sink", "KSTREAM-SINK-0000000002"]]);
  assert.deepEqual(await eps.$$eval("[data-role=topology] line[data-edge]", (ls) => ls.map((l) => l.getAttribute("data-edge"))),
    ["KSTREAM-SOURCE-0000000000->KSTREAM-MAPVALUES-0000000001", "KSTREAM-MAPVALUES-0000000001->KSTREAM-SINK-0000000002"]);
});

test("a broken edit shows as a failed reload while the old version keeps running", async () => {
  drop("beta.lua", "return {\n  inputs = { 'live-in' },,\n}\n");
  const beta = await row("beta");
  await beta.$eval("tr.main", (tr) => tr.click());
  const failed = await page.waitForSelector(
    'tbody[data-detector="beta"] [data-role=detail] tr[data-ok="false"]', { ...WAIT, state: "visible" });
  assert.match(await failed.textContent(), /beta\.lua:2:/);
  assert.equal(await beta.getAttribute("data-state"), "running");
  assert.equal(await page.evaluate(() => window.__tideNoReload), true);
});

test("a file that never loaded shows as failed, with file, line and reason", async () => {
  drop("delta.lua", "local x = = 1\n");
  const delta = await page.waitForSelector('tbody[data-detector="delta"][data-state="failed"]', WAIT);
  assert.match(await delta.$eval("[data-role=note]", (e) => e.textContent), /delta\.lua:1:/);
});
