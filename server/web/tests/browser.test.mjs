// End-to-end test of the live page in a real browser (Debian's Chromium,
// headless, driven by playwright-core).
//
// Usage: node browser.test.mjs STACK_BINARY [SERVER FLAGS...]
//
// STACK_BINARY is the `browser_stack` example of crowd-loadgen: Redis +
// server + aggregator, steered over stdin; the server flags must load a GTFS
// schedule of line B (`--gtfs loadgen/sample-gtfs`). The test sends reports,
// checks that the page draws the line's stations with the train at the one
// it was reported at, with the right level, label, colour and car bars, that a new report updates the page without a reload within 2 s, that
// the detail view points at the emptiest car, that stopping the server
// turns the status to "disconnected", and that once it is back the page is
// live again with the new server's trains. Screenshots go to artifacts/browser/.

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import path from "node:path";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const ARTIFACTS = path.resolve(process.env.ARTIFACTS_DIR || "artifacts/browser");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TRIP = "B-0712";
/** Châtelet-Les Halles, on the sample line B. */
const AT = ["48.8618", "2.3469"];
/** The page must show a change this soon after the report is sent. */
const UPDATE_WITHIN_MS = 2000;
const LABELS = ["no data", "empty", "many seats", "few seats", "standing", "crushed", "full", "not boarding"];

/** The stack process and its stdout, one line at a time. */
class StackProcess {
  constructor(binary, args) {
    this.child = spawn(binary, args, { stdio: ["pipe", "pipe", "pipe"] });
    this.lines = [];
    this.waiters = [];
    this.stderr = "";
    this.child.stderr.on("data", (d) => { this.stderr = (this.stderr + d).slice(-8000); });
    createInterface({ input: this.child.stdout }).on("line", (line) => {
      const waiter = this.waiters.shift();
      if (waiter) waiter(line); else this.lines.push(line);
    });
    this.exited = new Promise((resolve) => this.child.on("exit", resolve));
  }

  /** The next stdout line, or an error after `ms`. */
  next(ms = 60000) {
    if (this.lines.length) return Promise.resolve(this.lines.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`stack said nothing for ${ms} ms; stderr:\n${this.stderr}`)), ms);
      this.waiters.push((line) => { clearTimeout(timer); resolve(line); });
    });
  }

  send(line) { this.child.stdin.write(`${line}\n`); }

  /** Sends a report and checks it was accepted. */
  async report(device, car, level) {
    this.send(`report ${device} ${TRIP} ${car} ${level} ${AT.join(" ")}`);
    const ack = await this.next(10000);
    assert.equal(ack, "ack Accepted", `report ${device} car ${car} level ${level}`);
  }

  kill() { if (this.child.exitCode === null) this.child.kill("SIGKILL"); }
}

function step(what) { console.log(`· ${what}`); }

/** Computed colour of level `lv` as the page's stylesheet defines it. */
function levelColour(page, lv) {
  return page.evaluate((n) => {
    const probe = document.createElement("span");
    probe.style.backgroundColor = `var(--level-${n})`;
    document.body.append(probe);
    const colour = getComputedStyle(probe).backgroundColor;
    probe.remove();
    return colour;
  }, lv);
}

// Read in one go inside the page: the page redraws a train on every
// update, and a bar read in three steps could be replaced between them
// (a bar no longer in the page has no computed colour).
async function carState(page, n) {
  return page.evaluate(([trip, n]) => {
    const car = document.querySelector(`.train[data-trip="${trip}"] .car[data-car="${n}"]`);
    if (!car) return null;
    return {
      level: Number(car.getAttribute("data-level")),
      text: car.textContent,
      colour: getComputedStyle(car).backgroundColor,
    };
  }, [TRIP, n]);
}

