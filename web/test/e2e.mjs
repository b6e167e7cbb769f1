// The dashboard in a real browser (Debian's chromium through playwright-core;
// run by crates/weft/tests/dashboard.rs, which starts the node and sets the
// environment below). Loads every page with no console errors, sees a record
// produced by `weft produce` appear in the live record browser, a `weft pv
// put` appear on a PV's plot, an error-queue item re-processed by a click,
// and on the Tables page a table made by the CLI listed, an AQL query typed
// in the console showing its rows, a CLI write in the live watch, and a bad
// query's typed error with its position. Saves screenshots into $SHOTS
// (docs/dashboard/). Prints one JSON
// line with what it saw; exits non-zero on the first failed expectation.
//
// Environment: UI_URL (http://127.0.0.1:PORT), WEFT_BIN, WEFT_ADDR
// (tcp://...), PV (a writable double PV the node serves), TOPIC (exists, has
// records), QUEUE_TOPIC (does not exist yet), TABLE (exists, holds pump/1
// {kind: pump, rpm: 1200}, pump/2 {kind: pump, rpm: 800} and a valve;
// `weft kv` reaches it through WEFT_GRPC_ADDR), SHOTS (dir or empty: none),
// CHROMIUM (default /usr/bin/chromium), and the EPICS_PVA_* client
// variables for `weft pv put`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const URL_BASE = env('UI_URL');
const WEFT = env('WEFT_BIN');
const ADDR = env('WEFT_ADDR');
const PV = env('PV');
const TOPIC = env('TOPIC');
const QUEUE_TOPIC = env('QUEUE_TOPIC');
const TABLE = env('TABLE');
const SHOTS = env('SHOTS', '');
const STEP_MS = 15_000; // every wait below is bounded by this

const weft = (args, input) => execFileSync(WEFT, [...args, '--addr', ADDR], { input, encoding: 'utf8', timeout: STEP_MS });
const weftNoAddr = (args) => execFileSync(WEFT, args, { encoding: 'utf8', timeout: STEP_MS });

