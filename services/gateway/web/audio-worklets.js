// AudioWorklet processors of the Parole web client. They run on the browser's audio thread,
// so audio keeps flowing when the page's main thread is busy (layout, a slow event handler):
//
//   parole-capture   microphone (the context's rate, 44.1 or 48 kHz) -> 24 kHz PCM16 chunks
//                    for the Realtime API, with the level of each chunk for the meter;
//   parole-playback  24 kHz PCM16 answer audio -> the speakers, through a queue that a
//                    "flush" message empties at once (barge-in), counting what was played.
//
// No dependencies: the resampler is a small windowed-sinc filter, so the page does not rely on
// the browser honouring an AudioContext sample rate (Firefox refuses to mix rates with a
// microphone) and the wire format stays exactly 24 kHz.

const WIRE_RATE = 24000; // the Realtime API's PCM rate, both ways
const CAPTURE_CHUNK_MS = 40; // small: speech reaches the server's turn detection sooner
const STATUS_EVERY_S = 0.05; // playback counters sent to the page at most this often

/**
 * Streaming band-limited resampler: each output sample is the input convolved with a
 * Blackman-windowed sinc centred on its (fractional) position. The kernel is tabulated at
 * `phases` points per input sample and linearly interpolated, so no trigonometry runs per
 * sample. Its cut-off sits below the Nyquist frequency of the lower rate, so downsampling the
 * microphone does not fold high frequencies into the speech band (aliasing hurts recognition).
 */
class Resampler {
  constructor(inRate, outRate, zeroCrossings = 8, phases = 256) {
    this.step = inRate / outRate; // input samples per output sample
    const cutoff = Math.min(1, outRate / inRate) * 0.9; // fraction of the input's Nyquist
    this.half = Math.ceil(zeroCrossings / cutoff); // kernel half-width, in input samples
    this.phases = phases;
    const n = 2 * this.half * phases;
    this.table = new Float32Array(n + 2);
    for (let j = 0; j <= n; j++) {
      const x = j / phases - this.half; // distance from the kernel's centre, in input samples
      const w = 0.42 + 0.5 * Math.cos((Math.PI * x) / this.half) + 0.08 * Math.cos((2 * Math.PI * x) / this.half);
      const a = Math.PI * cutoff * x;
      this.table[j] = cutoff * (a === 0 ? 1 : Math.sin(a) / a) * w;
    }
    this.reset();
  }

  /** Forgets the past input (a flushed queue must not ring into the next answer). */
  reset() {
    this.hist = new Float32Array(4096);
    this.len = this.half; // `half` zeros of history: the first output needs no special case
    this.pos = this.half; // position of the next output sample, in `hist` coordinates
  }

  /** Resamples the next input block; returns the output samples it completes. */
  process(input) {
    if (this.len + input.length > this.hist.length) {
      const grown = new Float32Array(2 * (this.len + input.length));
      grown.set(this.hist.subarray(0, this.len));
      this.hist = grown;
    }
    this.hist.set(input, this.len);
    this.len += input.length;
    const count = Math.max(0, Math.ceil((this.len - this.half - this.pos) / this.step));
    const out = new Float32Array(count);
    const { hist, table, half, phases } = this;
    let produced = 0;
    while (produced < count && Math.floor(this.pos) + half < this.len) {
      const i0 = Math.floor(this.pos);
      const frac = this.pos - i0;
      let acc = 0;
      for (let k = 1 - half; k <= half; k++) {
        const t = (frac - k + half) * phases; // table index of the tap's distance
        const j = t | 0;
        acc += hist[i0 + k] * (table[j] + (t - j) * (table[j + 1] - table[j]));
      }
      out[produced++] = acc;
      this.pos += this.step;
    }
    // Keep only the history the next outputs still need.
    const keep = Math.floor(this.pos) - half + 1;
    if (keep > 0) {
      hist.copyWithin(0, keep, this.len);
      this.len -= keep;
      this.pos -= keep;
    }
    return produced === count ? out : out.subarray(0, produced);
  }
}

/** Microphone -> 24 kHz PCM16, posted to the page every CAPTURE_CHUNK_MS with its level. */
class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(sampleRate, WIRE_RATE);
    this.size = (WIRE_RATE * CAPTURE_CHUNK_MS) / 1000;
    this.chunk = new Int16Array(this.size);
    this.fill = 0;
    this.muted = false;
    this.sumSquares = 0;
    this.count = 0;
    this.port.onmessage = (event) => {
      if (event.data.type === 'mute') {
        this.muted = Boolean(event.data.muted);
        // The audio clock at which the change took effect, for the page's timings.
        this.port.postMessage({ type: 'muted', muted: this.muted, at: currentTime });
      }
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // the microphone is not connected (yet)
    const mono = channels[0]; // getUserMedia was asked for one channel
    for (let i = 0; i < mono.length; i++) this.sumSquares += mono[i] * mono[i];
    this.count += mono.length;
    const out = this.resampler.process(mono);
    for (let i = 0; i < out.length; i++) {
      // Muted: the stream goes on with digital silence, so the server's turn detection still
      // sees the end of a phrase cut by the mute button.
      const s = this.muted ? 0 : Math.max(-1, Math.min(1, out[i]));
      this.chunk[this.fill++] = Math.round(s * 32767);
      if (this.fill === this.size) {
        const level = Math.sqrt(this.sumSquares / Math.max(1, this.count));
        // `at`: the audio clock at the chunk's end (the playback worklet shares this clock).
        this.port.postMessage(
          { type: 'audio', pcm: this.chunk.buffer, level, muted: this.muted, at: currentTime },
          [this.chunk.buffer],
        );
        this.chunk = new Int16Array(this.size);
        this.fill = 0;
        this.sumSquares = 0;
        this.count = 0;
      }
    }
    return true;
  }
}

