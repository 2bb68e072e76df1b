// Browser tests: Playwright driving Debian's Chromium (`/usr/bin/chromium`, installed by
// deploy/local/ensure-infra.sh; Playwright's own browser download is never used) against a
// running gateway: WEB_BASE_URL (default the local stack's http://127.0.0.1:8080). The e2e
// crate's `browser` test starts a platform of its own and runs these with its address.
// Screenshots go to test-results/screenshots (test output, never committed).
// Run by hand against the local stack (`deploy/local/stack.sh up`): `npm run test:browser`
// (the admin of the stack: WEB_ADMIN_PASSWORD, default admin-pass-local).
import { defineConfig, devices } from '@playwright/test';

const chromium = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export default defineConfig({
  testDir: 'e2e',
  outputDir: 'test-results/artifacts',
  fullyParallel: true,
  workers: Number(process.env.WEB_TEST_WORKERS ?? 2),
  retries: 0,
  reporter: [['list']],
  timeout: 120_000,
  // A hung run ends, with the tests that did not finish reported, instead of holding the
  // test command until CI's own limit.
  globalTimeout: 30 * 60_000,
  expect: { timeout: 15_000 },
  use: {
    baseURL: process.env.WEB_BASE_URL ?? 'http://127.0.0.1:8080',
    trace: 'off',
    // axe-core is injected as an inline script, which the app's CSP (rightly) refuses.
    bypassCSP: true,
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: chromium,
      args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
    },
  },
  projects: [
    { name: 'desktop', use: { ...devices['Desktop Chrome'], channel: undefined } },
    {
      name: 'phone',
      testMatch: /fan\.spec\.ts/,
      grep: /@phone/,
      use: { ...devices['Pixel 7'], channel: undefined },
    },
  ],
});
