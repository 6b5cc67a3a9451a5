// The Duet window: matching, call controls, chat, status, stats and settings. All logic lives
// in the Rust engine; this page sends commands and shows events.
import { VideoView } from './video.js';

const { invoke, Channel } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;

const $ = (id) => document.getElementById(id);

const STATUS_TEXT = {
  idle: 'Ready',
  searching: 'Looking for someone…',
  waiting: 'Waiting for your friend…',
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  audio_only: 'Audio only',
  ended: 'Call ended',
};

const QUALITIES = [
  ['auto', 'Auto'],
  ['high', 'High'],
  ['medium', 'Medium'],
  ['low', 'Low'],
  ['audio_only', 'Audio only'],
];
for (const select of document.querySelectorAll('select.quality-choice')) {
  for (const [value, label] of QUALITIES) select.append(new Option(label, value));
}

const state = {
  status: { status: 'idle' },
  controls: { muted: false, camera_on: true, quality: 'auto', has_camera: false, has_microphone: false },
  lastEsc: 0,
  settings: null,
  // The name of every device seen since start: a chosen device that is unplugged keeps its
  // name in the list.
  deviceNames: new Map(),
};

const remote = new VideoView($('remote-video'), 'remote', invoke, Channel);
const local = new VideoView($('local-video'), 'local', invoke, Channel);

function notice(text, kind = 'info') {
  const el = document.createElement('div');
  el.className = `notice ${kind}`;
  el.textContent = text;
  $('notices').append(el);
  setTimeout(() => el.remove(), 8000);
}

async function call(cmd, args = {}) {
  try {
    return await invoke(cmd, args);
  } catch (e) {
    notice(String(e), 'error');
    throw e;
  }
}

function inCall(s) {
  return ['connecting', 'connected', 'reconnecting', 'audio_only'].includes(s);
}

// Why video is off, as the core reports it (the page infers nothing itself).
const AUDIO_ONLY_TEXT = {
  network: 'Your connection is too slow for video: audio only until it recovers.',
  choice: 'You chose audio only.',
  partner_network: "Your partner's connection is too slow for video: audio only until it recovers.",
  partner_choice: 'Your partner chose audio only.',
};

function showStatus(view) {
  state.status = view;
  const s = view.status;
  const pill = $('status');
  pill.dataset.status = s;
  pill.dataset.testCall = view.test_call ? 'true' : 'false';
  let text = STATUS_TEXT[s] || s;
  if (s === 'reconnecting') text = view.side === 'partner' ? 'Your partner is reconnecting…' : 'Reconnecting your connection…';
  if (s === 'waiting' && view.room) text = `Waiting in room ${view.room}…`;
  if (view.test_call && s !== 'ended' && s !== 'idle') text = `Test call: ${text}`;
  pill.textContent = text;

  const overlay = $('overlay');
  const busy = s !== 'idle';
  // A partner whose video is suspended gets a placeholder, never a frozen last frame.
  const partnerPaused = Boolean(view.partner_audio_only) && s !== 'audio_only';
  const showVideo = (s === 'connected' || s === 'reconnecting') && !partnerPaused;
  overlay.hidden = showVideo;
  overlay.dataset.audioOnly = view.partner_audio_only || view.audio_only || '';
  if (partnerPaused) remote.clear();
  const audioOnlyText = [view.audio_only, view.partner_audio_only]
    .filter(Boolean).map((c) => AUDIO_ONLY_TEXT[c]).join(' ') || 'Audio only: no video either way.';
  $('overlay-text').textContent = partnerPaused ? AUDIO_ONLY_TEXT[view.partner_audio_only] : {
    idle: 'Press Start to meet someone new, join a friend with a room code, or make a test call.',
    searching: 'Looking for someone to talk to…',
    waiting: view.room ? `Waiting for your friend in room ${view.room}…` : 'Waiting for the echo bot…',
    connecting: 'Connecting…',
    audio_only: audioOnlyText,
    ended: '',
  }[s] ?? '';
  $('ended').hidden = s !== 'ended';
  const reason = (view.reason || '').replace(/\.+$/, '');
  $('ended-reason').textContent = reason ? `The call ended: ${reason}.` : 'The call ended.';
  $('btn-start').disabled = busy && s !== 'ended';
  $('btn-next').disabled = !busy || s === 'ended';
  $('btn-stop').disabled = !busy || s === 'ended';
  const chatting = inCall(s);
  $('chat-input').disabled = !chatting;
  $('btn-send').disabled = !chatting;
  $('btn-report').disabled = !chatting || view.test_call;
  $('btn-block').disabled = !chatting || view.test_call;
  local.active = s !== 'idle';
  remote.active = inCall(s);
  if (s === 'idle') local.clear();
  // One call at a time: Stop (or Next) first.
  $('btn-test').disabled = inCall(s) || s === 'searching' || s === 'waiting';
  $('btn-join').disabled = inCall(s);
  $('btn-new-room').disabled = inCall(s);
  if (!inCall(s)) {
    $('verify').hidden = true;
    remote.clear();
    $('link').dataset.link = '';
    $('link').dataset.bars = '';
    $('link').textContent = '';
  }
}