const profile = mkdtempSync(join(tmpdir(), 'weft-ui-chromium-'));
// A fresh profile (Playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  viewport: { width: 1200, height: 560 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const problems = [];
const seen = {};
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.setDefaultTimeout(STEP_MS);
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  const shot = async (name, fullPage = false) => {
    if (!SHOTS) return;
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });
  };
  const tab = async (name) => {
    await page.click(`[data-testid=tab-${name}]`);
    await page.waitForSelector(`[data-testid=page-${name}]`);
  };

  // Overview: the feed is live and names the node.
  await page.goto(`${URL_BASE}/ui/`);
  await page.waitForSelector('[data-testid=conn]:has-text("live")');
  await page.waitForSelector('[data-testid=node-name]');
  await page.waitForSelector('[data-testid=ready]:has-text("ready")');
  seen.node = await page.textContent('[data-testid=node-name]');
  await shot('overview');

  // Topics: the topic with its rate charts (a few points first).
  await tab('topics');
  await page.waitForSelector(`[data-testid="topic-${TOPIC}"]`);
  // A few bursts a little apart, so the rate chart has a shape.
  for (let i = 0; i < 5; i++) {
    weft(['produce', TOPIC], Array.from({ length: 10 * (i + 1) }, (_, j) => `t=${20 + ((i + j) % 7) / 10}`).join('\n') + '\n');
    await page.waitForTimeout(700);
  }
  await page.waitForFunction(
    (t) => Number(document.querySelector(`[data-testid="topic-${t}"] svg`)?.getAttribute('data-points') ?? 0) >= 5,
    TOPIC,
  );
  await shot('topics');

  // Records: tail the partition, produce with the CLI, see the record.
  await tab('records');
  await page.selectOption('[data-testid=rec-topic]', TOPIC);
  await page.selectOption('[data-testid=rec-from]', 'latest');
  await page.waitForSelector(`[data-testid=rec-status]:has-text("tailing ${TOPIC}/0 from latest")`);
  const marker = `hello from weft produce ${Date.now()}`;
  weft(['produce', TOPIC, '--partition', '0'], `${marker}\n`);
  await page.waitForSelector(`[data-testid=record]:has-text("${marker}")`);
  seen.record = marker;
  await shot('records');

  // PVs: put a value with `weft pv put`, see it as the value and on the plot.
  await tab('pvs');
  await page.waitForSelector(`[data-testid="pv-${PV}"]`);
  const value = 42.5;
  weftNoAddr(['pv', 'put', PV, String(value)]);
  await page.waitForFunction(
    ([pv, v]) => {
      const row = document.querySelector(`[data-testid="pv-${pv}"]`);
      const chart = row?.querySelector('[data-testid=pv-chart]');
      return row?.querySelector('[data-testid=pv-value]')?.textContent === String(v) && Number(chart?.getAttribute('data-last')) === v;
    },
    [PV, value],
  );
  // One more point after the change, so the plot shows the step.
  await page.waitForTimeout(1200);
  seen.pv = { name: PV, value };
  await shot('pvs');

  // Queues: an item fails (its topic does not exist) into the error queue;
  // create the topic, click re-process, the queue empties.
  await tab('queues');
  const q = '[data-testid="queue-log.produce_queued"]';
  await page.waitForSelector(q);
  weft(['call', 'log.produce_queued', JSON.stringify({ topic: QUEUE_TOPIC, value: 'queued while the topic was missing' })]);
  await page.waitForSelector(`${q} [data-testid=q-errors]:has-text("1")`);
  await page.click(`${q} [data-testid=q-inspect]`);
  await page.waitForSelector('[data-testid=q-items]:has-text("queued while the topic was missing")');
  await shot('queues');
  weft(['topic', 'create', QUEUE_TOPIC]);
  await page.click(`${q} [data-testid=q-reprocess]`);
  await page.waitForSelector(`${q} [data-testid=q-msg]:has-text("reprocess: 1 item")`);
  await page.waitForFunction((sel) => {
    const row = document.querySelector(sel);
    return row?.querySelector('[data-testid=q-errors]')?.textContent === '0' && row?.querySelector('[data-testid=q-incoming]')?.textContent === '0';
  }, q);
  seen.queue = 'emptied';

  // Tables: the table the CLI made is listed with its keys; watch it; an
  // AQL query typed in the console and run with Ctrl+Enter shows its rows.
  await tab('tables');
  const trow = `[data-testid="table-${TABLE}"]`;
  await page.waitForSelector(trow);
  await page.waitForFunction((sel) => document.querySelector(`${sel} [data-testid=t-keys]`)?.textContent === '3', trow);
  await page.click(`${trow} [data-testid=t-watch]`);
  await page.waitForSelector(`[data-testid=watch-status]:has-text("watching ${TABLE}")`);
  const good = `FILTER ${TABLE} WHERE kind = 'pump' AND rpm >= 1000`;
  await page.fill('[data-testid=aql-input]', good);
  await page.press('[data-testid=aql-input]', 'Control+Enter');
  const rowKeys = async () => {
    await page.waitForSelector('[data-testid=aql-result][data-ok=true] [data-testid=aql-row]');
    return page.$$eval('[data-testid=aql-result] [data-testid=aql-row]', (trs) => trs.map((tr) => tr.querySelector('td')?.textContent));
  };
  const first = await rowKeys();
  if (JSON.stringify(first) !== JSON.stringify(['pump/1'])) throw new Error(`FILTER showed ${JSON.stringify(first)}, not pump/1`);
  // A write by the CLI: in the watch at once, and in the next run's rows.
  weft(['kv', 'put', TABLE, 'pump/2', JSON.stringify({ kind: 'pump', rpm: 1500 })]);
  await page.waitForSelector('[data-testid=watch-event]:has-text("pump/2")');
  const watched = await page.textContent('[data-testid=watch-event]');
  await page.click('[data-testid=aql-run]');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=aql-result] [data-testid=aql-row]').length === 2);
  const second = await rowKeys();
  const pump2 = await page.textContent('[data-testid=aql-result] [data-testid=aql-row]:nth-child(2) td.value');
  if (JSON.stringify(second) !== JSON.stringify(['pump/1', 'pump/2']) || !pump2?.includes('1500')) {
    throw new Error(`after the put FILTER showed ${JSON.stringify(second)} (${pump2})`);
  }
  await page.waitForFunction((sel) => document.querySelector(`${sel} [data-testid=t-revision]`)?.textContent === '4', trow);
  await shot('tables', true);
  // The raw JSON of the same answer.
  await page.check('[data-testid=aql-raw]');
  await page.waitForFunction(() => document.querySelector('[data-testid=aql-json]')?.textContent?.includes('"kind": "filter"'));
  await page.uncheck('[data-testid=aql-raw]');
  // A bad query: its gRPC code, message and the position under its line.
  const bad = `FILTER ${TABLE}\n  WHER kind = 'pump'`;
  await page.fill('[data-testid=aql-input]', bad);
  await page.click('[data-testid=aql-run]');
  await page.waitForSelector('[data-testid=aql-result][data-ok=false] [data-testid=aql-error]');
  const code = await page.textContent('[data-testid=aql-error-code]');
  const pos = await page.textContent('[data-testid=aql-error-pos]');
  if (code !== 'INVALID_ARGUMENT' || !pos?.includes('line 2, column 3') || !pos.includes('^')) {
    throw new Error(`the bad query showed ${code} / ${pos}`);
  }
  const history = await page.$$eval('[data-testid=aql-history] li', (lis) => lis.map((li) => li.textContent));
  if (history[0] !== bad || history[1] !== good) throw new Error(`history ${JSON.stringify(history)}`);
  await shot('tables-error', true);
  seen.table = { rows: second, watched, error: { code, position: pos.split('\n')[0] }, history: history.length };

  // Every page once more, now with data, for console errors.
  for (const t of ['overview', 'topics', 'records', 'queues', 'pvs', 'tables']) await tab(t);
  // Deep links load the app too (the node's SPA fallback).
  await page.goto(`${URL_BASE}/ui/queues`);
  await page.waitForSelector('[data-testid=page-queues]');
  await page.waitForSelector('[data-testid=conn]:has-text("live")');
} catch (e) {
  problems.push(`failed: ${e.message.split('\n')[0]}`);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify({ seen, problems }));
process.exit(problems.length === 0 ? 0 : 1);
