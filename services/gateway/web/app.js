// The Parole web client: a spoken conversation over the gateway's OpenAI Realtime WebSocket
// (/v1/realtime), and so a working example of that protocol. No framework and no build step:
// the browser runs this file as it is.
//
//   microphone (echo cancellation, noise suppression, gain control on)
//     -> parole-capture worklet (24 kHz PCM16)  -> input_audio_buffer.append
//   response.output_audio.delta -> parole-playback worklet (a queue, flushed on barge-in)
//
// Turn detection is the server's: a response starts by itself when you stop speaking. With
// barge-in on (the default when the browser cancels echo), speaking over an answer stops it:
// the server says input_audio_buffer.speech_started, the page flushes the playback queue at
// once, and the server cancels the response (response.done, status "cancelled").
//
// window.parole holds the page's live diagnostics (played samples, per-response timings,
// microphone levels): the browser tests read it, and so can a person in the console.

const KEY_STORAGE = 'parole.apiKey';
const PREFS_STORAGE = 'parole.prefs';
const EARLY_CHUNKS = 75; // capture chunks kept while the session starts (3 s at 40 ms)
const LEVEL_HISTORY = 400; // capture chunks kept in window.parole.levels (16 s at 40 ms)
const CHART_POINTS = [
  // [mark, label, what it means]: the turn's way from the end of speech to the sound.
  ['end_of_turn', 'end of turn', 'the endpointer decided you had finished'],
  ['final_transcript', 'transcript', 'the final transcript was ready'],
  ['first_token', 'first token', 'the language model wrote the first word'],
  ['first_audio', 'first audio', 'the first answer audio left the orchestrator'],
  ['played', 'played', 'the first answer sample reached the speaker (measured by this page)'],
];
const STAGE_NAMES = { stt: 'Speech recognition', llm: 'The language model', tts: 'Speech synthesis', orchestrator: 'The orchestrator' };

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ state

const diag = {
  state: 'idle',
  connected: false, // the session is configured: audio flows
  playedSamples: 0, // 24 kHz samples of answer audio played (the playback worklet's counter)
  queuedSamples: 0,
  playing: null, // id of the response being played
  // id -> {status, reason, latency (response.done's parole.latency), received / played
  // (24 kHz samples), startedAt / stoppedAt / flushedAt / bargeInAt (audio clock, seconds),
  // dropped (samples a flush threw away), playedSeconds (end of turn -> first sample heard)}
  responses: {},
  levels: [], // [audio clock at chunk end, RMS level, muted]
  mutedAt: null, // audio clock when the microphone was last muted / unmuted
  unmutedAt: null,
  mic: null, // the microphone track's settings (echoCancellation...)
  session: null, // the server's last session object
  events: {}, // server events received, by type
  alerts: [], // every message shown, {kind, code, text}
};
window.parole = diag;

const app = {
  ws: null,
  ready: false, // session.updated received: audio may flow
  muted: false,
  bargeIn: true,
  bargeInChosen: false, // the user ticked or unticked the box themselves
  voices: [], // [{id, language, engine}]
  ctx: null,
  capture: null,
  playback: null,
  stream: null,
  source: null,
  cut: new Set(), // responses whose remaining audio is dropped (barge-in, cancel)
  active: null, // the response in progress (created, not done)
  turnRef: null, // {at: performance.now(), kind: 'speech'|'typed'} of the last turn's end
  lastLevel: 0,
  early: [], // input_audio_buffer.append events waiting for the session to be ready
};

// ------------------------------------------------------------------ messages on the page

function showAlert(text, { kind = 'error', code = '', key = '' } = {}) {
  diag.alerts.push({ kind, code, text });
  const box = $('alerts');
  if (key) clearAlerts(key);
  const el = document.createElement('div');
  el.className = `alert ${kind}`;
  el.dataset.code = code;
  if (key) el.dataset.key = key;
  const span = document.createElement('span');
  span.className = 'text';
  span.textContent = text;
  const close = document.createElement('button');
  close.type = 'button';
  close.textContent = '×';
  close.title = 'Dismiss';
  close.addEventListener('click', () => el.remove());
  el.append(span, close);
  box.append(el);
  while (box.children.length > 5) box.firstElementChild.remove();
}

