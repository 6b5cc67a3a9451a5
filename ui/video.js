// Draws I420 frames that arrive as raw bytes over a Tauri IPC channel.
//
// Packet: stream u8, 3 bytes padding, width u32, height u32, seq u32 (little-endian), then the
// Y, U and V planes. The Rust side sends the newest frame only after we acknowledge the last
// one, so drawing never falls behind: a slow page just gets fewer, fresher frames.

const HEADER = 16;

const VERTEX = `
attribute vec2 pos;
varying vec2 uv;
void main() {
  uv = vec2((pos.x + 1.0) / 2.0, (1.0 - pos.y) / 2.0);
  gl_Position = vec4(pos, 0.0, 1.0);
}`;

// BT.601 limited range to RGB.
const FRAGMENT = `
precision mediump float;
varying vec2 uv;
uniform sampler2D ty, tu, tv;
void main() {
  float y = 1.1643 * (texture2D(ty, uv).r - 0.0625);
  float u = texture2D(tu, uv).r - 0.5;
  float v = texture2D(tv, uv).r - 0.5;
  gl_FragColor = vec4(y + 1.596 * v, y - 0.391 * u - 0.813 * v, y + 2.018 * u, 1.0);
}`;

class GlRenderer {
  constructor(canvas) {
    const gl = canvas.getContext('webgl', { preserveDrawingBuffer: true, antialias: false, depth: false });
    if (!gl) throw new Error('no WebGL');
    this.gl = gl;
    const shader = (type, src) => {
      const s = gl.createShader(type);
      gl.shaderSource(s, src);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      return s;
    };
    const prog = gl.createProgram();
    gl.attachShader(prog, shader(gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(prog, shader(gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog));
    gl.useProgram(prog);
    const buf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const loc = gl.getAttribLocation(prog, 'pos');
    gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    this.textures = ['ty', 'tu', 'tv'].map((name, i) => {
      const t = gl.createTexture();
      gl.activeTexture(gl.TEXTURE0 + i);
      gl.bindTexture(gl.TEXTURE_2D, t);
      for (const p of [gl.TEXTURE_MIN_FILTER, gl.TEXTURE_MAG_FILTER]) gl.texParameteri(gl.TEXTURE_2D, p, gl.LINEAR);
      for (const p of [gl.TEXTURE_WRAP_S, gl.TEXTURE_WRAP_T]) gl.texParameteri(gl.TEXTURE_2D, p, gl.CLAMP_TO_EDGE);
      gl.uniform1i(gl.getUniformLocation(prog, name), i);
      return t;
    });
  }

  draw(canvas, w, h, bytes) {
    const gl = this.gl;
    const cw = (w + 1) >> 1;
    const ch = (h + 1) >> 1;
    const planes = [
      [bytes.subarray(0, w * h), w, h],
      [bytes.subarray(w * h, w * h + cw * ch), cw, ch],
      [bytes.subarray(w * h + cw * ch, w * h + 2 * cw * ch), cw, ch],
    ];
    planes.forEach(([data, pw, ph], i) => {
      gl.activeTexture(gl.TEXTURE0 + i);
      gl.bindTexture(gl.TEXTURE_2D, this.textures[i]);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.LUMINANCE, pw, ph, 0, gl.LUMINANCE, gl.UNSIGNED_BYTE, data);
    });
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  }
}

// Without WebGL (some virtual machines): convert on the CPU.
class CanvasRenderer {
  constructor(canvas) {
    this.ctx = canvas.getContext('2d');
  }

  draw(canvas, w, h, bytes) {
    const img = this.ctx.createImageData(w, h);
    const out = img.data;
    const cw = (w + 1) >> 1;
    const uOff = w * h;
    const vOff = uOff + cw * ((h + 1) >> 1);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const Y = 1.1643 * (bytes[y * w + x] - 16);
        const c = (y >> 1) * cw + (x >> 1);
        const U = bytes[uOff + c] - 128;
        const V = bytes[vOff + c] - 128;
        const o = (y * w + x) * 4;
        out[o] = Y + 1.596 * V;
        out[o + 1] = Y - 0.391 * U - 0.813 * V;
        out[o + 2] = Y + 2.018 * U;
        out[o + 3] = 255;
      }
    }
    this.ctx.putImageData(img, 0, 0);
  }
}

