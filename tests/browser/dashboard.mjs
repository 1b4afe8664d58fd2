// The dashboard in a real browser, signed in with a token: top-line numbers
// against the API, click-to-filter, language switch, CSV export, an XSS
// corpus that must stay text, no horizontal overflow, and screenshots at
// desktop and phone widths. Prints a JSON summary; throws on failure.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { launch, arg, waitFor, DESKTOP_UA, PHONE_UA } from './lib.mjs';

const tamis = arg('tamis');
const token = arg('token');
const site = arg('site');
const period = arg('period');
const shots = arg('screenshots');
const prefix = arg('prefix');
const filterPage = process.argv.includes('--filter-page') ? arg('filter-page') : null;
mkdirSync(shots, {recursive: true});

async function api(q) {
  const r = await fetch(tamis + '/api/v2/query', {method: 'POST', headers: {Authorization: 'Bearer ' + token, 'Content-Type': 'application/json'},
    body: JSON.stringify(Object.assign({site_id: site}, q))});
  assert.equal(r.status, 200, await r.clone().text());
  return r.json();
}

const summary = {screenshots: []};
const browser = await launch();
try {
  const ctx = await browser.newContext({userAgent: DESKTOP_UA, viewport: {width: 1366, height: 900}, acceptDownloads: true, locale: 'fr-CA'});
  const p = await ctx.newPage();
  const problems = [];
  p.on('dialog', (d) => { problems.push('dialog: ' + d.message()); d.dismiss() });
  p.on('pageerror', (e) => problems.push('page error: ' + e));
  p.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()) });
  p.on('request', (r) => { if (!r.url().startsWith(tamis) && !r.url().startsWith('blob:') && !r.url().startsWith('data:')) problems.push('external request: ' + r.url()) });

  const resp = await p.goto(`${tamis}/#period=${period}&site=${encodeURIComponent(site)}`);
  summary.csp = resp.headers()['content-security-policy'];
  assert.ok(summary.csp.includes("script-src 'self'"), summary.csp);
  await p.fill('#token', 'wrong-token');
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#error:not([hidden])');
  summary.bad_token_message = await p.textContent('#error');
  problems.length = 0; // the refused token's 401 was expected
  await p.fill('#token', token);
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#dash:not([hidden])');

  async function settled() {
    await p.waitForFunction(() => document.body.dataset.busy === '0' && document.querySelectorAll('.metric-value').length === 6 &&
      document.querySelector('#chart svg'), null, {timeout: 15000});
    await p.waitForTimeout(200);
  }
  async function metrics() {
    return p.$$eval('.metric', (ms) => Object.fromEntries(ms.map((m) => [m.dataset.metric, m.querySelector('.metric-value').textContent])));
  }
  const digits = (s) => Number(String(s).replace(/[^0-9]/g, ''));

  await settled();
  const top = await api({metrics: ['visitors', 'visits', 'pageviews'], date_range: period});
  const shown = await metrics();
  summary.api_totals = top.results[0].metrics;
  summary.shown_totals = [digits(shown.visitors), digits(shown.visits), digits(shown.pageviews)];
  assert.deepEqual(summary.shown_totals, summary.api_totals, 'top-line numbers match the API');
  summary.lang_initial = await p.getAttribute('html', 'lang');

  // Every row of the top-pages table matches the API.
  const pagesApi = await api({metrics: ['visitors', 'pageviews'], date_range: period, dimensions: ['event:page'], order_by: [['visitors', 'desc']], pagination: {limit: 11, offset: 0}});
  const pagesShown = await p.$$eval('#card-pages tbody tr', (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent)));
  const expectRows = pagesApi.results.slice(0, 10).map((r) => r.metrics.map((m) => m == null ? '—' : String(m)));
  assert.deepEqual(pagesShown.map((r) => r.map((c) => c === '—' ? c : String(digits(c)))), expectRows, 'page rows match the API');
  summary.other_tooltip = await p.$eval('#card-pages tr.other .other-label', (e) => e.title).catch(() => null);

  await p.screenshot({path: `${shots}/${prefix}-fr-desktop.png`, fullPage: true});
  summary.screenshots.push(`${shots}/${prefix}-fr-desktop.png`);

  // Property values and referrers are shown too (as text) before checking.
  const propTab = await p.$('#card-events [data-tab^="prop:"]');
  if (propTab) {
    await propTab.click();
    await settled();
    summary.prop_values = await p.$$eval('#card-events tbody th', (ths) => ths.map((th) => th.textContent));
    await p.screenshot({path: `${shots}/${prefix}-fr-properties.png`, fullPage: true});
    summary.screenshots.push(`${shots}/${prefix}-fr-properties.png`);
  }
  await p.click('#card-sources [data-tab="referrer"]');
  await settled();
  summary.referrers = await p.$$eval('#card-sources tbody th', (ths) => ths.map((th) => th.textContent));

  // Goals: names as text, numbers as the API answers them.
  if (await p.$('#card-goals')) {
    const goalsApi = await api({metrics: ['visitors', 'events', 'conversion_rate'], date_range: period, dimensions: ['event:goal'], order_by: [['visitors', 'desc']], pagination: {limit: 11, offset: 0}});
    summary.goals_api = goalsApi.results;
    summary.goals_fr = {
      title: await p.textContent('#h-goals'),
      head: await p.$$eval('#card-goals thead th', (ths) => ths.map((th) => th.textContent)),
      rows: await p.$$eval('#card-goals tbody tr', (rows) => rows.map((r) => [r.querySelector('th').textContent, ...[...r.querySelectorAll('td')].map((td) => td.textContent)])),
    };
  }

  // XSS corpus: nothing ran, nothing escaped its box.
  summary.xss_flag = await p.evaluate(() => window.__xss || null);
  summary.injected_elements = await p.evaluate(() => document.querySelectorAll('main img, main script, main iframe, main a[href^="javascript"]').length);
  summary.overflow = await p.evaluate(() => {
    const bad = [];
    if (document.documentElement.scrollWidth > window.innerWidth) bad.push('page ' + document.documentElement.scrollWidth);
    document.querySelectorAll('.card, .metric, .chip').forEach((c) => { if (c.scrollWidth > c.clientWidth + 1) bad.push(c.id || c.className) });
    return bad;
  });

  // A card whose request failed shows its error in place (a refusal the
  // dashboard did not wait out, for one): none after the first load, nor
  // at the end.
  const inlineErrors = () => p.$$eval('.error-inline, #error:not([hidden])', (els) => els.map((e) => e.textContent));
  summary.inline_errors = await inlineErrors();

  // Click-to-filter.
  if (filterPage) {
    await p.click(`#card-pages button.filter >> text="${filterPage}"`);
    await p.waitForSelector('#filters:not([hidden]) .chip');
    await settled();
    const filtered = await api({metrics: ['visitors', 'visits', 'pageviews'], date_range: period, filters: [['is', 'event:page', [filterPage]]]});
    const f = await metrics();
    summary.filtered_api = filtered.results[0].metrics;
    summary.filtered_shown = [f.visitors, f.visits, f.pageviews].map((v) => v === '—' ? null : digits(v));
    // views_per_visit is not asked with a page filter (Plausible refuses it).
    summary.filtered_views_per_visit = f.views_per_visit;
    summary.filter_hash = decodeURIComponent(await p.evaluate(() => location.hash));
    summary.filter_chip = await p.textContent('.chip');
    await p.screenshot({path: `${shots}/${prefix}-fr-filtered.png`, fullPage: true});
    summary.screenshots.push(`${shots}/${prefix}-fr-filtered.png`);
    await p.click('.chip-remove');
    await p.waitForSelector('#filters[hidden]', {state: 'attached'});
    await settled();
  }

  // Language switch.
  await p.click('#lang');
  await p.waitForFunction(() => document.documentElement.lang === 'en');
  await settled();
  summary.lang_switched = await p.getAttribute('html', 'lang');
  summary.en_metric_name = await p.textContent('.metric[data-metric=visitors] .metric-name');
  summary.en_hash = await p.evaluate(() => location.hash);
  if (await p.$('#card-goals')) {
    summary.goals_en = {
      title: await p.textContent('#h-goals'),
      head: await p.$$eval('#card-goals thead th', (ths) => ths.map((th) => th.textContent)),
    };
  }
  await p.screenshot({path: `${shots}/${prefix}-en-desktop.png`, fullPage: true});
  summary.screenshots.push(`${shots}/${prefix}-en-desktop.png`);

  // CSV export of the sources table.
  const [download] = await Promise.all([p.waitForEvent('download'), p.click('#card-pages .csv')]);
  const csv = readFileSync(await download.path(), 'utf8');
  summary.csv_name = download.suggestedFilename();
  summary.csv_lines = csv.trim().split(/\r?\n/);

  // Keyboard: the tabs of a card move with the arrow keys.
  await p.focus('#card-pages [role=tab][aria-selected=true]');
  await p.keyboard.press('ArrowRight');
  await p.waitForFunction(() => document.activeElement && document.activeElement.dataset.tab === 'entry_pages');
  summary.keyboard_tab = await p.evaluate(() => document.activeElement.dataset.tab);
  summary.inline_errors.push(...await inlineErrors());
  summary.problems = problems;
  summary.cookies = (await ctx.cookies()).length;
  summary.storage = await p.evaluate(() => localStorage.length + sessionStorage.length);
  await ctx.close();

  // Phone width, in French.
  const phone = await browser.newContext({userAgent: PHONE_UA, viewport: {width: 390, height: 844}, deviceScaleFactor: 2, isMobile: true, hasTouch: true});
  const m = await phone.newPage();
  m.on('dialog', (d) => { problems.push('dialog: ' + d.message()); d.dismiss() });
  await m.goto(`${tamis}/#period=${period}&site=${encodeURIComponent(site)}&lang=fr`);
  await m.fill('#token', token);
  await m.click('#signin-form button[type=submit]');
  await m.waitForSelector('#dash:not([hidden])');
  await m.waitForFunction(() => document.body.dataset.busy === '0' && document.querySelector('#chart svg'), null, {timeout: 15000});
  await m.waitForTimeout(200);
  summary.phone_overflow = await m.evaluate(() => document.documentElement.scrollWidth > window.innerWidth ? document.documentElement.scrollWidth : 0);
  await m.screenshot({path: `${shots}/${prefix}-fr-phone.png`, fullPage: true});
  summary.screenshots.push(`${shots}/${prefix}-fr-phone.png`);
  summary.phone_problems = problems.filter((x) => x.startsWith('dialog'));
  await phone.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(summary));