function clearAlerts(key) {
  $('alerts').querySelectorAll(`[data-key="${CSS.escape(key)}"]`).forEach((el) => el.remove());
}

const STATE_TEXT = {
  idle: 'Disconnected',
  connecting: 'Connecting…',
  listening: 'Listening',
  muted: 'Muted',
  user: 'Hearing you',
  thinking: 'Thinking…',
  speaking: 'Speaking',
  error: 'Not connected',
};

function setState(state) {
  diag.state = state;
  const el = $('status');
  el.dataset.state = state;
  el.textContent = STATE_TEXT[state] ?? state;
}

/** The resting state once a turn is over. */
function settle() {
  if (!app.ready) return;
  if (diag.playing || app.active) return;
  setState(app.muted ? 'muted' : 'listening');
}

// ------------------------------------------------------------------ chat bubbles

function bubble(kind, id) {
  let el = id ? document.querySelector(`.bubble[data-id="${CSS.escape(id)}"]`) : null;
  if (el) return el;
  $('hint')?.remove();
  el = document.createElement('div');
  el.className = `bubble ${kind}`;
  if (id) el.dataset.id = id;
  const text = document.createElement('span');
  text.className = 'text';
  el.append(text);
  $('chat').append(el);
  el.scrollIntoView({ block: 'end' });
  return el;
}

function setText(el, text) {
  el.querySelector('.text').textContent = text;
  el.scrollIntoView({ block: 'end' });
}

function addTag(el, text, failed = false) {
  const tag = document.createElement('span');
  tag.className = `tag ${failed ? 'failed' : text.replace(/\W+/g, '-')}`;
  tag.textContent = text;
  el.append(tag);
}

/** The turn's timings as a small waterfall: one bar per point, from the previous one. */
function latencyChart(latency, played) {
  const at = {};
  for (const m of latency.marks ?? []) at[m.point] = m.seconds;
  if (played != null) at.played = played;
  const rows = CHART_POINTS.filter(([point]) => at[point] > 0);
  if (!rows.length) return null;
  const fig = document.createElement('div');
  fig.className = 'latency';
  fig.title = 'Seconds from the end of your speech (or your typed message): ' +
    (latency.marks ?? []).map((m) => `${m.point} ${m.seconds.toFixed(3)}`).join(', ');
  const scale = Math.max(...rows.map(([point]) => at[point]));
  let previous = 0;
  for (const [point, label, meaning] of rows) {
    const seconds = at[point];
    const name = document.createElement('span');
    name.textContent = label;
    name.title = meaning;
    const track = document.createElement('div');
    track.className = 'track';
    const bar = document.createElement('div');
    bar.className = 'bar';
    bar.dataset.point = point;
    bar.dataset.seconds = seconds.toFixed(3);
    const start = Math.min(previous, seconds);
    bar.style.left = `${(100 * start) / scale}%`;
    bar.style.width = `${(100 * (seconds - start)) / scale}%`;
    track.append(bar);
    const value = document.createElement('span');
    value.className = 'value';
    value.dataset.point = point;
    value.textContent = `${seconds.toFixed(2)} s`;
    fig.append(name, track, value);
    previous = Math.max(previous, seconds);
  }
  return fig;
}

// ------------------------------------------------------------------ models: languages, voices

function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || '';
}

function prefs() {
  try {
    return JSON.parse(localStorage.getItem(PREFS_STORAGE) || '{}');
  } catch {
    return {};
  }
}

function savePrefs() {
  localStorage.setItem(PREFS_STORAGE, JSON.stringify({ language: $('language').value, voice: $('voice').value }));
}

function languageName(code) {
  try {
    return new Intl.DisplayNames([navigator.language || 'en'], { type: 'language' }).of(code) || code;
  } catch {
    return code;
  }
}

