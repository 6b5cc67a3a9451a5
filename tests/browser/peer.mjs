// One Chromium peer on the Duet browser client. Prints one JSON line with what it saw.
// node peer.mjs --url URL [--seconds N] [--chat TEXT]
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const url = arg("--url");
const seconds = Number(arg("--seconds", "6"));
const chat = arg("--chat", null);
const restartAfter = arg("--restart-after", null);
const chatAfter = arg("--chat-after", null);
// --timeline: sample the page's stats every second (--sample-ms N: every N ms) for the whole
// run (benchmarks).
const timeline = process.argv.includes("--timeline");
const sampleAt = process.argv.indexOf("--sample-ms");
const sampleMs = sampleAt > 0 ? Number(process.argv[sampleAt + 1]) : 1000;
// --chromium-arg X (repeatable): extra Chromium flags.
const extraArgs = process.argv.flatMap((a, i) => (a === "--chromium-arg" ? [process.argv[i + 1]] : []));
import { existsSync } from "node:fs";
// Debian's Chromium (never a downloaded browser); CHROMIUM overrides.
const executablePath =
  process.env.CHROMIUM ||
  ["/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));
if (!executablePath) {
  console.log(JSON.stringify({ ok: false, error: "Chromium not found: install Debian's chromium package" }));
  process.exit(1);
}

const profile = mkdtempSync(join(tmpdir(), "duet-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    ...extraArgs,
  ],
});
const result = { ok: false };
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => process.stderr.write(`[page] ${m.text()}\n`));
  await page.goto(url);
  await page.waitForFunction(() => window.duet && window.duet.state === "connected", null, { timeout: 20000 });
  result.connected = true;
  if (chat) await page.evaluate((t) => window.duet.sendChat(t), chat);
  let waited = 0;
  if (restartAfter !== null) {
    // Renegotiate mid-call (ICE restart offer from this side) and keep going.
    waited = Number(restartAfter);
    await page.waitForTimeout(waited * 1000);
    result.framesAtRestart = (await page.evaluate(() => window.duetStats())).framesDecoded;
    await page.evaluate(() => window.duet.restartIce());
  }
  if (chatAfter !== null) {
    // A second message later in the call (e.g. after a signaling blip).
    const t = Number(chatAfter);
    await page.waitForTimeout(Math.max(0, t - waited) * 1000);
    result.framesAtChatAfter = (await page.evaluate(() => window.duetStats())).framesDecoded;
    await page.evaluate(() => window.duet.sendChat("after"));
    waited = Math.max(waited, t);
  }
  if (timeline) {
    // One sample every sampleMs, stamped with seconds since the process started.
    result.timeline = [];
    const end = Date.now() + Math.max(0, seconds - waited) * 1000;
    while (Date.now() < end) {
      const sample = await page.evaluate(() => window.duetStats());
      result.timeline.push({ t: performance.now() / 1000, ...sample });
      await page.waitForTimeout(sampleMs);
    }
  } else {
    await page.waitForTimeout(Math.max(0, seconds - waited) * 1000);
  }
  result.state = await page.evaluate(() => window.duet.state);
  Object.assign(
    result,
    await page.evaluate(async () => {
      const d = window.duet;
      const out = {
        framesDecoded: 0,
        chatReceived: d.chatReceived,
        firstFrameMs: d.firstFrameMs,
        log: d.log,
        partnerAudioOnly: d.partnerAudioOnly,
        verify: d.verify,
        remoteVideoHidden: document.getElementById("remote").style.visibility === "hidden",
      };
      const report = await window.duetStats();
      return { ...out, ...report };
    }),
  );
  result.ok = true;
} catch (e) {
  result.error = String(e);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
// Exit only once the whole line is written: process.exit() right after a large write to a
// pipe cuts it short (long --timeline runs print well over 64 KiB).
process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(result.ok ? 0 : 1));
