// What the browser drivers share: Debian's Chromium, launched headless by the pinned
// playwright-core, and measure(), which runs in a page and reports what a phone shows.
import { chromium } from "playwright-core";

/** Headless Chromium ($CHROMIUM_BIN, else Debian's), with nothing of its own on the
 * network: the requests a page makes are the page's alone. */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** Runs in the page (pass it to page.evaluate): lang (of <html>), viewport and
 * documentWidth (CSS px), overflowing (visible elements beyond the viewport, or wider
 * than their own box), texts ({element, text, color, background}: each visible element's
 * own text with its computed colour and the first opaque background behind it, as
 * [r, g, b, a]) and images ({src, loaded}). */
export function measure() {
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
    // Inside a [hidden] element, an element keeps its own display but is not shown.
    if (style.display === "none" || style.visibility === "hidden" || el.closest("[hidden]")) continue;
    const box = el.getBoundingClientRect();
    const wider = el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1;
    if (box.width > 0 && (box.right > viewport + 0.5 || box.left < -0.5 || wider)) {
      overflowing.push({ element: describe(el), right: box.right, scrollWidth: el.scrollWidth, clientWidth: el.clientWidth });
    }
    const own = [...el.childNodes]
      .filter((node) => node.nodeType === Node.TEXT_NODE && node.textContent.trim())
      .map((node) => node.textContent.trim())
      .join(" ");
    if (own && box.width > 0) {
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