async function loadModels() {
  const key = apiKey();
  let reply;
  try {
    reply = await fetch('/v1/models', { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  } catch {
    showAlert(`The gateway at ${location.origin} does not answer: is it running (make run, or python -m services.fleet)?`,
      { code: 'gateway_unreachable', key: 'models' });
    return false;
  }
  if (reply.status === 401) {
    $('key-form').hidden = false;
    showAlert(key ? 'The gateway refused this API key: enter the fleet\'s token.'
      : 'This gateway needs an API key (the fleet\'s token): enter it above.', { code: 'invalid_api_key', key: 'models' });
    $('api-key').focus();
    return false;
  }
  let body = null;
  try {
    body = await reply.json();
  } catch {
    // reported below
  }
  if (!reply.ok || !body || !Array.isArray(body.data)) {
    const why = body?.error?.message ?? `HTTP ${reply.status}`;
    showAlert(`The gateway could not list its models: ${why}`, { code: 'models_failed', key: 'models' });
    return false;
  }
  clearAlerts('models');
  $('key-form').hidden = true;
  app.voices = body.data
    .filter((m) => m.parole?.kind === 'tts')
    .map((m) => ({ id: m.id, language: m.parole.language || '', engine: m.parole.engine || '' }));
  if (!app.voices.length) {
    showAlert('The speech synthesis service did not list any voice: answers may have no sound.',
      { kind: 'warning', code: 'no_voices', key: 'models' });
  }
  const languages = [...new Set(app.voices.map((v) => v.language).filter(Boolean))].sort();
  if (!languages.length) languages.push('fr', 'en');
  // espeak-ng speaks a hundred languages, robotically: the ones with a natural voice (Piper,
  // Kokoro) come first.
  const natural = new Set(app.voices.filter((v) => v.engine && v.engine !== 'espeak-ng').map((v) => v.language));
  const group = (label, codes) => {
    const g = document.createElement('optgroup');
    g.label = label;
    g.append(...codes.map((code) => new Option(`${languageName(code)} (${code})`, code)));
    return g;
  };
  const select = $('language');
  const first = languages.filter((code) => natural.has(code));
  const rest = languages.filter((code) => !natural.has(code));
  select.replaceChildren(
    ...(first.length ? [group('Natural voices', first)] : []),
    ...(rest.length ? [group(first.length ? 'espeak-ng voices' : 'Languages', rest)] : []),
  );
  const saved = prefs();
  const browser = (navigator.language || '').slice(0, 2);
  select.value = [saved.language, browser].find((code) => languages.includes(code)) ?? languages[0];
  fillVoices(saved.voice);
  select.disabled = false;
  $('voice').disabled = false;
  return true;
}

function fillVoices(wanted) {
  const language = $('language').value;
  const voices = app.voices.filter((v) => v.language === language);
  const select = $('voice');
  select.replaceChildren(new Option('default voice', ''), ...voices.map((v) => new Option(v.id, v.id)));
  select.value = voices.some((v) => v.id === wanted) ? wanted : '';
}

// ------------------------------------------------------------------ audio

async function startAudio() {
  if (!window.AudioWorkletNode) {
    throw new Error('This browser has no AudioWorklet: use a current Chrome, Edge, Firefox or Safari.');
  }
  // Created on the Connect click: browsers let a page play sound after a user gesture.
  const ctx = new AudioContext({ latencyHint: 'interactive' });
  app.ctx = ctx;
  await ctx.audioWorklet.addModule('audio-worklets.js');
  app.playback = new AudioWorkletNode(ctx, 'parole-playback', { numberOfInputs: 0, outputChannelCount: [1] });
  app.playback.port.onmessage = (event) => onPlayback(event.data);
  app.playback.connect(ctx.destination);
  await ctx.resume();
}

/** Opens the microphone; on failure says why and leaves typed messages working. */
async function startMicrophone() {
  if (!navigator.mediaDevices?.getUserMedia) {
    showAlert('The browser gives the microphone only to secure pages: open this page over https:// (see the ' +
      'README, "Open it from another machine") or as http://localhost. You can still type.',
    { code: 'insecure_context', key: 'mic' });
    return false;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
  } catch (err) {
    const why = {
      NotAllowedError: 'The browser did not allow the microphone: allow it for this page (the icon at the left of the address bar), then Connect again.',
      SecurityError: 'The browser did not allow the microphone on this page.',
      NotFoundError: 'No microphone was found: plug one in, then Connect again.',
      NotReadableError: 'The microphone could not be opened: another application may be using it.',
      OverconstrainedError: 'No microphone matches the requested settings.',
    }[err.name] ?? `The microphone could not be opened: ${err.message || err.name}.`;
    showAlert(`${why} You can still type.`, { code: `microphone_${err.name || 'error'}`, key: 'mic' });
    return false;
  }
  clearAlerts('mic');
  const track = stream.getAudioTracks()[0];
  track.addEventListener('ended', () => {
    if (app.ws) showAlert('The microphone stopped (unplugged, or taken by the system).', { code: 'microphone_ended', key: 'mic' });
  });
  app.stream = stream;
  app.source = app.ctx.createMediaStreamSource(stream);
  app.capture = new AudioWorkletNode(app.ctx, 'parole-capture', {
    numberOfInputs: 1,
    numberOfOutputs: 0,
    channelCount: 1,
    channelCountMode: 'explicit', // down-mixed to mono by the graph
  });
  app.capture.port.onmessage = (event) => onCapture(event.data);
  app.capture.port.postMessage({ type: 'mute', muted: app.muted });
  app.source.connect(app.capture);

  const s = track.getSettings();
  diag.mic = { label: track.label, echoCancellation: s.echoCancellation, noiseSuppression: s.noiseSuppression,
    autoGainControl: s.autoGainControl, sampleRate: s.sampleRate };
  const on = (v) => (v ? 'on' : 'off');
  $('mic-info').textContent = `Microphone: ${track.label || 'default'} · echo cancellation ${on(s.echoCancellation)}, ` +
    `noise suppression ${on(s.noiseSuppression)}, gain control ${on(s.autoGainControl)}`;
  if (!s.echoCancellation && !app.bargeInChosen) {
    // Without echo cancellation the assistant would hear itself and interrupt its own answers:
    // the server's gate then ignores the microphone while an answer plays.
    app.bargeIn = false;
    $('barge-in').checked = false;
    showAlert('This browser does not cancel echo here: barge-in is off, so the assistant does not hear itself. ' +
      'With a headset, tick Barge-in to interrupt answers by speaking.', { kind: 'warning', code: 'no_echo_cancellation', key: 'mic' });
  }
  return true;
}

function stopAudio() {
  app.stream?.getTracks().forEach((t) => t.stop());
  app.source?.disconnect();
  app.capture?.disconnect();
  app.ctx?.close();
  Object.assign(app, { stream: null, source: null, capture: null, playback: null, ctx: null });
  diag.playing = null;
  diag.queuedSamples = 0;
  $('level').style.width = '0';
  $('mic-info').textContent = 'Microphone: not open';
}

function onCapture(msg) {
  if (msg.type === 'muted') {
    diag[msg.muted ? 'mutedAt' : 'unmutedAt'] = msg.at;
    return;
  }
  diag.levels.push([msg.at, msg.level, msg.muted]);
  if (diag.levels.length > LEVEL_HISTORY) diag.levels.splice(0, diag.levels.length - LEVEL_HISTORY);
  app.lastLevel = msg.level;
  const append = { type: 'input_audio_buffer.append', audio: toBase64(msg.pcm) };
  if (app.ready) {
    send(append);
  } else {
    // The microphone opens before the session is configured: what is said meanwhile waits
    // (a few seconds at most) rather than losing its first word.
    app.early.push(append);
    if (app.early.length > EARLY_CHUNKS) app.early.shift();
  }
}

function drawLevel() {
  // RMS in dBFS, -60..0 dB across the meter.
  const db = 20 * Math.log10(Math.max(app.lastLevel, 1e-6));
  $('level').style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
  $('level').parentElement.classList.toggle('muted', app.muted);
  requestAnimationFrame(drawLevel);
}

/** The audio clock `at` as performance.now() time, when the sample reaches the speaker. */
function audioToPerf(at) {
  const ts = app.ctx?.getOutputTimestamp?.();
  if (!ts || !ts.performanceTime) return performance.now();
  return ts.performanceTime + (at - ts.contextTime) * 1000;
}

function onPlayback(msg) {
  if (msg.type === 'status') {
    diag.playedSamples = msg.played;
    diag.queuedSamples = msg.queued;
    for (const [id, n] of Object.entries(msg.byId)) response(id).played = n;
    return;
  }
  const r = msg.id ? response(msg.id) : null;
  if (msg.type === 'started') {
    diag.playing = msg.id;
    if (r && r.startedAt == null) {
      r.startedAt = msg.at;
      r.startedPerf = audioToPerf(msg.at);
    }
    if (app.ready) setState('speaking');
  } else if (msg.type === 'idle') {
    diag.playing = null;
    if (r) r.stoppedAt = msg.at;
    settle();
  } else if (msg.type === 'flushed') {
    diag.playing = null;
    if (r) {
      r.stoppedAt = msg.at;
      r.flushedAt = msg.at;
      r.dropped = (r.dropped ?? 0) + msg.dropped;
      r.playedAtStop = msg.played;
      const b = document.querySelector(`.bubble.assistant[data-id="${CSS.escape(msg.id)}"]`);
      if (b && msg.dropped > 0 && !b.querySelector('.tag.interrupted')) addTag(b, 'interrupted');
    }
    settle();
  }
}

function flush(id) {
  app.playback?.port.postMessage(id ? { type: 'flush', id } : { type: 'flush' });
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function fromBase64(b64) {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes.buffer;
}

// ------------------------------------------------------------------ the Realtime session

function send(event) {
  if (app.ws?.readyState === WebSocket.OPEN) app.ws.send(JSON.stringify(event));
}

function sessionUpdate() {
  send({
    type: 'session.update',
    session: {
      type: 'realtime',
      audio: {
        input: {
          transcription: { language: $('language').value },
          turn_detection: { type: 'server_vad', interrupt_response: app.bargeIn },
        },
        output: { voice: $('voice').value },
      },
    },
  });
}

function response(id) {
  diag.responses[id] ??= { status: 'in_progress' };
  return diag.responses[id];
}

async function connect() {
  if (app.ws) return;
  clearAlerts('connection');
  setState('connecting');
  $('connect').disabled = true;
  // Asking for the models first checks that the gateway answers (and takes our key) before
  // the microphone is opened, and picks up voices added since the page was loaded.
  if (!(await loadModels())) {
    setState('error');
    $('connect').disabled = false;
    return;
  }
  try {
    await startAudio();
  } catch (err) {
    showAlert(`Audio could not start: ${err.message || err}`, { code: 'audio_failed', key: 'connection' });
    stopAudio();
    setState('error');
    $('connect').disabled = false;
    return;
  }
  await startMicrophone();
  openSocket();
}

function openSocket() {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/realtime?model=parole`;
  const key = apiKey();
  // Browsers cannot set headers on a WebSocket: the key travels as a subprotocol, as OpenAI's
  // own browser clients send it.
  const protocols = ['realtime', ...(key ? [`openai-insecure-api-key.${key}`] : [])];
  let ws;
  try {
    ws = new WebSocket(url, protocols);
  } catch (err) {
    showAlert(`Cannot open ${url}: ${err.message}`, { code: 'socket_failed', key: 'connection' });
    disconnect();
    setState('error');
    return;
  }
  app.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
  };
  ws.onmessage = (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    diag.events[msg.type] = (diag.events[msg.type] ?? 0) + 1;
    onServerEvent(msg);
  };
  ws.onclose = (event) => {
    if (app.ws !== ws) return; // closed by Disconnect: nothing to report
    let text;
    if (event.code === 1008) {
      text = 'The gateway refused the API key: enter the fleet\'s token.';
      $('key-form').hidden = false;
    } else if (event.code === 1001) {
      text = 'The gateway is shutting down. Connect again once it is back.';
    } else if (!opened) {
      text = `Cannot reach the gateway's Realtime API at ${url}: is the gateway running?`;
    } else {
      text = `The connection to the gateway was lost (code ${event.code}${event.reason ? `: ${event.reason}` : ''}). ` +
        'Press Connect to start again.';
    }
    showAlert(text, { code: `socket_closed_${event.code}`, key: 'connection' });
    disconnect();
    setState('error');
  };
}

function disconnect() {
  const ws = app.ws;
  app.ws = null;
  app.ready = false;
  diag.connected = false;
  app.active = null;
  app.early = [];
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'bye');
  stopAudio();
  $('connect').textContent = 'Connect';
  $('connect').disabled = false;
  $('message').disabled = true;
  $('send').disabled = true;
  setState('idle');
}