function showControls(c) {
  state.controls = c;
  const mute = $('btn-mute');
  mute.setAttribute('aria-pressed', String(c.muted));
  mute.textContent = c.muted ? 'Unmute' : 'Mute';
  mute.title = c.has_microphone ? 'Ctrl+D' : 'No microphone: your partner cannot hear you';
  const cam = $('btn-camera');
  cam.setAttribute('aria-pressed', String(c.camera_on));
  cam.textContent = c.camera_on ? 'Camera on' : 'Camera off';
  // Before the first call no device is open yet; afterwards say what is missing.
  const opened = c.has_camera || c.has_microphone || state.status.status !== 'idle';
  if (opened && !c.has_camera) cam.textContent = 'No camera';
  if (opened && !c.has_microphone) mute.textContent = 'No microphone';
  $('quality').value = c.quality;
  $('local-video').hidden = !c.camera_on || c.quality === 'audio_only';
}

function showStats(s) {
  // Bars, their reason and the rung come from the core's quality status.
  const link = $('link');
  link.dataset.bars = String(s.bars);
  link.dataset.link = ['', 'poor', 'fair', 'good', 'good'][s.bars] || '';
  link.textContent = s.bars ? '▮'.repeat(s.bars) + '▯'.repeat(4 - s.bars) : '';
  link.title = s.why ? `${s.why}${s.rung ? ` (sending ${s.rung})` : ''}` : 'Connection quality';
  const fmt = (v, unit, digits = 0) => (v === null || v === undefined ? '–' : `${Number(v).toFixed(digits)} ${unit}`);
  $('st-path').textContent = s.path;
  $('st-rtt').textContent = fmt(s.rtt_ms, 'ms', 1);
  $('st-loss').textContent = fmt(s.loss_pct, '%', 1);
  $('st-jitter').textContent = fmt(s.jitter_ms, 'ms', 1);
  $('st-bitrate').textContent = `${Math.round(s.recv_kbps)} / ${Math.round(s.send_kbps)} kb/s`;
  $('st-res').textContent = s.width ? `${s.width}×${s.height}` : '–';
  $('st-fps').textContent = fmt(s.fps, 'fps');
  $('st-page-fps').textContent = `${$('remote-video').dataset.fps} fps`;
}

function addChat(text, who, id) {
  const li = document.createElement('li');
  li.className = who;
  li.textContent = text;
  if (id !== undefined) li.dataset.id = String(id);
  $('chat-log').append(li);
  li.scrollIntoView({ block: 'end' });
}

