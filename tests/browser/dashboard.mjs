// Drives GET /dashboard in headless Chromium (Debian's /usr/bin/chromium through playwright-core) as a
// manager would: loads the page, enters the token, reads what the page shows (from the data-* attributes
// that carry the exact figures), switches the spend period, downloads the CSV, and saves screenshots at
// 1280×800 and at phone width. Prints one JSON document of what it read on stdout; the Rust test
// (tests/api/dashboard.rs) compares it with the API's own answers.
//
//   DASHBOARD_URL=http://127.0.0.1:PORT DASHBOARD_TOKEN=<jwt> DASHBOARD_OUT=target/dashboard node dashboard.mjs
//
// With DASHBOARD_ADMIN_TOKEN and DASHBOARD_COMPANY it also signs in as an admin and types the company id;
// with DASHBOARD_REFUSED_TOKEN it signs in with a token the service refuses and reads what the page says.
//
// The token comes through the environment, never the command line (which other users can list).
// Bounded: the whole run is abandoned after DASHBOARD_TIMEOUT_MS (default 90 s) with exit status 3.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.DASHBOARD_URL;
const TOKEN = process.env.DASHBOARD_TOKEN;
const OUT = process.env.DASHBOARD_OUT || 'target/dashboard';
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const LIMIT_MS = Number(process.env.DASHBOARD_TIMEOUT_MS || 90000);
// One step (a load, a click's effect) may take this long on a busy two-core machine.
const STEP_MS = 30000;
// Optional: an admin token and the company it should type in; a token the service refuses.
const ADMIN_TOKEN = process.env.DASHBOARD_ADMIN_TOKEN;
const COMPANY = process.env.DASHBOARD_COMPANY;
const REFUSED_TOKEN = process.env.DASHBOARD_REFUSED_TOKEN;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

if (!BASE || !TOKEN) {
  console.error('DASHBOARD_URL and DASHBOARD_TOKEN are required');
  process.exit(2);
}

const deadline = setTimeout(() => {
  console.error(`the dashboard run did not finish within ${LIMIT_MS} ms`);
  process.exit(3);
}, LIMIT_MS);

