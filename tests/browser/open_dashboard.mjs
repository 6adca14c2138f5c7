// Open the operator dashboard in headless Chromium (Debian's, driven by the pinned
// playwright-core) and report what each page showed.
//
//   node open_dashboard.mjs BASE_URL TOKEN SHOT_DIR PATH...
//       signs in once with BASE_URL/?token=TOKEN (the dashboard answers with a session
//       cookie and the page without the token), then opens each PATH in the same
//       context and prints one JSON line per page: {path, status, url, title, heading,
//       text, charts, bars, scripts, handlers, pwned, txLinks, requests, cookie}
//       where scripts counts <script> elements, handlers elements with an on* attribute,
//       pwned whether any script ran (window.__pwned), and requests every URL asked for.
//       A full-page screenshot of each goes to SHOT_DIR/<name>.png.
import { launchChromium } from "./common.mjs";

const [base, token, shots, ...paths] = process.argv.slice(2);

function inspect() {
  // Runs in the page.
  const withHandlers = [...document.querySelectorAll("*")].filter((el) =>
    [...el.attributes].some((a) => a.name.toLowerCase().startsWith("on")),
  );
  return {
    heading: (document.querySelector("h1")?.textContent || "").trim(),
    charts: document.querySelectorAll("svg.chart").length,
    bars: document.querySelectorAll("svg.chart g.day rect").length,
    scripts: document.querySelectorAll("script").length,
    handlers: withHandlers.length,
    pwned: Boolean(window.__pwned),
    txLinks: [...document.querySelectorAll("a.tx")].map((a) => a.getAttribute("href")),
    text: document.body.innerText,
  };
}

const browser = await launchChromium();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const requests = [];
  page.on("request", (request) => requests.push(request.url()));
  const login = await page.goto(`${base}/?token=${encodeURIComponent(token)}`, { waitUntil: "load" });
  const cookies = await context.cookies();
  const cookie = cookies.find((c) => c.name === "provmint_dashboard") || null;
  process.stdout.write(JSON.stringify({ path: "login", status: login.status(), url: page.url(),
    cookie: cookie && { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite } }) + "\n");
  for (const path of paths) {
    requests.length = 0;
    const response = await page.goto(base + path, { waitUntil: "load" });
    const name = path.replace(/[^a-z0-9]+/gi, "_").replace(/^_|_$/g, "") || "overview";
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
    const seen = await page.evaluate(inspect);
    process.stdout.write(JSON.stringify({ path, status: response.status(), url: page.url(),
      title: await page.title(), ...seen, requests: [...requests] }) + "\n");
  }
} finally {
  await browser.close();
}
