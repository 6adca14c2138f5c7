// Run the browser verifier (verify.html) on many proofs in one headless Chromium page.
//
//   node verify_proofs.mjs SPEC.json
//
// SPEC: {url, cases: [{name, proof (base64 of the file's bytes), options}], ui: [steps]}.
// Every case is verified in one page through window.provmintVerifier.verifyBytes(bytes,
// options); prints one JSON line per case: {name, result} (result: the verifier's answer
// as JSON text), then {log, elapsedMs} (the page's console, the cases' time in the page). Then each ui step uses the page as a
// person would ({name, url, width, waitFirst, rpc, token, file, drop or click, expect,
// screenshot}) and prints {ui: {verdict, title, receipt, policy, documentWidth,
// viewport, overflowing, texts, requests, console, ...}}.
import { readFileSync } from "node:fs";
import { launchChromium, measure } from "./common.mjs";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));

const browser = await launchChromium();
try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  const page = await context.newPage();
  const pageLog = [];
  page.on("console", (msg) => pageLog.push(`${msg.type()}: ${msg.text()}`));
  page.on("pageerror", (err) => pageLog.push(`pageerror: ${err.message}`));
  await page.goto(spec.url, { waitUntil: "load", timeout: 30000 });
  const { results, elapsed } = await page.evaluate(async (cases) => {
    const out = [];
    const started = performance.now();
    const v = window.provmintVerifier;
    for (const c of cases) {
      const bytes = Uint8Array.from(atob(c.proof), (ch) => ch.charCodeAt(0));
      let result;
      try {
        result = v.toJson(await v.verifyBytes(bytes, c.options || {}));
      } catch (exc) {
        result = JSON.stringify({ crash: String(exc && exc.stack ? exc.stack : exc) });
      }
      out.push({ name: c.name, result });
    }
    return { results: out, elapsed: performance.now() - started };
  }, spec.cases);
  for (const line of results) process.stdout.write(JSON.stringify(line) + "\n");
  process.stdout.write(JSON.stringify({ log: pageLog, elapsedMs: elapsed }) + "\n");
  await context.close();

  for (const step of spec.ui || []) {
    // A person's use of the page: open it (at a phone's width), wait for what a link
    // shows first, fill the fields, choose the file or press Verify, read the verdict.
    const phone = await browser.newContext({ viewport: { width: step.width || 360, height: 800 }, isMobile: true });
    const ui = await phone.newPage();
    const requests = [];
    const logs = [];
    ui.on("request", (request) => requests.push(request.url()));
    ui.on("console", (msg) => logs.push(`${msg.type()}: ${msg.text()}`));
    ui.on("pageerror", (err) => logs.push(`pageerror: ${err.message}`));
    const response = await ui.goto(step.url, { waitUntil: "load", timeout: 30000 });
    const shownFirst = "#verdict[data-verdict]:not([data-verdict=''])";
    if (step.waitFirst) await ui.waitForSelector(shownFirst, { timeout: 15000 });
    if (step.rpc !== undefined) await ui.fill("#rpc", step.rpc);
    if (step.token !== undefined) await ui.fill("#token", step.token);
    if (step.file) await ui.setInputFiles("#file", step.file);
    else if (step.drop) {
      // A file dropped on the drop zone, as a person drags it from their files.
      const file = { text: readFileSync(step.drop, "utf8"), name: step.drop.split("/").pop() };
      const dataTransfer = await ui.evaluateHandle(({ text, name }) => {
        const dt = new DataTransfer();
        dt.items.add(new File([text], name, { type: "application/json" }));
        return dt;
      }, file);
      await ui.dispatchEvent("#drop", "dragover", { dataTransfer });
      await ui.dispatchEvent("#drop", "drop", { dataTransfer });
    } else if (step.click) await ui.click("#verify");
    await ui.waitForFunction(
      (want) => document.getElementById("verdict").dataset.verdict === want,
      step.expect,
      { timeout: 15000 },
    );
    const shown = {
      name: step.name,
      status: response ? response.status() : null,
      policy: response ? (await response.allHeaders())["content-security-policy"] || null : null,
      verdict: await ui.getAttribute("#verdict", "data-verdict"),
      title: (await ui.textContent("#verdict-title")) || "",
      receipt: (await ui.textContent("#receipt")) || "",
      token: await ui.inputValue("#token"),
      rpc: await ui.inputValue("#rpc"),
      ...(await ui.evaluate(measure)),
      requests,
      console: logs,
    };
    if (step.screenshot) await ui.screenshot({ path: step.screenshot, fullPage: true });
    process.stdout.write(JSON.stringify({ ui: shown }) + "\n");
    await phone.close();
  }
} finally {
  await browser.close();
}