function onServerEvent(msg) {
  switch (msg.type) {
    case 'session.created':
      diag.session = msg.session;
      sessionUpdate();
      break;
    case 'session.updated':
      diag.session = msg.session;
      if (!app.ready) {
        app.ready = true;
        diag.connected = true;
        app.early.splice(0).forEach(send);
        clearAlerts('connection');
        $('connect').textContent = 'Disconnect';
        $('connect').disabled = false;
        $('message').disabled = false;
        $('send').disabled = false;
        settle();
      }
      break;
    case 'input_audio_buffer.speech_started': {
      const b = bubble('user interim', msg.item_id);
      b.classList.add('interim');
      // Barge-in: stop the answer now, before the server's cancel arrives; its late audio is
      // dropped. Without barge-in the server ignores speech during an answer anyway.
      if (app.bargeIn && (diag.playing || app.active)) {
        if (app.active) app.cut.add(app.active);
        flush();
        for (const [id, r] of Object.entries(diag.responses)) {
          if (r.status === 'in_progress' || id === diag.playing) {
            r.bargeInAt = app.ctx?.currentTime ?? null;
            r.statusAtBargeIn = r.status; // "in_progress": the server must cancel it too
          }
        }
      }
      setState('user');
      break;
    }
    case 'input_audio_buffer.speech_stopped':
      app.turnRef = { at: performance.now(), kind: 'speech' };
      setState('thinking');
      break;
    case 'conversation.item.added': {
      const item = msg.item ?? {};
      const part = item.content?.[0];
      if (item.role === 'user' && part?.type === 'input_text') setText(bubble('user', item.id), part.text);
      break;
    }
    case 'conversation.item.input_audio_transcription.delta': {
      const b = bubble('user interim', msg.item_id);
      const el = b.querySelector('.text');
      el.textContent += msg.delta;
      break;
    }
    case 'conversation.item.input_audio_transcription.completed': {
      const b = bubble('user', msg.item_id);
      if (!msg.transcript.trim()) {
        b.remove(); // a noise, not words: the server answers nothing either
        break;
      }
      b.classList.remove('interim');
      setText(b, msg.transcript);
      break;
    }
    case 'response.created': {
      const r = response(msg.response.id);
      r.ref = app.turnRef;
      app.turnRef = null;
      app.active = msg.response.id;
      bubble('assistant', msg.response.id);
      setState('thinking');
      break;
    }
    case 'response.output_audio_transcript.delta':
    case 'response.output_text.delta': {
      const b = bubble('assistant', msg.response_id);
      b.querySelector('.text').textContent += msg.delta;
      b.scrollIntoView({ block: 'end' });
      break;
    }
    case 'response.output_audio.delta':
      if (!app.cut.has(msg.response_id) && app.playback) {
        const pcm = fromBase64(msg.delta);
        response(msg.response_id).received = (response(msg.response_id).received ?? 0) + pcm.byteLength / 2;
        app.playback.port.postMessage({ type: 'audio', id: msg.response_id, pcm }, [pcm]);
      }
      break;
    case 'response.done':
      onResponseDone(msg.response);
      break;
    case 'error':
      onError(msg.error ?? {});
      break;
    default:
      break;
  }
}

