// status_page_test.mjs: the admin status page in a real browser (headless
// Debian Chromium through the DevTools protocol, driven by playwright-core).
// Test code only; it never touches Kafka or a real supervisor.
//
// It runs against the admin server of spec/c/http_fixture.c, whose fake table
// changes on a timeline: alpha and beta run, "gamma" appears after 2 s, and
// beta's reload fails after 3 s. Either give the URL of a running fixture in
// TIDE_ADMIN_URL, or let the test start the fixture itself from
// TIDE_HTTP_FIXTURE (default build/test/http_fixture); it then starts the
// fixture only once the browser is up, so the page is open before the table
// changes. Every wait is for a DOM condition, bounded by a timeout; nothing
// synchronises on a fixed sleep.
//
//   cd spec/05-browser && npm ci && node --test
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { launch } from "./browser.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURE = process.env.TIDE_HTTP_FIXTURE || path.resolve(here, "../../build/test/http_fixture");
const WAIT = { timeout: 10000 };
const BETA_FAILURE = "beta.lua:12: attempt to call a nil value (global 'frobnicate')";
const ODD_NAME = 'odd "name" <b>bold</b>';

let browser, page, fixture, adminUrl;
const pageErrors = [];
let firstNames = null; // detectors on the first render, when we own the fixture

function startFixture() {
  return new Promise((resolve, reject) => {
    const child = spawn(FIXTURE, ["--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${FIXTURE} printed no URL in 10 s`)), 10000);
    child.on("error", (e) => { clearTimeout(timer); reject(e); });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`${FIXTURE} exited (${code})`)); });
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/^(http:\/\/127\.0\.0\.1:\d+\/)\n/);
      if (m) { clearTimeout(timer); child.removeAllListeners("exit"); resolve({ child, url: m[1] }); }
    });
  });
}

/* The detectors' names, in the order the table shows them. */
function rowNames() {
  return page.$$eval("tbody[data-detector]:not([hidden])", (bodies) =>
    bodies.map((b) => b.getAttribute("data-detector")));
}

/* A detector's tbody, found by exact name (names may hold quotes). */
async function row(name) {
  const handle = await page.waitForFunction(
    (n) => Array.from(document.querySelectorAll("tbody[data-detector]"))
      .find((b) => b.getAttribute("data-detector") === n),
    name, WAIT);
  return handle.asElement();
}

before(async () => {
  browser = await launch();
  page = browser.page;
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") pageErrors.push(m.text()); });

  adminUrl = process.env.TIDE_ADMIN_URL;
  if (!adminUrl) {
    fixture = await startFixture();
    adminUrl = fixture.url;
  }
  await page.goto(adminUrl);
  // A marker that a reload of the page would wipe out.
  await page.evaluate(() => { window.__tideNoReload = true; });
});

after(async () => {
  if (browser) await browser.close();
  if (fixture) fixture.child.kill("SIGTERM");
});

test("the page loads and lists the running detectors", async () => {
  const alpha = await row("alpha");
  await row("beta");
  firstNames = await rowNames();
  assert.equal(await alpha.getAttribute("data-state"), "running");
  assert.equal(await alpha.$eval("[data-role=state]", (e) => e.textContent), "running");
  assert.equal(await alpha.$eval("[data-field=version]", (e) => e.textContent), "3f9a2c71");
  assert.equal(await alpha.$eval("[data-field=lag]", (e) => e.textContent) !== "\u2013", true);
  await page.waitForFunction(() => document.getElementById("uptime").textContent.startsWith("3h"), null, WAIT);
  assert.notEqual(await page.textContent("#updated"), "never");
  assert.equal(await page.isHidden("#banner"), true);
  assert.deepEqual(pageErrors, []);
});

