// The app's shell as the gateway serves it, under the gateway's real CSP (the other specs
// bypass it, for axe): the page loads at / and straight at client-side routes (the gateway
// answers index.html for them), the app renders, and nothing it loads breaks the policy.
import { expect, test } from '@playwright/test';

test.use({ bypassCSP: false });

for (const path of ['/', '/concerts/3', '/admin/concerts/2']) {
  test(`the shell loads at ${path} under the gateway's CSP`, async ({ page }) => {
    const broken: string[] = [];
    // Chromium reports a refused script, style or request on the console.
    page.on('console', (m) => {
      if (/Content Security Policy|Refused to/i.test(m.text())) broken.push(m.text());
    });
    page.on('pageerror', (e) => broken.push(`uncaught: ${e.message}`));

    const res = await page.goto(path);
    expect(res?.status(), path).toBe(200);
    expect(res?.headers()['content-security-policy']).toContain("script-src 'self'");
    await expect(page).toHaveTitle(/Tickets/);
    // The bundle ran: the app rendered into its root.
    await expect(page.locator('#app > *').first()).toBeVisible();
    expect(broken).toEqual([]);
  });
}