function onEvent(ev) {
  switch (ev.kind) {
    case 'status': showStatus(ev); break;
    case 'controls': showControls(ev); break;
    case 'matched': $('chat-log').replaceChildren(); addChat(state.status.test_call ? 'Test call: you should see and hear yourself.' : 'You are now talking with a stranger. Say hi!', 'system'); break;
    case 'chat_received': addChat(ev.text, 'them'); break;
    case 'chat_sent': addChat(ev.text, 'me pending', ev.id); break;
    case 'chat_delivered': {
      const li = document.querySelector(`#chat-log li.me[data-id="${ev.id}"]`);
      if (li) li.classList.replace('pending', 'delivered');
      break;
    }
    case 'verify':
      $('verify').textContent = ev.emoji;
      $('verify').setAttribute('aria-label', `Verify your partner: ${ev.words}`);
      $('verify').hidden = false;
      break;
    case 'chat_undelivered': {
      const li = document.querySelector(`#chat-log li.me[data-id="${ev.id}"]`);
      if (li) { li.classList.replace('pending', 'undelivered'); li.title = 'Not delivered: your partner left.'; }
      break;
    }
    case 'peer_video': if (!ev.on) addChat('Your partner turned their camera off.', 'system'); break;
    case 'stats': showStats(ev); break;
    case 'notice': notice(ev.text); break;
    case 'mic_level': showMicLevel(ev.rms_dbfs); break;
    case 'speaker_test': showSpeakerTest(ev.playing); break;
    case 'devices': showDevices(ev); break;
    default: break;
  }
}

function profile() {
  const interests = $('interests').value.split(',').map((s) => s.trim()).filter(Boolean);
  const language = $('language').value.trim() || null;
  return { interests, language };
}

async function start() {
  await call('start', profile());
}

function next() {
  if (state.status.status !== 'idle') call('next');
}

// ---------- settings ----------

function turnRow(t = { url: '', username: '', has_credential: false }) {
  const row = $('turn-row').content.firstElementChild.cloneNode(true);
  row.querySelector('.turn-url').value = t.url;
  row.querySelector('.turn-user').value = t.username;
  const cred = row.querySelector('.turn-cred');
  if (t.has_credential) {
    cred.placeholder = 'Saved (leave empty to keep)';
    row.dataset.saved = 'true';
  }
  row.querySelector('.turn-remove').addEventListener('click', () => row.remove());
  $('turn-list').append(row);
}

function fillSelect(select, devices, chosen, defaultLabel) {
  select.replaceChildren();
  const def = document.createElement('option');
  def.value = '';
  def.textContent = defaultLabel;
  select.append(def);
  for (const d of devices) {
    const o = document.createElement('option');
    o.value = d.id;
    o.textContent = d.name + (d.is_default ? ' (default)' : '');
    select.append(o);
  }
  if (chosen && ![...select.options].some((o) => o.value === chosen)) {
    const o = document.createElement('option');
    o.value = chosen;
    o.textContent = `${state.deviceNames.get(chosen) || chosen} (not connected)`;
    select.append(o);
  }
  select.value = chosen || '';
}

// Fills the device selects; by default each keeps what the user has chosen (saved or not yet).
function showDevices(devices, chosen = {
  camera: $('set-camera').value, microphone: $('set-microphone').value, speaker: $('set-speaker').value,
}) {
  for (const d of [...devices.cameras, ...devices.microphones, ...devices.speakers]) state.deviceNames.set(d.id, d.name);
  fillSelect($('set-camera'), devices.cameras, chosen.camera, devices.cameras.length ? 'First camera' : 'No camera found');
  fillSelect($('set-microphone'), devices.microphones, chosen.microphone, devices.microphones.length ? 'Default microphone' : 'No microphone found');
  fillSelect($('set-speaker'), devices.speakers, chosen.speaker, devices.speakers.length ? 'Default speaker' : 'No speaker found');
  $('device-notes').textContent = devices.notes.join(' ');
}

// The microphone level meter: -60 dBFS (or less) is an empty bar, 0 dBFS a full one.
const METER_FLOOR_DBFS = -60;