test("record rates come from the difference between two polls", async () => {
  // alpha takes 500 records per 100 ms in the fixture: about 5000/s
  await page.waitForFunction(() => {
    const cell = document.querySelector('tbody[data-detector="alpha"] [data-field=in_rate]');
    const v = Number(cell.textContent.replace(/,/g, ""));
    return v > 2000 && v < 10000;
  }, null, WAIT);
});

test("a detector added to the table appears without reloading the page", async () => {
  if (fixture) assert.ok(!firstNames.includes("gamma"), `gamma already listed: ${firstNames}`);
  const gamma = await row("gamma");
  assert.equal(await gamma.getAttribute("data-state"), "running");
  assert.equal(await gamma.$eval("[data-role=note]", (e) => e.textContent),
    "waiting for output topic alerts to exist");
  assert.equal(await page.evaluate(() => window.__tideNoReload), true);
  assert.deepEqual((await rowNames()).slice(0, 3), ["alpha", "beta", "gamma"]);
});

test("a failed reload shows the failed state and its message without reloading", async () => {
  const beta = await page.waitForSelector('tbody[data-detector="beta"][data-state="failed"]', WAIT);
  assert.equal(await beta.$eval("[data-role=state]", (e) => e.textContent), "failed");
  const note = await beta.$("[data-role=note]");
  assert.equal(await note.isVisible(), true);
  assert.match(await note.textContent(), /beta\.lua:12: attempt to call a nil value/);

  await beta.$eval("tr.main", (tr) => tr.click());
  const failed = await page.waitForSelector(
    'tbody[data-detector="beta"] [data-role=detail] tr[data-ok="false"]', { ...WAIT, state: "visible" });
  assert.ok((await failed.textContent()).includes(BETA_FAILURE));
  assert.ok((await failed.textContent()).includes("b2c3d4e5"));
  assert.ok((await beta.$eval("[data-field=problem]", (e) => e.textContent)).includes(BETA_FAILURE));
  assert.equal(await page.evaluate(() => window.__tideNoReload), true);
});

test("an expanded detector shows its last error with traceback and record position", async () => {
  const alpha = await row("alpha");
  await alpha.$eval("tr.main", (tr) => tr.click());
  await page.waitForSelector('tbody[data-detector="alpha"] [data-field=traceback]', { ...WAIT, state: "visible" });
  assert.equal(await alpha.$eval("[data-field=error_at]", (e) => e.textContent), "payments [3] @ 981723");
  assert.match(await alpha.$eval("[data-field=error_message]", (e) => e.textContent), /amount is not a number/);
  assert.match(await alpha.$eval("[data-field=traceback]", (e) => e.textContent), /in function 'process'/);
  // it stays open across polls
  const before = await page.textContent("#updated");
  await page.waitForFunction((b) => document.getElementById("updated").textContent !== b, before, WAIT);
  assert.equal(await alpha.$eval("[data-role=detail]", (e) => e.hidden), false);
});

test("a refused newer version is shown beside the version that runs on", async () => {
  const zeta = await row("zeta");
  assert.equal(await zeta.getAttribute("data-state"), "running");
  const note = await zeta.$("[data-role=note]");
  assert.equal(await note.isVisible(), true);
  assert.equal(await note.textContent(),
    "running 1a2b3c4d; 9c0d1e2f refused: /srv/detectors/zeta.lua:4: unexpected symbol near '}'");
});

