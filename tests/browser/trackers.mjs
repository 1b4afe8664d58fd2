// Other products' browser trackers in a real browser, pointed at tamis
// unchanged (issue 14): Umami's tracker and ga4mp as their packages ship
// them, gtag.js's and matomo.js's requests as those scripts send them.
// tests/trackers.rs checks what tamis counted of it through the stats API,
// and that none of the ids these trackers send is kept anywhere.
//
// - Umami: `src/tracker/index.js` of npm `umami` 2.10.0 (deploy/setup.sh
//   takes that one file from the package into data/npm/umami-2.10.0/).
//   Read there: the script sends `{type: 'event', payload: {website,
//   hostname, screen, language, title, url, referrer, name?, data?}}` with
//   fetch to `${data-host-url}/api/send`, `Content-Type: application/json`
//   (so the browser asks a CORS preflight first), and sends the previous
//   answer's body back as `x-umami-cache` on every later hit; a pageview
//   on load (document complete), one per pushState/replaceState to another
//   path (after 300 ms), a click on an element with `data-umami-event`
//   sends that event with its `data-umami-event-*` attributes as data; with
//   `localStorage['umami.disabled']` set it sends nothing at all.
// - ga4mp: `dist/ga4mp.umd.js` of npm `@analytics-debugger/ga4mp` 0.0.8.
//   Read there: `ga4mp(ids, {endpoint, user_id, user_ip_address})`, and
//   `trackEvent(name, params)` sends `navigator.sendBeacon(endpoint + '?' +
//   params)`: a POST with an empty body, everything in the query string
//   (`v=2&tid&cid&uid&_uip&sid&dl&dr&dt&ul&sr&en&ep.*&epn.*`).
// - gtag.js is not on a registry. Its requests are reproduced from the
//   protocol as documented by an open-source reimplementation of Google's
//   collector, d8a (github.com/d8a-tech/d8a): docs/docs/articles/
//   tracking-protocols/ga4-gtag.md lists the parameters (shared ones in
//   the query string: `v`, `tid`, `cid`, `dl`, `dr`, `ul`, `gcs`, `sid`,
//   …; per event: `en`, `_et`, `ep.*`, `epn.*`), and pkg/protocol/ga4/
//   protocol.go reads a POST body as one event per line, each line's
//   parameters over the query string's, an empty body as one event. gtag
//   sends them with sendBeacon or with fetch (POST, keepalive, credentials
//   included, text/plain). `gcs` is Consent Mode's state: `G1`, then
//   ad_storage, then analytics_storage, 1 granted and 0 denied (G111 all
//   granted, G100 all denied).
// - matomo.js is not on npm in a usable form (npm's `matomo-tracker` is a
//   Node wrapper of the HTTP API; the framework wrappers load matomo.js
//   from the Matomo server). Its requests are reproduced from its source,
//   github.com/matomo-org/matomo js/piwik.js, and the Tracking HTTP API
//   (developer.matomo.org/api-reference/tracking-api): requests carry
//   `send_image=0` and go by `sendPostRequestViaSendBeacon` (sendBeacon to
//   `matomo.php?<request>` with an empty Blob of type
//   `application/x-www-form-urlencoded; charset=UTF-8`), or by
//   `sendXmlHttpRequest` (POST, that content type, `withCredentials =
//   true`; on an answer outside 2xx, which is what a CORS refusal looks
//   like, it falls back to `getImage`, the same request as an image with
//   `send_image=1`, counting the hit twice); `sendBulkRequest` posts
//   `{"requests": ["?…", …], "send_image": 0}` the same way. Matomo's
//   opt-out page sets the `piwik_ignore` cookie on the tracker's host. Its
//   tracking code's <noscript> part is an image `matomo.php?idsite=N&rec=1`
//   with `referrerpolicy="no-referrer-when-downgrade"` (the code Matomo's
//   "Tracking code" page gives).
//
// The browser reaches tamis through a TCP relay that connects from
// 127.0.0.2, so the client address tamis sees is one the test can look
// for (and 127.0.0.1, the trusted proxy of the test config, is not it).
// Prints a JSON summary of every request to tamis and its answer.
import http from 'node:http';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { launch, arg, waitFor, DESKTOP_UA } from './lib.mjs';

