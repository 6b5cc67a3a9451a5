// The benchmark anchor for the desktop window: Chromium showing a call on the Duet browser
// client, counting the remote frames it presents (requestVideoFrameCallback) over a window.
// node render-anchor.mjs --url URL --y4m CLIP.y4m --warmup S --seconds S
// Prints one JSON line: {ok, presented, seconds, width, height}. The caller measures CPU/RSS.
import { chromium } from "playwright-core";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const url = arg("--url");
const clip = arg("--y4m");
const warmup = Number(arg("--warmup", "3"));
const seconds = Number(arg("--seconds", "10"));
const executablePath =
  process.env.CHROMIUM ||
  ["/usr/lib/chromium/chromium", "/usr/bin/chromium"].find((p) => existsSync(p));
const profile = mkdtempSync(join(tmpdir(), "duet-anchor-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    `--use-file-for-fake-video-capture=${clip}`,
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
const out = { ok: false };
try {
  const page = context.pages()[0] || (await context.newPage());
  await page.goto(url);
  await page.waitForFunction(() => window.duet && window.duet.state === "connected", null, { timeout: 20000 });
  await page.waitForTimeout(warmup * 1000);
  // Signal the caller to take its first CPU sample, then count for `seconds`.
  console.log(JSON.stringify({ measuring: true }));
  const r = await page.evaluate(async (secs) => {
    const v = document.getElementById("remote");
    let presented = 0;
    const tick = () => { presented += 1; v.requestVideoFrameCallback(tick); };
    v.requestVideoFrameCallback(tick);
    await new Promise((res) => setTimeout(res, secs * 1000));
    return { presented, width: v.videoWidth, height: v.videoHeight };
  }, seconds);
  Object.assign(out, r, { ok: true, seconds });
} catch (e) {
  out.error = String(e);
} finally {
  console.log(JSON.stringify(out));
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