test("an expanded detector draws its topology: a graph per sub-topology, edges between its nodes", async () => {
  const alpha = await row("alpha");
  if (await alpha.$eval("tr.main", (tr) => tr.getAttribute("aria-expanded")) !== "true") {
    await alpha.$eval("tr.main", (tr) => tr.click());
  }
  await page.waitForSelector('tbody[data-detector="alpha"] [data-role=topology] svg[data-subtopology="2"]',
    { ...WAIT, state: "visible" });
  const graph = await alpha.$$eval("[data-role=topology] svg[data-subtopology]", (svgs) => svgs.map((s) => ({
    id: s.getAttribute("data-subtopology"),
    nodes: Array.from(s.querySelectorAll("g[data-node]")).map((g) => [g.getAttribute("data-type"), g.getAttribute("data-node")]),
    edges: Array.from(s.querySelectorAll("line[data-edge]")).map((l) => l.getAttribute("data-edge")),
  })));
  assert.deepEqual(graph, [
    { id: "0", nodes: [["source", "payments-source"], ["processor", "by-card"], ["sink", "by-card-repartition"]],
      edges: ["payments-source->by-card", "by-card->by-card-repartition"] },
    { id: "1", nodes: [["source", "by-card-source"], ["processor", "spent"], ["sink", "<b>alerts</b>"]],
      edges: ["by-card-source->spent", "spent-><b>alerts</b>"] },
    { id: "2", nodes: [["source", "rates-source"], ["processor", "rates"]], edges: ["rates-source->rates"] },
  ]);
  // each node in a column right of its predecessor; a store and a topic under the names
  const boxes = await alpha.$$eval('[data-role=topology] svg[data-subtopology="1"] g[data-node]', (gs) =>
    gs.map((g) => ({ x: g.getBoundingClientRect().x, text: Array.from(g.querySelectorAll("text")).map((t) => t.textContent) })));
  assert.ok(boxes[0].x < boxes[1].x && boxes[1].x < boxes[2].x);
  assert.deepEqual(boxes.map((b) => b.text), [["by-card-source", "topics: tide.alpha-by-card-r\u2026"],
    ["spent", "stores: spent"], ["<b>alerts</b>", "topic: alerts"]]);
  assert.match(await alpha.$eval("[data-role=topology]", (e) => e.textContent), /Sub-topology 2 \(a global table/);
  // redrawn only when the topology changes: the same nodes survive a poll
  const marked = await alpha.$eval('g[data-node="spent"]', (g) => { g.__kept = true; return true; });
  const before = await page.textContent("#updated");
  await page.waitForFunction((b) => document.getElementById("updated").textContent !== b, before, WAIT);
  assert.equal(await alpha.$eval('g[data-node="spent"]', (g) => g.__kept === true), marked);
});

test("names and messages from detectors are shown as text, never as markup", async () => {
  const odd = await row(ODD_NAME);
  assert.equal(await odd.$eval("[data-role=name]", (e) => e.textContent), ODD_NAME);
  assert.match(await odd.$eval("[data-role=note]", (e) => e.textContent), /<script>alert\(1\)<\/script>/);
  assert.equal(await page.$$eval("table b, table script", (els) => els.length), 0);
});

test("clicking a column header sorts by it, and again reverses", async () => {
  await page.click("th[data-sort=in_rate]"); // numeric columns sort high to low first
  await page.waitForFunction(() => document.querySelector("tbody[data-detector]").dataset.detector === "alpha", null, WAIT);
  const names = await rowNames();
  assert.ok(names.indexOf("alpha") < names.indexOf("gamma"), names.join());
  assert.equal(await page.getAttribute("th[data-sort=in_rate]", "aria-sort"), "descending");
  await page.click("th[data-sort=name]");
  assert.deepEqual(await rowNames(), ["alpha", "beta", "gamma", ODD_NAME, "zeta"]);
  await page.click("th[data-sort=name]");
  assert.deepEqual(await rowNames(), ["zeta", ODD_NAME, "gamma", "beta", "alpha"]);
  await page.click("th[data-sort=name]");
});

test("a banner says so when the API cannot be reached, and goes when it is back", async () => {
  await page.route("**/api/detectors", (route) => route.abort("connectionrefused"));
  const banner = await page.waitForSelector("#banner", { ...WAIT, state: "visible" });
  assert.match(await banner.textContent(), /Cannot reach the tide admin API/);
  await page.unroute("**/api/detectors");
  await page.waitForSelector("#banner", { ...WAIT, state: "hidden" });
  assert.equal(await page.evaluate(() => window.__tideNoReload), true);
});
