// The dashboard's Funnels view in a real browser: each configured funnel's
// steps with visits, conversion and drop-off as /api/v2/funnel answers
// them, in French then in English; names from the configuration (an XSS
// corpus among them) shown as text, and withheld steps as "—". Prints a
// JSON summary; throws on failure.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { launch, arg, DESKTOP_UA } from './lib.mjs';

const tamis = arg('tamis');
const token = arg('token');
const site = arg('site');
const shots = arg('screenshots');
mkdirSync(shots, {recursive: true});

async function funnel(name) {
  const r = await fetch(tamis + '/api/v2/funnel', {method: 'POST', headers: {Authorization: 'Bearer ' + token, 'Content-Type': 'application/json'},
    body: JSON.stringify({site_id: site, funnel: name, date_range: 'day'})});
  assert.equal(r.status, 200, await r.clone().text());
  return r.json();
}

const summary = {screenshots: []};
const browser = await launch();
try {
  const ctx = await browser.newContext({userAgent: DESKTOP_UA, viewport: {width: 1366, height: 900}, locale: 'fr-CA'});
  const p = await ctx.newPage();
  const problems = [];
  p.on('dialog', (d) => { problems.push('dialog: ' + d.message()); d.dismiss() });
  p.on('pageerror', (e) => problems.push('page error: ' + e));
  p.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()) });
  // The hits were sent today, which "7d" leaves out (it ends yesterday).
  await p.goto(`${tamis}/#period=day&site=${encodeURIComponent(site)}&lang=fr`);
  await p.fill('#token', token);
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#dash:not([hidden])');

  async function settled() {
    await p.waitForFunction(() => document.body.dataset.busy === '0' && document.querySelectorAll('#funnel-list .funnel').length > 0 &&
      !document.querySelector('#funnel-list .funnel-body p.muted'), null, {timeout: 15000});
    await p.waitForTimeout(200);
  }
  async function read() {
    return p.$$eval('#funnel-list .funnel', (fs) => fs.map((f) => ({
      name: f.querySelector('h3').textContent,
      rows: [...f.querySelectorAll('tbody tr')].map((r) => ({
        step: r.querySelector('th .value').textContent,
        cells: [...r.querySelectorAll('td')].map((td) => td.textContent),
        withheld: r.classList.contains('withheld'),
        tip: r.querySelector('td').title,
      })),
    })));
  }

  await settled();
  summary.title_fr = await p.textContent('#h-funnels');
  summary.note_fr = await p.textContent('#funnels .note');
  summary.fr = await read();
  summary.api = [];
  for (const f of summary.fr) summary.api.push(await funnel(f.name));
  await p.screenshot({path: `${shots}/funnels-fr.png`, fullPage: true});
  summary.screenshots.push(`${shots}/funnels-fr.png`);

  await p.click('#lang');
  await settled();
  summary.title_en = await p.textContent('#h-funnels');
  summary.head_en = await p.$$eval('#funnel-list .funnel:first-child thead th', (ths) => ths.map((th) => th.textContent));
  summary.en = await read();
  await p.locator('#funnels').screenshot({path: `${shots}/funnels-en.png`});
  summary.screenshots.push(`${shots}/funnels-en.png`);

  // Nothing of the corpus ran or became markup.
  summary.xss_flag = await p.evaluate(() => window.__xss || null);
  summary.injected_elements = await p.$$eval('#funnels img, #funnels script', (xs) => xs.length);
  summary.problems = problems;
} finally {
  await browser.close();
}
console.log(JSON.stringify(summary));