async function main() {
  const [binary, ...serverArgs] = process.argv.slice(2);
  assert.ok(binary, "usage: node browser.test.mjs STACK_BINARY [SERVER FLAGS...]");
  mkdirSync(ARTIFACTS, { recursive: true });

  const stack = new StackProcess(binary, serverArgs);
  let browser;
  let page;
  try {
    const ready = await stack.next(120000);
    const match = /^ready http=(\S+) grpc=(\S+)$/.exec(ready);
    assert.ok(match, `unexpected first line: ${ready}`);
    const base = `http://${match[1]}`;
    step(`stack up, page at ${base}/`);

    // Three riders say car 3 is standing-room only, one says car 5 has seats.
    for (const device of ["rider-1", "rider-2", "rider-3"]) await stack.report(device, 3, 4);
    await stack.report("rider-4", 5, 2);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    page.on("console", (m) => { if (m.type() === "error") console.log(`  page console: ${m.text()}`); });
    await page.goto(`${base}/?route_id=B`);
    await page.locator('#status[data-state="live"]').waitFor({ timeout: 10000 });
    assert.equal(await page.locator("#status").textContent(), "live");
    step("status is live");

    const card = page.locator(`.train[data-trip="${TRIP}"]`);
    await card.waitFor({ timeout: 10000 });
    // Car estimates can lag the first report by one aggregator batch.
    await page.waitForFunction((trip) => {
      const bar = document.querySelector(`.train[data-trip="${trip}"] .car[data-car="5"]`);
      return bar && bar.dataset.level === "2";
    }, TRIP, { timeout: 10000 });

    const trains = await (await fetch(`${base}/api/trains?route_id=B`)).json();
    const server = trains.find((t) => t.trip_id === TRIP);
    assert.ok(server, `server has no estimate for ${TRIP}: ${JSON.stringify(trains)}`);
    assert.ok(server.level >= 1 && server.level <= 7, `server level ${server.level}`);
    assert.equal(Number(await card.getAttribute("data-level")), server.level, "train level on the page");
    assert.match(await card.locator(".level").textContent(), new RegExp(`${server.level}\\s*${LABELS[server.level]}`));
    assert.equal(await card.evaluate((e) => getComputedStyle(e).borderLeftColor), await levelColour(page, server.level),
      "train coloured by its level");
    step(`train ${TRIP} shown at level ${server.level} (${LABELS[server.level]})`);

    const line = await (await fetch(`${base}/api/line?route_id=B`)).json();
    assert.ok(line.stations.length >= 2, `no stations for line B (start the server with --gtfs): ${JSON.stringify(line)}`);
    assert.equal(await page.locator(".stop").count(), line.stations.length, "one row per station");
    assert.equal(await page.locator(`.stop[data-stop="CHL"] .train[data-trip="${TRIP}"]`).count(), 1,
      "the train is drawn at Châtelet-Les Halles, where it was reported");
    step(`${line.name}: ${line.stations.length} stations, ${TRIP} at Châtelet-Les Halles`);

    assert.equal(await card.locator(".car").count(), 8, "8 cars, front to back");
    const car3 = await carState(page, 3);
    assert.deepEqual(car3, { level: 4, text: "4", colour: await levelColour(page, 4) }, "car 3");
    const car5 = await carState(page, 5);
    assert.deepEqual(car5, { level: 2, text: "2", colour: await levelColour(page, 2) }, "car 5");
    const car1 = await carState(page, 1);
    assert.deepEqual(car1, { level: 0, text: "–", colour: await levelColour(page, 0) }, "car 1 has no data");
    step("car bars: 3 standing, 5 many seats, the rest greyed");

    await card.click();
    await page.locator("#detail:not([hidden])").waitFor();
    assert.equal(await page.locator("#emptiest").getAttribute("data-car"), "5", "emptiest car");
    assert.equal(await page.locator("#detail tr.emptiest").getAttribute("data-car"), "5");
    assert.match(await page.locator("#detail-age").textContent(), /s ago|min ago/);
    step("detail shows the emptiest car (5)");

    // A new report must show without a reload.
    await page.evaluate(() => { window.__sameDocument = true; });
    const sent = Date.now();
    for (const device of ["rider-1", "rider-2", "rider-3"]) {
      stack.send(`report ${device} ${TRIP} 3 6 ${AT.join(" ")}`);
    }
    await page.waitForFunction((trip) => {
      const bar = document.querySelector(`.train[data-trip="${trip}"] .car[data-car="3"]`);
      return bar && bar.dataset.level === "6";
    }, TRIP, { timeout: UPDATE_WITHIN_MS });
    const took = Date.now() - sent;
    for (let i = 0; i < 3; i++) assert.equal(await stack.next(10000), "ack Accepted");
    assert.equal(await page.evaluate(() => window.__sameDocument), true, "page was not reloaded");
    assert.deepEqual(await carState(page, 3), { level: 6, text: "6", colour: await levelColour(page, 6) }, "car 3 after");
    assert.match(await page.locator('#detail tr[data-car="3"]').textContent(), /full/);
    step(`car 3 turned full on the page ${took} ms after the reports were sent`);
    await page.screenshot({ path: path.join(ARTIFACTS, "live.png"), fullPage: true });

    const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    await phone.goto(`${base}/?route_id=B`);
    await phone.locator(`.train[data-trip="${TRIP}"]`).waitFor({ timeout: 10000 });
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page wider than a phone by ${overflow}px`);
    await phone.locator(`.train[data-trip="${TRIP}"]`).tap();
    await phone.locator("#detail:not([hidden])").waitFor();
    await phone.screenshot({ path: path.join(ARTIFACTS, "phone.png") });
    await phone.close();
    step("fits a phone screen");

    const stopping = Date.now();
    stack.send("stop");
    assert.equal(await stack.next(30000), "stopped");
    // Open event streams end at shutdown instead of holding the drain.
    const stopTook = Date.now() - stopping;
    assert.ok(stopTook < 5000, `shutdown took ${stopTook} ms with a page open`);
    await page.locator('#status[data-state="disconnected"]').waitFor({ timeout: 10000 });
    assert.match(await page.locator("#status").textContent(), /disconnected/);
    await page.screenshot({ path: path.join(ARTIFACTS, "disconnected.png"), fullPage: true });
    step(`server stopped in ${stopTook} ms: status shows disconnected`);

    // Back on the same address, with an empty Redis: the page reconnects by
    // itself and the new snapshot replaces what it showed.
    stack.send("start");
    const again = await stack.next(60000);
    assert.equal(again, ready, "restarted on the same addresses");
    await page.locator('#status[data-state="live"]').waitFor({ timeout: 10000 });
    await page.locator(".train").first().waitFor({ state: "detached", timeout: 5000 });
    await stack.report("rider-9", 2, 1);
    await page.waitForFunction((trip) => {
      const bar = document.querySelector(`.train[data-trip="${trip}"] .car[data-car="2"]`);
      return bar && bar.dataset.level === "1";
    }, TRIP, { timeout: 5000 });
    assert.equal(await page.evaluate(() => window.__sameDocument), true, "page was not reloaded");
    step("server back: live again, showing the new server's train");
    console.log(`browser test passed; screenshots in ${ARTIFACTS}`);
  } catch (error) {
    if (page) await page.screenshot({ path: path.join(ARTIFACTS, "failure.png"), fullPage: true }).catch(() => {});
    console.error(`browser test FAILED: ${error.stack || error}`);
    console.error(`stack stderr (tail):\n${stack.stderr}`);
    process.exitCode = 1;
  } finally {
    if (browser) await browser.close();
    stack.child.stdin.end();
    await Promise.race([stack.exited, new Promise((r) => setTimeout(r, 20000))]);
    stack.kill();
    await stack.exited;
  }
}

await main();
