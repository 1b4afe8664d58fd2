// Accessibility of the dashboard in a real browser (issue 17, part 3).
//
// 1. axe-core (through @axe-core/playwright) with the WCAG 2.1 A and AA
//    rules (tags wcag2a, wcag2aa, wcag21a, wcag21aa) on every view: sign-in
//    (empty and refused token), the dashboard with each tab of its cards,
//    filtered, a site without data, an error the dashboard shows (the
//    browser offline), goals and funnels; in French and English, at desktop
//    and phone widths. A screenshot of each view goes to --screenshots.
// 2. What axe cannot see: a keyboard-only run (Tab, Shift+Tab, Enter,
//    Space, arrow keys; no click) that signs in, changes the period,
//    applies and clears a filter and jumps to the goals and funnels, with
//    the focus ring measured (computed outline, its contrast against what
//    is behind it) on every element the Tab key reaches; the chart's data
//    table against the chart's points and the API; the chart's and the
//    controls' non-text colours (≥ 3:1, WCAG 2.1 1.4.11); numbers, dates
//    and <html lang> per language.
// Prints a JSON summary; throws on failure of the script itself.
import { mkdirSync } from 'node:fs';
import { launch, arg, DESKTOP_UA, PHONE_UA, focusState, axeCheck } from './lib.mjs';

const tamis = arg('tamis');
const token = arg('token');
const site = arg('site');
const emptySite = arg('empty-site');
const shots = arg('screenshots');
mkdirSync(shots, {recursive: true});