function onResponseDone(resp) {
  const r = response(resp.id);
  r.status = resp.status;
  r.reason = resp.status_details?.reason ?? resp.status_details?.error?.message ?? null;
  r.latency = resp.parole?.latency ?? null;
  if (app.active === resp.id) app.active = null;
  const b = bubble('assistant', resp.id);
  const text = resp.output?.[0]?.content?.[0]?.transcript ?? resp.output?.[0]?.content?.[0]?.text;
  if (text && !b.querySelector('.text').textContent) setText(b, text);
  if (resp.status === 'cancelled') {
    app.cut.add(resp.id);
    flush(resp.id); // what is still queued of it must not play
    if (!b.querySelector('.tag.interrupted')) addTag(b, 'interrupted');
  } else if (resp.status === 'failed') {
    addTag(b, 'failed', true);
  }
  if (r.latency) {
    // The browser's own last step: the end of the turn (the server's end_of_turn mark, when
    // speech_stopped was sent) to the first sample at the speaker.
    let played = null;
    if (r.ref && r.startedPerf != null) {
      const mark = r.latency.marks?.find((m) => m.point === 'end_of_turn');
      const base = r.ref.kind === 'speech' ? (mark?.seconds ?? 0) : 0;
      played = base + (r.startedPerf - r.ref.at) / 1000;
      r.playedSeconds = played;
    }
    const chart = latencyChart(r.latency, played);
    if (chart) b.append(chart);
    for (const stage of r.latency.degraded_stages ?? []) addTag(b, `${stage} degraded`);
  }
  settle();
}