/**
 * A queue of answer audio played in arrival order. Messages from the page:
 *   {type: 'audio', id, pcm}  24 kHz PCM16 of response `id` (an ArrayBuffer), queued;
 *   {type: 'flush', id?}      everything queued (or all of response `id`) is dropped at
 *                             once: barge-in, a cancelled answer.
 * Messages to the page ("at" is the audio clock, seconds):
 *   {type: 'started', id, at}        the first sample of a response (or after a gap) played;
 *   {type: 'idle', id, at}           the queue ran dry;
 *   {type: 'flushed', id, dropped, played, at}  a flush dropped `dropped` 24 kHz samples
 *                                   of `id`, after `played` of it had played;
 *   {type: 'status', played, queued, playing, byId}  counters, in 24 kHz samples: played in
 *                                   all, queued, and played per response (the last 16).
 */
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(WIRE_RATE, sampleRate);
    this.wirePerFrame = WIRE_RATE / sampleRate;
    this.queue = []; // {id, samples: Float32Array at the context's rate, offset}
    this.queuedFrames = 0;
    this.playedFrames = 0; // every frame of answer audio written to the output, all responses
    this.playing = null; // id of the response being played, null while silent
    this.playedById = new Map(); // frames played per response (the last few responses)
    this.lastStatus = -1;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(msg) {
    if (msg.type === 'audio') {
      const pcm = new Int16Array(msg.pcm);
      const floats = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) floats[i] = pcm[i] / 32768;
      const samples = this.resampler.process(floats);
      if (samples.length) {
        this.queue.push({ id: msg.id, samples, offset: 0 });
        this.queuedFrames += samples.length;
      }
    } else if (msg.type === 'flush') {
      // Everything, or only response `msg.id` (a cancelled answer must not take the next one
      // with it).
      const id = msg.id ?? this.playing ?? (this.queue.length ? this.queue[0].id : null);
      const kept = msg.id == null ? [] : this.queue.filter((c) => c.id !== msg.id);
      const keptFrames = kept.reduce((n, c) => n + c.samples.length - c.offset, 0);
      const dropped = this.wire(this.queuedFrames - keptFrames);
      this.queue = kept;
      this.queuedFrames = keptFrames;
      if (msg.id == null || this.playing === msg.id) {
        this.resampler.reset();
        this.playing = null;
      }
      this.port.postMessage({ type: 'flushed', id, dropped, played: this.wire(this.playedById.get(id)), at: currentTime });
      this.sendStatus();
    }
  }

  /** Frames at the context's rate as 24 kHz samples. */
  wire(frames) {
    return Math.round((frames ?? 0) * this.wirePerFrame);
  }

  sendStatus() {
    this.lastStatus = currentTime;
    const byId = {};
    for (const [id, frames] of this.playedById) byId[id] = this.wire(frames);
    this.port.postMessage({
      type: 'status',
      played: this.wire(this.playedFrames),
      queued: this.wire(this.queuedFrames),
      playing: this.playing,
      byId,
    });
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let i = 0;
    while (i < out.length && this.queue.length) {
      const head = this.queue[0];
      if (head.id !== this.playing) {
        this.playing = head.id;
        this.port.postMessage({ type: 'started', id: head.id, at: currentTime + i / sampleRate });
      }
      const n = Math.min(out.length - i, head.samples.length - head.offset);
      out.set(head.samples.subarray(head.offset, head.offset + n), i);
      i += n;
      head.offset += n;
      this.playedFrames += n;
      this.queuedFrames -= n;
      this.playedById.set(head.id, (this.playedById.get(head.id) ?? 0) + n);
      if (this.playedById.size > 16) this.playedById.delete(this.playedById.keys().next().value);
      if (head.offset === head.samples.length) this.queue.shift();
    }
    // The rest of the block stays silent (outputs start zeroed).
    if (i < out.length && this.playing !== null) {
      this.port.postMessage({ type: 'idle', id: this.playing, at: currentTime + i / sampleRate });
      this.playing = null;
      this.sendStatus();
    } else if (currentTime - this.lastStatus >= STATUS_EVERY_S && (this.playing !== null || this.queue.length)) {
      this.sendStatus();
    }
    return true;
  }
}

registerProcessor('parole-capture', CaptureProcessor);
registerProcessor('parole-playback', PlaybackProcessor);