// A cheap fingerprint of the picture (64 luma samples), so tests can see it change.
function fingerprint(bytes, w, h) {
  let hash = 2166136261;
  for (let i = 0; i < 64; i++) {
    const x = Math.floor(((i % 8) + 0.5) * w / 8);
    const y = Math.floor((Math.floor(i / 8) + 0.5) * h / 8);
    hash = Math.imul(hash ^ bytes[y * w + x], 16777619) >>> 0;
  }
  return hash.toString(16);
}

// One video stream into one canvas. Publishes `data-frames`, `data-fps`, `data-width`,
// `data-height`, `data-hash` and `data-renderer` on the canvas.
export class VideoView {
  constructor(canvas, stream, invoke, Channel) {
    this.canvas = canvas;
    this.stream = stream;
    this.invoke = invoke;
    this.Channel = Channel;
    this.frames = 0;
    this.windowFrames = 0;
    this.pending = null;
    this.scheduled = false;
    this.renderer = null;
    // Off (no call): frames still in flight are acknowledged but not drawn.
    this.active = false;
    setInterval(() => {
      this.canvas.dataset.fps = String(this.windowFrames);
      this.windowFrames = 0;
    }, 1000);
    // Frames larger than the canvas on screen are scaled down in Rust, before the IPC.
    this.viewport = '';
    new ResizeObserver(() => this.reportViewport()).observe(canvas);
  }

  reportViewport() {
    const box = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const [width, height] = [Math.round(box.width * dpr), Math.round(box.height * dpr)];
    const key = `${width}x${height}`;
    if (width < 16 || height < 16 || key === this.viewport) return;
    this.viewport = key;
    this.invoke('video_viewport', { stream: this.stream, width, height }).catch(() => {});
  }

  async attach() {
    const channel = new this.Channel();
    channel.onmessage = (msg) => this.receive(msg);
    await this.invoke('video_attach', { stream: this.stream, channel });
  }

  receive(msg) {
    const buf = msg instanceof ArrayBuffer ? msg : new Uint8Array(msg).buffer;
    this.pending = buf;
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => this.drawPending());
    }
  }

  drawPending() {
    this.scheduled = false;
    const buf = this.pending;
    this.pending = null;
    if (!buf) return;
    if (!this.active) {
      this.invoke('video_ack', { stream: this.stream }).catch(() => {});
      return;
    }
    const view = new DataView(buf);
    const w = view.getUint32(4, true);
    const h = view.getUint32(8, true);
    const bytes = new Uint8Array(buf, HEADER);
    if (!this.renderer) {
      try {
        this.renderer = new GlRenderer(this.canvas);
        this.canvas.dataset.renderer = 'webgl';
      } catch (e) {
        this.renderer = new CanvasRenderer(this.canvas);
        this.canvas.dataset.renderer = '2d';
      }
    }
    // WebGL scales on the GPU: draw at the size on screen (fewer pixels to shade), never above
    // the video's own size. The 2D fallback draws the frame as it is.
    let [cw, ch] = [w, h];
    if (this.canvas.dataset.renderer === 'webgl') {
      const box = this.canvas.getBoundingClientRect();
      const dpr = window.devicePixelRatio || 1;
      const scale = Math.min(1, (box.width * dpr) / w || 1, (box.height * dpr) / h || 1);
      [cw, ch] = [Math.max(2, Math.round(w * scale)), Math.max(2, Math.round(h * scale))];
    }
    if (this.canvas.width !== cw || this.canvas.height !== ch) {
      this.canvas.width = cw;
      this.canvas.height = ch;
    }
    this.renderer.draw(this.canvas, w, h, bytes);
    this.frames += 1;
    this.windowFrames += 1;
    const d = this.canvas.dataset;
    d.frames = String(this.frames);
    d.width = String(w);
    d.height = String(h);
    d.hash = fingerprint(bytes, w, h);
    this.canvas.classList.add('live');
    this.invoke('video_ack', { stream: this.stream }).catch(() => {});
  }

  clear() {
    this.canvas.classList.remove('live');
  }
}
