// The beacon in a real browser. Serves test pages on http://localhost:<port>
// (a host name the test config allows), loads tamis.js from the tamis
// server, and acts like a visitor. Prints a JSON summary of what the browser
// sent and held; tests/browser.rs checks what tamis counted.
import http from 'node:http';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { launch, arg, waitFor, DESKTOP_UA } from './lib.mjs';

const tamis = arg('tamis');
// The operators' listener, whose /metrics says how many hits tamis has
// received.
const admin = arg('admin');

function page(domain, extra = '', body = '') {
  return `<!doctype html><html><head><meta charset="utf-8"><title>test</title>
<script defer data-domain="${domain}" ${extra} src="${tamis}/js/tamis.js"></script></head>
<body><h1>Page de test</h1>
<p style="height:3000px">Texte</p>
<a id="out" href="https://elsewhere.example/path?q=1">ailleurs</a>
<a id="file" href="/files/rapport-annuel.pdf">rapport</a>
<a id="inside" href="/spa/c">dedans</a>
<script src="/stay.js"></script>${body}</body></html>`;
}
const pages = {
  '/spa.html': page('shop.test'),
  '/consent.html': page('consent.test', 'data-consent="required"'),
  '/gpc.html': page('shop.test'),
  '/optout.html': page('optout.test'),
  '/hash.html': page('hash.test', 'data-hash'),
};
// Links stay on the page (the test has no Internet), after the beacon saw
// the click in its capture phase.
const stay = "document.addEventListener('click', function (e) { e.preventDefault() });";
const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/stay.js') { res.writeHead(200, {'content-type': 'text/javascript'}); return res.end(stay) }
  const html = pages[path] || pages['/spa.html'];
  res.writeHead(200, {'content-type': 'text/html; charset=utf-8'});
  res.end(html);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const origin = `http://localhost:${server.address().port}`;

const summary = {origin};

