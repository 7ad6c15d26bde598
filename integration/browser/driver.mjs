// driver.mjs: headless Chromium for integration/browser_test.go, driven
// through playwright-core over a line protocol on stdin/stdout.
//
// Each stdin line is one JSON command {"id": n, "cmd": "...", ...}; each
// stdout line is its answer {"id": n, "ok": true, "value": …} or
// {"id": n, "ok": false, "error": "…"}. The page's console messages and
// errors go to stderr, one line each. The browser closes when stdin ends or
// on {"cmd": "close"}.
//
// Commands:
//   goto {url}                         navigate and wait for "load"
//   reload {}                          reload and wait for "load"
//   eval {expr}                        evaluate a JS expression (awaited)
//   waitFor {expr, timeoutMs}          poll expr until truthy; returns it
//   setInputFiles {selector, path}     pick a file in an <input type=file>
//   text {selector}                    innerText of the first match
//   screenshot {path, fullPage}        save a PNG
//   close {}
//
// Environment: CHROMIUM (default /usr/bin/chromium).
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

// The flags headless Chromium needs on a machine without a network: no
// sandbox (root in a container), no GPU, and none of the background
// traffic (component updates, sync, QUIC probes) a fresh profile starts.
const flags = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

function send(msg) {
  process.stdout.write(JSON.stringify(msg) + "\n");
}

function log(line) {
  process.stderr.write(line.replace(/\n/g, "\\n") + "\n");
}

// playwright's launch gives the browser a fresh temporary --user-data-dir.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  chromiumSandbox: false,
  args: flags,
  timeout: 60_000,
});
const context = await browser.newContext({ viewport: { width: 960, height: 720 }, deviceScaleFactor: 1 });
const page = await context.newPage();
page.on("console", (m) => log(`console.${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => log(`pageerror: ${e.message}`));
page.on("requestfailed", (r) => log(`requestfailed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));

const commands = {
  async goto({ url }) {
    const resp = await page.goto(url, { waitUntil: "load" });
    return resp ? resp.status() : null;
  },
  async reload() {
    const resp = await page.reload({ waitUntil: "load" });
    return resp ? resp.status() : null;
  },
  async eval({ expr }) {
    return page.evaluate(expr);
  },
  // Polls with page.evaluate (DevTools' Runtime.evaluate) rather than
  // page.waitForFunction, whose string predicates need 'unsafe-eval' and so
  // fail on pages with a Content-Security-Policy (the demo page has one).
  async waitFor({ expr, timeoutMs }) {
    const deadline = Date.now() + (timeoutMs || 30_000);
    for (;;) {
      const v = await page.evaluate(expr);
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${expr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  },
  async setInputFiles({ selector, path }) {
    await page.setInputFiles(selector, path);
    return null;
  },
  async text({ selector }) {
    return page.innerText(selector);
  },
  async screenshot({ path, fullPage }) {
    await page.screenshot({ path, fullPage: !!fullPage });
    return null;
  },
};

let closing = false;
async function close() {
  if (closing) return;
  closing = true;
  await browser.close().catch(() => {});
}

send({ id: 0, ok: true, value: browser.version() });

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    send({ id: -1, ok: false, error: "bad command: " + err.message });
    continue;
  }
  if (msg.cmd === "close") {
    await close();
    send({ id: msg.id, ok: true, value: null });
    break;
  }
  const fn = commands[msg.cmd];
  if (!fn) {
    send({ id: msg.id, ok: false, error: "unknown command " + msg.cmd });
    continue;
  }
  try {
    send({ id: msg.id, ok: true, value: (await fn(msg)) ?? null });
  } catch (err) {
    send({ id: msg.id, ok: false, error: String(err && err.message ? err.message : err) });
  }
}
await close();
