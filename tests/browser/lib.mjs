// Shared helpers of the browser tests: launch Debian's Chromium through
// playwright-core, and fail loudly (naming the install command) when either
// is missing.
import { existsSync } from 'node:fs';
import assert from 'node:assert/strict';

export const CHROMIUM = process.env.TAMIS_CHROMIUM || '/usr/bin/chromium';
// A desktop Chrome user agent: tamis does not count headless browsers, and
// these tests stand for real visitors.
export const DESKTOP_UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
export const PHONE_UA = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1';

// `extra` adds Chromium flags to the standard ones (a test of a third-party
// script may need to look less automated, or map host names to loopback).
export async function launch(extra = []) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: run ./deploy/setup.sh (it installs the Debian packages chromium and chromium-driver)`);
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    throw new Error('npm module playwright-core not found: run ./deploy/setup.sh (it runs npm ci in the repository root)');
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', ...extra],
  });
}

export function arg(name) {
  const i = process.argv.indexOf('--' + name);
  assert.ok(i > 0 && process.argv[i + 1], `missing --${name}`);
  return process.argv[i + 1];
}

export async function waitFor(what, fn, timeoutMs = 15000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// What has focus in page `p`, and whether its ring shows: a solid outline
// of 2px or more, at least 3:1 against the colour behind it (WCAG 2.1,
// 1.4.11 and 2.4.7; the outline is drawn outside the element, or inside it
// when its offset is negative). `kb` numbers each element once, so that two
// alike count as two stops.
export function focusState(p) {
  return p.evaluate(() => {
    const a = document.activeElement;
    if (!a || a === document.body) return {id: 'body'};
    const cs = getComputedStyle(a);
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const bgOf = (e) => {
      for (; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const inset = parseFloat(cs.outlineOffset) < 0;
    const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4) })
      .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
    const o = rgb(cs.outlineColor), b = bgOf(inset ? a : a.parentElement);
    const [hi, lo] = [lum(o), lum(b)].sort((x, y) => y - x);
    const box = a.getBoundingClientRect();
    if (!a.dataset.kb) a.dataset.kb = String(window.__kb = (window.__kb || 0) + 1);
    return {
      kb: a.dataset.kb,
      id: a.id || a.dataset.tab || a.dataset.jump || (a.className && String(a.className)) || a.tagName.toLowerCase(),
      tag: a.tagName.toLowerCase(), text: (a.getAttribute('aria-label') || a.textContent || '').trim().slice(0, 40),
      outline: cs.outlineStyle + ' ' + cs.outlineWidth + ' ' + cs.outlineColor,
      contrast: Math.round((hi + 0.05) / (lo + 0.05) * 100) / 100,
      ring: cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2 && (hi + 0.05) / (lo + 0.05) >= 3,
      inMain: a.id !== 'main' && !!a.closest('#main'),
      onScreen: box.width > 0 && box.height > 0,
    };
  });
}

// WCAG 2.1 levels A and AA, as axe-core tags its rules
// (https://github.com/dequelabs/axe-core/blob/develop/doc/API.md#axe-core-tags).
const WCAG_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];
let AxeBuilder;

// One axe-core run (npm `@axe-core/playwright`) over page `p` with the
// WCAG 2.1 A/AA rules: how many rules passed, and each violation with what
// a person fixing it needs (rule, impact, elements, help page).
export async function axeCheck(p) {
  if (!AxeBuilder) {
    try {
      ({ AxeBuilder } = await import('@axe-core/playwright'));
    } catch (e) {
      throw new Error('npm module @axe-core/playwright not found: run ./deploy/setup.sh (it runs npm ci in the repository root)');
    }
  }
  const result = await new AxeBuilder({page: p}).withTags(WCAG_TAGS).analyze();
  return {
    passes: result.passes.length,
    violations: result.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
      targets: v.nodes.map((n) => n.target.join(' ')).slice(0, 8), summary: v.nodes[0] && v.nodes[0].failureSummary})),
  };
}
