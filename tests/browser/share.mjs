// A shared link in a real browser (issue 17, part 4): the dashboard opens
// from /share/<id>#<secret> with no token form, shows one site read only,
// takes the secret out of the address bar, and leaves it nowhere a script
// or the page could read it (the session cookie is HttpOnly). French, on a
// phone; a screenshot goes to --screenshots. Prints a JSON summary; throws
// on failure.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { launch, arg, PHONE_UA } from './lib.mjs';

const url = arg('url');
const secret = arg('secret');
const shots = arg('screenshots');
mkdirSync(shots, {recursive: true});

const browser = await launch();
try {
  const ctx = await browser.newContext({userAgent: PHONE_UA, viewport: {width: 390, height: 844}, locale: 'fr-CA', isMobile: true});
  const p = await ctx.newPage();
  const problems = [];
  p.on('pageerror', (e) => problems.push('page error: ' + e));
  p.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()) });
  await p.goto(url);
  await p.waitForSelector('#dash:not([hidden])', {timeout: 15000});
  await p.waitForFunction(() => document.body.dataset.busy === '0', null, {timeout: 15000});
  const seen = await p.evaluate(() => ({
    href: location.href,
    cookie: document.cookie,
    html: document.documentElement.outerHTML,
    sitePicker: document.getElementById('site').parentNode.hidden,
    signout: document.getElementById('signout').hidden,
    signin: document.getElementById('signin').hidden,
  }));
  assert.ok(!seen.href.includes(secret), 'secret left in the URL: ' + seen.href);
  assert.ok(!seen.cookie.includes(secret), 'cookie readable by the page');
  assert.ok(!seen.html.includes(secret), 'secret in the page');
  assert.ok(seen.sitePicker && seen.signout && seen.signin, JSON.stringify({...seen, html: undefined}));
  const cookies = await ctx.cookies();
  const session = cookies.find((c) => c.name.startsWith('tamis_share_'));
  assert.ok(session && session.httpOnly, 'no HttpOnly session cookie: ' + JSON.stringify(cookies));
  const shot = shots + '/share-fr-phone.png';
  await p.screenshot({path: shot, fullPage: true});
  assert.deepEqual(problems, []);
  console.log(JSON.stringify({ok: true, screenshot: shot, secure: session.secure}));
} finally {
  await browser.close();
}