async function api(path, q) {
  const r = await fetch(tamis + path, {method: 'POST', headers: {Authorization: 'Bearer ' + token, 'Content-Type': 'application/json'},
    body: JSON.stringify(q)});
  if (r.status !== 200) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

const summary = {views: [], violations: [], passes: 0, screenshots: [], problems: []};

// One axe run over the whole page; every violation is kept with what a
// person fixing it needs (rule, impact, elements, help page).
async function check(p, view) {
  const result = await axeCheck(p);
  summary.views.push(view);
  summary.passes += result.passes;
  for (const v of result.violations) summary.violations.push({view, ...v});
  const path = `${shots}/a11y-${view}.png`;
  await p.screenshot({path, fullPage: true});
  summary.screenshots.push(path);
}

function watch(p) {
  p.on('pageerror', (e) => summary.problems.push('page error: ' + e));
  p.on('dialog', (d) => { summary.problems.push('dialog: ' + d.message()); d.dismiss() });
}

async function settled(p) {
  await p.waitForFunction(() => document.body.dataset.busy === '0' &&
    (document.querySelector('#chart svg') || document.querySelector('#error:not([hidden])')), null, {timeout: 20000});
  await p.waitForTimeout(150);
}

async function signIn(p) {
  await p.fill('#token', token);
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#dash:not([hidden])');
  await settled(p);
}

// ---- 1. axe on every view ------------------------------------------------
const browser = await launch();
try {
  const viewports = {
    desktop: {userAgent: DESKTOP_UA, viewport: {width: 1366, height: 900}},
    phone: {userAgent: PHONE_UA, viewport: {width: 390, height: 844}, deviceScaleFactor: 2, isMobile: true, hasTouch: true},
  };
  summary.lang = {};
  summary.formats = {};
  for (const [vp, opts] of Object.entries(viewports)) {
    for (const lang of ['fr', 'en']) {
      const ctx = await browser.newContext({...opts, locale: lang === 'fr' ? 'fr-CA' : 'en-CA'});
      const p = await ctx.newPage();
      watch(p);
      const tag = `${lang}-${vp}`;
      await p.goto(`${tamis}/#period=day&site=${encodeURIComponent(site)}&lang=${lang}`);
      await p.waitForSelector('#signin:not([hidden])');
      await check(p, `signin-${tag}`);
      await p.fill('#token', 'wrong-token');
      await p.click('#signin-form button[type=submit]');
      await p.waitForSelector('#error:not([hidden])');
      await check(p, `signin-refused-${tag}`);
      await signIn(p);
      summary.lang[tag] = await p.getAttribute('html', 'lang');
      // An exact token's numbers are not rounded, and the note does not
      // say they are.
      const note = await p.textContent('#small-note');
      if (!note || /arrondi|rounded/.test(note)) throw new Error(`${tag}: small-count note ${JSON.stringify(note)}`);
      if (!(await p.$('#card-goals')) || await p.$eval('#funnels', (f) => f.hidden)) throw new Error(`${tag}: goals or funnels not shown`);
      await p.waitForFunction(() => document.querySelectorAll('#funnel-list tbody tr').length > 0);
      await check(p, `dashboard-${tag}`);

      // Every other tab of every card (the goals and funnels stay shown).
      const tabs = await p.$$eval('#cards [role=tab]', (ts) => ts.map((b) => [b.closest('.card').id, b.dataset.tab]));
      const depth = Math.max(...tabs.map(([card]) => tabs.filter((x) => x[0] === card).length));
      for (let j = 1; j < depth; j++) {
        for (const card of new Set(tabs.map((x) => x[0]))) {
          const mine = tabs.filter((x) => x[0] === card);
          if (mine[j]) {
            await p.click(`#${card} [data-tab="${mine[j][1]}"]`);
            await settled(p);
          }
        }
        await check(p, `tabs${j + 1}-${tag}`);
      }

      if (vp === 'desktop') {
        // Numbers and dates as the language writes them.
        summary.formats[lang] = await p.evaluate(() => ({
          range: document.querySelector('#range').textContent,
          conversion: document.querySelector('#card-goals tbody td:last-child').textContent,
          chartRow: document.querySelector('#chart-table tbody th').textContent,
          funnelRate: document.querySelector('#funnel-list tbody tr:nth-child(2) td:nth-of-type(2)').textContent,
        }));
      }

      // Filtered.
      await p.click('#card-pages [data-tab="top_pages"]');
      await settled(p);
      await p.click('#card-pages button.filter');
      await p.waitForSelector('#filters:not([hidden]) .chip');
      await settled(p);
      await check(p, `filtered-${tag}`);
      await p.click('#clear-filters');
      await p.waitForSelector('#filters[hidden]', {state: 'attached'});
      await settled(p);

      // A site without data.
      await p.selectOption('#site', emptySite);
      await settled(p);
      await p.waitForSelector('#card-pages .card-body p.muted');
      await check(p, `empty-${tag}`);

      // An error the dashboard shows: the browser offline, the period
      // changed, every request refused by the network.
      await ctx.setOffline(true);
      await p.selectOption('#period', '7d');
      await p.waitForSelector('#error:not([hidden])');
      await p.waitForFunction(() => document.body.dataset.busy === '0');
      await check(p, `error-${tag}`);
      await ctx.setOffline(false);
      await ctx.close();
    }
  }

  // ---- 2. the keyboard alone ----------------------------------------------
  const ctx = await browser.newContext({userAgent: DESKTOP_UA, viewport: {width: 1366, height: 900}, locale: 'fr-CA'});
  const p = await ctx.newPage();
  watch(p);
  await p.goto(`${tamis}/#period=day&site=${encodeURIComponent(site)}&lang=fr`);
  await p.waitForSelector('#signin:not([hidden])');
  const kb = summary.keyboard = {steps: [], unringed: []};
  // What has focus, and whether its ring shows (`focusState` in lib.mjs).
  const focused = () => focusState(p);
  async function press(key, expect) {
    await p.keyboard.press(key);
    await p.waitForTimeout(30);
    const f = await focused();
    kb.steps.push(key + ' → ' + f.id);
    if (f.id !== 'body' && !f.ring) kb.unringed.push(f);
    if (expect && !expect(f)) throw new Error(`keyboard: after ${key}, focus on ${JSON.stringify(f)}; steps: ${kb.steps.join(', ')}`);
    return f;
  }
  async function tabTo(what, match, max = 150) {
    for (let i = 0; i < max; i++) {
      const f = await press('Tab');
      if (match(f)) return f;
    }
    throw new Error(`keyboard: ${what} not reached with Tab; steps: ${kb.steps.join(', ')}`);
  }
  // The page opens with nothing focused: the first Tab reaches the skip link.
  await press('Tab', (f) => f.tag === 'a' && f.id === 'skip');
  kb.skip = await focused();
  await press('Enter', (f) => f.id === 'main');
  kb.hash_after_skip = await p.evaluate(() => location.hash);
  await press('Tab', (f) => f.id === 'token');
  await p.keyboard.type(token);
  await press('Enter');
  await p.waitForSelector('#dash:not([hidden])');
  await settled(p);
  kb.after_signin = await focused();

  // Every control is reached by Tab (tabs of a tab list: the selected one,
  // the others by arrows), each with its ring.
  kb.controls = await p.$$eval('button, select, input, a[href], [tabindex="0"]', (xs) => xs.filter((x) => {
    if (x.disabled || x.tabIndex < 0) return false;
    const r = x.getBoundingClientRect(), s = getComputedStyle(x);
    return x.type !== 'hidden' && s.visibility !== 'hidden' && !x.closest('[hidden]') && (r.width > 0 || x.classList.contains('skip'));
  }).length);
  // Round the whole page once (past the end, focus leaves the page, then
  // comes back at the top), counting the stops.
  const order = [];
  let outside = 0;
  for (let i = 0; i < 400 && outside < 3; i++) {
    const f = await press('Tab');
    if (f.id === 'body') { outside++; continue }
    outside = 0;
    if (order.length && f.kb === order[0]) break;
    order.push(f.kb);
  }
  kb.tab_stops = new Set(order).size;
  // Shift+Tab walks back the same way.
  const here = await focused();
  const back1 = await press('Shift+Tab');
  const back2 = await press('Shift+Tab');
  const fwd1 = await press('Tab');
  const fwd2 = await press('Tab');
  kb.shift_tab_ok = new Set([here.kb, back1.kb, back2.kb]).size === 3 && fwd1.kb === back1.kb && fwd2.kb === here.kb;

  // The period, with the arrow keys on the focused select.
  await tabTo('the period', (f) => f.id === 'period');
  await press('ArrowDown', (f) => f.id === 'period');
  await settled(p);
  kb.period_hash_down = decodeURIComponent(await p.evaluate(() => location.hash));
  await press('ArrowUp', (f) => f.id === 'period');
  await settled(p);
  kb.period_hash_up = decodeURIComponent(await p.evaluate(() => location.hash));

  // Tabs of a card by arrows.
  await tabTo('the pages tabs', (f) => f.id === 'top_pages' || f.id === 'entry_pages' || f.id === 'exit_pages');
  kb.arrow_tabs = [];
  for (let i = 0; i < 3; i++) {
    const f = await press('ArrowRight');
    await settled(p);
    kb.arrow_tabs.push(f.id);
  }

  // A filter: Enter on a row's button, then Space on the chip's remove button.
  const filterButton = await tabTo('a filter button', (f) => f.tag === 'button' && f.id.includes('filter'));
  kb.filter_value = filterButton.text;
  kb.after_filter = await press('Enter');
  await settled(p);
  kb.filter_chip = await p.textContent('#filter-list .chip').catch(() => null);
  kb.after_filter_settled = await focused();
  kb.after_clear = await press('Space');
  await settled(p);
  kb.filters_left = await p.$$eval('#filter-list .chip', (xs) => xs.length);
  kb.after_clear_settled = await focused();

  // Goals and funnels through the "Jump to" list.
  await tabTo('jump to goals', (f) => f.id === 'card-goals');
  kb.goals = await press('Enter');
  await tabTo('jump to funnels', (f) => f.id === 'funnels');
  kb.funnels = await press('Enter');
  await p.screenshot({path: `${shots}/a11y-keyboard-funnels-focus.png`});
  summary.screenshots.push(`${shots}/a11y-keyboard-funnels-focus.png`);

  // ---- 3. the chart's table, its colours --------------------------------
  const table = await p.evaluate(() => ({
    caption: document.querySelector('#chart-table caption').textContent,
    head: [...document.querySelectorAll('#chart-table thead th')].map((th) => [th.textContent, th.scope]),
    rows: [...document.querySelectorAll('#chart-table tbody tr')].map((tr) => [tr.querySelector('th').scope,
      ...[...tr.querySelectorAll('td')].map((td) => td.textContent)]),
    points: [...document.querySelectorAll('#chart circle title')].map((t) => t.textContent.split(' : ').pop()),
    visuallyHidden: (() => { const r = document.querySelector('#chart-table').closest('.sr').getBoundingClientRect(); return r.width <= 1 && r.height <= 1 })(),
  }));
  const period = new URLSearchParams((await p.evaluate(() => location.hash)).slice(1)).get('period');
  const series = await api('/api/v2/query', {site_id: site, metrics: ['visitors'], date_range: period, dimensions: ['time'], include: {time_labels: true}});
  const by = Object.fromEntries(series.results.map((r) => [r.dimensions[0], r.metrics[0]]));
  summary.chart = {
    caption: table.caption, head: table.head, visually_hidden: table.visuallyHidden,
    row_scopes: [...new Set(table.rows.map((r) => r[0]))],
    table_now: table.rows.map((r) => r[1]),
    points: table.points,
    api: series.meta.time_labels.map((l) => String(by[l] ?? 0)),
  };
  const colours = await p.evaluate(() => {
    const probe = (cls, prop) => {
      const e = document.querySelector(cls);
      return e ? getComputedStyle(e)[prop] : null;
    };
    const field = document.querySelector('#period');
    return {
      background: getComputedStyle(document.querySelector('#chart-card')).backgroundColor,
      page: getComputedStyle(document.documentElement).backgroundColor,
      line_now: probe('#chart .line.now', 'stroke'),
      line_prev: probe('#chart .line.prev', 'stroke'),
      point: probe('#chart .point', 'fill'),
      key_now: probe('.legend .key.now', 'borderTopColor'),
      key_prev: probe('.legend .key.prev', 'borderTopColor'),
      field_border: getComputedStyle(field).borderTopColor,
      ghost_border: getComputedStyle(document.querySelector('#lang')).borderTopColor,
    };
  });
  const rgb = (c) => (c.match(/[\d.]+/g) || []).slice(0, 3).map(Number);
  const lum = (c) => rgb(c).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4) })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const ratio = (a, b) => { const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x); return Math.round((hi + 0.05) / (lo + 0.05) * 100) / 100 };
  summary.colours = colours;
  summary.contrast = {};
  for (const key of ['line_now', 'line_prev', 'point', 'key_now', 'key_prev', 'field_border']) {
    summary.contrast[key] = colours[key] ? ratio(colours[key], colours.background) : null;
  }
  summary.contrast.ghost_border = ratio(colours.ghost_border, '#ffffff');
  summary.contrast.field_border_on_page = ratio(colours.field_border, colours.page);
  await ctx.close();
} finally {
  await browser.close();
}
summary.violations_text = summary.violations.map((v) =>
  `[${v.view}] ${v.id} (${v.impact}): ${v.help}\n    ${v.targets.join('\n    ')}\n    ${v.helpUrl}`).join('\n');
console.log(JSON.stringify(summary));
