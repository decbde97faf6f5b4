// browser.mjs: headless Debian Chromium for the status page tests, through
// playwright-core (which downloads no browser of its own). The flags keep it
// off the network: this machine's network is closed, and Chromium's background
// connections would only fail.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { chromium } from "playwright-core";

const CHROMIUM = process.env.TIDE_CHROMIUM || "/usr/bin/chromium";

/** Launch Chromium with a fresh profile; returns { context, page, close }. */
export async function launch() {
  const profile = mkdtempSync(path.join(tmpdir(), "tide-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 800 },
  });
  const page = context.pages()[0] || (await context.newPage());
  return {
    context,
    page,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