const tamisAddr = new URL(arg('tamis'));
const CLIENT_ADDRESS = '127.0.0.2';

function read(path, install) {
  try {
    return readFileSync(new URL(path, import.meta.url), 'utf8');
  } catch (e) {
    throw new Error(`${path} not found: ${install}`);
  }
}
const umamiJs = read('../../data/npm/umami-2.10.0/src/tracker/index.js', "run ./deploy/setup.sh (it takes Umami's tracker from npm umami@2.10.0)");
const umamiVersion = JSON.parse(read('../../data/npm/umami-2.10.0/package.json', 'run ./deploy/setup.sh')).version;
const ga4mpJs = read('../../node_modules/@analytics-debugger/ga4mp/dist/ga4mp.umd.js', 'run ./deploy/setup.sh (it runs npm ci)');
const ga4mpVersion = JSON.parse(read('../../node_modules/@analytics-debugger/ga4mp/package.json', 'run ./deploy/setup.sh')).version;

const IDS = {
  umami: '6f1c2a5e-3b7d-4e8f-9a0b-1c2d3e4f5a6b',
  ga4mp: 'G-GAMP0001',
  gtag: 'G-GTAG0002',
  matomo: 7,
};
// Identifiers the trackers send, which tamis must never keep.
const GTAG_CID = '1122334455.1733000000';
const GTAG_UID = 'gtag-user-4242';
const GA4MP_UID = 'ga4mp-user-3131';
const GA4MP_UIP = '198.51.100.24';
const MATOMO_ID = '0f1e2d3c4b5a6978';
const MATOMO_UID = 'matomo-user-9999';
const MATOMO_CIP = '198.51.100.23';

// --- the relay: browser → 127.0.0.1:relay → (from 127.0.0.2) tamis --------
const relayedFrom = new Set();
const relay = net.createServer((inbound) => {
  const outbound = net.connect({ host: tamisAddr.hostname, port: Number(tamisAddr.port), localAddress: CLIENT_ADDRESS });
  outbound.on('connect', () => relayedFrom.add(outbound.localAddress));
  inbound.pipe(outbound).pipe(inbound);
  const close = () => { inbound.destroy(); outbound.destroy() };
  inbound.on('error', close);
  outbound.on('error', close);
});
await new Promise((r) => relay.listen(0, '127.0.0.1', r));
const relayPort = relay.address().port;
// tamis under a host name of its own for the pages of other sites, and
// under a subdomain of the Matomo site, as a Matomo server often is (its
// opt-out cookie is then first-party).
const tamis = `http://tamis.test:${relayPort}`;
const matomoTracker = `http://stats.matomo.test:${relayPort}/matomo.php`;

// --- the pages -------------------------------------------------------------
function umamiPage() {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Accueil</title>
<script defer src="/js/umami.js" data-website-id="${IDS.umami}" data-host-url="${tamis}"></script></head>
<body><h1>Umami</h1>
<button id="signup" data-umami-event="signup" data-umami-event-plan="pro" data-umami-event-email="jean@example.com">s'inscrire</button>
</body></html>`;
}

function ga4mpPage() {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Aide</title>
<script src="/js/ga4mp.js"></script></head>
<body><h1>ga4mp</h1>
<script>
window.tracker = ga4mp(['${IDS.ga4mp}'], {endpoint: '${tamis}/g/collect', user_id: '${GA4MP_UID}', user_ip_address: '${GA4MP_UIP}'});
window.tracker.trackEvent('page_view');
window.tracker.trackEvent('signup', {plan: 'pro', seats: 3, email: 'jean@example.com'});
</script></body></html>`;
}

