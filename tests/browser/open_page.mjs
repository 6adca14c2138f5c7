// Open a page in headless Chromium (Debian's, driven by the pinned playwright-core) and
// report what a phone would show: node open_page.mjs URL SCREENSHOT.png
// Prints one JSON line: {status, title, verdict, heading, text, proofHref}.
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
  const page = await context.newPage();
  const response = await page.goto(url, { waitUntil: "load", timeout: 30000 });
  const verdict = await page.getAttribute("#verdict", "data-verdict");
  const heading = (await page.textContent("#verdict h1")) || "";
  const proof = await page.$("#proof");
  await page.screenshot({ path: screenshot, fullPage: true });
  process.stdout.write(JSON.stringify({
    status: response ? response.status() : null,
    title: await page.title(),
    verdict,
    heading: heading.trim(),
    text: (await page.textContent("body")) || "",
    proofHref: proof ? await proof.getAttribute("href") : null,
  }) + "\n");
} finally {
  await browser.close();
}
