// Screenshot of a running page, e.g. the one `loadgen demo` serves:
//   node screenshot.mjs http://127.0.0.1:8080/?route_id=B out.png [WIDTHxHEIGHT] [TRIP]
// Waits for the stream to be live and for trains to show; with TRIP, opens
// that train's detail first.
import { chromium } from "playwright-core";

const [url, out, size = "1100x800", trip] = process.argv.slice(2);
if (!url || !out) {
  console.error("usage: node screenshot.mjs URL OUT.png [WIDTHxHEIGHT] [TRIP]");
  process.exit(2);
}
const [width, height] = size.split("x").map(Number);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width, height } });
  await page.goto(url);
  await page.locator('#status[data-state="live"]').waitFor({ timeout: 10000 });
  await page.locator(".train").first().waitFor({ timeout: 10000 });
  if (trip) {
    await page.locator(`.train[data-trip="${trip}"]`).click();
    await page.locator("#detail:not([hidden])").waitFor();
    await page.evaluate(() => window.scrollTo(0, 0));
  }
  // Let the change highlight fade.
  await page.waitForTimeout(1200);
  await page.screenshot({ path: out, type: out.endsWith(".jpg") ? "jpeg" : "png" });
} finally {
  await browser.close();
}
