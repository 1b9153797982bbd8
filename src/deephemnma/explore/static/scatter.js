// WebGL scatter of up to millions of points, with pan/zoom, lasso, box and path drawing.
// Part of deephemnma (GPL-3.0-or-later); no dependencies.
//
// Data: x, y as Float32Array (one value per point); colors as Float32Array of values in
// [0, 1] (continuous, viridis) or category numbers (categorical), -1 for "no value"; an
// optional Uint8Array mask draws members of the picked group on top, in red.
// Selections come back in data coordinates through the callbacks.
//
// Level of detail: a draw of every point costs time proportional to their number, which is
// slow where WebGL runs on the CPU (SwiftShader: 0.66 s for 1,000,000 points). While the
// user pans or zooms, and until SETTLE_MS after the last such event, frames draw only the
// first K points of a fixed random order of the points (the same order every time, from a
// seeded generator), K adapting to the measured frame time to stay within FRAME_BUDGET_MS;
// then all points are drawn again. Selections always use all points (the lasso count here,
// the members on the server).
"use strict";

(function () {
  const VERTEX = `
precision highp float;
attribute float a_x;
attribute float a_y;
attribute float a_v;
attribute float a_m;
uniform vec2 u_scale;
uniform vec2 u_offset;
uniform float u_size;
uniform float u_alpha;
uniform float u_categorical;
uniform float u_hasMask;
uniform float u_maskPass;
varying vec4 v_color;
vec3 viridis(float t) {
  t = clamp(t, 0.0, 1.0);
  const vec3 c0 = vec3(0.2777273272234177, 0.005407344544966578, 0.3340998053353061);
  const vec3 c1 = vec3(0.1050930431085774, 1.404613529898575, 1.384590162594685);
  const vec3 c2 = vec3(-0.3308618287255563, 0.214847559468213, 0.09509516302823659);
  const vec3 c3 = vec3(-4.634230498983486, -5.799100973351585, -19.33244095627987);
  const vec3 c4 = vec3(6.228269936347081, 14.17993336680509, 56.69055260068105);
  const vec3 c5 = vec3(4.776384997670288, -13.74514537774601, -65.35303263337234);
  const vec3 c6 = vec3(-5.435455855934631, 4.645852612178535, 26.3124352495832);
  return c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * (c5 + t * c6)))));
}
vec3 palette(float i) {
  if (i < 0.5) return vec3(0.90, 0.38, 0.0);
  if (i < 1.5) return vec3(0.12, 0.47, 0.71);
  if (i < 2.5) return vec3(0.17, 0.63, 0.17);
  if (i < 3.5) return vec3(0.58, 0.40, 0.74);
  if (i < 4.5) return vec3(0.55, 0.34, 0.29);
  if (i < 5.5) return vec3(0.89, 0.47, 0.76);
  return vec3(0.5, 0.5, 0.5);
}
void main() {
  gl_Position = vec4(a_x * u_scale.x + u_offset.x, a_y * u_scale.y + u_offset.y, 0.0, 1.0);
  gl_PointSize = u_size;
  vec3 c = a_v < -0.5 ? vec3(0.65) : (u_categorical > 0.5 ? palette(a_v) : viridis(a_v));
  float alpha = u_alpha;
  if (u_hasMask > 0.5) {
    if (a_m > 0.5) {
      c = vec3(0.86, 0.08, 0.08);
      alpha = max(alpha, 0.8);
    } else {
      c = mix(c, vec3(0.85), 0.7);
      if (u_maskPass > 0.5) gl_Position = vec4(2.0, 2.0, 2.0, 1.0);  // second pass: members only
    }
  }
  v_color = vec4(c, alpha);
}`;

  const FRAGMENT = `
precision mediump float;
varying vec4 v_color;
uniform float u_round;
void main() {
  if (u_round > 0.5) {
    vec2 d = gl_PointCoord - vec2(0.5);
    if (dot(d, d) > 0.25) discard;
  }
  gl_FragColor = v_color;
}`;

  const SAMPLE_MAX = 200000;     // points in the shuffled buffers (interactive frames)
  const SAMPLE_START = 50000;    // points in the first interactive frame
  const SAMPLE_MIN = 5000;
  const FRAME_BUDGET_MS = 45;    // frame time aimed at while interacting (~20 frames/s)
  const SETTLE_MS = 150;         // after the last pan/zoom event, draw everything
  const SAMPLE_SEED = 0x2545f491;
  const FRAME_LOG = 600;         // frames kept in Scatter.frameLog

  // The first ``k`` of a random permutation of 0..n-1 (partial Fisher-Yates, mulberry32
  // seeded with a constant): any prefix of it is a uniform random sample, the same each time.
  function randomPrefix(n, k) {
    const index = new Uint32Array(n);
    for (let i = 0; i < n; i++) index[i] = i;
    let a = SAMPLE_SEED;
    const random = () => {
      a = (a + 0x6d2b79f5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(random() * (n - i));
      const swap = index[i]; index[i] = index[j]; index[j] = swap;
    }
    return index.slice(0, k);
  }

  const CATEGORY_CSS = ["#e66100", "#1f78b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#808080"];

  function viridisCss(t) {
    const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(x));
    const f = x - i;
    const c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  function compile(gl, type, source) {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
      throw new Error("shader: " + gl.getShaderInfoLog(shader));
    }
    return shader;
  }

  function pointInPolygon(x, y, poly) {
    let inside = false;
    for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
      const [xi, yi] = poly[i];
      const [xj, yj] = poly[j];
      if ((yi > y) !== (yj > y) && x < xi + ((y - yi) * (xj - xi)) / (yj - yi)) inside = !inside;
    }
    return inside;
  }

  class Scatter {
    constructor(canvas, overlay, callbacks) {
      this.canvas = canvas;
      this.overlay = overlay;
      this.callbacks = callbacks || {};
      this.n = 0;
      this.tool = "pan";
      this.view = { cx: 0, cy: 0, kx: 1, ky: 1 };
      this.polygons = [];      // [{points: [[x, y]], color, label}] in data coordinates
      this.pending = null;     // selection awaiting a name, data coordinates
      this.path = null;        // drawn path, data coordinates
      this.drawing = null;     // {kind, points (pixels)} while the pointer is down
      this.labels = { x: "", y: "" };
      this.categorical = false;
      this.hasMask = false;
      this.frame = 0;
      this.firstDraw = null;
      this.interacting = false;  // pan/zoom in progress (until SETTLE_MS after the last event)
      this.frameBudgetMs = FRAME_BUDGET_MS;
      this.k = SAMPLE_START;     // points of the next interactive frame (adapted)
      this.sample = null;        // {n, index: Uint32Array, fresh: {x, y, v, m}}
      this.frameLog = [];        // [{t, ms, drawMs, points, n, interactive}], the last FRAME_LOG
      this._measures = 0;
      this.gl = canvas.getContext("webgl", {
        alpha: false, antialias: false, preserveDrawingBuffer: true,
      });
      if (this.gl) this._initGl();
      else this.ctx2d = canvas.getContext("2d");
      this._bindEvents();
      new ResizeObserver(() => this._resize()).observe(canvas.parentElement);
      this._resize();
    }

    get renderer() {
      return this.gl ? "webgl" : "canvas2d";
    }

    _initGl() {
      const gl = this.gl;
      const program = gl.createProgram();
      gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
      gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
      gl.bindAttribLocation(program, 0, "a_x");  // attribute 0 always enabled (an array)
      gl.linkProgram(program);
      if (!gl.getProgramParameter(program, gl.LINK_STATUS)) {
        throw new Error("program: " + gl.getProgramInfoLog(program));
      }
      this.program = program;
      this.loc = {};
      for (const name of ["a_x", "a_y", "a_v", "a_m"]) this.loc[name] = gl.getAttribLocation(program, name);
      for (const name of ["u_scale", "u_offset", "u_size", "u_alpha", "u_categorical", "u_hasMask",
        "u_maskPass", "u_round"]) {
        this.loc[name] = gl.getUniformLocation(program, name);
      }
      this.buffers = {};
      for (const name of ["x", "y", "v", "m", "sx", "sy", "sv", "sm"]) this.buffers[name] = gl.createBuffer();
      const range = gl.getParameter(gl.ALIASED_POINT_SIZE_RANGE);
      this.maxPointSize = range ? range[1] : 64;
    }

    _upload(name, array) {
      const gl = this.gl;
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers[name]);
      gl.bufferData(gl.ARRAY_BUFFER, array, gl.STATIC_DRAW);
    }

    // ---- data

    setData(x, y, labels) {
      this.x = x;
      this.y = y;
      this.n = x.length;
      this.labels = labels || this.labels;
      if (this.gl) {
        this._upload("x", x);
        this._upload("y", y);
      }
      this._stale("x", "y");
      this.pending = null;
      this.path = null;
      this.fit();
    }

    setColors(values, categorical) {
      this.values = values;
      this.categorical = !!categorical;
      if (this.gl) this._upload("v", values);
      this._stale("v");
      this.redraw();
    }

    setMask(mask) {
      this.mask = mask;
      this.hasMask = !!mask;
      if (this.gl && mask) this._upload("m", mask);
      this._stale("m");
      this.redraw();
    }

    // ---- the interactive subsample

    _stale(...names) {
      if (this.sample) for (const name of names) this.sample.fresh[name] = false;
    }

    // The shuffled order and, with WebGL, shuffled copies of the point arrays that changed
    // (made when the page is idle after a full draw, or else by the first interactive frame).
    _ensureSample() {
      const n = this.n;
      if (!this.sample || this.sample.n !== n) {
        this.sample = { n, index: randomPrefix(n, Math.min(n, SAMPLE_MAX)), fresh: {} };
      }
      const { index, fresh } = this.sample;
      if (!this.gl) return index;
      const sources = { x: this.x, y: this.y, v: this.values, m: this.hasMask ? this.mask : null };
      for (const [name, source] of Object.entries(sources)) {
        if (fresh[name] || !source) continue;
        const copy = new source.constructor(index.length);
        for (let j = 0; j < index.length; j++) copy[j] = source[index[j]];
        this._upload("s" + name, copy);
        fresh[name] = true;
      }
      return index;
    }

    // Make the shuffled copies when the page is idle, not on the first interactive frame.
    _prepareSample() {
      const stale = !this.sample || this.sample.n !== this.n ||
        ["x", "y", "v"].some((name) => !this.sample.fresh[name]) || (this.hasMask && !this.sample.fresh.m);
      if (!stale || this._preparing || this.n <= SAMPLE_MIN) return;
      this._preparing = true;
      const idle = window.requestIdleCallback || ((f) => setTimeout(f, 200));
      idle(() => {
        this._preparing = false;
        if (this.n && this.values) this._ensureSample();
      }, { timeout: 2000 });
    }

    // Points the next interactive frame draws: n, or fewer from the shuffled order.
    interactiveCount() {
      return Math.min(this.n, this.k);
    }

    // Pan/zoom moved the view: draw a subsample now, everything SETTLE_MS after the last event.
    _interact() {
      this.interacting = true;
      this.lastInteraction = performance.now();
      clearTimeout(this._settle);
      this._settle = setTimeout(() => {
        this.interacting = false;
        this.redraw();
      }, SETTLE_MS);
      this.redraw();
    }

    // K for the next interactive frame from this one's time: the count that fits the budget
    // at this frame's cost per point (its fixed cost makes this converge to the right K).
    _adapt(count, ms) {
      const ideal = (count * this.frameBudgetMs) / Math.max(ms, 0.5);
      if (ideal >= this.n) {
        this.k = this.n;
        return;
      }
      const step = Math.min(2, Math.max(0.5, ideal / count));
      this.k = Math.round(Math.min(SAMPLE_MAX, this.n, Math.max(SAMPLE_MIN, count * step)));
    }

    _logFrame(entry, start, end) {
      this.frameLog.push(entry);
      if (this.frameLog.length > FRAME_LOG) this.frameLog.splice(0, this.frameLog.length - FRAME_LOG);
      if (entry.ms == null || !performance.measure) return;
      if (++this._measures > 1000) {
        performance.clearMeasures("explore-frame");
        this._measures = 1;
      }
      performance.measure("explore-frame", {
        start, end, detail: { points: entry.points, n: entry.n, interactive: entry.interactive },
      });
    }

    // Summary of the frames drawn while interacting: count, median frame time and points.
    frameStats() {
      const median = (values) => {
        if (!values.length) return null;
        const sorted = [...values].sort((a, b) => a - b);
        return sorted[Math.floor((sorted.length - 1) / 2)];
      };
      const interactive = this.frameLog.filter((f) => f.interactive);
      const last = this.frameLog[this.frameLog.length - 1] || null;
      return {
        interactiveFrames: interactive.length,
        medianMs: median(interactive.map((f) => f.ms)),
        medianPoints: median(interactive.map((f) => f.points)),
        fullFrames: this.frameLog.length - interactive.length,
        last,
      };
    }

    setPolygons(polygons) {
      this.polygons = polygons;
      this.redrawOverlay();
    }

    setPending(polygon) {
      this.pending = polygon;
      this.redrawOverlay();
    }

    setPath(points) {
      this.path = points;
      this.redrawOverlay();
    }

    setTool(tool) {
      this.tool = tool;
      this.overlay.classList.toggle("pan", tool === "pan");
    }

    bounds() {
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (let i = 0; i < this.n; i++) {
        const x = this.x[i], y = this.y[i];
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
      if (!(x1 > x0)) { x0 -= 1; x1 += 1; }
      if (!(y1 > y0)) { y0 -= 1; y1 += 1; }
      return { x0, x1, y0, y1 };
    }

    fit() {
      if (!this.n) return;
      const b = this.bounds();
      const w = this.width, h = this.height;
      const pad = 40 * this.dpr;
      this.view = {
        cx: (b.x0 + b.x1) / 2,
        cy: (b.y0 + b.y1) / 2,
        kx: Math.max(1e-12, (w - 2 * pad) / (b.x1 - b.x0)),
        ky: Math.max(1e-12, (h - 2 * pad) / (b.y1 - b.y0)),
      };
      this.redraw();
    }

    // Points of the current data inside ``polygon`` (data coordinates): their count.
    countInside(polygon) {
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (const [x, y] of polygon) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
      let count = 0;
      for (let i = 0; i < this.n; i++) {
        const x = this.x[i], y = this.y[i];
        if (x < x0 || x > x1 || y < y0 || y > y1) continue;
        if (pointInPolygon(x, y, polygon)) count++;
      }
      return count;
    }

    // ---- coordinates (canvas pixels, device resolution)

    toPixel(x, y) {
      const v = this.view;
      return [this.width / 2 + (x - v.cx) * v.kx, this.height / 2 - (y - v.cy) * v.ky];
    }

    toData(px, py) {
      const v = this.view;
      return [v.cx + (px - this.width / 2) / v.kx, v.cy - (py - this.height / 2) / v.ky];
    }

    _resize() {
      const rect = this.canvas.parentElement.getBoundingClientRect();
      this.dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, Math.round(rect.width * this.dpr));
      const h = Math.max(1, Math.round(rect.height * this.dpr));
      const first = !this.width;
      const old = { w: this.width, h: this.height };
      for (const c of [this.canvas, this.overlay]) { c.width = w; c.height = h; }
      this.width = w;
      this.height = h;
      if (first) this.fit();
      else if (old.w !== w || old.h !== h) this.redraw();
    }

    // ---- drawing

    redraw() {
      if (this._pending) return;
      this._pending = requestAnimationFrame(() => {
        this._pending = null;
        this.draw();
      });
    }

    redrawOverlay() {
      if (this._pendingOverlay) return;
      this._pendingOverlay = requestAnimationFrame(() => {
        this._pendingOverlay = null;
        this.drawOverlay();
      });
    }

    pointSize() {
      const base = this.n > 300000 ? 1.5 : this.n > 50000 ? 2.5 : 4;
      return Math.min(this.maxPointSize || 64, base * this.dpr);
    }

    // One frame: all points, or while interacting the first interactiveCount() of the shuffled
    // order. An interactive frame is timed up to a pixel read back (to adapt that count): ms
    // from the wait for the previous frame (compositing it shares the GPU thread with this
    // draw on SwiftShader), drawMs this draw alone.
    draw() {
      const interactive = this.interacting && this.n > 0 && !!this.values;
      const count = interactive ? this.interactiveCount() : this.n;
      const index = count < this.n ? this._ensureSample() : null;
      const before = performance.now();
      if (interactive && this.gl) this.sync();
      const start = performance.now();
      if (this.gl) this._drawGl(index ? count : 0);
      else this._draw2d(index, count);
      if (interactive && this.gl) this.sync();
      const end = performance.now();
      this.drawOverlay();
      if (interactive) {
        const entry = { t: before, ms: end - before, drawMs: end - start, points: count, n: this.n };
        this._logFrame({ ...entry, interactive: true }, before, end);
        this._adapt(count, end - before);
      } else if (this.n && this.values) {
        const first = !this.firstDraw;
        if (first) {
          if (this.gl) this.sync();
          this.firstDraw = performance.now();
          performance.mark("explore-first-render");
        }
        // Without a read back, a full frame's time is only that of issuing it (ms: null).
        const ms = first ? this.firstDraw - start : null;
        this._logFrame({ t: start, ms, drawMs: ms, points: this.n, n: this.n, interactive: false },
          start, first ? this.firstDraw : end);
        if (first && this.callbacks.onFirstDraw) this.callbacks.onFirstDraw(this.firstDraw);
        this._prepareSample();
      }
      this.frame++;
    }

    // Wait until the GPU has really drawn (reading a pixel back forces it; finish() may not).
    sync() {
      const gl = this.gl;
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
    }

    // All points from the buffers in their order, or the first ``sampled`` shuffled ones.
    _drawGl(sampled) {
      const gl = this.gl;
      gl.viewport(0, 0, this.width, this.height);
      gl.clearColor(1, 1, 1, 1);
      gl.clear(gl.COLOR_BUFFER_BIT);
      if (!this.n || !this.values) return;
      gl.useProgram(this.program);
      gl.enable(gl.BLEND);
      gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
      const v = this.view;
      const sx = (2 * v.kx) / this.width, sy = (2 * v.ky) / this.height;
      gl.uniform2f(this.loc.u_scale, sx, sy);
      gl.uniform2f(this.loc.u_offset, -v.cx * sx, -v.cy * sy);
      const size = this.pointSize();
      gl.uniform1f(this.loc.u_size, size);
      gl.uniform1f(this.loc.u_round, size >= 3 ? 1 : 0);
      const count = sampled || this.n;
      // Fewer points: more opaque, so that dense regions keep about their look.
      const alpha = this.n > 300000 ? 0.45 : this.n > 50000 ? 0.6 : 0.85;
      gl.uniform1f(this.loc.u_alpha, Math.min(0.85, alpha * Math.sqrt(this.n / count)));
      gl.uniform1f(this.loc.u_categorical, this.categorical ? 1 : 0);
      gl.uniform1f(this.loc.u_hasMask, this.hasMask ? 1 : 0);
      const prefix = sampled ? "s" : "";
      for (const name of ["x", "y", "v"]) {
        const loc = this.loc["a_" + name];
        gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers[prefix + name]);
        gl.enableVertexAttribArray(loc);
        gl.vertexAttribPointer(loc, 1, gl.FLOAT, false, 0, 0);
      }
      const m = this.loc.a_m;
      if (this.hasMask) {
        gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers[prefix + "m"]);
        gl.enableVertexAttribArray(m);
        gl.vertexAttribPointer(m, 1, gl.UNSIGNED_BYTE, false, 0, 0);
      } else {
        gl.disableVertexAttribArray(m);
        gl.vertexAttrib1f(m, 0);
      }
      gl.uniform1f(this.loc.u_maskPass, 0);
      gl.drawArrays(gl.POINTS, 0, count);
      if (this.hasMask) {  // members again, on top of everything
        gl.uniform1f(this.loc.u_maskPass, 1);
        gl.drawArrays(gl.POINTS, 0, count);
      }
    }

    // Fallback without WebGL: one pixel block per point in an ImageData (all points, or the
    // first ``count`` of ``index``).
    _draw2d(index, count) {
      const ctx = this.ctx2d, w = this.width, h = this.height;
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, w, h);
      if (!this.n || !this.values) return;
      const image = ctx.getImageData(0, 0, w, h);
      const data = image.data;
      const rgb = (value) => {
        if (value < -0.5) return [166, 166, 166];
        const css = this.categorical ? CATEGORY_CSS[Math.min(6, value | 0)] : viridisCss(value);
        if (css[0] === "#") return [1, 3, 5].map((k) => parseInt(css.slice(k, k + 2), 16));
        return css.slice(4, -1).split(",").map(Number);
      };
      const cache = new Map();
      for (let pass = 0; pass < (this.hasMask ? 2 : 1); pass++) {
        for (let j = 0; j < count; j++) {
          const i = index ? index[j] : j;
          const member = this.hasMask && this.mask[i];
          if (pass === 1 && !member) continue;
          const [px, py] = this.toPixel(this.x[i], this.y[i]);
          const ix = px | 0, iy = py | 0;
          if (ix < 0 || iy < 0 || ix >= w || iy >= h) continue;
          let c;
          if (member) c = [220, 20, 20];
          else {
            const key = this.categorical ? this.values[i] : Math.round(this.values[i] * 64);
            c = cache.get(key);
            if (!c) { c = rgb(this.categorical ? this.values[i] : key / 64); cache.set(key, c); }
            if (this.hasMask) c = c.map((v) => Math.round(0.3 * v + 0.7 * 217));
          }
          const o = (iy * w + ix) * 4;
          data[o] = c[0]; data[o + 1] = c[1]; data[o + 2] = c[2]; data[o + 3] = 255;
        }
      }
      ctx.putImageData(image, 0, 0);
    }

    _polyline(ctx, points, close) {
      ctx.beginPath();
      points.forEach(([x, y], i) => {
        const [px, py] = this.toPixel(x, y);
        if (i === 0) ctx.moveTo(px, py);
        else ctx.lineTo(px, py);
      });
      if (close) ctx.closePath();
    }

    drawOverlay() {
      const ctx = this.overlay.getContext("2d");
      const d = this.dpr;
      ctx.clearRect(0, 0, this.width, this.height);
      ctx.lineJoin = "round";
      ctx.font = `${12 * d}px system-ui, sans-serif`;
      for (const poly of this.polygons) {
        ctx.strokeStyle = poly.color;
        ctx.lineWidth = (poly.selected ? 3 : 1.5) * d;
        this._polyline(ctx, poly.points, true);
        ctx.stroke();
        const [px, py] = this.toPixel(poly.points[0][0], poly.points[0][1]);
        ctx.fillStyle = poly.color;
        ctx.fillText(poly.label, px + 4 * d, py - 4 * d);
      }
      if (this.pending) {
        ctx.setLineDash([6 * d, 4 * d]);
        ctx.strokeStyle = "#000";
        ctx.lineWidth = 2 * d;
        this._polyline(ctx, this.pending, true);
        ctx.stroke();
        ctx.setLineDash([]);
      }
      if (this.path) {
        ctx.strokeStyle = "#d81b60";
        ctx.lineWidth = 2.5 * d;
        this._polyline(ctx, this.path, false);
        ctx.stroke();
        const [ex, ey] = this.toPixel(...this.path[this.path.length - 1]);
        ctx.fillStyle = "#d81b60";
        ctx.beginPath();
        ctx.arc(ex, ey, 4 * d, 0, 2 * Math.PI);
        ctx.fill();
      }
      if (this.drawing) {
        const pts = this.drawing.points;
        ctx.strokeStyle = "#000";
        ctx.lineWidth = 1.5 * d;
        ctx.beginPath();
        if (this.drawing.kind === "box" && pts.length === 2) {
          const [a, b] = pts;
          ctx.rect(a[0], a[1], b[0] - a[0], b[1] - a[1]);
        } else {
          pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
        }
        ctx.stroke();
      }
      this._drawAxes(ctx);
    }

    _drawAxes(ctx) {
      const d = this.dpr, w = this.width, h = this.height;
      ctx.fillStyle = "#333";
      ctx.strokeStyle = "#999";
      ctx.lineWidth = 1;
      const ticks = (lo, hi) => {
        const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / 4 || 1)));
        const k = (hi - lo) / step > 20 ? 5 : (hi - lo) / step > 8 ? 2 : 1;
        const out = [];
        for (let t = Math.ceil(lo / (k * step)) * k * step; t <= hi; t += k * step) out.push(t);
        return out;
      };
      const [x0, y1] = this.toData(0, 0);
      const [x1, y0] = this.toData(w, h);
      ctx.textAlign = "center";
      for (const t of ticks(x0, x1)) {
        const [px] = this.toPixel(t, 0);
        if (px < 40 * d) continue;  // leave the corner to the y axis
        ctx.beginPath(); ctx.moveTo(px, h); ctx.lineTo(px, h - 5 * d); ctx.stroke();
        ctx.fillText(+t.toPrecision(6) + "", px, h - 8 * d);
      }
      ctx.textAlign = "left";
      for (const t of ticks(y0, y1)) {
        const [, py] = this.toPixel(0, t);
        if (py > h - 30 * d || py < 30 * d) continue;  // leave room for the labels
        ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(5 * d, py); ctx.stroke();
        ctx.fillText(+t.toPrecision(6) + "", 8 * d, py + 4 * d);
      }
      ctx.font = `bold ${13 * d}px system-ui, sans-serif`;
      ctx.textAlign = "right";
      ctx.fillText(this.labels.x, w - 8 * d, h - 24 * d);
      ctx.textAlign = "left";
      ctx.fillText(this.labels.y, 48 * d, 18 * d);
    }

    // ---- interaction

    _eventPixel(event) {
      const rect = this.overlay.getBoundingClientRect();
      return [(event.clientX - rect.left) * this.dpr, (event.clientY - rect.top) * this.dpr];
    }

    _bindEvents() {
      const el = this.overlay;
      el.addEventListener("pointerdown", (event) => {
        if (event.button !== 0 || !this.n) return;
        el.setPointerCapture(event.pointerId);
        const p = this._eventPixel(event);
        this.drawing = { kind: this.tool, points: [p], start: p, view: { ...this.view } };
        event.preventDefault();
      });
      el.addEventListener("pointermove", (event) => {
        if (!this.drawing) return;
        const p = this._eventPixel(event);
        const dr = this.drawing;
        if (dr.kind === "pan") {
          this.view.cx = dr.view.cx - (p[0] - dr.start[0]) / this.view.kx;
          this.view.cy = dr.view.cy + (p[1] - dr.start[1]) / this.view.ky;
          this._interact();
          return;
        }
        if (dr.kind === "box") dr.points = [dr.start, p];
        else {
          const last = dr.points[dr.points.length - 1];
          if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= 3 * this.dpr) dr.points.push(p);
        }
        this.redrawOverlay();
      });
      const finish = (event) => {
        const dr = this.drawing;
        if (!dr) return;
        this.drawing = null;
        if (dr.kind !== "pan") {
          const p = this._eventPixel(event);
          if (dr.kind === "box") dr.points = [dr.start, p];
          else dr.points.push(p);
        }
        this._finish(dr);
        this.redrawOverlay();
      };
      el.addEventListener("pointerup", finish);
      el.addEventListener("pointercancel", () => { this.drawing = null; this.redrawOverlay(); });
      el.addEventListener("wheel", (event) => {
        event.preventDefault();
        const p = this._eventPixel(event);
        const [x, y] = this.toData(p[0], p[1]);
        const f = Math.exp(-event.deltaY * 0.0015);
        this.view.kx *= f;
        this.view.ky *= f;
        this.view.cx = x - (p[0] - this.width / 2) / this.view.kx;
        this.view.cy = y + (p[1] - this.height / 2) / this.view.ky;
        this._interact();
      }, { passive: false });
    }

    _finish(dr) {
      if (dr.kind === "box") {
        const [a, b] = dr.points;
        if (Math.abs(b[0] - a[0]) < 3 || Math.abs(b[1] - a[1]) < 3) return;
        const poly = [a, [b[0], a[1]], b, [a[0], b[1]]].map(([x, y]) => this.toData(x, y));
        if (this.callbacks.onSelect) this.callbacks.onSelect(poly);
      } else if (dr.kind === "lasso") {
        if (dr.points.length < 3) return;
        const poly = simplify(dr.points, 1.5 * this.dpr, 2000).map(([x, y]) => this.toData(x, y));
        if (poly.length >= 3 && this.callbacks.onSelect) this.callbacks.onSelect(poly);
      } else if (dr.kind === "path") {
        if (dr.points.length < 2) return;
        const path = simplify(dr.points, 2 * this.dpr, 500).map(([x, y]) => this.toData(x, y));
        if (path.length >= 2 && this.callbacks.onPath) this.callbacks.onPath(path);
      }
    }
  }

  // Drop vertices closer than ``tolerance`` pixels to the previous kept one; cap the count.
  function simplify(points, tolerance, maxCount) {
    let kept = [points[0]];
    for (const p of points.slice(1)) {
      const last = kept[kept.length - 1];
      if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= tolerance) kept.push(p);
    }
    if (kept.length > maxCount) {
      const step = kept.length / maxCount;
      kept = Array.from({ length: maxCount }, (_, i) => kept[Math.floor(i * step)]);
    }
    return kept;
  }

  window.Scatter = Scatter;
  window.Scatter.viridisCss = viridisCss;
  window.Scatter.categoryCss = CATEGORY_CSS;
})();