// gtag.js's two transports, as it uses them: a batch by fetch (keepalive,
// credentials, text/plain body of one event a line) and sendBeacon.
function gtagPage() {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Accueil</title></head>
<body><h1>gtag</h1>
<script>
function shared(gcs) {
  return new URLSearchParams({v: '2', tid: '${IDS.gtag}', gtm: '45je4bk0v9', _p: String(Date.now()), gcs: gcs,
    cid: '${GTAG_CID}', uid: '${GTAG_UID}', ul: navigator.language.toLowerCase(), sr: screen.width + 'x' + screen.height,
    _s: '1', sid: '1733000000', sct: '1', seg: '1', dl: location.href, dr: document.referrer, dt: document.title}).toString();
}
// The answer to a no-cors request is opaque to the page: it resolves
// (type "opaque") once the request went through, and rejects on a
// network error.
window.sendBatch = function (gcs, lines, separator) {
  return fetch('${tamis}/g/collect?' + shared(gcs), {method: 'POST', body: lines.join(separator), keepalive: true,
    credentials: 'include', mode: 'no-cors'}).then(function (r) { return r.type }, function (e) { return String(e) });
};
window.sendBeaconBatch = function (gcs, lines, separator) {
  return navigator.sendBeacon('${tamis}/g/collect?' + shared(gcs), lines.join(separator));
};
</script></body></html>`;
}

// matomo.js's transports (js/piwik.js): sendBeacon with the request in
// the query string, XHR with credentials and its image fallback, the
// image alone, and the bulk request.
function matomoPage() {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Aide</title></head>
<body><h1>Matomo</h1>
<script>
const trackerUrl = '${matomoTracker}';
const type = 'application/x-www-form-urlencoded; charset=UTF-8';
window.fallbacks = 0;
window.request = function (params) {
  return new URLSearchParams(Object.assign({idsite: '${IDS.matomo}', rec: '1', r: '123456', h: '10', m: '2', s: '3',
    url: location.href, urlref: document.referrer, _id: '${MATOMO_ID}', _idn: '0', _refts: '0', uid: '${MATOMO_UID}',
    cip: '${MATOMO_CIP}', pdf: '1', cookie: '1', res: '1280x720', pv_id: 'Ab12Cd', send_image: '0'}, params)).toString();
};
window.beacon = function (request) {
  return navigator.sendBeacon(trackerUrl + '?' + request, new Blob([], {type}));
};
window.image = function (request) {
  return new Promise(function (resolve) {
    const img = new Image(1, 1);
    img.onload = function () { resolve({loaded: true, width: img.naturalWidth}) };
    img.onerror = function () { resolve({loaded: false}) };
    img.src = trackerUrl + '?' + request.replace('send_image=0', 'send_image=1');
  });
};
window.xhr = function (body) {
  return new Promise(function (resolve) {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', trackerUrl, true);
    xhr.withCredentials = true;
    xhr.onreadystatechange = function () {
      if (this.readyState !== 4) return;
      if (!(this.status >= 200 && this.status < 300)) {
        window.fallbacks++;
        window.image(body).then(function () { resolve(xhr.status) });
      } else {
        resolve(xhr.status);
      }
    };
    xhr.setRequestHeader('Content-Type', type);
    xhr.send(body);
  });
};
</script></body></html>`;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const host = (req.headers.host || '').split(':')[0];
  const js = {'/js/umami.js': umamiJs, '/js/ga4mp.js': ga4mpJs}[url.pathname];
  if (js) {
    res.writeHead(200, {'content-type': 'text/javascript'});
    return res.end(js);
  }
  // Matomo's tracking code for browsers without JavaScript, its
  // <noscript> image as the page shows it then: no `url`, the page comes
  // from the Referer, which `no-referrer-when-downgrade` lets through whole
  // (browsers send only the origin cross-site by default).
  if (host === 'matomo.test' && url.pathname === '/sans-js') {
    res.writeHead(200, {'content-type': 'text/html; charset=utf-8'});
    return res.end(`<!doctype html><html><head><meta charset="utf-8"><title>Sans JS</title></head><body>
<p><img id="noscript" referrerpolicy="no-referrer-when-downgrade" src="${matomoTracker}?idsite=${IDS.matomo}&amp;rec=1" style="border:0;" alt=""></p>
</body></html>`);
  }
  const page = {'umami.test': umamiPage, 'ga4.test': ga4mpPage, 'gtag.test': gtagPage, 'matomo.test': matomoPage}[host];
  if (!page) {
    res.writeHead(404);
    return res.end();
  }
  res.writeHead(200, {'content-type': 'text/html; charset=utf-8'});
  res.end(page());
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const port = server.address().port;
const origin = (host) => `http://${host}:${port}`;

// --- what the browser sends to tamis ---------------------------------------
const sent = [];
const headersRead = [];
const problems = [];
function watch(ctx, visitor) {
  ctx.on('request', (r) => {
    const u = new URL(r.url());
    if (u.port !== String(relayPort)) return;
    const entry = {visitor, method: r.method(), path: u.pathname, query: Object.fromEntries(u.searchParams),
      type: r.resourceType(), body: r.postData() || '', status: null};
    r._tamis = entry;
    sent.push(entry);
    headersRead.push(r.allHeaders().then((h) => {
      entry.content_type = h['content-type'] || null;
      entry.umami_cache = h['x-umami-cache'] || null;
      entry.cookie = h['cookie'] || null;
      entry.referer = h['referer'] || null;
    }));
  });
  ctx.on('requestfinished', async (r) => {
    if (!r._tamis) return;
    const resp = await r.response();
    const h = await resp.allHeaders();
    Object.assign(r._tamis, {status: resp.status(), answer_type: h['content-type'] || null,
      allow_origin: h['access-control-allow-origin'] || null,
      allow_credentials: h['access-control-allow-credentials'] || null,
      dropped: h['x-tamis-dropped'] || null});
  });
  ctx.on('requestfailed', (r) => { if (r._tamis) r._tamis.status = 'failed: ' + r.failure().errorText });
  ctx.on('page', (p) => {
    p.on('pageerror', (e) => problems.push(String(e)));
    p.on('console', (m) => { if (m.type() === 'warning' || m.type() === 'error') problems.push(m.text()) });
  });
  return ctx;
}
const of = (visitor) => sent.filter((s) => s.visitor === visitor);
async function until(what, fn) {
  try {
    await waitFor(what, fn);
  } catch (e) {
    throw new Error(`${e.message}; sent: ${JSON.stringify(sent)}; problems: ${JSON.stringify(problems)}`);
  }
}
// A context is closed only once tamis has answered all its requests.
async function answered(visitor) {
  await until(`tamis to answer every request of ${visitor}`, () => of(visitor).every((s) => s.status !== null));
}
async function visitor(browser, name) {
  return watch(await browser.newContext({userAgent: DESKTOP_UA}), name);
}

const summary = {umami_version: umamiVersion, ga4mp_version: ga4mpVersion, page_port: port};
const browser = await launch([
  '--disable-blink-features=AutomationControlled',
  '--host-resolver-rules=MAP *.test 127.0.0.1',
]);
try {
  // --- Umami: a pageview on load, a pushState navigation, a tagged click ---
  const u = await visitor(browser, 'umami');
  const up = await u.newPage();
  await up.goto(origin('umami.test') + '/?ref=newsletter');
  await until('the Umami pageview on load', () => of('umami').length >= 1);
  await answered('umami');
  await up.evaluate(() => history.pushState({}, '', '/spa/a'));
  await until('the Umami pageview of /spa/a', () => of('umami').length >= 2);
  await answered('umami');
  await up.click('#signup');
  await until('the Umami signup event', () => of('umami').length >= 3);
  await answered('umami');
  summary.umami_storage = await up.evaluate(() => ({local: localStorage.length, session: sessionStorage.length, cookie: document.cookie}));
  await u.close();

  // Umami disabled on this browser: nothing leaves it.
  const off = await visitor(browser, 'umami-disabled');
  await off.addInitScript(() => { if (location.hostname === 'umami.test') localStorage.setItem('umami.disabled', '1') });
  const offp = await off.newPage();
  await offp.goto(origin('umami.test') + '/');
  await offp.waitForFunction(() => window.umami && document.readyState === 'complete');
  await offp.click('#signup');
  await offp.evaluate(() => window.umami.track('signup', {plan: 'pro'}));
  await offp.waitForTimeout(500);
  summary.umami_disabled_sent = of('umami-disabled').length;
  await off.close();

  // --- ga4mp: page_view and a custom event, by sendBeacon -----------------
  const g = await visitor(browser, 'ga4mp');
  const gp = await g.newPage();
  await gp.goto(origin('ga4.test') + '/aide?x=1');
  await until('the two ga4mp beacons', () => of('ga4mp').length >= 2);
  await answered('ga4mp');
  summary.ga4mp_client_id = await gp.evaluate(() => window.tracker.getClientId());
  summary.ga4mp_session_id = String(await gp.evaluate(() => window.tracker.getSessionId()));
  await g.close();

  // --- gtag.js's requests: consent granted, then another visitor denied ---
  const t = await visitor(browser, 'gtag');
  const tp = await t.newPage();
  await tp.goto(origin('gtag.test') + '/accueil');
  summary.gtag_fetch = await tp.evaluate(() => window.sendBatch('G111', [
    'en=page_view&_fv=1&_ss=1&_ee=1',
    'en=signup&ep.plan=famille&epn.seats=2&ep.email=jean%40example.com&_et=1200',
    'en=user_engagement&_et=4000',
  ], '\r\n'));
  await until('the gtag batch', () => of('gtag').length >= 1);
  await answered('gtag');
  await t.close();
  const d = await visitor(browser, 'gtag-denied');
  const dp = await d.newPage();
  await dp.goto(origin('gtag.test') + '/refus');
  summary.gtag_beacon_queued = await dp.evaluate(() => window.sendBeaconBatch('G100', [
    'en=page_view&_ss=1',
    'en=scroll&epn.percent_scrolled=90&_et=50',
  ], '\n'));
  await until('the denied gtag beacon', () => of('gtag-denied').length >= 1);
  await answered('gtag-denied');
  await d.close();

  // --- matomo.js's requests ------------------------------------------------
  const m = await visitor(browser, 'matomo');
  const mp = await m.newPage();
  await mp.goto(origin('matomo.test') + '/aide');
  summary.matomo_beacon_queued = await mp.evaluate(() => window.beacon(window.request({action_name: 'Aide'})));
  await until('the Matomo pageview beacon', () => of('matomo').length >= 1);
  summary.matomo_image = await mp.evaluate(() => window.image(window.request({url: location.origin + '/galerie'})));
  summary.matomo_bulk_status = await mp.evaluate(() => window.xhr(JSON.stringify({requests: [
    '?' + window.request({link: 'https://ailleurs.example/x?id=9'}),
    '?' + window.request({download: location.origin + '/rapport-annuel.pdf'}),
  ], send_image: 0})));
  summary.matomo_event_status = await mp.evaluate(() => window.xhr(window.request({e_c: 'Formulaires', e_a: 'Envoi', e_n: 'Permis', e_v: '2'})));
  summary.matomo_ping_queued = await mp.evaluate(() => window.beacon(window.request({ping: '1'})));
  await until('the five Matomo requests', () => of('matomo').length >= 5);
  await answered('matomo');
  summary.matomo_fallbacks = await mp.evaluate(() => window.fallbacks);
  await m.close();

  // The same visitor on a page without JavaScript.
  const n = await visitor(browser, 'matomo-noscript');
  const np = await n.newPage();
  await np.goto(origin('matomo.test') + '/sans-js?q=1');
  await np.waitForFunction(() => document.getElementById('noscript').complete);
  summary.matomo_noscript_width = await np.evaluate(() => document.getElementById('noscript').naturalWidth);
  await until('the Matomo image without JavaScript', () => of('matomo-noscript').length >= 1);
  await answered('matomo-noscript');
  await n.close();

  // A visitor who opted out on Matomo's opt-out page: its cookie on the
  // tracker's host.
  const o = await visitor(browser, 'matomo-optout');
  await o.addCookies([{name: 'piwik_ignore', value: '*', domain: 'stats.matomo.test', path: '/'}]);
  const op = await o.newPage();
  await op.goto(origin('matomo.test') + '/optout');
  summary.matomo_optout_status = await op.evaluate(() => window.xhr(window.request({})));
  await until('the opted-out Matomo request', () => of('matomo-optout').length >= 1);
  await answered('matomo-optout');
  await o.close();
} finally {
  await browser.close();
  server.close();
  relay.close();
}
assert.ok(sent.length > 0, 'the trackers sent nothing');
await Promise.all(headersRead);
summary.identifiers = {gtag_cid: GTAG_CID, gtag_uid: GTAG_UID, ga4mp_uid: GA4MP_UID, ga4mp_uip: GA4MP_UIP,
  matomo_id: MATOMO_ID, matomo_uid: MATOMO_UID, matomo_cip: MATOMO_CIP};
summary.relayed_from = [...relayedFrom];
summary.sent = sent;
summary.problems = problems;
console.log(JSON.stringify(summary));