// The visitor switches tabs: the page becomes hidden, which is when the
// beacon reports the page's engagement. Pages are hidden before they are
// closed, so every hit they send is seen.
async function hide(page) {
  await page.evaluate(() => {
    Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
    document.dispatchEvent(new Event('visibilitychange'));
  });
}
// A context closed while its last beacon is still on its way can cancel
// it: then the hit never reaches tamis, and the test would blame tamis for
// a hit the browser never delivered. So every hit the pages issue is
// counted here, and a context is closed only once tamis has received as
// many (its own count, from /metrics): a hit issued and never received
// fails the run here, by name.
let issued = 0;
async function received() {
  const text = await (await fetch(`${admin}/metrics`)).text();
  const m = /^tamis_hits_received_total (\d+)$/m.exec(text);
  assert.ok(m, 'tamis_hits_received_total in /metrics');
  return Number(m[1]);
}
const receivedBefore = await received();
function track(ctx) {
  ctx.on('request', (r) => { if (r.url().startsWith(tamis + '/api/event')) issued++ });
  return ctx;
}
async function delivered() {
  await waitFor(`tamis to receive the ${issued} hits the pages issued`,
    async () => (await received()) - receivedBefore >= issued);
}
async function closeDelivered(ctx) {
  await delivered();
  await ctx.close();
}
const browser = await launch();
try {
  // Size of the beacon as served.
  const src = await (await fetch(`${tamis}/js/tamis.js`)).arrayBuffer();
  summary.beacon_bytes = src.byteLength;
  summary.beacon_gzip_bytes = zlib.gzipSync(Buffer.from(src), {level: 9}).length;

  // --- 1. pageviews, SPA navigations, events, engagement --------------------
  const ctx = track(await browser.newContext({userAgent: DESKTOP_UA}));
  const sent = [];
  const errors = [];
  ctx.on('request', (r) => { if (r.url().startsWith(tamis + '/api/event')) sent.push(JSON.parse(r.postData() || '{}')) });
  const p = await ctx.newPage();
  p.on('pageerror', (e) => errors.push(String(e)));
  await p.goto(origin + '/spa.html?email=jean@example.com#secret');
  await p.waitForFunction(() => window.tamis && window.tamis.v);
  await waitFor('the first pageview', () => sent.length >= 1);
  await p.waitForTimeout(150);
  await p.mouse.wheel(0, 1200);
  await p.waitForFunction(() => window.scrollY >= 1000);
  await p.evaluate(() => history.pushState({}, '', '/spa/a'));
  await p.waitForTimeout(150);
  await p.evaluate(() => history.pushState({}, '', '/spa/b'));
  await p.evaluate(() => history.replaceState({}, '', '/spa/b')); // same page: no new pageview
  await p.waitForTimeout(150);
  await p.goBack(); // popstate back to /spa/a
  await p.waitForURL('**/spa/a');
  await p.evaluate(() => window.tamis('signup', {props: {plan: 'basic', email: 'jean@example.com'}}));
  await p.click('#out');
  await p.click('#file');
  await p.evaluate(() => window.tamis.notFound());
  summary.storage = await p.evaluate(() => ({local: localStorage.length, session: sessionStorage.length, cookie: document.cookie}));
  await waitFor('4 pageviews, 4 events, 3 engagements', () => sent.length >= 11);
  await hide(p);
  await waitFor('the engagement sent when the page was hidden', () => sent.length >= 12);
  // Closing a hidden page sends nothing more: its visible time was reported.
  await delivered();
  await p.close({runBeforeUnload: true});
  const after = await ctx.newPage();
  await after.goto(origin + '/blank');
  summary.storage_after = await after.evaluate(() => ({local: localStorage.length, session: sessionStorage.length, cookie: document.cookie}));
  summary.cookies_after = (await ctx.cookies()).length;
  await hide(after);
  await waitFor('the engagement of the second page', () => sent.length >= 14);
  await delivered();
  await after.close();
  await closeDelivered(ctx);
  summary.sent = sent;
  summary.page_errors = errors;

  // --- 2. consent required: nothing before consent --------------------------
  const cctx = track(await browser.newContext({userAgent: DESKTOP_UA}));
  const csent = [];
  cctx.on('request', (r) => { if (r.url().startsWith(tamis) && !r.url().includes('/js/tamis.js')) csent.push(JSON.parse(r.postData() || '{}')) });
  const c = await cctx.newPage();
  await c.goto(origin + '/consent.html');
  await c.waitForFunction(() => window.tamis && window.tamis.v);
  await c.evaluate(() => history.pushState({}, '', '/consent/step-2'));
  await c.evaluate(() => window.tamis('signup', {props: {plan: 'famille'}}));
  await c.waitForTimeout(500);
  summary.consent_before = csent.length;
  await c.evaluate(() => window.tamis.consent('granted'));
  await waitFor('the held hits', () => csent.length >= 3);
  await c.evaluate(() => window.tamis.consent('denied'));
  await c.evaluate(() => history.pushState({}, '', '/consent/step-3'));
  await waitFor('the hit after withdrawal', () => csent.filter((b) => b.n === 'pageview').length >= 3);
  await hide(c);
  await waitFor('the engagement of the last page', () => csent.length >= 7);
  summary.consent_sent = csent;
  await closeDelivered(cctx);

  // --- 3. hash routing, when declared --------------------------------------
  const hctx = track(await browser.newContext({userAgent: DESKTOP_UA}));
  const hsent = [];
  hctx.on('request', (r) => { if (r.url().startsWith(tamis + '/api/event')) hsent.push(JSON.parse(r.postData() || '{}')) });
  const hp = await hctx.newPage();
  await hp.goto(origin + '/hash.html');
  await hp.waitForFunction(() => window.tamis && window.tamis.v);
  await hp.waitForTimeout(100);
  await hp.evaluate(() => { location.hash = '#/a' });
  await waitFor('the #/a pageview', () => hsent.filter((b) => b.n === 'pageview').length >= 2);
  await hp.waitForTimeout(100);
  await hp.evaluate(() => { location.hash = '#/b' });
  await waitFor('the #/b pageview', () => hsent.filter((b) => b.n === 'pageview').length >= 3);
  await hide(hp);
  await waitFor('the last engagement', () => hsent.length >= 6);
  summary.hash_sent = hsent.map((b) => [b.n, b.u.replace(origin, ''), b.h]);
  await closeDelivered(hctx);

  // --- 4. GPC and tamis.optOut(): no request at all -------------------------
  const gctx = track(await browser.newContext({userAgent: DESKTOP_UA}));
  const gsent = [];
  gctx.on('request', (r) => { if (r.url().includes('/api/event')) gsent.push(r.url()) });
  await gctx.addInitScript(() => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true}));
  const g = await gctx.newPage();
  await g.goto(origin + '/gpc.html');
  await g.waitForFunction(() => window.tamis && window.tamis.v);
  await g.evaluate(() => { history.pushState({}, '', '/gpc/2'); window.tamis('signup') });
  await g.waitForTimeout(300);
  await closeDelivered(gctx);
  summary.gpc_sent = gsent.length;
  const octx = track(await browser.newContext({userAgent: DESKTOP_UA}));
  octx.on('request', (r) => { if (r.url().includes('/api/event')) gsent.push(r.url()) });
  const o = await octx.newPage();
  await o.goto(origin + '/optout.html');
  await o.waitForFunction(() => window.tamis && window.tamis.v);
  const beforeOptOut = gsent.length;
  await o.evaluate(() => window.tamis.optOut());
  await o.evaluate(() => { history.pushState({}, '', '/optout/2'); window.tamis('signup') });
  await o.waitForTimeout(300);
  summary.optout_storage = await o.evaluate(() => Object.keys(localStorage));
  summary.optout_sent_after = gsent.length - beforeOptOut;
  await o.evaluate(() => window.tamis.optIn());
  summary.optin_storage = await o.evaluate(() => localStorage.length);
  // Opted in again: leaving the page reports its engagement.
  const beforeLeave = gsent.length;
  await hide(o);
  await waitFor('the engagement after opting in again', () => gsent.length > beforeLeave);
  summary.optin_sent = gsent.length - beforeLeave;
  await closeDelivered(octx);
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(summary));