function onError(err) {
  const code = err.code ?? '';
  const stage = /^(stt|llm|tts|orchestrator)_(degraded|failed)$/.exec(code);
  if (stage) {
    const who = STAGE_NAMES[stage[1]] ?? stage[1];
    const detail = (err.message ?? '').replace(/^\w+: /, '');
    // The orchestrator's message says what the turn did instead (a fallback reply, text only).
    const text = stage[2] === 'degraded' ? `${who} is degraded: ${detail}` : `${who} failed: ${detail}`;
    showAlert(text, { kind: stage[2] === 'degraded' ? 'warning' : 'error', code, key: code });
    return;
  }
  if (code === 'response_cancel_not_active') return; // a cancel that crossed the end of the answer
  if (code === 'server_shutting_down') return; // the socket's close (1001) is said next
  showAlert(`The gateway says: ${err.message ?? 'an error'}`, { code, key: code || 'server' });
}

function sendTyped(text) {
  if (!app.ready) return;
  app.turnRef = { at: performance.now(), kind: 'typed' };
  send({ type: 'conversation.item.create', item: { type: 'message', role: 'user', content: [{ type: 'input_text', text }] } });
  send({ type: 'response.create' });
}

function setMuted(muted) {
  app.muted = muted;
  $('mute').setAttribute('aria-pressed', String(muted));
  $('mute').textContent = muted ? 'Unmute' : 'Mute';
  app.capture?.port.postMessage({ type: 'mute', muted });
  if (app.ready && diag.state === (muted ? 'listening' : 'muted')) setState(muted ? 'muted' : 'listening');
}

// ------------------------------------------------------------------ wiring

function init() {
  $('endpoint').textContent = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/realtime`;
  $('connect').addEventListener('click', () => (app.ws ? disconnect() : connect()));
  $('mute').addEventListener('click', () => setMuted(!app.muted));
  $('language').addEventListener('change', () => {
    fillVoices('');
    savePrefs();
    sessionUpdate();
  });
  $('voice').addEventListener('change', () => {
    savePrefs();
    sessionUpdate();
  });
  $('barge-in').addEventListener('change', (event) => {
    app.bargeIn = event.target.checked;
    app.bargeInChosen = true;
    sessionUpdate();
  });
  $('typed').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('message').value.trim();
    if (!text) return;
    $('message').value = '';
    sendTyped(text);
  });
  $('key-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    localStorage.setItem(KEY_STORAGE, $('api-key').value.trim());
    $('api-key').value = '';
    await loadModels();
  });
  requestAnimationFrame(drawLevel);
  loadModels();
}

init();
