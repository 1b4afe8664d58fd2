// Shared links in a real browser (issue 17, part 4), one Chromium for all
// of it:
// 1. A link without password (/share/<id>#<secret>) opens its site's
//    dashboard read only, takes the secret out of the address bar and
//    leaves it nowhere a script or the page could read it (the session
//    cookie is HttpOnly); with no period in the URL it opens on today when
//    the site's statistics began today or yesterday, and on the last 28
//    days for an older site (Plausible's rule), numbers shown either way.
// 2. A password link, in French and English, on a phone and a desktop: the
//    labelled password form; a wrong password answered by an alert, the
//    field marked invalid and focused again; the right one opens the
//    dashboard; the password is left in no URL, storage, script-visible
//    cookie or markup.
// 3. A revoked link and an unknown one: the message alone — no form, no
//    data, no site.
// 4. axe-core's WCAG 2.1 A/AA rules on every one of those views (`axeCheck` in
//    lib.mjs), and a keyboard-only run: skip link, password form (wrong
//    then right), the period, a filter applied and removed, a visible focus
//    ring on every stop.
// Screenshots go to --screenshots. Prints a JSON summary; throws on failure.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { launch, arg, DESKTOP_UA, PHONE_UA, focusState, axeCheck } from './lib.mjs';

const url = arg('url');
const secret = arg('secret');
const olderUrl = arg('older-url');
const passwordUrl = arg('password-url');
const password = arg('password');
const revokedUrl = arg('revoked-url');
const unknownUrl = arg('unknown-url');
const shots = arg('screenshots');
mkdirSync(shots, {recursive: true});

const TEXT = {
  fr: {title: 'Tableau de bord partagé', label: 'Mot de passe', open: 'Ouvrir', wrong: 'Mot de passe incorrect', dead: 'Ce lien partagé n’ouvre aucun tableau de bord', rounded: 'arrondis aléatoirement à un multiple de 5'},
  en: {title: 'Shared dashboard', label: 'Password', open: 'Open', wrong: 'Wrong password', dead: 'This shared link opens no dashboard', rounded: 'rounded randomly to a multiple of 5'},
};
const VIEWPORTS = {
  phone: {userAgent: PHONE_UA, viewport: {width: 390, height: 844}, deviceScaleFactor: 2, isMobile: true, hasTouch: true},
  desktop: {userAgent: DESKTOP_UA, viewport: {width: 1366, height: 900}},
};

const summary = {ok: false, axe: [], violations: [], screenshots: [], problems: []};

function watch(p) {
  p.on('pageerror', (e) => summary.problems.push('page error: ' + e));
  // A refused exchange is logged by Chromium as a failed resource load:
  // expected here; any other console error is a problem.
  p.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) summary.problems.push('console: ' + m.text());
  });
  p.on('dialog', (d) => { summary.problems.push('dialog: ' + d.message()); d.dismiss() });
}

async function axe(p, view) {
  const result = await axeCheck(p);
  summary.axe.push(view);
  for (const v of result.violations) summary.violations.push({view, ...v});
}

async function shot(p, name) {
  const path = `${shots}/${name}.png`;
  await p.screenshot({path, fullPage: true});
  summary.screenshots.push(path);
}

// Nothing in flight (<body data-busy>), and the dashboard drawn or a
// message shown.
async function settled(p) {
  await p.waitForFunction(() => document.body.dataset.busy === '0' &&
    (document.querySelector('#dash:not([hidden]) #chart svg') || document.querySelector('#error:not([hidden])') ||
     document.querySelector('#signin:not([hidden]) #signin-form:not([hidden])')), null, {timeout: 20000});
  await p.waitForTimeout(100);
}