function showMicLevel(dbfs) {
  if (!$('settings').open) return;
  const meter = $('mic-meter');
  const level = Math.min(0, Math.max(METER_FLOOR_DBFS, dbfs));
  meter.dataset.dbfs = String(dbfs);
  meter.dataset.loud = String(dbfs > -6);
  meter.setAttribute('aria-valuenow', String(Math.round(level)));
  meter.setAttribute('aria-valuetext', dbfs <= METER_FLOOR_DBFS ? 'silent' : `${Math.round(dbfs)} dB`);
  $('mic-meter-bar').style.width = `${((level - METER_FLOOR_DBFS) / -METER_FLOOR_DBFS) * 100}%`;
}

function showSpeakerTest(playing) {
  const button = $('btn-speaker-test');
  button.dataset.playing = String(playing);
  button.disabled = playing;
  button.textContent = playing ? 'Playing…' : 'Test speaker';
}

async function openSettings() {
  const s = await call('get_settings');
  state.settings = s;
  $('set-server').value = s.server_url;
  $('set-ca-cert').value = s.ca_cert || '';
  $('turn-list').replaceChildren();
  s.turn_servers.forEach(turnRow);
  $('set-relay-only').checked = s.relay_only;
  $('set-quality').value = s.quality;
  $('set-start-minimised').checked = s.start_minimised;
  $('set-close-to-tray').checked = s.close_to_tray;
  $('set-echo-cancellation').checked = s.echo_cancellation;
  $('set-noise-suppression').checked = s.noise_suppression;
  $('set-auto-gain').checked = s.auto_gain;
  $('settings-error').hidden = true;
  $('settings-ok').hidden = true;
  showDevices(await call('list_devices'), { camera: s.camera, microphone: s.microphone, speaker: s.speaker });
  $('settings').showModal();
  // The level meter runs while the settings are open.
  call('mic_test', { on: true });
}

function closedSettings() {
  call('mic_test', { on: false });
  const meter = $('mic-meter');
  meter.dataset.dbfs = '-100';
  meter.dataset.loud = 'false';
  meter.setAttribute('aria-valuenow', String(METER_FLOOR_DBFS));
  meter.setAttribute('aria-valuetext', 'silent');
  $('mic-meter-bar').style.width = '0';
}

async function saveSettings() {
  const rows = [...document.querySelectorAll('#turn-list .turn-row')];
  const update = {
    server_url: $('set-server').value,
    ca_cert: $('set-ca-cert').value || null,
    turn_servers: rows.map((r) => {
      const cred = r.querySelector('.turn-cred').value;
      return {
        url: r.querySelector('.turn-url').value,
        username: r.querySelector('.turn-user').value,
        credential: cred === '' && r.dataset.saved === 'true' ? null : cred,
      };
    }),
    relay_only: $('set-relay-only').checked,
    camera: $('set-camera').value || null,
    microphone: $('set-microphone').value || null,
    speaker: $('set-speaker').value || null,
    start_minimised: $('set-start-minimised').checked,
    close_to_tray: $('set-close-to-tray').checked,
    echo_cancellation: $('set-echo-cancellation').checked,
    noise_suppression: $('set-noise-suppression').checked,
    auto_gain: $('set-auto-gain').checked,
    quality: $('set-quality').value,
    interests: state.settings ? state.settings.interests : [],
    language: state.settings ? state.settings.language : null,
  };
  try {
    const saved = await invoke('save_settings', { update });
    state.settings = saved;
    $('settings-error').hidden = true;
    $('settings-ok').hidden = false;
    $('turn-list').replaceChildren();
    saved.turn_servers.forEach(turnRow);
    refreshServer();
  } catch (e) {
    $('settings-ok').hidden = true;
    $('settings-error').textContent = String(e);
    $('settings-error').hidden = false;
  }
}

