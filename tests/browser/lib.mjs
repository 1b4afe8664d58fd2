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