// What the page shows: which parts, the numbers, the period.
const looks = (p) => p.evaluate(() => {
  const shown = (id) => { const e = document.getElementById(id); return !!e && !e.closest('[hidden]') };
  const token = document.getElementById('token');
  return {
    lang: document.documentElement.lang,
    signin: shown('signin'), form: shown('signin-form'), help: shown('signin-help'), dash: shown('dash'),
    controls: shown('controls'), sitePicker: shown('site'), signout: shown('signout'), retry: shown('share-retry'),
    siteOptions: document.querySelectorAll('#site option').length,
    title: document.getElementById('signin-title').textContent,
    label: token.labels && token.labels[0] ? token.labels[0].textContent.trim() : null,
    button: document.querySelector('#signin-form button[type=submit]').textContent,
    error: shown('error') ? document.getElementById('error').textContent : null,
    errorRole: document.getElementById('error').getAttribute('role'),
    invalid: token.getAttribute('aria-invalid'),
    describedBy: token.getAttribute('aria-describedby'),
    focus: document.activeElement ? (document.activeElement.id || document.activeElement.tagName.toLowerCase()) : null,
    fieldValue: token.value,
    period: document.getElementById('period').value,
    hash: location.hash,
    visitors: (document.querySelector('#metrics [data-metric=visitors] .metric-value') || {}).textContent,
    pageRows: document.querySelectorAll('#card-pages tbody tr').length,
    figures: [...document.querySelectorAll('#metrics .metric-value')].map((e) => e.textContent),
  };
});

// Where a secret could be left for a script, or a person, to read.
const traces = (p) => p.evaluate(() => ({
  href: location.href,
  cookie: document.cookie,
  html: document.documentElement.outerHTML,
  local: JSON.stringify(Object.assign({}, localStorage)),
  session: JSON.stringify(Object.assign({}, sessionStorage)),
  title: document.title,
}));
function leavesNothing(t, what, value) {
  for (const [where, text] of Object.entries(t)) assert.ok(!text.includes(value), `${what} left in ${where}`);
}