async function refreshServer() {
  const info = await invoke('get_state');
  $('server').textContent = info.embedded ? 'built-in server' : info.server_url;
  return info;
}

// ---------- wiring ----------

$('btn-start').addEventListener('click', start);
$('btn-again').addEventListener('click', start);
$('btn-next').addEventListener('click', next);
$('btn-stop').addEventListener('click', () => call('stop'));
$('btn-test').addEventListener('click', () => call('test_call'));
$('btn-join').addEventListener('click', () => call('join_room', { code: $('room-code').value }));
$('btn-new-room').addEventListener('click', async () => {
  const code = await call('new_room_code');
  if (code) $('room-code').value = code;
});
$('btn-mute').addEventListener('click', () => call('set_muted', { muted: !state.controls.muted }));
$('btn-camera').addEventListener('click', () => call('set_camera', { on: !state.controls.camera_on }));
$('quality').addEventListener('change', (e) => call('set_quality', { quality: e.target.value }));
$('btn-report').addEventListener('click', () => {
  $('report-details').value = '';
  $('report-dialog').showModal();
});
$('btn-report-cancel').addEventListener('click', () => $('report-dialog').close());
$('btn-report-send').addEventListener('click', async () => {
  const details = $('report-details').value.trim();
  const reason = details ? `${$('report-reason').value}: ${details}` : $('report-reason').value;
  $('report-dialog').close();
  await call('report', { reason });
  notice('Thank you. The report was sent; you will not meet this person again.');
});
$('btn-block').addEventListener('click', () => call('block').then(() => notice('Blocked. You will not be matched with this person again.')));
$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('chat-input');
  const text = input.value;
  if (!text.trim()) return;
  call('send_chat', { text }).then(() => { input.value = ''; }).catch(() => {});
});
$('btn-stats').addEventListener('click', () => {
  const on = $('stats').hidden;
  $('stats').hidden = !on;
  $('btn-stats').setAttribute('aria-pressed', String(on));
});
$('btn-settings').addEventListener('click', openSettings);
$('btn-add-turn').addEventListener('click', () => turnRow());
$('btn-save-settings').addEventListener('click', saveSettings);
// Enter in a field submits the form: save or send rather than just closing the dialog.
$('settings-form').addEventListener('submit', (e) => {
  e.preventDefault();
  saveSettings();
});
$('report-form').addEventListener('submit', (e) => {
  e.preventDefault();
  $('btn-report-send').click();
});
$('btn-cancel-settings').addEventListener('click', () => $('settings').close());
// Every way out of the dialog (Close, Esc) ends the level meter.
$('settings').addEventListener('close', closedSettings);
$('btn-speaker-test').addEventListener('click', () => call('speaker_test'));

document.addEventListener('keydown', (e) => {
  if (e.ctrlKey && (e.key === 'd' || e.key === 'D')) {
    e.preventDefault();
    call('set_muted', { muted: !state.controls.muted });
  } else if (e.ctrlKey && (e.key === 'e' || e.key === 'E')) {
    e.preventDefault();
    call('set_camera', { on: !state.controls.camera_on });
  } else if (e.key === 'Escape' && !$('settings').open && !$('report-dialog').open) {
    const now = Date.now();
    if (now - state.lastEsc < 1000) {
      state.lastEsc = 0;
      next();
    } else {
      state.lastEsc = now;
    }
  }
});

async function init() {
  await listen('duet', (e) => onEvent(e.payload));
  await remote.attach();
  await local.attach();
  const info = await refreshServer();
  showStatus(info.status);
  showControls(info.controls);
  showDevices(info.devices);
  info.notices.forEach((n) => notice(n, 'warn'));
  document.body.dataset.ready = 'true';
  // Two animation frames: the first paint has reached the screen.
  requestAnimationFrame(() => requestAnimationFrame(() => invoke('window_painted')));
}

init().catch((e) => notice(`Duet could not start its window: ${e}`, 'error'));
