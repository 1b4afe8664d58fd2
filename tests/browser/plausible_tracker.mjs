// Plausible's own tracker in a real browser, pointed at tamis. The script
// is npm's @plausible-analytics/tracker, pinned in package.json (0.4.6),
// "the same features and codebase as the official script, but as an NPM
// module" (its README.md). What this relies on, read in that version's
// files:
// - plausible.d.ts and README.md: `init({domain, endpoint, hashBasedRouting,
//   outboundLinks, fileDownloads, formSubmissions})`, `track(name, {props,
//   interactive})`, and `window.plausible = track` (bindToWindow).
// - plausible.js: every request is `fetch(endpoint, {method: 'POST',
//   headers: {'Content-Type': 'text/plain'}, keepalive: true})` with body
//   `{n, v: 36, u: location.href, d, r, p, i: false, h: 1}`; a pageview
//   first sends the previous page's `engagement` ({n, sd, d, u, p, e, v,
//   h}), as does the page becoming hidden; pageviews follow pushState and
//   popstate, or hashchange with hashBasedRouting; clicks on links to
//   another host send `Outbound Link: Click` with prop `url` (the whole
//   href), on files of its list `File Download` with `url` (without
//   query); elements with class `plausible-event-name=…` send that event
//   with their `plausible-event-<prop>=…` props; valid forms send
//   `Form: Submission`. It sends nothing on localhost (unless
//   captureOnLocalhost) nor when `navigator.webdriver` is set: so the pages
//   are served under real host names mapped to loopback, and Chromium
//   runs with --disable-blink-features=AutomationControlled, as a
//   visitor's browser.
//
// The script is served from node_modules by this test's own server (no
// CDN: the test has no Internet). Prints a JSON summary of every request
// the script sent and the status tamis answered; tests/browser.rs checks
// what tamis counted through the stats API.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { launch, arg, waitFor, DESKTOP_UA } from './lib.mjs';

const tamis = arg('tamis');
const endpoint = `${tamis}/api/event`;
// A second visitor: another browser build on the same network.
const WINDOWS_UA = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36';

const trackerPath = new URL('../../node_modules/@plausible-analytics/tracker/plausible.js', import.meta.url);
let tracker;
try {
  tracker = readFileSync(trackerPath, 'utf8');
} catch (e) {
  throw new Error('npm module @plausible-analytics/tracker not found: run ./deploy/setup.sh (it runs npm ci in the repository root)');
}
const trackerVersion = JSON.parse(readFileSync(new URL('../../node_modules/@plausible-analytics/tracker/package.json', import.meta.url), 'utf8')).version;

// The site's own module, as a site bundling the npm package writes it.
const siteJs = `import { init } from '/js/plausible.js';
init(JSON.parse(document.getElementById('plausible-config').textContent));
document.addEventListener('click', function (e) { if (e.target.closest('a')) e.preventDefault() });
document.addEventListener('submit', function (e) { e.preventDefault() });
`;
// Links and forms stay on the page (the test has no Internet); the
// tracker has seen the click or submission by then.
function page(config) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>test</title>
<script type="application/json" id="plausible-config">${JSON.stringify(config)}</script>
<script type="module" src="/js/site.js"></script></head>
<body><h1>Page de test</h1>
<p style="height:3000px">Texte</p>
<a id="out" href="https://elsewhere.example/path?q=1">ailleurs</a>
<a id="file" href="/files/rapport-annuel.pdf?v=2">rapport</a>
<button id="tagged" class="plausible-event-name=Tagged+click plausible-event-section=hero">s'abonner</button>
<form id="contact"><input name="sujet" value="bonjour" required><button id="send" type="submit">envoyer</button></form>
</body></html>`;
}
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const host = (req.headers.host || '').split(':')[0];
  if (url.pathname === '/js/plausible.js') {
    res.writeHead(200, {'content-type': 'text/javascript'});
    return res.end(tracker);
  }
  if (url.pathname === '/js/site.js') {
    res.writeHead(200, {'content-type': 'text/javascript'});
    return res.end(siteJs);
  }
  const config = {
    domain: host,
    endpoint,
    outboundLinks: true,
    fileDownloads: true,
    formSubmissions: true,
    hashBasedRouting: host === 'hash.test',
  };
  res.writeHead(200, {'content-type': 'text/html; charset=utf-8'});
  res.end(page(config));
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const port = server.address().port;
const origin = (host) => `http://${host}:${port}`;

const summary = {tracker_version: trackerVersion, origin: origin('tracker.test'), hash_origin: origin('hash.test')};

