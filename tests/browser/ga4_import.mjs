// The dashboard with history imported from Google Analytics 4 (tamis import
// ga4) beside the visits tamis collected: the chart marks the imported
// months with a band labelled "Importé de Google Analytics" (then
// "Imported from Google Analytics" in English), a note names the imported
// period, the collected month stands unmarked beside them, and the
// top-line numbers are the API's with include.imports. Saves
// ga4-import.png. Prints a JSON summary; throws on failure.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { launch, arg, DESKTOP_UA } from './lib.mjs';

const tamis = arg('tamis');
const token = arg('token');
const site = arg('site');
const shots = arg('screenshots');
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
  const ctx = await browser.newContext({userAgent: DESKTOP_UA, viewport: {width: 1366, height: 900}, locale: 'fr-CA'});
  const p = await ctx.newPage();
  const problems = [];
  p.on('pageerror', (e) => problems.push('page error: ' + e));
  p.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()) });
  await p.goto(`${tamis}/#period=year&site=${encodeURIComponent(site)}&lang=fr`);
  await p.fill('#token', token);
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#dash:not([hidden])');

  async function settled() {
    await p.waitForFunction(() => document.body.dataset.busy === '0' && document.querySelectorAll('.metric-value').length === 6 &&
      document.querySelector('#chart svg') && !document.querySelector('#imports-note').hidden, null, {timeout: 15000});
    await p.waitForTimeout(200);
  }
  const digits = (s) => Number(String(s).replace(/[^0-9]/g, ''));
  async function read() {
    return {
      band_label: await p.textContent('#chart .imported-text'),
      bands: await p.$$eval('#chart .imported-band', (r) => r.length),
      legend: await p.textContent('#legend-imported-label'),
      legend_visible: await p.isVisible('#legend-imported-label'),
      note: await p.textContent('#imports-note'),
      // The chart's numbers as its screen-reader table gives them (each
      // row's bucket as <time datetime>, its name as read).
      months: await p.$$eval('#chart-table tbody tr', (rows) => rows.map((r) => [r.querySelector('th time').getAttribute('datetime'), r.querySelector('td').textContent, r.querySelector('th').textContent])),
      visitors: await p.$eval('.metric[data-metric="visitors"] .metric-value', (e) => e.textContent),
    };
  }

  await settled();
  summary.fr = await read();
  summary.fr.visitors = digits(summary.fr.visitors);
  const withImports = await api({metrics: ['visitors'], date_range: 'year', include: {imports: true}});
  const without = await api({metrics: ['visitors'], date_range: 'year'});
  summary.api_with_imports = withImports.results[0].metrics[0];
  summary.api_without = without.results[0].metrics[0];
  summary.api_imports_period = withImports.meta.imports_period;
  await p.screenshot({path: `${shots}/ga4-import.png`, fullPage: true});
  summary.screenshots.push(`${shots}/ga4-import.png`);

  await p.click('#lang');
  await p.waitForFunction(() => document.documentElement.lang === 'en');
  await settled();
  summary.en = await read();
  summary.en.visitors = digits(summary.en.visitors);
  await p.locator('figure.chart').screenshot({path: `${shots}/ga4-import-chart-en.png`});
  summary.screenshots.push(`${shots}/ga4-import-chart-en.png`);
  summary.problems = problems;
} finally {
  await browser.close();
}
console.log(JSON.stringify(summary));
