// Server-side trackers, from Node as a site's back end runs them (no
// browser): npm `@umami/node` 0.4.0 (pinned in package.json) and a Google
// Analytics 4 Measurement Protocol request by fetch.
//
// - @umami/node, read in its dist/index.js: `new Umami({websiteId,
//   hostUrl, userAgent?})`; `track(name, data)` posts `{type: 'event',
//   payload: {website, name, data}}` to `${hostUrl}/api/send` (no page: Umami
//   counts it on `/`), `track(object)` posts `{website, ...object}`,
//   `identify(data)` posts type `identify`. Its default User-Agent is
//   `Mozilla/5.0 Umami/<node version>`.
// - The Measurement Protocol, as Google documents it
//   (developers.google.com/analytics/devguides/collection/protocol/ga4/
//   sending-events): `POST /mp/collect?measurement_id=…&api_secret=…`, a
//   JSON body `{client_id, user_id?, events: [{name, params}]}`, at most 25
//   events, `page_location`, `page_referrer`, `language`, `session_id` and
//   `engagement_time_msec` among the params; answered 2xx.
// Prints a JSON summary of every answer.
import { readFileSync } from 'node:fs';
import { arg } from './lib.mjs';

let Umami;
try {
  ({ Umami } = await import('@umami/node'));
} catch (e) {
  throw new Error('npm module @umami/node not found: run ./deploy/setup.sh (it runs npm ci)');
}
const version = JSON.parse(readFileSync(new URL('../../node_modules/@umami/node/package.json', import.meta.url), 'utf8')).version;

const tamis = arg('tamis');
const websiteId = arg('umami-website');
const measurementId = arg('measurement-id');
// A visitor's browser, as a back end passes it on; the default one is
// Umami's own (`Mozilla/5.0 Umami/<node version>`).
const userAgent = arg('user-agent');

const summary = {version};
const answer = async (r) => ({status: r.status, body: await r.text(), dropped: r.headers.get('x-tamis-dropped')});

const umami = new Umami({websiteId, hostUrl: tamis, userAgent});
summary.track_name = await answer(await umami.track('export', {format: 'csv', secret: 'jean@example.com'}));
summary.track_object = await answer(await umami.track({
  hostname: 'server.test', url: '/rapports/annuel', title: 'Rapport annuel',
  referrer: 'https://search.example/?q=rapport', language: 'fr-CA', screen: '1920x1080',
}));
summary.identify = await answer(await umami.identify({email: 'jean@example.com'}));
const defaultAgent = new Umami({websiteId, hostUrl: tamis});
summary.track_default_agent = await answer(await defaultAgent.track('export', {format: 'pdf'}));

const MP_CLIENT_ID = 'mp-client-5566.7788';
const MP_USER_ID = 'mp-user-8080';
const mp = await fetch(`${tamis}/mp/collect?measurement_id=${measurementId}&api_secret=not-a-tamis-secret`, {
  method: 'POST',
  headers: {'Content-Type': 'application/json', 'User-Agent': userAgent},
  body: JSON.stringify({
    client_id: MP_CLIENT_ID,
    user_id: MP_USER_ID,
    events: [
      {name: 'page_view', params: {page_location: 'https://server.test/commande/merci', page_referrer: 'https://search.example/',
        language: 'fr-ca', session_id: '1733000000', engagement_time_msec: 100}},
      {name: 'signup', params: {plan: 'team', user_id: MP_USER_ID, session_id: '1733000000', engagement_time_msec: '100'}},
    ],
  }),
});
summary.mp = await answer(mp);
summary.identifiers = {mp_client_id: MP_CLIENT_ID, mp_user_id: MP_USER_ID};
console.log(JSON.stringify(summary));
