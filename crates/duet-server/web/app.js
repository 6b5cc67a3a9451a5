// Duet browser client: protocol v1 over WebSocket (docs/PROTOCOL.md), perfect negotiation,
// VP8/Opus media, negotiated `chat` (id 0) and `control` (id 1) data channels speaking the same
// JSON as the desktop engine. `window.duet` exposes state for tests.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const duet = {
  state: "idle",
  sessionId: null,
  peer: null,
  polite: null,
  chatReceived: [],
  framesDecoded: 0,
  matchedAt: null,
  firstFrameMs: null,
  // Why the partner's video is suspended (`partner_network`, `partner_choice`), from its Duet.
  partnerAudioOnly: null,
  log: [],
};
window.duet = duet;

// ----- signaling -----------------------------------------------------------------------
let ws = null;
let token = sessionStorage.getItem("duet-token");
let highest = 0;
let ackedUpTo = 0;
let nextId = 1;
const unanswered = new Map();
let heartbeatMs = 5000;
let lastRx = 0;
let attempts = 0;
let welcomed = false;
let timers = [];
// What this page waits for (the `join_queue` or `join_room` it sent), until it is matched or
// stops: a server that rebuilds the session from its token knows its pairing, not its wait.
let waitingFor = null;
let lastSearch = { type: "join_queue", interests: [] };

function setStatus(state, text) {
  duet.state = state;
  $("status").dataset.state = state;
  $("status").textContent = text || state;
}

function note(text) {
  duet.log.push(text);
  const li = document.createElement("li");
  li.textContent = text;
  li.className = "note";
  $("chat").append(li);
}

