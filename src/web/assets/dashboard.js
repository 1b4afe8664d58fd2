// tamis dashboard: a static client of the stats API (/api/v2/query).
// Every string that comes from the API (paths, referrers, property values)
// is written with textContent or createTextNode, never parsed as HTML; the
// page's Content-Security-Policy forbids inline scripts and other origins.
// The access token lives in memory only: no cookie, no storage.
// A shared link (/share/<id>#<secret>) is the one exception: the secret is
// taken from the fragment, removed from the URL at once, and exchanged for
// an HttpOnly session cookie (POST /api/share/session) that no script can
// read; requests then only name the link (X-Tamis-Share).
(function () {
  'use strict';
  var I18N = window.TAMIS_I18N;
  var PERIODS = ['day', 'yesterday', '7d', '28d', '30d', 'month', '6mo', '12mo', 'year'];
  var TOP = ['visitors', 'visits', 'pageviews', 'views_per_visit', 'bounce_rate', 'visit_duration'];
  var FILTERABLE = /^(event:page|event:name|visit:.*)$/;
  var state = {share: null, token: null, sites: [], site: null, period: '28d', periodAsked: false, compare: true, filters: [], lang: null, open: {}, more: {}, errorKey: null};
  var generation = 0, realtimeTimer = null, lastSeries = null;

  function $(id) { return document.getElementById(id) }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }
  // The language asked for (button, URL), else the site's, else, before a
  // site is known (sign-in, a shared link's password form), the first of
  // the browser's languages that the dashboard speaks; French otherwise.
  function lang() { return state.lang || (state.site && state.site.language) || browserLang() }
  function browserLang() {
    var wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || ''];
    for (var i = 0; i < wanted.length; i++) {
      var code = String(wanted[i]).slice(0, 2).toLowerCase();
      if (code === 'fr' || code === 'en') return code;
    }
    return 'fr';
  }
  function t(key, vars) {
    var s = I18N[lang()][key];
    if (s == null) s = key;
    if (vars) for (var k in vars) s = s.split('{' + k + '}').join(String(vars[k]));
    return s;
  }
  function k() { return state.site ? state.site.k_threshold : 5 }

  // ---- numbers ------------------------------------------------------------
  function num(n) { return new Intl.NumberFormat(t('locale'), {maximumFractionDigits: 2}).format(n) }
  function metricText(metric, v) {
    if (v == null) return '—';
    if (metric === 'bounce_rate' || metric === 'percentage' || metric === 'conversion_rate') return new Intl.NumberFormat(t('locale'), {style: 'percent', maximumFractionDigits: 1}).format(v / 100);
    if (metric === 'visit_duration') {
      var m = Math.floor(v / 60), s = Math.round(v % 60);
      return (m ? m + ' ' + t('minutes') + ' ' : '') + s + ' ' + t('seconds');
    }
    return num(v);
  }

  // ---- URL hash: the view (never the token) -------------------------------
  function readHash() {
    var p = new URLSearchParams(location.hash.slice(1));
    if (p.get('lang') === 'fr' || p.get('lang') === 'en') state.lang = p.get('lang');
    if (PERIODS.indexOf(p.get('period')) >= 0) { state.period = p.get('period'); state.periodAsked = true }
    if (p.get('compare') === '0') state.compare = false;
    state.wantSite = p.get('site');
    try {
      var f = JSON.parse(p.get('filters') || '[]');
      if (Array.isArray(f)) state.filters = f.filter(function (x) {
        return Array.isArray(x) && x.length === 3 && x[0] === 'is' && typeof x[1] === 'string' && FILTERABLE.test(x[1]) && Array.isArray(x[2]);
      });
    } catch (e) { state.filters = [] }
  }
  function writeHash() {
    var p = new URLSearchParams();
    if (state.site) p.set('site', state.site.id);
    p.set('period', state.period);
    if (!state.compare) p.set('compare', '0');
    if (state.lang) p.set('lang', state.lang);
    if (state.filters.length) p.set('filters', JSON.stringify(state.filters));
    history.replaceState(null, '', '#' + p.toString());
  }

  // ---- API ----------------------------------------------------------------
  function api(path, body, accept) {
    var init = state.share
      ? {headers: {'X-Tamis-Share': state.share}, credentials: 'same-origin', cache: 'no-store'}
      : {headers: {Authorization: 'Bearer ' + state.token}, credentials: 'omit', cache: 'no-store'};
    if (body) {
      init.method = 'POST';
      init.headers['Content-Type'] = 'application/json';
      if (accept) init.headers.Accept = accept;
      init.body = JSON.stringify(body);
    }
    // Requests in flight, readable by tests and tools as <body data-busy>.
    busy(1);
    // Taken off in a later task, so that requests the answer starts are
    // counted before this one is not.
    var done = function () { release(); setTimeout(function () { busy(-1) }) };
    var send = function (attempt) {
      return fetch(path, init).then(function (r) {
        var wait = momentary(r);
        if (wait && attempt < 5) {
          // Up to a second more at random: the readers of a popular shared
          // link told 429 together do not all come back together.
          return new Promise(function (resume) { setTimeout(resume, wait * 1000 + Math.random() * 1000) })
            .then(function () { return send(attempt + 1) });
        }
        return r;
      });
    };
    return slot().then(function () { return send(0) }).then(function (r) {
      if (r.status === 401) {
        // A shared link revoked or expired while its dashboard is open:
        // the message alone, and focus where it is (the control that had
        // it is gone).
        if (state.share) {
          var shown = !$('dash').hidden;
          shareProblem('badShare');
          if (shown) $('main').focus();
        } else signOut(t('badToken'));
        throw new Error('unauthorized');
      }
      if (!r.ok) return r.text().then(function (text) {
        var msg = t('unavailable');
        try { msg = JSON.parse(text).error || msg } catch (e) {}
        throw new Error(msg);
      });
      return accept ? r.text() : r.json();
    }, function () { throw new Error(t('network')) })
      .then(function (v) { done(); return v }, function (e) { done(); throw e });
  }
  // The seconds to wait before asking again, for a refusal that a moment
  // mends: 429 (this token's or link's running queries), or 503 with a
  // Retry-After of at most 2 s (the server's or ClickHouse's running
  // queries). A 503 that says to wait longer (a timeout, a shard down)
  // would fail again as soon, and is shown.
  function momentary(r) {
    var after = +r.headers.get('Retry-After') || 0;
    if (r.status === 429) return Math.min(10, Math.max(1, after || 1));
    if (r.status === 503 && after >= 1 && after <= 2) return after;
    return 0;
  }
  // The stats API runs a few queries per token at once
  // (`query.max_running_per_token`, 4 by default) and answers 429 beyond:
  // the dashboard sends at most MAX_RUNNING at a time, and when told 429
  // (another tab, a script with the same token) waits as Retry-After says
  // and asks again.
  var MAX_RUNNING = 3, running = 0, waiting = [];
  function slot() {
    return new Promise(function (go) {
      if (running < MAX_RUNNING) { running++; go() } else waiting.push(go);
    });
  }
  function release() {
    var next = waiting.shift();
    if (next) next(); else running--;
  }
  var pending = 0;
  function busy(d) { pending += d; document.body.setAttribute('data-busy', String(pending)) }
  function query(q) {
    q.site_id = state.site.id;
    if (!q.filters && state.filters.length) q.filters = state.filters.slice();
    // Imported history (tamis import ga4) is added wherever the API can
    // add it; `meta.imports_period` says which days are imported.
    q.include = Object.assign({imports: true}, q.include || {});
    return api('/api/v2/query', q);
  }
  function range() {
    if (state.period !== 'yesterday') return state.period;
    var y = state.rangeToday ? shift(state.rangeToday, -1) : null;
    return y ? [y, y] : 'day';
  }

  // Dates as YYYY-MM-DD strings in the site's time zone (from the API).
  function shift(date, days) {
    var d = new Date(Date.UTC(+date.slice(0, 4), +date.slice(5, 7) - 1, +date.slice(8, 10)) + days * 86400000);
    return d.toISOString().slice(0, 10);
  }
  function daysBetween(a, b) {
    return Math.round((Date.UTC(+b.slice(0, 4), +b.slice(5, 7) - 1, +b.slice(8, 10)) - Date.UTC(+a.slice(0, 4), +a.slice(5, 7) - 1, +a.slice(8, 10))) / 86400000);
  }

  // ---- rendering ----------------------------------------------------------
  function translateStatic() {
    document.documentElement.lang = lang();
    var nodes = document.querySelectorAll('[data-t]');
    for (var i = 0; i < nodes.length; i++) {
      var key = nodes[i].getAttribute('data-t');
      // A shared link asks for its password, never for a token.
      if (state.share && SHARE_TEXT[key]) key = SHARE_TEXT[key];
      nodes[i].textContent = t(key);
    }
    var other = lang() === 'fr' ? 'en' : 'fr';
    $('lang').textContent = I18N[lang()].switchTo;
    $('lang').setAttribute('lang', other);
    $('lang').setAttribute('aria-label', t('switchLabel'));
    $('token').setAttribute('aria-describedby', 'error');
    var sel = $('period'), cur = state.period;
    sel.textContent = '';
    PERIODS.forEach(function (p) { var o = el('option', null, t('p_' + p)); o.value = p; sel.appendChild(o) });
    sel.value = cur;
    $('compare').checked = state.compare;
    // A message shown by its key follows the language.
    if (state.errorKey) $('error').textContent = t(state.errorKey);
  }

  function showError(msg) {
    var e = $('error');
    state.errorKey = null;
    e.textContent = msg || '';
    e.hidden = !msg;
  }
  // A message of the page's own (not an answer of the API): kept by its
  // key so that it follows a change of language.
  function showErrorKey(key) {
    showError(t(key));
    state.errorKey = key;
  }

  // Direction controls in a value would reorder what is shown (a path
  // ending in "\u202Efdp.exe" reads as "exe.pdf"): they are shown as codes.
  function visible(s) {
    return s.replace(/[\u200E\u200F\u202A-\u202E\u2066-\u2069]/g, function (c) { return '⟨U+' + c.charCodeAt(0).toString(16).toUpperCase() + '⟩' });
  }
  function dimLabel(dim, value) { return visible(label(dim, value)) }
  function label(dim, value) {
    if (value === '(other)') return t('other');
    if (value === '') return dim === 'visit:source' || dim === 'visit:referrer' ? t('direct') : t('unknown');
    if (dim === 'visit:country') {
      try { return new Intl.DisplayNames([t('locale')], {type: 'region'}).of(value) || value } catch (e) { return value }
    }
    if (dim === 'visit:region') return (state.regionNames && state.regionNames[value]) || value;
    if (dim === 'visit:consent') return t('c_' + value) === 'c_' + value ? value : t('c_' + value);
    if (dim === 'visit:device') { var d = t('d_' + value.toLowerCase()); return d.indexOf('d_') === 0 ? value : d }
    if (dim === 'visit:language') {
      try { return new Intl.DisplayNames([t('locale')], {type: 'language'}).of(value) || value } catch (e) { return value }
    }
    if (dim === 'visit:source' && value === 'Direct / None') return t('direct');
    return value;
  }

  function renderFilters() {
    var list = $('filter-list');
    list.textContent = '';
    $('filters').hidden = !state.filters.length;
    state.filters.forEach(function (f, i) {
      var li = el('li', 'chip');
      li.appendChild(el('span', 'chip-dim', t(dimKey(f[1]))));
      li.appendChild(document.createTextNode(' ' + t('is') + ' '));
      li.appendChild(el('strong', 'chip-value', dimLabel(f[1], f[2][0])));
      var b = el('button', 'chip-remove', '×');
      b.type = 'button';
      b.setAttribute('aria-label', t('removeFilter') + ' : ' + dimLabel(f[1], f[2][0]));
      b.addEventListener('click', function () {
        state.filters.splice(i, 1);
        reload();
        focusAfterFilters(i);
      });
      li.appendChild(b);
      list.appendChild(li);
    });
  }
  function dimKey(dim) {
    var map = {'event:page': 'col_page', 'visit:entry_page': 'entry_pages', 'visit:exit_page': 'exit_pages', 'visit:source': 'col_source',
      'visit:referrer': 'col_referrer', 'visit:region': 'col_region', 'visit:country': 'col_country', 'visit:browser': 'col_browser',
      'visit:os': 'col_os', 'visit:device': 'col_device', 'visit:language': 'col_language', 'visit:consent': 'col_consent',
      'event:name': 'col_event', 'visit:utm_source': 'utm_source', 'visit:utm_medium': 'utm_medium', 'visit:utm_campaign': 'utm_campaign'};
    return map[dim] || dim;
  }

  function change(metric, now, prev) {
    if (now == null || prev == null) return null;
    // Nothing to compare with: no arrow rather than an infinite change.
    if (!prev) return null;
    var pct = Math.round((now - prev) / prev * 100);
    var up = pct >= 0;
    // "+12 %" in French, "+12%" in English: the percent sign as each
    // language writes it.
    var text = new Intl.NumberFormat(t('locale'), {style: 'percent', maximumFractionDigits: 0}).format(Math.abs(pct) / 100);
    return {text: (up ? '+' : '−') + text, up: up, good: metric === 'bounce_rate' ? !up : up, zero: pct === 0};
  }

  // The top metrics a query may ask for: the stats API refuses
  // views_per_visit with a filter on event:page, as Plausible does (a
  // visit's pageviews are not all of the filtered page), so its tile then
  // says it is not computed.
  function topMetrics() {
    var paged = state.filters.some(function (f) { return f[1] === 'event:page' });
    return paged ? TOP.filter(function (m) { return m !== 'views_per_visit' }) : TOP;
  }
  // Values of `asked` metrics, placed as TOP lists them (undefined: not asked).
  function onTop(asked, values) {
    return values && TOP.map(function (m) { var i = asked.indexOf(m); return i < 0 ? undefined : values[i] });
  }
  function renderMetrics(now, prev) {
    var ul = $('metrics');
    ul.textContent = '';
    TOP.forEach(function (m, i) {
      var li = el('li', 'metric');
      li.setAttribute('data-metric', m);
      li.appendChild(el('span', 'metric-name', t(m)));
      var v = now ? now[i] : null;
      var value = el('span', 'metric-value', metricText(m, v));
      if (now && v === undefined) value.title = t('notWithPage');
      else if (v == null) value.title = t('hiddenTip', {k: k()});
      li.appendChild(value);
      if (prev) {
        var c = change(m, v, prev[i]);
        var d = el('span', 'metric-change' + (c ? (c.zero ? ' flat' : c.good ? ' good' : ' bad') : ''));
        d.textContent = '';
        // The arrow repeats the sign: shown, not read out.
        if (c && !c.zero) { var arrow = el('span', null, c.up ? '▲ ' : '▼ '); arrow.setAttribute('aria-hidden', 'true'); d.appendChild(arrow) }
        if (c) d.appendChild(document.createTextNode(c.text));
        d.title = t('vsPrev') + ' : ' + metricText(m, prev[i]);
        if (c) { var sr = el('span', 'sr', ' ' + t('vsPrev')); d.appendChild(sr) }
        li.appendChild(d);
      }
      ul.appendChild(li);
    });
  }

  var SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var a in attrs) e.setAttribute(a, attrs[a]);
    if (text != null) e.textContent = String(text);
    return e;
  }
  function timeLabel(label) {
    var loc = t('locale');
    if (label.length > 10) return label.slice(11, 16);
    if (label.length === 7) return new Date(Date.UTC(+label.slice(0, 4), +label.slice(5, 7) - 1, 15)).toLocaleDateString(loc, {month: 'short', year: 'numeric', timeZone: 'UTC'});
    return new Date(Date.UTC(+label.slice(0, 4), +label.slice(5, 7) - 1, +label.slice(8, 10))).toLocaleDateString(loc, {day: 'numeric', month: 'short', timeZone: 'UTC'});
  }
  function renderChart(series) {
    lastSeries = series;
    var box = $('chart');
    box.textContent = '';
    if (!series) return;
    var W = Math.max(280, box.clientWidth || 600), H = W < 500 ? 200 : 260, L = 48, R = 12, T = 12, B = 28;
    var labels = series.labels, now = series.now, prev = series.prev;
    var max = 0;
    now.concat(prev || []).forEach(function (v) { if (v != null && v > max) max = v });
    var step = niceStep(max || 1);
    var top = Math.max(step, Math.ceil((max || 1) / step) * step);
    var n = labels.length;
    var x = function (i) { return L + (n > 1 ? i * (W - L - R) / (n - 1) : (W - L - R) / 2) };
    var y = function (v) { return T + (H - T - B) * (1 - v / top) };
    var s = svg('svg', {viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, role: 'img', 'aria-label': t('chartImg')});
    for (var g = 0; g <= top; g += step) {
      s.appendChild(svg('line', {x1: L, x2: W - R, y1: y(g), y2: y(g), 'class': 'grid'}));
      s.appendChild(svg('text', {x: L - 6, y: y(g) + 4, 'class': 'axis', 'text-anchor': 'end'}, num(g)));
    }
    var every = Math.max(1, Math.ceil(n / Math.floor((W - L - R) / 70)));
    labels.forEach(function (lab, i) {
      if (i % every === 0) s.appendChild(svg('text', {x: x(i), y: H - 8, 'class': 'axis', 'text-anchor': 'middle'}, timeLabel(lab)));
    });
    function line(values, cls) {
      var d = '', pen = false;
      values.forEach(function (v, i) {
        if (v == null) { pen = false; return }
        d += (pen ? 'L' : 'M') + x(i).toFixed(1) + ' ' + y(v).toFixed(1);
        pen = true;
      });
      if (d) s.appendChild(svg('path', {d: d, 'class': cls}));
    }
    // Imported buckets: a band behind the line, labelled once.
    var half = n > 1 ? (W - L - R) / (n - 1) / 2 : (W - L - R) / 2;
    var imported = series.imported || [];
    var labelled = false;
    for (var i0 = 0; i0 < n; i0++) {
      if (!imported[i0] || (i0 > 0 && imported[i0 - 1])) continue;
      var i1 = i0;
      while (i1 + 1 < n && imported[i1 + 1]) i1++;
      var x0 = Math.max(L, x(i0) - half), x1 = Math.min(W - R, x(i1) + half);
      s.appendChild(svg('rect', {x: x0, y: T, width: Math.max(1, x1 - x0), height: H - T - B, 'class': 'imported-band'}));
      if (!labelled) {
        s.appendChild(svg('text', {x: x0 + 4, y: T + 12, 'class': 'imported-text'}, t('importedGa')));
        labelled = true;
      }
    }
    if (prev) line(prev.slice(0, n), 'line prev');
    line(now, 'line now');
    now.forEach(function (v, i) {
      if (v == null) return;
      var c = svg('circle', {cx: x(i), cy: y(v), r: n > 40 ? 2 : 3.5, 'class': 'point'});
      c.appendChild(svg('title', {}, timeLabel(labels[i]) + ' : ' + num(v)));
      s.appendChild(c);
    });
    box.appendChild(s);
    box.appendChild(chartTable(labels, now, prev, imported));
  }
  // The chart's numbers as a table, for screen readers (visually hidden,
  // in a box: a table grows to its content whatever its width): a caption,
  // column headers, and one row per point of the chart, its period written
  // out in the page's language.
  function chartTable(labels, now, prev, imported) {
    var box = el('div', 'sr');
    var tbl = el('table');
    tbl.id = 'chart-table';
    tbl.appendChild(el('caption', null, t('chartTable')));
    var head = el('tr');
    var cols = ['col_time', 'col_now'].concat(prev ? ['col_prev'] : []);
    cols.forEach(function (key) { var th = el('th', null, t(key)); th.scope = 'col'; head.appendChild(th) });
    var thead = el('thead');
    thead.appendChild(head);
    tbl.appendChild(thead);
    var tbody = el('tbody');
    // Buckets of a month or a week start on their first day: named as such.
    var span = labels.length > 1 ? daysBetween(labels[0].slice(0, 10), labels[1].slice(0, 10)) : 1;
    labels.forEach(function (lab, i) {
      var tr = el('tr');
      var th = el('th');
      th.scope = 'row';
      // The bucket's own label stays readable by tools as <time datetime>.
      var time = el('time', null, longTimeLabel(lab, span));
      time.setAttribute('datetime', lab);
      th.appendChild(time);
      tr.appendChild(th);
      tr.appendChild(el('td', null, (now[i] == null ? '—' : num(now[i])) + (imported[i] ? ' (' + t('importedGa') + ')' : '')));
      if (prev) tr.appendChild(el('td', null, prev[i] == null ? '—' : num(prev[i])));
      tbody.appendChild(tr);
    });
    tbl.appendChild(tbody);
    box.appendChild(tbl);
    return box;
  }
  function longTimeLabel(label, span) {
    var loc = t('locale');
    var d = new Date(Date.UTC(+label.slice(0, 4), +label.slice(5, 7) - 1, label.length > 7 ? +label.slice(8, 10) : 1, label.length > 10 ? +label.slice(11, 13) : 0));
    if (label.length > 10) return d.toLocaleString(loc, {day: 'numeric', month: 'long', hour: 'numeric', minute: '2-digit', timeZone: 'UTC'});
    if (label.length === 7 || span >= 28) return d.toLocaleDateString(loc, {month: 'long', year: 'numeric', timeZone: 'UTC'});
    var day = d.toLocaleDateString(loc, {weekday: 'long', day: 'numeric', month: 'long', year: 'numeric', timeZone: 'UTC'});
    return span >= 7 ? t('weekOf', {date: day}) : day;
  }
  function niceStep(max) {
    var raw = max / 4, p = Math.pow(10, Math.floor(Math.log10(raw)));
    var m = raw / p;
    return Math.max(1, (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p);
  }

  // ---- breakdown cards ----------------------------------------------------
  function cardsSpec() {
    var site = state.site, cards = [
      {id: 'pages', title: 'pages', tabs: [
        {id: 'top_pages', dim: 'event:page', col: 'col_page', metrics: ['visitors', 'pageviews']},
        {id: 'entry_pages', dim: 'visit:entry_page', col: 'col_page', metrics: ['visitors', 'visits']},
        {id: 'exit_pages', dim: 'visit:exit_page', col: 'col_page', metrics: ['visitors', 'visits']}]},
      {id: 'sources', title: 'sources', tabs: [
        {id: 'source', dim: 'visit:source', col: 'col_source', metrics: ['visitors', 'percentage']},
        {id: 'referrer', dim: 'visit:referrer', col: 'col_referrer', metrics: ['visitors', 'percentage']}]},
      {id: 'locations', title: 'locations', tabs: [
        {id: 'region', dim: 'visit:region', col: 'col_region', metrics: ['visitors', 'percentage']},
        {id: 'country', dim: 'visit:country', col: 'col_country', metrics: ['visitors', 'percentage']}]},
      {id: 'devices', title: 'devices', tabs: [
        {id: 'browser', dim: 'visit:browser', col: 'col_browser', metrics: ['visitors', 'percentage']},
        {id: 'os', dim: 'visit:os', col: 'col_os', metrics: ['visitors', 'percentage']},
        {id: 'device', dim: 'visit:device', col: 'col_device', metrics: ['visitors', 'percentage']}]},
      {id: 'language', title: 'language', tabs: [
        {id: 'language', dim: 'visit:language', col: 'col_language', metrics: ['visitors', 'percentage']}]},
      {id: 'consent', title: 'consent', tabs: [
        {id: 'consent', dim: 'visit:consent', col: 'col_consent', metrics: ['visitors', 'pageviews']}]}
    ];
    if (site.campaigns) cards[1].tabs.push(
      {id: 'utm_source', dim: 'visit:utm_source', col: 'col_campaign', metrics: ['visitors', 'percentage']},
      {id: 'utm_medium', dim: 'visit:utm_medium', col: 'col_campaign', metrics: ['visitors', 'percentage']},
      {id: 'utm_campaign', dim: 'visit:utm_campaign', col: 'col_campaign', metrics: ['visitors', 'percentage']});
    if (site.event_names && site.event_names.length) {
      var ev = {id: 'events', title: 'events_card', tabs: [{id: 'event_name', dim: 'event:name', col: 'col_event', metrics: ['visitors', 'events']}]};
      (site.prop_keys || []).forEach(function (key) {
        ev.tabs.push({id: 'prop:' + key, label: key, dim: 'event:props:' + key, col: 'col_value', metrics: ['visitors', 'events'], noFilter: true});
      });
      cards.push(ev);
    }
    // Goals are computed from the hourly aggregates when read; a goal is
    // not a filter here, since visit metrics cannot be split by goal.
    if (site.goals && site.goals.length) {
      cards.push({id: 'goals', title: 'goals_card', tabs: [
        {id: 'goal', dim: 'event:goal', col: 'col_goal', metrics: ['visitors', 'events', 'conversion_rate'], noFilter: true}]});
    }
    return cards;
  }

  function renderCards() {
    var box = $('cards');
    box.textContent = '';
    cardsSpec().forEach(function (card) {
      var sec = el('section', 'card breakdown');
      sec.id = 'card-' + card.id;
      sec.tabIndex = -1;
      sec.setAttribute('aria-labelledby', 'h-' + card.id);
      var head = el('div', 'card-head');
      var h = el('h2', null, t(card.title));
      h.id = 'h-' + card.id;
      head.appendChild(h);
      var tabIndex = Math.max(0, card.tabs.findIndex(function (x) { return x.id === state.open[card.id] }));
      var tab = card.tabs[tabIndex];
      if (card.tabs.length > 1) {
        var tl = el('div', 'tabs');
        tl.setAttribute('role', 'tablist');
        tl.setAttribute('aria-label', t(card.title) + ' : ' + t('tabs'));
        card.tabs.forEach(function (x, i) {
          var b = el('button', 'tab', x.label || t(x.id));
          b.type = 'button';
          b.setAttribute('role', 'tab');
          b.setAttribute('aria-selected', String(i === tabIndex));
          b.tabIndex = i === tabIndex ? 0 : -1;
          b.setAttribute('data-tab', x.id);
          b.addEventListener('click', function () { state.open[card.id] = x.id; renderCards(); loadCards(generation); focusTab(card.id, x.id) });
          b.addEventListener('keydown', function (e) {
            var d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
            if (!d) return;
            e.preventDefault();
            var next = card.tabs[(i + d + card.tabs.length) % card.tabs.length];
            state.open[card.id] = next.id; renderCards(); loadCards(generation); focusTab(card.id, next.id);
          });
          tl.appendChild(b);
        });
        head.appendChild(tl);
      }
      sec.appendChild(head);
      var body = el('div', 'card-body');
      body.setAttribute('role', card.tabs.length > 1 ? 'tabpanel' : 'region');
      body.appendChild(el('p', 'muted', t('loading')));
      sec.appendChild(body);
      var foot = el('div', 'card-foot');
      var more = el('button', 'link more', t(state.more[card.id] ? 'less' : 'more'));
      more.type = 'button';
      more.hidden = true;
      more.addEventListener('click', function () { state.more[card.id] = !state.more[card.id]; renderCards(); loadCards(generation) });
      var csv = el('button', 'link csv', t('exportCsv'));
      csv.type = 'button';
      csv.setAttribute('aria-label', t('exportOf') + (tab.label || t(tab.id)));
      csv.addEventListener('click', function () { exportCsv(tab) });
      foot.appendChild(more);
      foot.appendChild(csv);
      sec.appendChild(foot);
      card.el = body; card.more = more; card.tab = tab;
      box.appendChild(sec);
    });
    state.cards = box.children;
  }
  function focusTab(card, tab) {
    var b = document.querySelector('#card-' + card + ' [data-tab="' + CSS.escape(tab) + '"]');
    if (b) b.focus();
  }

  function loadCards(gen) {
    var specs = cardsSpec();
    specs.forEach(function (card) {
      var tabIndex = Math.max(0, card.tabs.findIndex(function (x) { return x.id === state.open[card.id] }));
      var tab = card.tabs[tabIndex];
      var sec = $('card-' + card.id);
      if (!sec) return;
      var body = sec.querySelector('.card-body'), more = sec.querySelector('.more');
      var limit = state.more[card.id] ? 100 : 10;
      query({metrics: tab.metrics, date_range: range(), dimensions: [tab.dim], order_by: [[tab.metrics[0], 'desc']],
        pagination: {limit: limit + 1, offset: 0}})
        .then(function (r) {
          if (gen !== generation) return;
          if (r.meta && r.meta.region_names) state.regionNames = Object.assign(state.regionNames || {}, r.meta.region_names);
          // Pageviews have their own card; engagement is not an event.
          var rows = tab.dim === 'event:name' ? r.results.filter(function (x) { return x.dimensions[0] !== 'pageview' && x.dimensions[0] !== 'engagement' }) : r.results;
          renderTable(body, tab, rows.slice(0, limit));
          more.hidden = !(r.results.length > limit || state.more[card.id]);
        })
        .catch(function (e) { if (gen === generation) { body.textContent = ''; body.appendChild(el('p', 'error-inline', e.message)) } });
    });
  }

  function renderTable(body, tab, rows) {
    body.textContent = '';
    if (!rows.length) { body.appendChild(el('p', 'muted', t('empty'))); return }
    var table = el('table', 'rows');
    var thead = el('thead'), hr = el('tr');
    hr.appendChild(el('th', 'label', tab.label ? t('col_value') : t(tab.col)));
    tab.metrics.forEach(function (m) { var th = el('th', 'num', t('short_' + m) === 'short_' + m ? t(m) : t('short_' + m)); th.scope = 'col'; hr.appendChild(th) });
    thead.appendChild(hr);
    table.appendChild(thead);
    var tbody = el('tbody');
    var max = 0;
    rows.forEach(function (r) { if (r.metrics[0] > max) max = r.metrics[0] });
    rows.forEach(function (r) {
      var value = r.dimensions[0], tr = el('tr'), isOther = value === '(other)';
      var th = el('th', 'label');
      th.scope = 'row';
      var bar = el('span', 'bar');
      bar.style.width = (max && r.metrics[0] != null ? Math.max(1, r.metrics[0] / max * 100) : 0) + '%';
      th.appendChild(bar);
      var text = dimLabel(tab.dim, value);
      if (isOther) {
        tr.className = 'other';
        var o = el('span', 'other-label', text);
        o.title = t('otherTip', {k: k()});
        th.appendChild(o);
        var info = el('span', 'info', 'i');
        info.title = t('otherTip', {k: k()});
        info.tabIndex = 0;
        info.setAttribute('role', 'note');
        info.setAttribute('aria-label', t('otherTip', {k: k()}));
        th.appendChild(info);
      } else if (tab.noFilter || !FILTERABLE.test(tab.dim)) {
        th.appendChild(el('span', 'value', text));
      } else {
        var b = el('button', 'value filter', text);
        b.type = 'button';
        b.title = t('filterBy') + ' ' + t(tab.col).toLowerCase() + ' : ' + text;
        b.addEventListener('click', function () { addFilter(tab.dim, value) });
        th.appendChild(b);
      }
      tr.appendChild(th);
      tab.metrics.forEach(function (m, i) {
        var v = r.metrics ? r.metrics[i] : null;
        var td = el('td', 'num', metricText(m, v));
        if (v == null) td.title = t('hiddenTip', {k: k()});
        // Refused consent is counted without a visitor key: views only.
        if (tab.dim === 'visit:consent' && value === 'denied' && m === 'visitors') td.title = t('deniedTip');
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
    body.appendChild(table);
  }

  function addFilter(dim, value) {
    state.filters = state.filters.filter(function (f) { return f[1] !== dim });
    state.filters.push(['is', dim, [value]]);
    reload();
    // The table that held the button is drawn again: focus goes to the
    // new filter's remove button, one key away from undoing it.
    var removes = document.querySelectorAll('#filter-list .chip-remove');
    removes[removes.length - 1].focus();
  }
  // After a filter is removed: the next filter's remove button, else the
  // dashboard's heading (the button that had focus is gone).
  function focusAfterFilters(i) {
    var removes = document.querySelectorAll('#filter-list .chip-remove');
    if (removes.length) removes[Math.min(i, removes.length - 1)].focus(); else $('dash-title').focus();
  }

  // "Jump to": one button per panel, moving focus (not the URL's hash,
  // which holds the view) to it.
  function renderJump() {
    var list = $('jump-list');
    list.textContent = '';
    var targets = [['chart-card', t('chartTitle')]];
    cardsSpec().forEach(function (card) { targets.push(['card-' + card.id, t(card.title)]) });
    if (showsFunnels()) targets.push(['funnels', t('funnelsTitle')]);
    targets.forEach(function (target) {
      var li = el('li');
      var b = el('button', 'link', target[1]);
      b.type = 'button';
      b.setAttribute('data-jump', target[0]);
      b.addEventListener('click', function () { $(target[0]).focus() });
      li.appendChild(b);
      list.appendChild(li);
    });
  }

  function exportCsv(tab) {
    var q = {site_id: state.site.id, metrics: tab.metrics, date_range: range(), dimensions: [tab.dim], order_by: [[tab.metrics[0], 'desc']],
      pagination: {limit: 10000, offset: 0}, format: 'csv'};
    if (state.filters.length) q.filters = state.filters.slice();
    api('/api/v2/query', q, 'text/csv').then(function (text) {
      var a = el('a');
      a.href = URL.createObjectURL(new Blob([text], {type: 'text/csv;charset=utf-8'}));
      a.download = 'tamis-' + state.site.id.replace(/[^a-z0-9.-]/gi, '_') + '-' + tab.id.replace(/[^a-z0-9_-]/gi, '_') + '-' + state.period + '.csv';
      document.body.appendChild(a);
      a.click();
      setTimeout(function () { URL.revokeObjectURL(a.href); a.remove() }, 1000);
    }).catch(function (e) { showError(e.message) });
  }

  // ---- funnels ----------------------------------------------------------------
  // One table per funnel of the site (from /api/v2/sites), read from
  // /api/v2/funnel: visits per step, conversion from step 1, drop-off from
  // the step before. A withheld step shows "—", as withheld rows do.
  function percentText(v) {
    return v == null ? '—' : new Intl.NumberFormat(t('locale'), {style: 'percent', maximumFractionDigits: 1}).format(v / 100);
  }
  function showsFunnels() {
    return !!(state.site && state.site.funnels && state.site.funnels.length && !state.filters.length);
  }
  function renderFunnelsFrame() {
    // Funnels count whole visits: no filter applies to them, so they are
    // not shown beside filtered numbers.
    var funnels = showsFunnels() ? state.site.funnels : [];
    var box = $('funnel-list');
    box.textContent = '';
    $('funnels').hidden = !funnels.length;
    return funnels.map(function (f, i) {
      var sec = el('section', 'funnel');
      sec.setAttribute('data-funnel', String(i));
      var h = el('h3', null, visible(f.name));
      h.id = 'h-funnel-' + i;
      sec.setAttribute('aria-labelledby', h.id);
      sec.appendChild(h);
      var body = el('div', 'funnel-body');
      body.appendChild(el('p', 'muted', t('loading')));
      sec.appendChild(body);
      box.appendChild(sec);
      return {funnel: f, body: body};
    });
  }
  function renderFunnel(body, r) {
    body.textContent = '';
    var table = el('table', 'rows');
    var hr = el('tr');
    hr.appendChild(el('th', 'label', t('funnelStep')));
    ['funnelVisits', 'funnelConversion', 'funnelDropoff'].forEach(function (key) {
      var th = el('th', 'num wide', t(key));
      th.scope = 'col';
      hr.appendChild(th);
    });
    var thead = el('thead');
    thead.appendChild(hr);
    table.appendChild(thead);
    var tbody = el('tbody');
    var top = r.steps.length && r.steps[0].visits ? r.steps[0].visits : 0;
    r.steps.forEach(function (s, i) {
      var tr = el('tr', s.visits == null ? 'withheld' : null);
      var th = el('th', 'label');
      th.scope = 'row';
      var bar = el('span', 'bar');
      bar.style.width = (top && s.visits != null ? Math.max(1, s.visits / top * 100) : 0) + '%';
      th.appendChild(bar);
      th.appendChild(el('span', 'value', (i + 1) + '. ' + visible(s.name)));
      tr.appendChild(th);
      var cells = [
        metricText('visits', s.visits),
        percentText(s.conversion_rate),
        s.dropoff == null ? '—' : num(s.dropoff) + ' (' + percentText(s.dropoff_percentage) + ')'
      ];
      cells.forEach(function (text) {
        var td = el('td', 'num wide', text);
        if (s.visits == null) td.title = t('funnelWithheld', {k: k()});
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
    body.appendChild(table);
  }
  function loadFunnels(gen) {
    renderFunnelsFrame().forEach(function (item) {
      api('/api/v2/funnel', {site_id: state.site.id, funnel: item.funnel.name, date_range: range()})
        .then(function (r) { if (gen === generation) renderFunnel(item.body, r) })
        .catch(function (e) { if (gen === generation) { item.body.textContent = ''; item.body.appendChild(el('p', 'error-inline', e.message)) } });
    });
  }

  // ---- loading --------------------------------------------------------------
  // "30m" reads the hour buckets that overlap the last 30 minutes: the
  // visitors counted were all seen within the last 90 minutes, as the label says.
  function loadRealtime() {
    if (!state.site) return;
    var site = state.site;
    api('/api/v2/query', {site_id: site.id, metrics: ['visitors'], date_range: '30m'}).then(function (r) {
      if (site !== state.site) return;
      var v = r.results[0] ? r.results[0].metrics[0] : 0;
      $('realtime-n').textContent = v == null ? '—' : num(v);
      $('realtime-label').textContent = t(v === 1 ? 'realtime1' : 'realtime');
    }).catch(function () {});
  }

  function reload() {
    var gen = ++generation;
    writeHash();
    translateStatic();
    renderFilters();
    showError('');
    $('small-note').textContent = t('smallNote', {k: k()});
    $('dash-title').textContent = t('dashTitle', {site: state.site.id});
    renderMetrics(null, null);
    renderCards();
    renderJump();
    loadRealtime();
    // The current range first: the previous period is computed from the
    // dates the API resolved, in the site's time zone.
    var first = state.period === 'yesterday' && !state.rangeToday
      ? api('/api/v2/query', {site_id: state.site.id, metrics: ['visitors'], date_range: 'day'}).then(function (r) { state.rangeToday = r.query.date_range[0].slice(0, 10) })
      : Promise.resolve();
    first.then(function () {
      if (gen !== generation) return;
      loadCards(gen);
      loadFunnels(gen);
      var top = topMetrics();
      return query({metrics: top, date_range: range()}).then(function (now) {
        if (gen !== generation) return;
        // The protected mode rounds each number on its own: say so, or a
        // row above its total reads as a mistake.
        var base = now.meta.rounding_base;
        $('small-note').textContent = t('smallNote', {k: k()}) + (base ? ' ' + t('roundedNote', {base: base}) : '');
        var from = now.query.date_range[0].slice(0, 10), to = now.query.date_range[1].slice(0, 10);
        $('range').textContent = formatRange(from, to);
        var span = daysBetween(from, to) + 1;
        var prevRange = [shift(from, -span), shift(from, -1)];
        var prev = state.compare ? query({metrics: top, date_range: prevRange}) : Promise.resolve(null);
        var series = query({metrics: ['visitors'], date_range: range(), dimensions: ['time'], include: {time_labels: true}});
        var prevSeries = state.compare ? query({metrics: ['visitors'], date_range: prevRange, dimensions: ['time'], include: {time_labels: true}}) : Promise.resolve(null);
        return Promise.all([prev, series, prevSeries]).then(function (all) {
          if (gen !== generation) return;
          renderMetrics(onTop(top, now.results[0] ? now.results[0].metrics : top.map(function () { return 0 })), onTop(top, all[0] && all[0].results[0] ? all[0].results[0].metrics : null));
          var s = toSeries(all[1], to);
          if (all[2]) s.prev = toSeries(all[2]).now;
          $('legend-prev').hidden = $('legend-prev-label').hidden = !s.prev;
          var period = now.meta.imports_included && now.meta.imports_period;
          $('legend-imported').hidden = $('legend-imported-label').hidden = !period;
          $('imports-note').hidden = !period;
          $('imports-note').textContent = period ? t('importsNote', {from: formatRange(period[0], period[0]), to: formatRange(period[1], period[1])}) : '';
          renderChart(s);
        });
      });
    }).catch(function (e) { if (gen === generation && e.message !== 'unauthorized') showError(e.message) });
  }
  function toSeries(r, to) {
    var labels = r.meta.time_labels || [], by = {};
    r.results.forEach(function (row) { by[row.dimensions[0]] = row.metrics[0] });
    // A bucket is marked imported when its days meet the imported period.
    var period = r.meta.imports_included && r.meta.imports_period;
    var imported = labels.map(function (l, i) {
      if (!period) return false;
      var first = l.slice(0, 10), last = labels[i + 1] ? shift(labels[i + 1].slice(0, 10), -1) : (to || first);
      return first <= period[1] && last >= period[0];
    });
    return {labels: labels, now: labels.map(function (l) { return l in by ? by[l] : 0 }), imported: imported};
  }
  function formatRange(from, to) {
    var f = function (d) { return new Date(Date.UTC(+d.slice(0, 4), +d.slice(5, 7) - 1, +d.slice(8, 10))).toLocaleDateString(t('locale'), {day: 'numeric', month: 'long', year: 'numeric', timeZone: 'UTC'}) };
    return from === to ? f(from) : f(from) + ' – ' + f(to);
  }

  // ---- the period a dashboard opens on ------------------------------------
  // When the URL names no period, as Plausible chooses it
  // (plausible/analytics, assets/js/dashboard/dashboard-time-periods.ts,
  // getDashboardTimeSettings: "isTodayOrYesterday(site.nativeStatsBegin)"
  // → today, else the default "28d"): a site whose own statistics began
  // today or yesterday opens on today — a site just set up, or just shared,
  // would show an empty "last 28 days", which ends yesterday — and any
  // other on the last 28 days. tamis keeps no first day per site: it asks
  // for the pageviews before yesterday. Imported history does not count,
  // as it does not for Plausible's nativeStatsBegin.
  function openingPeriod() {
    if (state.periodAsked) return Promise.resolve();
    var site = state.site;
    var pageviews = function (range) {
      return api('/api/v2/query', {site_id: site.id, metrics: ['pageviews'], date_range: range, include: {imports: false}});
    };
    return pageviews('day').then(function (r) {
      var today = r.query.date_range[0].slice(0, 10);
      if (site === state.site) state.rangeToday = today;
      return pageviews(['2000-01-01', shift(today, -2)]);
    }).then(function (r) {
      if (site !== state.site || state.periodAsked) return;
      // Nothing before yesterday, or too little to show (a count below
      // the site's threshold is withheld: null): the 28 days would show
      // nothing either.
      var before = r.results[0] ? r.results[0].metrics[0] : 0;
      state.period = before ? '28d' : 'day';
    }, function (e) {
      // Unable to tell (the network): the usual default, unless the
      // access itself was refused.
      if (e.message === 'unauthorized') throw e;
    });
  }

  // ---- shared links -------------------------------------------------------
  // The session cookie of a shared link is the one cookie tamis sets: the
  // footer says so there.
  var SHARE_TEXT = {signinTitle: 'shareTitle', signinHelp: 'shareHelp', tokenLabel: 'sharePassword', signin: 'shareOpen', footer: 'footerShare'};
  var SHARE_PATH = /^\/share\/([0-9a-f]{16})$/, SECRET = /^[0-9a-f]{64}$/;
  // Takes the secret out of the URL before anything else reads it; kept in
  // this closure only until the session is open.
  function takeShareSecret() {
    var m = SHARE_PATH.exec(location.pathname);
    if (!m) return null;
    state.share = m[1];
    var secret = location.hash.slice(1);
    if (!SECRET.test(secret)) return '';
    history.replaceState(null, '', location.pathname);
    return secret;
  }
  // The secret (and the password) exchanged for the session cookie. The
  // exchange is a credential check: a network with too many refusals is
  // answered 429 with Retry-After; a short wait is waited, as api() does, a
  // long one is said.
  function openShare(secret, password, attempt) {
    attempt = attempt || 0;
    var body = {link: state.share, secret: secret};
    if (password) body.password = password;
    busy(1);
    return fetch('/api/share/session', {method: 'POST', headers: {'Content-Type': 'application/json'}, credentials: 'same-origin', cache: 'no-store', body: JSON.stringify(body)})
      .then(function (r) {
        if (r.ok) return signIn(null);
        if (r.status === 429) {
          var wait = Math.max(1, +r.headers.get('Retry-After') || 1);
          if (wait <= 10 && attempt < 5) {
            return new Promise(function (resume) { setTimeout(resume, wait * 1000) })
              .then(function () { return openShare(secret, password, attempt + 1) });
          }
          askSharePassword(secret, 'tooMany', {s: wait});
          return;
        }
        return r.json().catch(function () { return {} }).then(function (answer) {
          if (r.status === 401 && answer.password_required) askSharePassword(secret, password ? 'badPassword' : null);
          else if (r.status === 401) shareProblem('badShare');
          else shareRetry(secret, password, 'unavailable');
        });
      }, function () { shareRetry(secret, password, 'network') })
      .then(function () { busy(-1) }, function () { busy(-1) });
  }
  // The password form: labelled, the error (if any) in the alert above it
  // and named by the field's aria-describedby. Shown when the page opens,
  // it takes no focus (a keyboard or screen-reader user starts at the top,
  // as on the sign-in form); after a refused password, focus goes back to
  // the emptied field.
  function askSharePassword(secret, problem, vars) {
    leaveDashboard();
    $('signin-form').hidden = false;
    $('signin-help').hidden = false;
    // Password managers file the password under the link, not under the
    // token's name.
    $('signin-form').elements.username.value = 'share ' + state.share;
    translateStatic();
    if (problem) { showError(t(problem, vars)); state.errorKey = vars ? null : problem } else showError('');
    $('token').setAttribute('aria-invalid', problem === 'badPassword' ? 'true' : 'false');
    $('signin-form').onsubmit = function (e) {
      e.preventDefault();
      var v = $('token').value;
      $('token').value = '';
      if (v) openShare(secret, v);
    };
    if (problem) $('token').focus();
  }
  // A link that opens nothing (unknown, revoked, expired): the message
  // alone, no form, no data, no site.
  function shareProblem(key) {
    leaveDashboard();
    $('signin-form').hidden = true;
    $('signin-help').hidden = true;
    $('share-retry').hidden = true;
    translateStatic();
    showErrorKey(key);
  }
  // A server that could not check the link now: the secret has left the
  // address bar, so reloading would not bring it back; a button tries the
  // same exchange again.
  function shareRetry(secret, password, key) {
    shareProblem(key);
    var again = $('share-retry');
    again.hidden = false;
    again.onclick = function () { again.hidden = true; openShare(secret, password) };
  }

  // ---- sign-in ------------------------------------------------------------
  function signIn(token) {
    state.token = token;
    return api('/api/v2/sites').then(function (r) {
      if (!r.sites.length) { signOut(t('noSites')); return }
      state.sites = r.sites;
      state.site = r.sites.find(function (s) { return s.id === state.wantSite }) || r.sites[0];
      return openingPeriod();
    }).then(function () {
      if (!state.site) return;
      var sel = $('site');
      sel.textContent = '';
      state.sites.forEach(function (s) { var o = el('option', null, s.id); o.value = s.id; sel.appendChild(o) });
      sel.value = state.site.id;
      // A shared link shows one site, read only: no picker, no sign-out.
      sel.parentNode.hidden = !!state.share;
      // Messages of the dashboard stand above it.
      $('main').insertBefore($('error'), $('main').firstChild);
      $('signin').hidden = true;
      $('dash').hidden = false;
      $('controls').hidden = false;
      $('signout').hidden = !!state.share;
      $('token').value = '';
      clearInterval(realtimeTimer);
      realtimeTimer = setInterval(loadRealtime, 30000);
      reload();
      // The sign-in form is gone: focus goes to the dashboard's heading.
      $('dash-title').focus();
    }).catch(function (e) { if (e.message !== 'unauthorized') showError(e.message) });
  }
  function leaveDashboard() {
    state.token = null;
    state.site = null;
    clearInterval(realtimeTimer);
    $('dash').hidden = true;
    $('controls').hidden = true;
    $('signout').hidden = true;
    $('signin').hidden = false;
    // A message of the sign-in (or shared link) card is read in it, after
    // its heading and help, before the form it is about.
    $('signin-help').after($('error'));
  }
  function signOut(message) {
    leaveDashboard();
    $('signin-form').hidden = false;
    $('signin-help').hidden = false;
    $('token').removeAttribute('aria-invalid');
    translateStatic();
    showError(message || '');
    // Not when the page opens: a keyboard or screen-reader user starts at
    // the top (skip link, heading, help), not in the middle of the form.
    if (message !== undefined) $('token').focus();
  }

  function start() {
    var secret = takeShareSecret();
    readHash();
    translateStatic();
    $('signin-form').onsubmit = function (e) {
      e.preventDefault();
      var v = $('token').value.trim();
      if (v) signIn(v);
    };
    $('signout').addEventListener('click', function () { signOut('') });
    $('lang').addEventListener('click', function () {
      state.lang = lang() === 'fr' ? 'en' : 'fr';
      if (state.site) reload(); else { translateStatic(); writeHash() }
    });
    $('site').addEventListener('change', function () {
      state.site = state.sites.find(function (s) { return s.id === $('site').value });
      state.filters = []; state.regionNames = null; state.rangeToday = null;
      // A period nobody chose is chosen again for the new site.
      var site = state.site;
      openingPeriod().then(function () { if (site === state.site) reload() }, function () {});
    });
    $('period').addEventListener('change', function () { state.period = $('period').value; state.periodAsked = true; reload() });
    $('compare').addEventListener('change', function () { state.compare = $('compare').checked; reload() });
    $('clear-filters').addEventListener('click', function () { state.filters = []; reload(); focusAfterFilters(0) });
    // The skip link moves focus without touching the URL's hash (it holds
    // the view: site, period, filters).
    document.querySelector('.skip').addEventListener('click', function (e) { e.preventDefault(); $('main').focus() });
    var resizeTimer;
    window.addEventListener('resize', function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(function () { if (lastSeries) renderChart(lastSeries) }, 150);
    });
    if (state.share === null) signOut();
    // A shared link: its secret fresh from the URL, or else a session the
    // browser may still hold from an earlier visit.
    else if (secret) openShare(secret, null);
    else signIn(null);
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
