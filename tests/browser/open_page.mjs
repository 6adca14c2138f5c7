// Open pages in headless Chromium (Debian's, driven by the pinned playwright-core) and
// report what a phone would show.
//
//   node open_page.mjs URL SCREENSHOT.png
//       one page at 390x844; prints one JSON line: {status, title, verdict, heading,
//       text, proofHref}
//   node open_page.mjs --pages PAGES.json
//       each page of a JSON list of {url, screenshot, width?, height?, locale?} in one
//       browser, each in a fresh context (so with its own Accept-Language, from locale);
//       prints one JSON line per page with the fields above and, measured in the page:
//       lang (of <html>), viewport and documentWidth (CSS px), overflowing (elements
//       wider than the viewport or than their own box), and texts ({element, text,
//       color, background}: every element's own text with its computed colour and the
//       first opaque background behind it, as [r, g, b, a]), images ({src, loaded}) and
//       requests (every URL the page asked for).
import { readFileSync } from "node:fs";
import { launchChromium, measure } from "./common.mjs";


async function visit(browser, { url, screenshot, width = 390, height = 844, locale, measured = false }) {
  const options = { viewport: { width, height }, isMobile: true };
  if (locale) options.locale = locale;
  const context = await browser.newContext(options);
  try {
    const page = await context.newPage();
    const requests = [];
    page.on("request", (request) => requests.push(request.url()));
    const response = await page.goto(url, { waitUntil: "load", timeout: 30000 });
    const verdict = await page.getAttribute("#verdict", "data-verdict");
    const heading = (await page.textContent("#verdict h1")) || "";
    const proof = await page.$("#proof");
    await page.screenshot({ path: screenshot, fullPage: true });
    const result = {
      status: response ? response.status() : null,
      title: await page.title(),
      verdict,
      heading: heading.trim(),
      text: (await page.textContent("body")) || "",
      proofHref: proof ? await proof.getAttribute("href") : null,
    };
    return measured ? { ...result, ...(await page.evaluate(measure)), requests } : result;
  } finally {
    await context.close();
  }
}

const args = process.argv.slice(2);
const batch = args[0] === "--pages";
const pages = batch
  ? JSON.parse(readFileSync(args[1], "utf8")).map((spec) => ({ ...spec, measured: true }))
  : [{ url: args[0], screenshot: args[1] }];
const browser = await launchChromium();
try {
  for (const spec of pages) {
    process.stdout.write(JSON.stringify(await visit(browser, spec)) + "\n");
  }
} finally {
  await browser.close();
}
