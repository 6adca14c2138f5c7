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
import { chromium } from "playwright-core";

const executablePath = process.env.CHROMIUM_BIN || "/usr/bin/chromium";

function measure() {
  // Runs in the page.
  const viewport = document.documentElement.clientWidth;
  const describe = (el) => {
    const name = el.tagName.toLowerCase();
    const id = el.id ? `#${el.id}` : "";
    const cls = typeof el.className === "string" && el.className ? `.${el.className.trim().split(/\s+/).join(".")}` : "";
    return name + id + cls;
  };
  const rgba = (value) => {
    const found = value.match(/rgba?\(([^)]+)\)/);
    if (!found) return null;
    const parts = found[1].split(/[\s,/]+/).filter(Boolean).map(Number);
    return parts.length === 4 ? parts : [...parts.slice(0, 3), 1];
  };
  const behind = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const colour = rgba(getComputedStyle(node).backgroundColor);
      if (colour && colour[3] > 0) return colour;
    }
    return [255, 255, 255, 1];
  };
  const overflowing = [];
  const texts = [];
  for (const el of document.querySelectorAll("body *")) {
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") continue;
    const box = el.getBoundingClientRect();
    const wider = el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1;
    if (box.width > 0 && (box.right > viewport + 0.5 || box.left < -0.5 || wider)) {
      overflowing.push({ element: describe(el), right: box.right, scrollWidth: el.scrollWidth, clientWidth: el.clientWidth });
    }
    const own = [...el.childNodes]
      .filter((node) => node.nodeType === Node.TEXT_NODE && node.textContent.trim())
      .map((node) => node.textContent.trim())
      .join(" ");
    if (own) {
      texts.push({ element: describe(el), text: own.slice(0, 80), color: rgba(style.color), background: behind(el) });
    }
  }
  const images = [...document.images].map((img) => ({ src: img.currentSrc, loaded: img.complete && img.naturalWidth > 0 }));
  return {
    lang: document.documentElement.lang,
    images,
    viewport,
    documentWidth: document.documentElement.scrollWidth,
    overflowing,
    texts,
  };
}

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
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  for (const spec of pages) {
    process.stdout.write(JSON.stringify(await visit(browser, spec)) + "\n");
  }
} finally {
  await browser.close();
}