// This browser's id for the server (`client.device`): blocks follow it to later sessions.
function deviceId() {
  try {
    let id = localStorage.getItem("duet-device");
    if (!/^[A-Za-z0-9_-]{16,64}$/.test(id || "")) {
      id = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
      localStorage.setItem("duet-device", id);
    }
    return id;
  } catch {
    return undefined; // storage blocked: blocks hold for this session only
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/ws`);
  welcomed = false;
  ws.onopen = () => {
    lastRx = Date.now();
    const hello = { type: "hello", version: 1, client: { name: "duet-web", version: "0.1", platform: "browser", device: deviceId() } };
    if (token) {
      hello.resume_token = token;
      if (highest > 0) hello.ack = highest;
    }
    ws.send(JSON.stringify(hello));
  };
  ws.onmessage = (ev) => onFrame(ev.data);
  ws.onclose = () => reconnect();
}

function reconnect() {
  timers.forEach(clearInterval);
  timers = [];
  if (pc && pc.connectionState === "connected") {
    // The call is peer to peer and goes on: only a small indicator while signaling comes back.
    $("status").dataset.server = "reconnecting";
    $("status").title = "Reconnecting to the server; the call goes on";
  } else if (welcomed || attempts > 0) {
    setStatus("reconnecting", "Reconnecting to the server…");
  }
  attempts += 1;
  const windowMs = Math.min(8000, 250 * 2 ** (attempts - 1));
  setTimeout(connect, Math.random() * windowMs);
}

function send(msg, { reliable = true } = {}) {
  const id = nextId++;
  const frame = { ...msg, id };
  if (highest > ackedUpTo) {
    frame.ack = highest;
    ackedUpTo = highest;
  }
  if (reliable) unanswered.set(id, msg);
  if (welcomed && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  return id;
}

function onFrame(text) {
  lastRx = Date.now();
  let f;
  try {
    f = JSON.parse(text);
  } catch {
    return;
  }
  if (f.type === "welcome") return onWelcome(f);
  if (f.seq > 0) {
    if (f.seq <= highest) return; // replayed duplicate
    highest = f.seq;
  }
  if (f.ref !== undefined) unanswered.delete(f.ref);
  switch (f.type) {
    case "ok":
    case "pong":
      return;
    case "token":
      // The pairing changed: a restarted server restores it from this token.
      token = f.resume_token;
      sessionStorage.setItem("duet-token", token);
      return;
    case "error":
      note(`Server: ${f.message}`);
      if (f.code === "room_full" || f.code === "invalid_field") {
        waitingFor = null;
        setStatus("idle", "Idle");
      }
      return;
    case "queued":
      if (!duet.peer) setStatus("searching", "Looking for someone…");
      return;
    case "room_joined":
      setStatus("waiting", `Waiting in room ${f.code}…`);
      return;
    case "matched":
      return onMatched(f);
    case "signal":
      return onSignal(f.payload);
    case "peer_reconnecting":
      setStatus("reconnecting", "Your partner is reconnecting…");
      return;
    case "peer_resumed":
      if (pc && pc.connectionState === "connected") setStatus("connected", "Connected");
      return;
    case "peer_left":
      return onPeerLeft(f.reason);
  }
}

function onWelcome(f) {
  const lost = token && !f.resumed;
  token = f.resume_token;
  sessionStorage.setItem("duet-token", token);
  duet.sessionId = f.session_id;
  heartbeatMs = f.heartbeat_ms;
  welcomed = true;
  attempts = 0;
  delete $("status").dataset.server;
  $("status").title = "";
  iceServers = f.ice_servers;
  // A new session, or one a restarted server rebuilt from its token: its numbering starts again.
  if (!f.resumed || f.restored) {
    highest = f.seq;
    ackedUpTo = f.seq;
  }
  if (lost) {
    unanswered.clear();
    endCall("The connection to the server was lost.");
  }
  for (const [id, msg] of unanswered) ws.send(JSON.stringify({ ...msg, id }));
  const asked = waitingFor && [...unanswered.values()].some((m) => m.type === waitingFor.type);
  if (f.restored && waitingFor && !asked) send(waitingFor);
  if (duet.state === "reconnecting" && pc && pc.connectionState === "connected") setStatus("connected", "Connected");
  else if (!duet.peer && duet.state === "reconnecting") showWait();
  timers.push(
    setInterval(() => {
      if (Date.now() - lastRx > heartbeatMs * 1.5) return ws.close();
      ws.send(JSON.stringify({ type: "ping", ts: Date.now() }));
    }, heartbeatMs / 2),
    setInterval(() => {
      if (highest > ackedUpTo && ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ type: "ack", seq: highest }));
        ackedUpTo = highest;
      }
    }, 300),
  );
  if (params.has("room") && !duet.started) {
    duet.started = true;
    joinRoom(params.get("room"));
  } else if (params.get("auto") === "start" && !duet.started) {
    duet.started = true;
    start();
  }
}

// ----- media and peer connection ------------------------------------------------------------
let local = null;
let pc = null;
let chat = null;
let control = null;
let iceServers = [];
let makingOffer = false;
let ignoreOffer = false;
let answerPending = false;
let pendingCandidates = [];
let chatId = 1;
const chatUnacked = new Map();
const chatSeen = new Set();

async function localMedia() {
  if (local) return local;
  try {
    // ?video=WxH asks the camera for another size (default 640x360).
    const [width, height] = (params.get("video") || "640x360").split("x").map(Number);
    local = await navigator.mediaDevices.getUserMedia({ video: { width, height, frameRate: 30 }, audio: true });
  } catch (e) {
    note(`No camera or microphone (${e.name}): receive-only.`);
    local = new MediaStream();
  }
  $("local").srcObject = local;
  return local;
}

async function onMatched(f) {
  waitingFor = null;
  closePeer();
  duet.peer = f.peer.session_id;
  duet.polite = f.polite;
  duet.matchedAt = performance.now();
  duet.firstFrameMs = null;
  duet.framesDecoded = 0;
  setStatus("connecting", "Connecting…");
  const servers = (f.ice_servers && f.ice_servers.length ? f.ice_servers : iceServers).map((s) => ({
    urls: s.urls,
    username: s.username,
    credential: s.credential,
  }));
  pc = new RTCPeerConnection({ iceServers: servers });
  const stream = await localMedia();
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  if (!stream.getVideoTracks().length) pc.addTransceiver("video", { direction: "recvonly" });
  if (!stream.getAudioTracks().length) pc.addTransceiver("audio", { direction: "recvonly" });
  chat = pc.createDataChannel("chat", { negotiated: true, id: 0 });
  control = pc.createDataChannel("control", { negotiated: true, id: 1 });
  chat.onopen = () => {
    for (const [id, text] of chatUnacked) chat.send(JSON.stringify({ t: "msg", id, text }));
  };
  chat.onmessage = (ev) => onChat(ev.data);
  control.onopen = () => control.send(JSON.stringify({ t: "video", on: cameraOn }));
  control.onmessage = (ev) => {
    try {
      const m = JSON.parse(ev.data);
      // The partner's keepalive: answer with its timestamp (it measures the round trip).
      if (m.t === "ping") return control.send(JSON.stringify({ t: "pong", ts: m.ts }));
      if (m.t === "video" && (m.cause === "network" || m.cause === "choice")) {
        // The partner's Duet suspended its video (audio-only): show a placeholder, not a frozen frame.
        duet.partnerAudioOnly = m.on ? null : `partner_${m.cause}`;
        $("remote").style.visibility = m.on ? "visible" : "hidden";
        note(m.on ? "Your partner's video is back." : m.cause === "network"
          ? "Your partner's connection is too slow for video: audio only until it recovers."
          : "Your partner chose audio only.");
      } else if (m.t === "video") {
        note(m.on ? "Your partner turned the camera on." : "Your partner turned the camera off.");
      }
    } catch {}
  };
  pc.ontrack = (ev) => {
    const remote = $("remote");
    if (!remote.srcObject) remote.srcObject = new MediaStream();
    remote.srcObject.addTrack(ev.track);
    if (ev.track.kind === "video" && remote.requestVideoFrameCallback) {
      remote.requestVideoFrameCallback(() => {
        if (duet.firstFrameMs === null) duet.firstFrameMs = performance.now() - duet.matchedAt;
      });
    }
  };
  pc.onicecandidate = ({ candidate }) => {
    const payload = candidate ? { kind: "candidate", candidate: candidate.toJSON() } : { kind: "end_of_candidates" };
    send({ type: "signal", payload });
  };
  pc.onnegotiationneeded = async () => {
    // The impolite side (which waited longer) makes the first offer; later ones either side.
    if (duet.polite && !pc.remoteDescription) return;
    try {
      makingOffer = true;
      await pc.setLocalDescription();
      send({ type: "signal", payload: { kind: "description", description: pc.localDescription.toJSON() } });
    } catch (e) {
      note(`Negotiation failed: ${e.message}`);
    } finally {
      makingOffer = false;
    }
  };
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    if (s === "connected") {
      setStatus("connected", "Connected");
      showVerification(pc);
    }
    if (s === "disconnected") setStatus("reconnecting", "Reconnecting…");
    if (s === "failed") pc.restartIce();
  };
  setButtons(true);
}

// ----- verify your partner (same derivation as duet-core's `verify` module, v1) -----------
const SAS_SYMBOLS = [
  ["🐶", "dog"],
  ["🐱", "cat"],
  ["🦁", "lion"],
  ["🐴", "horse"],
  ["🦄", "unicorn"],
  ["🐷", "pig"],
  ["🐘", "elephant"],
  ["🐰", "rabbit"],
  ["🐼", "panda"],
  ["🐓", "rooster"],
  ["🐧", "penguin"],
  ["🐢", "turtle"],
  ["🐟", "fish"],
  ["🐙", "octopus"],
  ["🦋", "butterfly"],
  ["🌷", "tulip"],
  ["🌳", "tree"],
  ["🌵", "cactus"],
  ["🍄", "mushroom"],
  ["🌍", "globe"],
  ["🌙", "moon"],
  ["☁️", "cloud"],
  ["🔥", "fire"],
  ["🍌", "banana"],
  ["🍎", "apple"],
  ["🍓", "strawberry"],
  ["🌽", "corn"],
  ["🍕", "pizza"],
  ["🎂", "cake"],
  ["❤️", "heart"],
  ["😀", "smiley"],
  ["🤖", "robot"],
  ["🎩", "hat"],
  ["👓", "glasses"],
  ["🔧", "spanner"],
  ["🎅", "santa"],
  ["👍", "thumbs up"],
  ["☂️", "umbrella"],
  ["⌛", "hourglass"],
  ["⏰", "clock"],
  ["🎁", "gift"],
  ["💡", "light bulb"],
  ["📕", "book"],
  ["✏️", "pencil"],
  ["📎", "paperclip"],
  ["✂️", "scissors"],
  ["🔒", "lock"],
  ["🔑", "key"],
  ["🔨", "hammer"],
  ["☎️", "telephone"],
  ["🏁", "flag"],
  ["🚂", "train"],
  ["🚲", "bicycle"],
  ["✈️", "aeroplane"],
  ["🚀", "rocket"],
  ["🏆", "trophy"],
  ["⚽", "ball"],
  ["🎸", "guitar"],
  ["🎺", "trumpet"],
  ["🔔", "bell"],
  ["⚓", "anchor"],
  ["🎧", "headphones"],
  ["📁", "folder"],
  ["📌", "pin"]
];

function fingerprint(sdp) {
  const line = (sdp || "").split(/\r?\n/).find((l) => l.startsWith("a=fingerprint:"));
  if (!line) return null;
  const [algorithm, value] = line.slice("a=fingerprint:".length).trim().split(" ");
  return algorithm && value ? `${algorithm.toLowerCase()} ${value.toUpperCase()}` : null;
}

async function showVerification(conn) {
  const a = fingerprint(conn.localDescription && conn.localDescription.sdp);
  const b = fingerprint(conn.remoteDescription && conn.remoteDescription.sdp);
  if (!a || !b || !crypto.subtle) return;
  const [first, second] = a <= b ? [a, b] : [b, a];
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`duet-sas-v1\n${first}\n${second}`)));
  let bits = 0n;
  for (let i = 0; i < 5; i++) bits = (bits << 8n) | BigInt(digest[i]);
  const symbols = [];
  for (let i = 0; i < 6; i++) symbols.push(SAS_SYMBOLS[Number((bits >> BigInt(34 - 6 * i)) & 63n)]);
  duet.verify = { emoji: symbols.map((s) => s[0]).join(" "), words: symbols.map((s) => s[1]).join(", ") };
  $("verify").textContent = duet.verify.emoji;
  $("verify").title = `Verify your partner: if they see the same (${duet.verify.words}), no one sits in the middle`;
  $("verify").hidden = false;
}

async function onSignal(p) {
  if (!pc) return;
  try {
    if (p.kind === "description") {
      const d = p.description;
      const readyForOffer = !makingOffer && (pc.signalingState === "stable" || answerPending);
      const collision = d.type === "offer" && !readyForOffer;
      ignoreOffer = !duet.polite && collision;
      if (ignoreOffer) return;
      if (d.type === "answer" && pc.signalingState !== "have-local-offer") return; // stale or duplicate
      answerPending = d.type === "answer";
      await pc.setRemoteDescription(d);
      answerPending = false;
      for (const c of pendingCandidates.splice(0)) await pc.addIceCandidate(c).catch(() => {});
      if (d.type === "offer") {
        await pc.setLocalDescription();
        send({ type: "signal", payload: { kind: "description", description: pc.localDescription.toJSON() } });
      }
    } else if (p.kind === "candidate") {
      if (!pc.remoteDescription) pendingCandidates.push(p.candidate);
      else await pc.addIceCandidate(p.candidate).catch((e) => ignoreOffer || console.warn(e));
    } else if (p.kind === "restart") {
      pc.restartIce();
    }
  } catch (e) {
    note(`Negotiation error: ${e.message}`);
  }
}

function onChat(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return;
  }
  if (m.t === "msg") {
    chat.send(JSON.stringify({ t: "ack", id: m.id }));
    if (chatSeen.has(m.id)) return;
    chatSeen.add(m.id);
    duet.chatReceived.push(m.text);
    const li = document.createElement("li");
    li.textContent = m.text;
    $("chat").append(li);
  } else if (m.t === "ack") {
    chatUnacked.delete(m.id);
  }
}

function sendChat(text) {
  text = text.trim();
  if (!text) return;
  const id = chatId++;
  chatUnacked.set(id, text);
  if (chat && chat.readyState === "open") chat.send(JSON.stringify({ t: "msg", id, text }));
  const li = document.createElement("li");
  li.textContent = text;
  li.className = "me";
  $("chat").append(li);
}
duet.sendChat = sendChat;
/** Restarts ICE (a renegotiation; also what the page does by itself when the path fails). */
duet.restartIce = () => pc && pc.restartIce();

function closePeer() {
  if (pc) pc.close();
  pc = chat = control = null;
  duet.partnerAudioOnly = null;
  $("remote").style.visibility = "visible";
  pendingCandidates = [];
  makingOffer = ignoreOffer = answerPending = false;
  chatUnacked.clear();
  chatSeen.clear();
  chatId = 1;
  const remote = $("remote");
  remote.srcObject = null;
  duet.peer = null;
}

// The status of what the page waits for, or idle.
function showWait() {
  if (waitingFor && waitingFor.type === "join_room") setStatus("waiting", `Waiting in room ${waitingFor.code}…`);
  else if (waitingFor) setStatus("searching", "Looking for someone…");
  else setStatus("idle", "Idle");
}

function endCall(reason) {
  waitingFor = null;
  closePeer();
  setStatus("ended", reason);
  setButtons(false);
}

function onPeerLeft(reason) {
  duet.verify = null;
  $("verify").hidden = true;
  const text = {
    left: "Your partner left.",
    next: "Your partner moved on to someone else.",
    timeout: "Your partner's connection was lost.",
    blocked: "The call was ended by your partner.",
    reported: "The call was ended by your partner.",
    server_shutdown: "The server is restarting.",
  }[reason] || "The call ended.";
  if (reason === "next") {
    closePeer();
    waitingFor = lastSearch;
    note(text);
    setStatus("searching", "Looking for someone…");
  } else {
    endCall(text);
  }
}

// ----- controls ------------------------------------------------------------------------------
let cameraOn = true;

function setButtons(inCall) {
  $("next").disabled = !inCall;
  $("stop").disabled = !inCall;
  $("mute").disabled = !inCall;
  $("camera").disabled = !inCall;
}

async function start() {
  await localMedia();
  const interests = $("interests").value.split(",").map((s) => s.trim()).filter(Boolean).slice(0, 10);
  lastSearch = waitingFor = { type: "join_queue", interests };
  send(waitingFor);
  setStatus("searching", "Looking for someone…");
  setButtons(true);
}

async function joinRoom(code) {
  await localMedia();
  waitingFor = { type: "join_room", code };
  send(waitingFor);
}

$("start").onclick = start;
$("join").onclick = () => joinRoom($("room").value.trim());
$("next").onclick = () => {
  closePeer();
  waitingFor = lastSearch;
  send({ type: "next" });
  setStatus("searching", "Looking for someone…");
};
$("stop").onclick = () => {
  waitingFor = null;
  closePeer();
  send({ type: "leave" });
  setStatus("idle", "Idle");
  setButtons(false);
};
$("mute").onclick = () => {
  const track = local && local.getAudioTracks()[0];
  if (!track) return;
  track.enabled = !track.enabled;
  $("mute").textContent = track.enabled ? "Mute" : "Unmute";
};
$("camera").onclick = () => {
  const track = local && local.getVideoTracks()[0];
  if (!track) return;
  track.enabled = cameraOn = !track.enabled;
  $("camera").textContent = cameraOn ? "Camera off" : "Camera on";
  if (control && control.readyState === "open") control.send(JSON.stringify({ t: "video", on: cameraOn }));
};
$("chatform").onsubmit = (ev) => {
  ev.preventDefault();
  sendChat($("message").value);
  $("message").value = "";
};
let lastEsc = 0;
document.onkeydown = (ev) => {
  if (ev.key !== "Escape") return;
  if (Date.now() - lastEsc < 600) $("next").click();
  lastEsc = Date.now();
};

// ----- stats -----------------------------------------------------------------------------
/** What tests and benchmarks read: decoded/sent frames, sizes and codecs from getStats(). */
window.duetStats = async () => {
  const out = { framesDecoded: 0, framesEncoded: 0, audioPacketsReceived: 0, bytesSent: 0, codecs: [] };
  // After the call ended, the last numbers seen during it.
  if (!pc) return duet.lastStats || out;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      out.framesDecoded = s.framesDecoded || 0;
      out.frameWidth = s.frameWidth;
      out.frameHeight = s.frameHeight;
    }
    if (s.type === "inbound-rtp" && s.kind === "audio") out.audioPacketsReceived = s.packetsReceived || 0;
    if (s.type === "outbound-rtp" && s.kind === "video") out.framesEncoded = s.framesEncoded || 0;
    if (s.type === "outbound-rtp") out.bytesSent += s.bytesSent || 0;
    if (s.type === "codec") out.codecs.push(s.mimeType);
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") out.rttMs = (s.currentRoundTripTime || 0) * 1000;
  });
  out.firstFrameMs = duet.firstFrameMs;
  return out;
};

setInterval(async () => {
  if (!pc) return;
  duet.lastStats = await window.duetStats();
  const report = await pc.getStats();
  const lines = [];
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      duet.framesDecoded = s.framesDecoded || 0;
      if (duet.framesDecoded > 0 && duet.firstFrameMs === null) duet.firstFrameMs = performance.now() - duet.matchedAt;
      lines.push(`video in: ${s.frameWidth || 0}x${s.frameHeight || 0} ${s.framesPerSecond || 0} fps, lost ${s.packetsLost}`);
    }
    if (s.type === "inbound-rtp" && s.kind === "audio") lines.push(`audio in: ${s.packetsReceived} packets, jitter ${(s.jitter * 1000).toFixed(1)} ms`);
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
      lines.push(`rtt ${((s.currentRoundTripTime || 0) * 1000).toFixed(1)} ms, out ${Math.round((s.availableOutgoingBitrate || 0) / 1000)} kb/s`);
    }
  });
  $("stats").textContent = lines.join("\n");
}, 250);

connect();