// Every request the tracker sends to tamis, with tamis's answer.
const sent = [];
const problems = [];
function watch(ctx, visitor) {
  ctx.on('request', (r) => {
    if (!r.url().startsWith(endpoint)) return;
    sent.push({visitor, method: r.method(), type: r.headers()['content-type'], body: JSON.parse(r.postData() || '{}'), status: null});
    r._tamis = sent[sent.length - 1];
  });
  ctx.on('requestfinished', async (r) => {
    if (!r._tamis) return;
    const resp = await r.response();
    r._tamis.status = resp.status();
    r._tamis.dropped = (await resp.allHeaders())['x-tamis-dropped'] || null;
  });
  ctx.on('requestfailed', (r) => { if (r._tamis) r._tamis.status = 'failed: ' + r.failure().errorText });
  ctx.on('page', (p) => {
    p.on('pageerror', (e) => problems.push(String(e)));
    p.on('console', (m) => { if (m.type() === 'warning' || m.type() === 'error') problems.push(m.text()) });
  });
  return ctx;
}
// A context is closed only once tamis has answered every request its pages
// sent: closing it earlier can cancel a keepalive request on its way.
async function answered() {
  await until('tamis to answer every request of the tracker', () => sent.every((s) => s.status !== null));
}
// Waits for what the tracker should have sent; a timeout names what it
// did send.
async function until(what, fn) {
  try {
    await waitFor(what, fn);
  } catch (e) {
    throw new Error(`${e.message}; sent: ${JSON.stringify(sent.map((s) => [s.visitor, s.body.n, s.body.u, s.status]))}; problems: ${JSON.stringify(problems)}`);
  }
}
const count = (visitor) => sent.filter((s) => s.visitor === visitor).length;
// The visitor switches tabs: the page becomes hidden, which is when the
// tracker reports the page's engagement.
async function hide(page) {
  await page.evaluate(() => {
    Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
    document.dispatchEvent(new Event('visibilitychange'));
  });
}

const browser = await launch([
  '--disable-blink-features=AutomationControlled',
  '--host-resolver-rules=MAP tracker.test 127.0.0.1, MAP hash.test 127.0.0.1',
]);
try {
  // --- visitor A: two pages, events of every kind, engagement ------------
  const a = watch(await browser.newContext({userAgent: DESKTOP_UA}), 'a');
  const p = await a.newPage();
  await p.goto(origin('tracker.test') + '/');
  summary.webdriver = await p.evaluate(() => navigator.webdriver);
  await p.waitForFunction(() => window.plausible && window.plausible.v);
  summary.script = await p.evaluate(() => ({s: window.plausible.s, v: window.plausible.v}));
  await until('the first pageview', () => count('a') >= 1);
  await p.mouse.wheel(0, 1200);
  await p.waitForFunction(() => window.scrollY >= 1000);
  await p.waitForTimeout(100);
  await p.evaluate(() => history.pushState({}, '', '/pricing'));
  await until('the engagement of / and the /pricing pageview', () => count('a') >= 3);
  await p.evaluate(() => window.plausible('signup', {props: {plan: 'pro', email: 'jean@example.com'}}));
  await p.evaluate(() => window.plausible('autoplay', {interactive: false}));
  await p.click('#out');
  await p.click('#file');
  await p.click('#tagged');
  await p.click('#send');
  await until('six custom events', () => count('a') >= 9);
  await hide(p);
  await until('the engagement of /pricing', () => count('a') >= 10);
  summary.storage = await p.evaluate(() => ({local: localStorage.length, session: sessionStorage.length, cookie: document.cookie}));
  await answered();
  await a.close();

  // --- visitor B: one page ----------------------------------------------
  const b = watch(await browser.newContext({userAgent: WINDOWS_UA}), 'b');
  const q = await b.newPage();
  await q.goto(origin('tracker.test') + '/docs?utm_source=newsletter');
  await until('the /docs pageview', () => count('b') >= 1);
  await q.waitForTimeout(100);
  await hide(q);
  await until('the engagement of /docs', () => count('b') >= 2);
  await answered();
  await b.close();

  // --- visitor A on a hash-routed site ----------------------------------
  const h = watch(await browser.newContext({userAgent: DESKTOP_UA}), 'hash');
  const hp = await h.newPage();
  await hp.goto(origin('hash.test') + '/app.html');
  await until('the /app.html pageview', () => count('hash') >= 1);
  await hp.waitForTimeout(100);
  await hp.evaluate(() => { location.hash = '#/a' });
  await until('the #/a pageview', () => count('hash') >= 3);
  await hp.waitForTimeout(100);
  await hp.evaluate(() => { location.hash = '#/b' });
  await until('the #/b pageview', () => count('hash') >= 5);
  await hide(hp);
  await until('the engagement of #/b', () => count('hash') >= 6);
  await answered();
  await h.close();
} finally {
  await browser.close();
  server.close();
}
assert.ok(sent.length > 0, 'the tracker sent nothing');
summary.sent = sent;
summary.problems = problems;
console.log(JSON.stringify(summary));
