// The explorer page: talks to the deephemnma explore API, drives the scatter and the viewer.
// Part of deephemnma (GPL-3.0-or-later).
"use strict";

(function () {
  const TOKEN = document.querySelector('meta[name="explore-token"]').content;
  const $ = (id) => document.getElementById(id);
  const GROUP_COLORS = ["#e53935", "#8e24aa", "#3949ab", "#00897b", "#f4511e", "#6d4c41", "#546e7a", "#c0ca33"];
  const state = {
    info: null,
    axes: [0, 1],
    color: "density",
    groups: [],
    selected: null,
    pending: null,
    cache: new Map(),
    poll: null,
    viewer: undefined,
    deleteArmed: false,
  };

  // ---- API

  async function api(path, options = {}) {
    const init = { method: options.method || "GET", headers: {} };
    if (TOKEN) init.headers["X-Explore-Token"] = TOKEN;
    if (init.method !== "GET") init.headers["X-Requested-By"] = "deephemnma-explore";
    if (options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    const response = await fetch(path, init);
    const type = response.headers.get("content-type") || "";
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      if (type.includes("json")) {
        try { message = (await response.json()).error || message; } catch (e) { /* keep */ }
      }
      throw new Error(message);
    }
    if (options.as === "buffer") return response.arrayBuffer();
    if (options.as === "text") return response.text();
    return type.includes("json") ? response.json() : response.text();
  }

  const fileUrl = (rel) =>
    "/api/file?path=" + encodeURIComponent(rel) + (TOKEN ? "&token=" + encodeURIComponent(TOKEN) : "");
  const groupUrl = (name, suffix = "") => "/api/groups/" + encodeURIComponent(name) + suffix;

  async function cached(key, load) {
    if (!state.cache.has(key)) state.cache.set(key, load());
    return state.cache.get(key);
  }

  const column = (axis) =>
    cached("pc" + axis, async () => new Float32Array(await api(`/api/pc/${axis}`, { as: "buffer" })));

  function colorValues(id) {
    const axes = state.axes.join(",");
    const key = id === "density" ? `color:${id}:${axes}` : `color:${id}`;
    const url = `/api/color?name=${encodeURIComponent(id)}&axes=${axes}`;
    return cached(key, async () => new Float32Array(await api(url, { as: "buffer" })));
  }

  // ---- status

  function status(text, isError) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", !!isError);
  }

  // ---- the scatter

  const scatter = new window.Scatter($("scatter"), $("overlay"), {
    onSelect: startSelection,
    onPath: animatePath,
    onFirstDraw: (ms) => {
      window.exploreFirstRenderMs = ms;
      document.body.dataset.firstRenderMs = ms.toFixed(0);
      status(`${state.info.n_points.toLocaleString()} points · first render ${ms.toFixed(0)} ms (${scatter.renderer})`);
    },
  });

  window.explore = { scatter, state };  // for tests and the console

  function axisLabel(i) {
    const ratio = state.info.explained_variance_ratio[i];
    return `PC${i + 1}` + (ratio == null ? "" : ` (${(100 * ratio).toFixed(1)} %)`);
  }

  function normalize(raw, color) {
    const out = new Float32Array(raw.length);
    if (color.kind === "categorical") {
      for (let i = 0; i < raw.length; i++) out[i] = Number.isFinite(raw[i]) ? raw[i] : -1;
      return { values: out };
    }
    let lo = 0, hi = 1;
    if (color.id !== "density") {  // 1st to 99th percentile of a sample
      const sample = [];
      const step = Math.max(1, Math.floor(raw.length / 20000));
      for (let i = 0; i < raw.length; i += step) if (Number.isFinite(raw[i])) sample.push(raw[i]);
      sample.sort((a, b) => a - b);
      if (sample.length) {
        lo = sample[Math.floor(0.01 * (sample.length - 1))];
        hi = sample[Math.ceil(0.99 * (sample.length - 1))];
      }
      if (!(hi > lo)) hi = lo + 1;
    }
    const scale = 1 / (hi - lo);
    for (let i = 0; i < raw.length; i++) {
      const v = raw[i];
      out[i] = Number.isFinite(v) ? Math.min(1, Math.max(0, (v - lo) * scale)) : -1;
    }
    return { values: out, lo, hi };
  }

  function showLegend(color, range) {
    const el = $("legend");
    el.textContent = "";
    const title = document.createElement("strong");
    title.textContent = color.label;
    el.append(title);
    if (color.kind === "categorical") {
      color.labels.forEach((label, k) => {
        const item = document.createElement("span");
        const dot = document.createElement("span");
        dot.className = "swatch";
        dot.style.background = window.Scatter.categoryCss[Math.min(k, 6)];
        item.append(dot, label);
        el.append(item);
      });
      return;
    }
    const stops = Array.from({ length: 11 }, (_, k) => window.Scatter.viridisCss(k / 10)).join(",");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.background = `linear-gradient(to right, ${stops})`;
    const lo = document.createElement("span");
    const hi = document.createElement("span");
    lo.textContent = color.id === "density" ? "sparse" : (+range.lo.toPrecision(4)).toString();
    hi.textContent = color.id === "density" ? "dense (log)" : (+range.hi.toPrecision(4)).toString();
    el.append(lo, bar, hi);
  }

  async function loadColor() {
    const color = state.info.colors.find((c) => c.id === state.color) || state.info.colors[0];
    const normalized = normalize(await colorValues(color.id), color);
    scatter.setColors(normalized.values, color.kind === "categorical");
    showLegend(color, normalized);
  }

  async function loadAxes() {
    const [i, j] = state.axes;
    const [x, y] = await Promise.all([column(i), column(j)]);
    scatter.setData(x, y, { x: axisLabel(i), y: axisLabel(j) });
    await loadColor();
    showPolygons();
  }

  // ---- groups

  const groupColor = (name) => {
    const k = state.groups.findIndex((g) => g.name === name);
    return GROUP_COLORS[(k < 0 ? 0 : k) % GROUP_COLORS.length];
  };

  function showPolygons() {
    const [a, b] = state.axes;
    const polygons = [];
    for (const g of state.groups) {
      if (g.kind !== "polygon") continue;
      let points = null;
      if (g.axes[0] === a && g.axes[1] === b) points = g.polygon;
      else if (g.axes[0] === b && g.axes[1] === a) points = g.polygon.map(([x, y]) => [y, x]);
      if (points) {
        polygons.push({ points, color: groupColor(g.name), label: g.name, selected: g.name === state.selected });
      }
    }
    scatter.setPolygons(polygons);
  }

  async function loadGroups() {
    const { groups } = await api("/api/groups");
    state.groups = groups;
    const ul = $("groups");
    ul.textContent = "";
    for (const g of groups) {
      const li = document.createElement("li");
      li.dataset.name = g.name;
      li.classList.toggle("selected", g.name === state.selected);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = groupColor(g.name);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = g.name;
      li.append(swatch, name);
      if (g.job && g.job.state !== "none") {
        const badge = document.createElement("span");
        badge.className = "state " + g.job.state;
        badge.textContent = g.job.state;
        li.append(badge);
      }
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = g.count == null ? "?" : g.count.toLocaleString();
      if (g.error) li.title = g.error;
      li.append(count);
      li.addEventListener("click", () => selectGroup(g.name));
      ul.append(li);
    }
    $("groups-hint").hidden = groups.length > 0;
    if (state.selected && !groups.some((g) => g.name === state.selected)) deselect();
    showPolygons();
    return groups;
  }

  function deselect() {
    state.selected = null;
    $("detail").hidden = true;
    scatter.setMask(null);
    clearTimeout(state.poll);
  }

  async function selectGroup(name) {
    state.selected = name;
    state.deleteArmed = false;
    $("delete").textContent = "delete";
    $("delete").classList.remove("danger");
    for (const li of $("groups").children) li.classList.toggle("selected", li.dataset.name === name);
    showPolygons();
    updateReplaceButton();
    try {
      const record = await api(groupUrl(name));
      if (state.selected !== name) return;
      if (record.error) throw new Error(record.error);
      $("detail").hidden = false;
      $("detail-name").textContent = record.name;
      $("detail-count").textContent = record.count.toLocaleString();
      $("detail-source").textContent = record.kind === "polygon"
        ? `${record.source}, polygon on PC${record.axes[0] + 1}/PC${record.axes[1] + 1}`
        : `${record.source}, explicit indices`;
      $("rename-input").value = record.name;
      $("export-status").textContent = "";
      const body = $("centroid").querySelector("tbody");
      body.textContent = "";
      record.centroid.mode_numbers.forEach((mode, k) => {
        const tr = document.createElement("tr");
        const value = record.centroid.amplitudes[k];
        for (const text of [String(mode), value == null ? "–" : value.toFixed(2)]) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.append(td);
        }
        body.append(tr);
      });
      showJob(name, record.job);
      if (record.job.state === "running") pollJob(name);
      const mask = new Uint8Array(await api(groupUrl(name, "/mask"), { as: "buffer" }));
      if (state.selected === name) scatter.setMask(mask);
      if (state.info.has_modes && record.count > 0) {
        const pdb = await api(groupUrl(name, "/model.pdb"), { as: "text" });
        if (state.selected === name) showModel(pdb, `centroid of ${name}`, false);
      }
    } catch (error) {
      status(`group ${name}: ${error.message}`, true);
    }
  }

  // ---- selection → group

  function nextName() {
    const names = new Set(state.groups.map((g) => g.name));
    for (let k = 1; ; k++) if (!names.has(`group ${k}`)) return `group ${k}`;
  }

  function updateReplaceButton() {
    const button = $("replace-selection");
    button.hidden = !state.selected;
    $("replace-target").textContent = state.selected || "";
  }

  function startSelection(polygon) {
    state.pending = polygon;
    scatter.setPending(polygon);
    $("selection").hidden = false;
    $("selection-error").textContent = "";
    $("selection-count").textContent = scatter.countInside(polygon).toLocaleString();
    $("selection-name").value = nextName();
    updateReplaceButton();
    $("selection-name").focus();
    $("selection-name").select();
  }

  function endSelection() {
    state.pending = null;
    scatter.setPending(null);
    $("selection").hidden = true;
  }

  async function saveSelection(replace) {
    if (!state.pending) return;
    const polygon = state.pending;
    try {
      let name;
      if (replace) {
        name = state.selected;
        await api(groupUrl(name), { method: "PUT", body: { polygon, axes: state.axes } });
      } else {
        name = $("selection-name").value.trim();
        await api("/api/groups", { method: "POST", body: { name, polygon, axes: state.axes } });
      }
      endSelection();
      await loadGroups();
      await selectGroup(name);
    } catch (error) {
      $("selection-error").textContent = error.message;
    }
  }

  // ---- group actions

  async function renameGroup() {
    const old = state.selected;
    const name = $("rename-input").value.trim();
    if (!old || !name || name === old) return;
    try {
      await api(groupUrl(old), { method: "PUT", body: { name } });
      state.selected = name;
      await loadGroups();
      await selectGroup(name);
    } catch (error) {
      status(`rename: ${error.message}`, true);
    }
  }

  async function deleteGroup() {
    const button = $("delete");
    if (!state.deleteArmed) {
      state.deleteArmed = true;
      button.textContent = "really delete?";
      button.classList.add("danger");
      setTimeout(() => {
        state.deleteArmed = false;
        button.textContent = "delete";
        button.classList.remove("danger");
      }, 4000);
      return;
    }
    const name = state.selected;
    try {
      await api(groupUrl(name), { method: "DELETE" });
      deselect();
      await loadGroups();
    } catch (error) {
      status(`delete: ${error.message}`, true);
    }
  }

  async function exportGroup() {
    const name = state.selected;
    $("export-status").textContent = "exporting…";
    try {
      const result = await api(groupUrl(name, "/export"), { method: "POST" });
      $("export-status").textContent = `wrote ${result.path} (${result.n_particles.toLocaleString()} particles)`;
    } catch (error) {
      $("export-status").textContent = `export failed: ${error.message}`;
    }
  }

  async function startReconstruction() {
    const name = state.selected;
    const button = $("reconstruct");
    button.disabled = true;  // the server also refuses a second job while one runs
    try {
      const job = await api(groupUrl(name, "/reconstruct"), { method: "POST" });
      showJob(name, job);
      pollJob(name);
      loadGroups();
    } catch (error) {
      $("job-status").textContent = `reconstruction: ${error.message}`;
      button.disabled = false;
    }
  }

  function pollJob(name) {
    clearTimeout(state.poll);
    state.poll = setTimeout(async () => {
      if (state.selected !== name) return;
      try {
        const job = await api(groupUrl(name, "/reconstruct"));
        if (state.selected !== name) return;
        showJob(name, job);
        if (job.state === "running") pollJob(name);
        else loadGroups();
      } catch (error) {
        $("job-status").textContent = `reconstruction: ${error.message}`;
      }
    }, 1000);
  }

  function showJob(name, job) {
    const button = $("reconstruct");
    const text = $("job-status");
    const log = $("job-log");
    button.disabled = job.state === "running";
    button.textContent = job.state === "done" ? "reconstruct again" : "reconstruct";
    log.hidden = true;
    text.dataset.state = job.state;
    if (job.state === "running") {
      const pct = job.progress == null ? "" : ` · ${job.progress.toFixed(0)} %`;
      text.textContent = `reconstruction running · ${job.elapsed_s.toFixed(0)} s${pct} · ${job.message || "starting"}`;
    } else if (job.state === "done") {
      text.textContent = "reconstruction done" + (job.elapsed_s != null ? ` in ${job.elapsed_s.toFixed(0)} s` : "");
    } else if (job.state === "failed") {
      text.textContent = `reconstruction failed (exit ${job.returncode}) after ${job.elapsed_s.toFixed(0)} s`;
      log.hidden = false;
      log.textContent = (job.log_tail || []).join("\n");
    } else {
      text.textContent = "";
    }
    showResult(job.state === "running" ? null : job.result);
  }

  function showResult(result) {
    const box = $("result");
    if (!result) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    const s = result.summary || {};
    const parts = [];
    if (s.n_particles != null) parts.push(`${s.n_particles.toLocaleString()} particles`);
    if (s.resolution_fsc0143_A != null) parts.push(`FSC 0.143: ${s.resolution_fsc0143_A.toFixed(2)} Å`);
    if (s.resolution_fsc05_A != null) parts.push(`FSC 0.5: ${s.resolution_fsc05_A.toFixed(2)} Å`);
    parts.push(`in ${result.folder}/`);
    $("result-summary").textContent = parts.join(" · ");
    const slices = $("result-slices");
    if (result.files["slices.png"]) {
      slices.hidden = false;
      slices.src = fileUrl(result.files["slices.png"]) + "&t=" + Date.now();
    } else slices.hidden = true;
    const fsc = $("result-fsc");
    fsc.textContent = "";
    if (result.fsc && result.fsc.fsc.length > 1) fsc.append(fscPlot(result.fsc));
    else if (result.files["fsc.png"]) {
      const img = document.createElement("img");
      img.src = fileUrl(result.files["fsc.png"]) + "&t=" + Date.now();
      img.alt = "FSC curve";
      fsc.append(img);
    }
  }

  // FSC against spatial frequency (1/Å), with the 0.143 and 0.5 thresholds.
  function fscPlot(data) {
    const ns = "http://www.w3.org/2000/svg";
    const w = 360, h = 200, m = { l: 36, r: 10, t: 10, b: 30 };
    let xs = data.resolution.map(Number);
    const inAngstrom = xs.filter((v) => v > 1).length > xs.length / 2;
    if (inAngstrom) xs = xs.map((v) => (v > 0 ? 1 / v : 0));
    const points = xs.map((x, i) => [x, data.fsc[i]]).filter(([x, y]) => Number.isFinite(x) && y != null);
    const xmax = Math.max(...points.map((p) => p[0])) || 1;
    const X = (x) => m.l + (x / xmax) * (w - m.l - m.r);
    const Y = (y) => m.t + (1 - (Math.max(-0.2, Math.min(1, y)) + 0.2) / 1.2) * (h - m.t - m.b);
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    const add = (tag, attrs, text) => {
      const el = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
      if (text) el.textContent = text;
      svg.append(el);
    };
    add("rect", { x: m.l, y: m.t, width: w - m.l - m.r, height: h - m.t - m.b, fill: "none", stroke: "#999" });
    for (const [t, color] of [[0.143, "#e53935"], [0.5, "#fb8c00"]]) {
      add("line", { x1: m.l, x2: w - m.r, y1: Y(t), y2: Y(t), stroke: color, "stroke-dasharray": "4 3" });
      add("text", { x: w - m.r - 2, y: Y(t) - 2, "font-size": 10, "text-anchor": "end", fill: color }, String(t));
    }
    add("polyline", {
      points: points.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(" "),
      fill: "none", stroke: "#1e88e5", "stroke-width": 2,
    });
    for (const y of [0, 0.5, 1]) add("text", { x: m.l - 4, y: Y(y) + 3, "font-size": 10, "text-anchor": "end" }, String(y));
    add("text", { x: m.l, y: h - 8, "font-size": 10 }, "0");
    add("text", { x: w - m.r, y: h - 8, "font-size": 10, "text-anchor": "end" }, xmax.toPrecision(3));
    add("text", { x: (m.l + w) / 2, y: h - 4, "font-size": 11, "text-anchor": "middle" },
      inAngstrom ? "FSC vs spatial frequency (1/Å)" : `FSC vs ${data.resolution_column}`);
    return svg;
  }

  // ---- 3D viewer

  function viewer() {
    if (state.viewer === undefined) {
      try {
        state.viewer = window.$3Dmol.createViewer($("viewer"), { backgroundColor: "white" });
      } catch (error) {
        state.viewer = null;
        $("model-hint").textContent = `3D viewer unavailable: ${error.message}`;
      }
    }
    return state.viewer;
  }

  function showModel(pdb, title, animate) {
    $("model-title").textContent = title;
    const v = viewer();
    if (!v) return;
    v.stopAnimate();
    v.clear();
    if (animate) v.addModelsAsFrames(pdb, "pdb");
    else v.addModel(pdb, "pdb");
    const backbone = v.selectedAtoms({ atom: "CA" }).length > 0;
    v.setStyle({}, backbone ? { cartoon: { color: "spectrum" } } : { sphere: { radius: 1.2 } });
    v.zoomTo();
    if (animate) v.animate({ loop: "backAndForth", interval: 100 });
    v.render();
    $("model-hint").textContent = animate
      ? "The reference deformed along the drawn path (mean of the other PCs), back and forth."
      : "Reference deformed by the group's mean amplitudes; drag to rotate.";
  }

  async function animatePath(points) {
    scatter.setPath(points);
    if (!state.info.has_modes) {
      status("no modes file: the path cannot be animated", true);
      return;
    }
    const frames = Math.max(2, Math.min(200, parseInt($("path-frames").value, 10) || 20));
    try {
      const result = await api("/api/path", { method: "POST", body: { points, axes: state.axes, frames } });
      showModel(result.pdb, `path, ${frames} frames`, true);
    } catch (error) {
      status(`path: ${error.message}`, true);
    }
  }

  // ---- wiring

  function fillSelect(select, options, value) {
    select.textContent = "";
    for (const [id, label] of options) {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = label;
      select.append(option);
    }
    select.value = value;
  }

  async function main() {
    status("loading…");
    state.info = await api("/api/info");
    const info = state.info;
    $("project").textContent = `${info.project} · ${info.n_points.toLocaleString()} particles`;
    const axes = Array.from({ length: info.n_axes }, (_, i) => [String(i), axisLabel(i)]);
    fillSelect($("axis-x"), axes, "0");
    fillSelect($("axis-y"), axes, "1");
    fillSelect($("color"), info.colors.map((c) => [c.id, c.label]), state.color);
    const changeAxes = () => {
      const a = +$("axis-x").value, b = +$("axis-y").value;
      if (a === b) return;
      state.axes = [a, b];
      endSelection();
      loadAxes().catch((e) => status(e.message, true));
    };
    $("axis-x").addEventListener("change", changeAxes);
    $("axis-y").addEventListener("change", changeAxes);
    $("color").addEventListener("change", () => {
      state.color = $("color").value;
      loadColor().catch((e) => status(e.message, true));
    });
    for (const button of document.querySelectorAll("[data-tool]")) {
      button.addEventListener("click", () => {
        for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b === button);
        scatter.setTool(button.dataset.tool);
      });
    }
    $("reset-view").addEventListener("click", () => scatter.fit());
    $("save-selection").addEventListener("click", () => saveSelection(false));
    $("replace-selection").addEventListener("click", () => saveSelection(true));
    $("cancel-selection").addEventListener("click", endSelection);
    $("selection-name").addEventListener("keydown", (e) => { if (e.key === "Enter") saveSelection(false); });
    $("rename").addEventListener("click", renameGroup);
    $("rename-input").addEventListener("keydown", (e) => { if (e.key === "Enter") renameGroup(); });
    $("delete").addEventListener("click", deleteGroup);
    $("export").addEventListener("click", exportGroup);
    $("reconstruct").addEventListener("click", startReconstruction);
    $("export").disabled = !info.has_particles;
    $("reconstruct").disabled = !info.has_particles;
    await Promise.all([loadAxes(), loadGroups()]);
    document.body.dataset.ready = "1";
  }

  main().catch((error) => status(`error: ${error.message}`, true));
})();