/** Everything the page shows, read from the DOM. */
async function readBoard(page) {
  return page.evaluate(() => {
    const rows = (sel) => [...document.querySelectorAll(sel)].map((e) => ({ ...e.dataset }));
    const text = (sel) => {
      const e = document.querySelector(sel);
      return e && !e.hidden ? e.textContent.trim() : null;
    };
    const box = document.querySelector('#spend-chart-box');
    const canvas = document.querySelector('#spend-chart');
    return {
      loaded: document.body.dataset.loaded || null,
      error: text('#error'),
      section_errors: [...document.querySelectorAll('.section-error')]
        .filter((e) => !e.hidden)
        .map((e) => e.textContent.trim()),
      company_label: text('#company-label'),
      range: text('#range'),
      kpis: Object.fromEntries(
        [...document.querySelectorAll('.kpi')].map((k) => [k.id, k.querySelector('.kpi-value').textContent.trim()]),
      ),
      budgets: [...document.querySelectorAll('#budgets li.budget')].map((li) => ({
        ...li.dataset,
        thresholds: [...li.querySelectorAll('.mark')].map((m) => m.dataset.threshold),
        text: li.textContent.replace(/\s+/g, ' ').trim(),
      })),
      spend: box && box.dataset.series ? JSON.parse(box.dataset.series) : null,
      chart_drawn: Boolean(canvas && canvas.width > 0 && canvas.height > 0),
      spenders: rows('#spenders tbody tr'),
      transactions: rows('#txns tbody tr'),
      wallets: rows('#wallets tbody tr'),
      wallets_text: [...document.querySelectorAll('#wallets tbody tr')].map((r) => r.textContent.replace(/\s+/g, ' ').trim()),
    };
  });
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  const origin = new URL(BASE).origin;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Chromium's sandbox needs user namespaces that a root CI container does not give.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    timeout: STEP_MS,
  });
  const problems = [];
  const offOrigin = [];
  try {
    const context = await browser.newContext({ viewport: DESKTOP, acceptDownloads: true });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (r) => {
      const u = r.url();
      if (!u.startsWith(origin) && !u.startsWith('blob:') && !u.startsWith('data:')) offOrigin.push(u);
    });

    const res = await page.goto(`${BASE}/dashboard`, { waitUntil: 'load' });
    const csp = res ? res.headers()['content-security-policy'] || null : null;
    await page.waitForSelector('#login:not([hidden])');
    await page.fill('#token', TOKEN);
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector('body[data-loaded]');
    // The chart animates for 250 ms; let it settle before the picture.
    await page.waitForTimeout(600);
    const first = await readBoard(page);
    const url_after_login = page.url();
    const token_in_storage = await page.evaluate(() => sessionStorage.getItem('wallet-dashboard.token'));
    await page.screenshot({ path: join(OUT, 'dashboard-1280x800.png') });
    await page.screenshot({ path: join(OUT, 'dashboard-1280-full.png'), fullPage: true });

    // Switch the period: the page reloads the spend reports and redraws the chart.
    const before = first.loaded;
    const to = first.spend && first.spend.group_by === 'month' ? 'day' : 'month';
    await page.selectOption('#period', to);
    await page.waitForFunction((n) => document.body.dataset.loaded !== n, before);
    await page.waitForTimeout(600);
    const second = await readBoard(page);
    await page.screenshot({ path: join(OUT, `dashboard-1280x800-${to}.png`) });

    // The CSV of what is on screen now.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const csvPath = join(OUT, 'dashboard.csv');
    await download.saveAs(csvPath);
    const csv = readFileSync(csvPath, 'utf8');

    // Phone width: the same page, narrower.
    await page.setViewportSize(PHONE);
    await page.waitForTimeout(600);
    const phone = await page.evaluate(() => ({
      scroll_width: document.documentElement.scrollWidth,
      client_width: document.documentElement.clientWidth,
    }));
    await page.screenshot({ path: join(OUT, 'dashboard-390x844.png') });
    await page.screenshot({ path: join(OUT, 'dashboard-390-full.png'), fullPage: true });

    await context.close();

    // An admin has no company of their own on this page: they are asked for one and type it.
    let admin = null;
    if (ADMIN_TOKEN && COMPANY) {
      const ctx = await browser.newContext({ viewport: DESKTOP });
      const p = await ctx.newPage();
      p.setDefaultTimeout(STEP_MS);
      await p.goto(`${BASE}/dashboard`, { waitUntil: 'load' });
      await p.fill('#token', ADMIN_TOKEN);
      await p.click('#login-form button[type=submit]');
      await p.waitForSelector('#company-field:not([hidden])');
      await p.waitForSelector('#error:not([hidden])');
      const prompt = (await p.textContent('#error')).trim();
      await p.fill('#company', COMPANY);
      await p.press('#company', 'Enter');
      await p.waitForSelector('body[data-loaded]');
      admin = { prompt, board: await readBoard(p) };
      await ctx.close();
    }

    // A token the service refuses: the page says so in words and asks for another.
    let refused = null;
    if (REFUSED_TOKEN) {
      const ctx = await browser.newContext({ viewport: DESKTOP });
      const p = await ctx.newPage();
      p.setDefaultTimeout(STEP_MS);
      await p.goto(`${BASE}/dashboard`, { waitUntil: 'load' });
      await p.fill('#token', REFUSED_TOKEN);
      await p.click('#login-form button[type=submit]');
      await p.waitForFunction(
        () => !document.querySelector('#error').hidden && !document.querySelector('#login').hidden,
      );
      refused = {
        error: (await p.textContent('#error')).trim(),
        board_hidden: await p.evaluate(() => document.querySelector('#board').hidden),
        token_kept: await p.evaluate(() => sessionStorage.getItem('wallet-dashboard.token') !== null),
      };
      await p.screenshot({ path: join(OUT, 'dashboard-refused.png') });
      await ctx.close();
    }

    const report = {
      admin,
      refused,
      csp,
      url_after_login,
      token_in_storage: token_in_storage === TOKEN,
      first,
      switched_to: to,
      second,
      csv,
      csv_filename: download.suggestedFilename(),
      phone,
      problems,
      off_origin_requests: offOrigin,
      screenshots: ['dashboard-1280x800.png', 'dashboard-1280-full.png', `dashboard-1280x800-${to}.png`, 'dashboard-390x844.png', 'dashboard-390-full.png'],
    };
    process.stdout.write(JSON.stringify(report) + '\n');
  } finally {
    await browser.close();
  }
}

main()
  .then(() => {
    clearTimeout(deadline);
    process.exit(0);
  })
  .catch((e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  });
