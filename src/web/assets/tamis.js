/*! tamis.js: no cookies, no storage */
(function (w, d) {
 var s = d.currentScript, N = w.navigator, L = w.location, H = w.history, t = w.tamis;
 if (!s || t && t.v) return;
 function A(a) { return s.getAttribute('data-' + a) }
 function T(f, x) { try { return f(x) } catch (e) {} }
 var dom = A('domain') || L.hostname,
  api = A('api') || new URL(s.src).origin + '/api/event',
  hash = A('hash') != null,
  consent = A('consent') == 'required' ? '' : 0,
  held = [], last, vis = 0, since, depth = 0,
  q = t && t.q || [];

 function url() { var u = L.href; return hash ? u : u.split('#')[0] }

 function send(n, o) {
  T(function () {
   o = o || {};
   if (N.globalPrivacyControl || N.doNotTrack == '1' || T(function () { return localStorage.tamis_ignore })) return;
   var b = {n: n, u: o.u || url(), d: dom, r: d.referrer || null, p: o.props, e: o.e, sd: o.sd, h: hash ? 1 : o.h};
   consent === '' ? held.length < 30 && held.push(b) : post(b);
   o.callback && o.callback();
  });
 }
 function post(b) {
  if (consent) b.c = consent;
  b = JSON.stringify(b);
  N.sendBeacon && N.sendBeacon(api, b) || fetch(api, {method: 'POST', body: b, keepalive: true}).catch(Date);
 }

 function scroll() {
  var p = Math.round((w.scrollY + w.innerHeight) * 100 / d.documentElement.scrollHeight);
  if (p > depth) depth = Math.min(p, 100);
 }
 function engage() {
  if (since) vis += Date.now() - since, since = 0;
  scroll();
  if (last && vis) send('engagement', {u: last, e: vis, sd: depth}), vis = 0;
 }
 function shown() { since = d.visibilityState == 'visible' && Date.now() }

 function page() {
  var u = url();
  if (u != last) engage(), last = u, depth = 0, shown(), scroll(), send('pageview', {u: u});
 }

 t = w.tamis = function (n, o) { n == 'pageview' ? page() : send(n, o) };
 t.v = 1;
 t.notFound = function () { send('404', {props: {path: L.pathname}}) };
 t.consent = function (c) {
  if (c == 'granted' || c == 'denied') for (consent = c; held.length;) post(held.shift());
 };
 t.optOut = function () { T(function () { localStorage.tamis_ignore = 1 }) };
 t.optIn = function () { T(function () { delete localStorage.tamis_ignore }) };

 T(function () {
  ['pushState', 'replaceState'].forEach(function (m) {
   var f = H[m];
   H[m] = function () { var r = f.apply(this, arguments); T(page); return r };
  });
  function on(o, e, f) { o.addEventListener(e, function (x) { T(f, x) }, {capture: !0, passive: !0}) }
  on(w, 'popstate', page);
  hash && on(w, 'hashchange', page);
  on(w, 'scroll', scroll);
  on(w, 'pagehide', engage);
  on(d, 'visibilitychange', function () { d.visibilityState == 'hidden' ? engage() : shown() });
  on(d, 'click', function (e) {
   var a = e.target.closest('a[href]'), u;
   if (a && /^http/.test(a.protocol)) {
    u = {props: {url: a.protocol + '//' + a.host + a.pathname}};
    /\.(pdf|docx?|xlsx?|pptx?|od[tsp]|csv|txt|zip|exe|msi|dmg|epub|mp[34])$/i.test(a.pathname) ? send('File Download', u) :
     a.host != L.host && send('Outbound Link: Click', u);
   }
  });
  page();
  q.forEach(function (a) { t.apply(0, a) });
 });
})(window, document);
