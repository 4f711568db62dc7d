#!/usr/bin/env node
// Opens a node's dashboard in headless Chromium and checks that it runs:
//
//   node node/tests/dashboard/check.mjs <base-url> <screenshot.png> <expected-region> [--wait-ms N]
//
// Waits (up to 20 s) for #stats to show at least 2 frames with riders, drivers
// and matches in them; checks #this-region and the region's card; fails on any
// page error or console error and on any request that leaves the base URL's
// origin; saves a full-page screenshot; prints a one-line JSON summary.
// Chromium: $CHROMIUM, else /usr/bin/chromium (Debian's `chromium` package).
// Exits 0 when every check passes, 1 (saying why) otherwise.

import { chromium } from 'playwright-core';

const USAGE = 'usage: node check.mjs <base-url> <screenshot.png> <expected-region> [--wait-ms N]';
const READY_TIMEOUT_MS = 20_000;

function parseArgs(argv) {
  const positional = [];
  let waitMs = 0;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--wait-ms' || a.startsWith('--wait-ms=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      waitMs = Number(v);
      if (!Number.isFinite(waitMs) || waitMs < 0) throw new Error(`--wait-ms wants a number of milliseconds, got ${v}`);
    } else if (a === '-h' || a === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (a.startsWith('--')) {
      throw new Error(`unknown option ${a}\n${USAGE}`);
    } else {
      positional.push(a);
    }
  }
  if (positional.length !== 3) throw new Error(USAGE);
  const [base, screenshot, region] = positional;
  let url;
  try {
    url = new URL(base);
  } catch {
    throw new Error(`not a URL: ${base}`);
  }
  return { base: url, screenshot, region, waitMs };
}

function fail(why) {
  console.error(`dashboard check failed: ${why}`);
  process.exitCode = 1;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    fail(e.message);
    return;
  }
  const { base, screenshot, region, waitMs } = opts;
  const origin = base.origin;
  const pageUrl = new URL('/', base).href;

  // Never hang CI: whatever happens, stop well after the checks' own limits.
  const guard = setTimeout(() => {
    fail('timed out (the browser did not answer)');
    process.exit(1);
  }, READY_TIMEOUT_MS + waitMs + 60_000);
  guard.unref();

  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  let browser;
  try {
    browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox'] });
  } catch (e) {
    fail(`cannot start Chromium at ${executablePath} (set CHROMIUM, or apt-get install chromium): ${e.message.split('\n')[0]}`);
    return;
  }

  const problems = [];
  let page;
  let shotTaken = false;
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
    page = await context.newPage();

    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const where = msg.location()?.url || '';
      // A node without regions answers GET /regions with 404 (no_regions) on
      // purpose; Chromium logs every 4xx fetch as a console error.
      if (/status of 404/.test(msg.text()) && where === new URL('/regions', base).href) return;
      problems.push(`console error: ${msg.text()}${where ? ` (${where})` : ''}`);
    });
    const requests = [];
    page.on('request', (req) => {
      const u = req.url();
      if (u.startsWith('data:') || u.startsWith('blob:') || u === 'about:blank') return;
      requests.push(u);
      let o;
      try { o = new URL(u).origin; } catch { o = '(unparsable)'; }
      if (o !== origin) problems.push(`request to another origin: ${u}`);
    });
    page.on('requestfailed', (req) => {
      // The event stream is aborted when the page closes; nothing else may fail.
      const f = req.failure()?.errorText || 'failed';
      if (!/ERR_ABORTED/.test(f)) problems.push(`request failed: ${req.url()} (${f})`);
    });

    const res = await page.goto(pageUrl, { waitUntil: 'domcontentloaded', timeout: READY_TIMEOUT_MS });
    if (!res || !res.ok()) throw new Error(`GET ${pageUrl} answered ${res ? res.status() : 'nothing'}`);

    const readStats = () => page.evaluate(() => {
      const s = document.getElementById('stats');
      if (!s) return null;
      const n = (k) => Number(s.dataset[k] || 0);
      return {
        riders: n('riders'), drivers: n('drivers'), matches: n('matches'),
        cross_border: n('crossBorder'), claims: n('claims'), frames: n('frames'),
        draw_ms: s.dataset.drawMs ? Number(s.dataset.drawMs) : null,
      };
    });

    try {
      await page.waitForFunction(() => {
        const s = document.getElementById('stats');
        if (!s) return false;
        const n = (k) => Number(s.dataset[k] || 0);
        return n('frames') >= 2 && n('riders') >= 1 && n('drivers') >= 1 && n('matches') >= 1;
      }, null, { timeout: READY_TIMEOUT_MS, polling: 100 });
    } catch {
      const seen = await readStats().catch(() => null);
      throw new Error(`no live frames with riders, drivers and matches within ${READY_TIMEOUT_MS / 1000} s; #stats says ${JSON.stringify(seen)}`);
    }

    if (waitMs > 0) await page.waitForTimeout(waitMs);
    // Let the frame that was just counted be drawn before the screenshot.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

    const header = await page.evaluate(() => ({
      node: document.getElementById('this-node')?.textContent?.trim() ?? null,
      region: document.getElementById('this-region')?.textContent?.trim() ?? null,
    }));
    if (header.region !== region) problems.push(`#this-region says ${JSON.stringify(header.region)}, expected ${JSON.stringify(region)}`);
    if (!header.node) problems.push('#this-node is empty');
    const card = await page.$(`[data-region="${region.replace(/["\\]/g, '\\$&')}"]`);
    if (!card) problems.push(`no [data-region="${region}"] card`);
    const nodes = await page.$$eval('[data-node]', (rows) => rows.map((r) => ({ node: r.dataset.node, reachable: r.dataset.reachable })));
    if (nodes.length === 0) problems.push('no [data-node] rows in the side panel');
    for (const n of nodes) {
      if (n.reachable !== 'true' && n.reachable !== 'false') problems.push(`node row ${n.node} has data-reachable=${JSON.stringify(n.reachable)}`);
    }

    await page.screenshot({ path: screenshot, fullPage: true });
    shotTaken = true;
    const stats = await readStats();

    if (problems.length) throw new Error(problems.join('\n  '));
    console.log(JSON.stringify({
      riders: stats.riders, drivers: stats.drivers, matches: stats.matches, frames: stats.frames,
      cross_border: stats.cross_border, claims: stats.claims, draw_ms: stats.draw_ms,
      node: header.node, region: header.region,
      nodes: nodes.length, reachable: nodes.filter((n) => n.reachable === 'true').length,
      requests: requests.length, screenshot,
    }));
  } catch (e) {
    fail([e.message, ...problems.filter((p) => !e.message.includes(p))].join('\n  '));
    // Whatever the page got to show helps to see why.
    if (page && !shotTaken) {
      await page.screenshot({ path: screenshot, fullPage: true, timeout: 5000 })
        .then(() => console.error(`dashboard check: the page as it was is in ${screenshot}`))
        .catch(() => {});
    }
  } finally {
    await browser.close().catch(() => {});
  }
}

await main();