const browser = await launch();
try {
  // ---- 1. a link without password, a new site and an older one ------------
  {
    const ctx = await browser.newContext({...VIEWPORTS.phone, locale: 'fr-CA'});
    const p = await ctx.newPage();
    watch(p);
    await p.goto(url);
    await p.waitForSelector('#dash:not([hidden])', {timeout: 15000});
    await settled(p);
    const seen = await looks(p);
    leavesNothing(await traces(p), 'the secret', secret);
    assert.ok(!seen.sitePicker && !seen.signout && !seen.signin, JSON.stringify(seen));
    const cookies = await ctx.cookies();
    const session = cookies.find((c) => c.name.startsWith('tamis_share_'));
    assert.ok(session && session.httpOnly, 'no HttpOnly session cookie: ' + JSON.stringify(cookies.map((c) => c.name)));
    // The site's hits are all from today: the first view is today's, with
    // its numbers, and no period was chosen by hand.
    assert.equal(seen.period, 'day', JSON.stringify(seen));
    assert.ok(new URLSearchParams(seen.hash.slice(1)).get('period') === 'day', seen.hash);
    assert.ok(seen.pageRows > 0 && /[1-9]/.test(seen.visitors), 'no numbers on the first view: ' + JSON.stringify(seen));
    summary.new_site = {period: seen.period, visitors: seen.visitors, page_rows: seen.pageRows, secure_cookie: session.secure};
    // The footer names the one cookie this page holds.
    summary.footer = await p.textContent('.foot');
    assert.ok(summary.footer.includes('un seul témoin'), summary.footer);
    // A link reads in the protected mode: the note says numbers are
    // rounded, so a row above its total is not taken for a mistake.
    summary.note = await p.textContent('#small-note');
    assert.ok(summary.note.includes('arrondis aléatoirement à un multiple de 5'), summary.note);
    await axe(p, 'link-fr-phone');
    await shot(p, 'share-fr-phone');

    // A site with older statistics opens on the last 28 days.
    const older = await ctx.newPage();
    watch(older);
    await older.goto(olderUrl);
    await older.waitForSelector('#dash:not([hidden])', {timeout: 15000});
    await settled(older);
    const o = await looks(older);
    assert.equal(o.period, '28d', JSON.stringify(o));
    assert.ok(o.pageRows > 0 && /[1-9]/.test(o.visitors), 'no numbers on the older site: ' + JSON.stringify(o));
    summary.older_site = {period: o.period, visitors: o.visitors, page_rows: o.pageRows};
    await axe(older, 'link-older-fr-phone');
    await ctx.close();
  }

  // ---- 2, 3, 4. password form, dashboard, dead links; FR/EN, phone/desktop ---
  summary.views = {};
  for (const vp of ['phone', 'desktop']) {
    for (const lang of ['fr', 'en']) {
      const tag = `${lang}-${vp}`;
      const T = TEXT[lang];
      const ctx = await browser.newContext({...VIEWPORTS[vp], locale: lang === 'fr' ? 'fr-CA' : 'en-CA'});
      const p = await ctx.newPage();
      watch(p);
      await p.goto(passwordUrl);
      await p.waitForSelector('#signin-form:not([hidden])', {timeout: 15000});
      await settled(p);
      // Before the site is known, the browser's language.
      const empty = await looks(p);
      assert.deepEqual([empty.lang, empty.title, empty.label, empty.button, empty.help, empty.error, empty.dash, empty.controls],
        [lang, T.title, T.label, T.open, true, null, false, false], JSON.stringify(empty));
      assert.notEqual(empty.focus, 'token', 'the form took focus as the page opened');
      await axe(p, `password-${tag}`);
      if (tag === 'fr-phone' || tag === 'en-desktop') await shot(p, `share-password-${tag}`);

      await p.fill('#token', 'not the password');
      await p.click('#signin-form button[type=submit]');
      await p.waitForSelector('#error:not([hidden])');
      await settled(p);
      const wrong = await looks(p);
      assert.ok(wrong.error && wrong.error.startsWith(T.wrong), JSON.stringify(wrong));
      assert.deepEqual([wrong.errorRole, wrong.invalid, wrong.describedBy, wrong.focus, wrong.fieldValue, wrong.form, wrong.dash],
        ['alert', 'true', 'error', 'token', '', true, false], JSON.stringify(wrong));
      await axe(p, `password-wrong-${tag}`);

      await p.fill('#token', password);
      await p.click('#signin-form button[type=submit]');
      await p.waitForSelector('#dash:not([hidden])', {timeout: 15000});
      await settled(p);
      leavesNothing(await traces(p), 'the password', password);
      // The site speaks French: an English reader switches once.
      if ((await looks(p)).lang !== lang) {
        await p.click('#lang');
        await p.waitForFunction((l) => document.documentElement.lang === l, lang);
        await settled(p);
      }
      const dash = await looks(p);
      assert.ok(dash.lang === lang && !dash.sitePicker && !dash.signout && /[1-9]/.test(dash.visitors), JSON.stringify(dash));
      // The protected mode's rounding is said in the reader's language.
      const note = await p.textContent('#small-note');
      assert.ok(note.includes(T.rounded), note);
      await axe(p, `dashboard-${tag}`);

      // A revoked link, in a page of its own.
      const r = await ctx.newPage();
      watch(r);
      await r.goto(revokedUrl);
      await r.waitForSelector('#error:not([hidden])', {timeout: 15000});
      await r.waitForFunction(() => document.body.dataset.busy === '0');
      const dead = await looks(r);
      assert.ok(dead.error.startsWith(T.dead), JSON.stringify(dead));
      assert.deepEqual([dead.lang, dead.title, dead.form, dead.help, dead.dash, dead.controls, dead.sitePicker, dead.siteOptions, dead.retry],
        [lang, T.title, false, false, false, false, false, 0, false], JSON.stringify(dead));
      await axe(r, `revoked-${tag}`);
      if (tag === 'fr-phone') await shot(r, 'share-revoked-fr-phone');
      summary.views[tag] = {password_title: empty.title, wrong: wrong.error, revoked: dead.error};
      await ctx.close();
    }
  }
  {
    // An unknown link: the same message, nothing else.
    const ctx = await browser.newContext({...VIEWPORTS.desktop, locale: 'fr-CA'});
    const p = await ctx.newPage();
    watch(p);
    await p.goto(unknownUrl);
    await p.waitForSelector('#error:not([hidden])', {timeout: 15000});
    const u = await looks(p);
    assert.ok(u.error.startsWith(TEXT.fr.dead) && !u.form && !u.dash && !u.controls && u.siteOptions === 0, JSON.stringify(u));
    summary.unknown = u.error;
    await ctx.close();
  }

  // ---- 4. the keyboard alone -----------------------------------------------
  {
    const ctx = await browser.newContext({...VIEWPORTS.desktop, locale: 'fr-CA'});
    const p = await ctx.newPage();
    watch(p);
    await p.goto(passwordUrl);
    await p.waitForSelector('#signin-form:not([hidden])', {timeout: 15000});
    await settled(p);
    const kb = summary.keyboard = {steps: [], unringed: []};
    async function press(key, expect) {
      await p.keyboard.press(key);
      await p.waitForTimeout(30);
      const f = await focusState(p);
      kb.steps.push(key + ' → ' + f.id);
      if (f.id !== 'body' && !f.ring) kb.unringed.push(f);
      if (expect && !expect(f)) throw new Error(`keyboard: after ${key}, focus on ${JSON.stringify(f)}; steps: ${kb.steps.join(', ')}`);
      return f;
    }
    async function until(key, what, match, max = 80) {
      for (let i = 0; i < max; i++) if (match(await press(key))) return;
      throw new Error(`keyboard: ${what} not reached with ${key}; steps: ${kb.steps.join(', ')}`);
    }
    // Skip link, then the password field.
    await press('Tab', (f) => f.tag === 'a' && f.id === 'skip');
    await press('Enter', (f) => f.id === 'main');
    await press('Tab', (f) => f.id === 'token');
    await p.keyboard.type('not the password');
    await p.keyboard.press('Enter');
    await p.waitForSelector('#error:not([hidden])');
    await settled(p);
    kb.after_wrong = await focusState(p);
    assert.equal(kb.after_wrong.id, 'token', 'focus after a wrong password');
    await p.keyboard.type(password);
    await p.keyboard.press('Enter');
    await p.waitForSelector('#dash:not([hidden])', {timeout: 15000});
    await settled(p);
    kb.after_open = await focusState(p);
    assert.equal(kb.after_open.id, 'dash-title', 'focus once the dashboard opens');
    // The period, by arrow keys, back in the header.
    await until('Shift+Tab', 'the period', (f) => f.id === 'period', 10);
    await press('ArrowDown', (f) => f.id === 'period');
    await settled(p);
    kb.period_down = new URLSearchParams((await p.evaluate(() => location.hash)).slice(1)).get('period');
    await press('ArrowUp', (f) => f.id === 'period');
    await settled(p);
    kb.period_up = new URLSearchParams((await p.evaluate(() => location.hash)).slice(1)).get('period');
    assert.deepEqual([kb.period_down, kb.period_up], ['yesterday', 'day']);
    // The skip link, in share mode too.
    await until('Shift+Tab', 'the skip link', (f) => f.id === 'skip', 10);
    await press('Enter', (f) => f.id === 'main');
    await press('Tab', (f) => f.inMain);
    // A filter from the keyboard, and its removal.
    await until('Tab', 'a filter button', (f) => f.tag === 'button' && f.id.includes('filter'));
    await press('Enter');
    await settled(p);
    kb.chips = await p.$$eval('#filter-list .chip', (xs) => xs.length);
    kb.after_filter = await focusState(p);
    assert.ok(kb.chips === 1 && kb.after_filter.id === 'chip-remove', JSON.stringify(kb.after_filter));
    await press('Space');
    await settled(p);
    kb.chips_after = await p.$$eval('#filter-list .chip', (xs) => xs.length);
    assert.equal(kb.chips_after, 0);
    // Once round the page: every stop shows its ring.
    const seen = new Set();
    let outside = 0;
    for (let i = 0; i < 200 && outside < 3; i++) {
      const f = await press('Tab');
      if (f.id === 'body') { outside++; continue }
      outside = 0;
      if (seen.has(f.kb)) break;
      seen.add(f.kb);
    }
    kb.tab_stops = seen.size;
    assert.deepEqual(kb.unringed, [], 'focus without a visible ring');
    leavesNothing(await traces(p), 'the password', password);
    await ctx.close();
  }
} finally {
  await browser.close();
}
summary.violations_text = summary.violations.map((v) =>
  `[${v.view}] ${v.id} (${v.impact}): ${v.help}\n    ${v.targets.join('\n    ')}`).join('\n');
assert.deepEqual(summary.problems, []);
summary.ok = true;
console.log(JSON.stringify(summary));
