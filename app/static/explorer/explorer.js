/* Hidden-state explorer: reads a text through the API and draws how the RNN read it.
 *
 * Plain browser JavaScript, no library and nothing loaded from elsewhere. Calls:
 *   GET /model            labels, architecture, limits (optional: the page works without it)
 *   POST /hidden-states   per-token states of the top-k units, gates, per-step predictions
 *   POST /explain         per-token attributions (integrated gradients and occlusion)
 *   POST /stream          the label and probabilities as the text is typed (new characters only)
 * Every string that came from the user or the server is inserted as text, never as HTML.
 */
"use strict";

(() => {
  const KEY_STORAGE = "rnn-sentiment.api-key";
  const DEBOUNCE_MS = 350;
  const DECIMALS = 4;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const LABEL_COLORS = { negative: "#D55E00", neutral: "#6B6B6B", positive: "#009E73" };
  const OTHER_COLORS = ["#0072B2", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];
  const DASHES = ["", "7 4", "2 3", "9 3 2 3", "4 2"];

  const $ = (id) => document.getElementById(id);
  const state = {
    model: null,
    hidden: null,
    explanation: null,
    controller: null,
    sequence: 0,
    layer: 0,
    gate: null,
  };

  // --- small helpers ------------------------------------------------------------------------

  function el(tag, attributes = {}, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attributes = {}, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function labelColor(label, index) {
    return LABEL_COLORS[label] || OTHER_COLORS[index % OTHER_COLORS.length];
  }

  function signed(value, digits = 3) {
    return (value > 0 ? "+" : "") + value.toFixed(digits);
  }

  function shorten(text, length) {
    return text.length > length ? text.slice(0, length - 1) + "…" : text;
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  function setStatus(message, isError = false) {
    const status = $("status");
    status.textContent = message;
    status.classList.toggle("error", isError);
  }

  // --- API ----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, payload) {
      const error = (payload && payload.error) || {};
      super(error.message || `The service answered ${status}.`);
      this.status = status;
      this.code = error.code;
      this.details = error.details || [];
    }
  }

  async function api(method, path, body, signal) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    let payload = null;
    try {
      payload = await response.json();
    } catch (_) {
      payload = null;
    }
    if (!response.ok) throw new ApiError(response.status, payload);
    return payload;
  }

  function needKey() {
    const box = $("key-box");
    box.open = true;
    setStatus("This service needs an API key: enter it under “API key”.", true);
    $("api-key").focus();
  }

  function showError(error) {
    if (error.status === 401) {
      needKey();
      return;
    }
    const detail = error.details.find((item) => item.type === "response_too_large");
    const hint = detail ? " Show fewer units." : "";
    setStatus(`${error.message}${hint}`, true);
  }

  // --- model card ---------------------------------------------------------------------------

  async function loadModel() {
    try {
      state.model = await api("GET", "/model");
    } catch (error) {
      state.model = null;
      if (error.status === 401) needKey();
      else $("model-info").textContent = "The model card is not available.";
      return;
    }
    const model = state.model;
    const arch = model.architecture;
    const kind = `${arch.num_layers}-layer ${arch.bidirectional ? "bidirectional " : ""}${arch.cell.toUpperCase()}`;
    $("model-info").textContent =
      `${model.name} (${model.version}) · ${kind}, ${arch.hidden_size} hidden units · ` +
      `labels: ${model.labels.join(", ")} · up to ${model.limits.max_hidden_state_tokens} tokens`;
    $("text").maxLength = model.limits.max_text_chars;
    $("top-k").max = String(arch.hidden_size);
  }

  // --- reading a text -----------------------------------------------------------------------

  function currentText() {
    return $("text").value;
  }

  function keepInAddress(text) {
    const url = new URL(window.location.href);
    if (text) url.searchParams.set("text", text);
    else url.searchParams.delete("text");
    window.history.replaceState(null, "", url);
  }

  function topK() {
    const input = $("top-k");
    const value = Number.parseInt(input.value, 10);
    const max = Number.parseInt(input.max, 10) || 4096;
    return Math.min(Math.max(Number.isFinite(value) ? value : 16, 1), max);
  }

  async function analyse() {
    const text = currentText();
    keepInAddress(text);
    if (state.controller) state.controller.abort();
    if (!text.trim()) {
      setStatus("Type a text for the model to read.");
      return;
    }
    const controller = new AbortController();
    state.controller = controller;
    const sequence = ++state.sequence;
    setStatus("Reading…");
    // Asks for exactly what it draws (the units of the top-k box, DECIMALS decimals) rather
    // than relying on the server's defaults.
    const hiddenRequest = api(
      "POST",
      "/hidden-states",
      { text, layers: "all", include_gates: true, top_k: topK(), decimals: DECIMALS },
      controller.signal,
    );
    const explainRequest = api(
      "POST",
      "/explain",
      { text, decimals: 6 }, // the server's default steps
      controller.signal,
    );
    explainRequest.catch(() => {}); // awaited below; this only keeps an early failure quiet
    let hidden;
    try {
      hidden = await hiddenRequest;
    } catch (error) {
      if (error.name !== "AbortError" && sequence === state.sequence) showError(error);
      return;
    }
    if (sequence !== state.sequence) return;
    state.hidden = hidden;
    state.explanation = null;
    renderHidden();
    const count = hidden.tokens.length;
    setStatus(`Read ${count} token${count === 1 ? "" : "s"}; computing attributions…`);
    try {
      const explanation = await explainRequest;
      if (sequence !== state.sequence) return;
      state.explanation = explanation;
      renderTokens();
      renderTable();
      setStatus(`Read ${count} token${count === 1 ? "" : "s"}.`);
    } catch (error) {
      if (error.name === "AbortError" || sequence !== state.sequence) return;
      setStatus(`Attributions are not available: ${error.message}`, true);
    }
  }

  // --- following typing through the stream -------------------------------------------------
  // Each keystroke sends POST /stream only what was added since the last call, with the state
  // that call returned: the label and probabilities follow the text as it is typed, for the
  // cost of the new characters, while the full reading above waits for a pause. An edit
  // anywhere but at the end starts a new stream with the whole text.

  const LIVE_PIECE = 200; // characters per request: a paste goes in several
  const live = { text: "", state: null, chain: Promise.resolve(), off: false };

  function follow() {
    const text = currentText();
    live.chain = live.chain.then(() => readOn(text));
  }

  async function readOn(text) {
    const bidirectional = state.model && state.model.architecture.bidirectional;
    // Behind a newer keystroke: that one's call sends both.
    if (live.off || bidirectional || !state.hidden || text !== currentText()) return;
    const continues = live.state !== null && text.startsWith(live.text);
    let rest = continues ? text.slice(live.text.length) : text;
    let streamState = continues ? live.state : null;
    if (!rest.trim() && !continues) {
      live.text = "";
      live.state = null;
      return;
    }
    try {
      let update = null;
      while (rest) {
        let size = Math.min(rest.length, LIVE_PIECE);
        const last = rest.charCodeAt(size - 1);
        if (size < rest.length && last >= 0xd800 && last <= 0xdbff) size -= 1; // keep pairs
        update = await api("POST", "/stream", { text: rest.slice(0, size), state: streamState });
        streamState = update.state;
        rest = rest.slice(size);
      }
      live.text = text;
      live.state = streamState;
      if (update && update.prediction && text === currentText()) {
        renderPrediction(update.prediction);
      }
    } catch (error) {
      live.text = "";
      live.state = null;
      // The model was reloaded since the stream began: the next keystroke starts a new one.
      if (error.code === "state_model_mismatch") return;
      if (error.status === 404 || error.status === 409) live.off = true; // no streaming here
    }
  }

  // --- rendering ----------------------------------------------------------------------------

  function labelsOf(hidden) {
    return Object.keys(hidden.prediction.probabilities);
  }

  function renderHidden() {
    const hidden = state.hidden;
    $("results").hidden = false;
    const layers = hidden.layers;
    const select = $("layer");
    const previous = select.value;
    clear(select);
    layers.forEach((layer, index) => {
      const name = `Layer ${layer.layer}${layer.direction === "backward" ? " (backward)" : ""}`;
      select.appendChild(el("option", { value: String(index) }, name));
    });
    const lastForward = layers.findIndex(
      (layer) => layer.layer === layers[layers.length - 1].layer && layer.direction === "forward",
    );
    state.layer = previous !== "" && Number(previous) < layers.length ? Number(previous) : lastForward;
    select.value = String(state.layer);
    $("saturation").textContent = String(hidden.saturation_threshold);
    renderPrediction();
    renderTokens();
    renderCurve();
    renderLayer();
    renderTable();
  }

  function renderPrediction(prediction = state.hidden.prediction) {
    const labels = Object.keys(prediction.probabilities);
    const badge = $("label");
    badge.textContent = prediction.label;
    badge.style.color = labelColor(prediction.label, labels.indexOf(prediction.label));
    $("score").textContent = `${(prediction.score * 100).toFixed(1)}% probability`;
    const box = $("probabilities");
    clear(box);
    labels.forEach((label, index) => {
      const p = prediction.probabilities[label];
      const row = el("div", { class: "prob-row" });
      row.appendChild(el("span", {}, label));
      const track = el("div", {
        class: "prob-track",
        role: "meter",
        "aria-label": `probability of ${label}`,
        "aria-valuemin": "0",
        "aria-valuemax": "1",
        "aria-valuenow": String(p),
      });
      const fill = el("div", { class: "prob-fill" });
      fill.style.width = `${(p * 100).toFixed(2)}%`;
      fill.style.background = labelColor(label, index);
      track.appendChild(fill);
      row.appendChild(track);
      row.appendChild(el("span", { class: "prob-value" }, `${(p * 100).toFixed(1)}%`));
      box.appendChild(row);
    });
  }

  function chosenMethod() {
    const checked = document.querySelector('input[name="method"]:checked');
    return checked ? checked.value : "integrated_gradients";
  }

  function renderTokens() {
    const hidden = state.hidden;
    const explanation = state.explanation;
    const box = $("tokens");
    clear(box);
    const flips = new Set(hidden.flips);
    const method = chosenMethod();
    const result = explanation ? explanation[method] : null;
    const values = result ? result.attributions : null;
    const largest = values ? Math.max(1e-12, ...values.map(Math.abs)) : 1;
    hidden.tokens.forEach((token, t) => {
      const span = el("span", { class: "token" }, token.text);
      if (token.oov) span.classList.add("oov");
      if (flips.has(t)) span.classList.add("flip");
      span.dataset.index = String(t);
      let title = `#${t} “${token.text}”${token.oov ? " (unknown word)" : ""}`;
      if (values) {
        const value = values[t];
        const strength = Math.abs(value) / largest;
        const channel = value >= 0 ? "--for" : "--against";
        const rgb = getComputedStyle(document.documentElement).getPropertyValue(channel).trim();
        span.style.background = `rgba(${rgb}, ${(0.08 + 0.72 * strength).toFixed(3)})`;
        title += ` · attribution ${signed(value, 4)}`;
      }
      if (flips.has(t)) title += " · the label flips here";
      span.title = title;
      box.appendChild(span);
    });
    $("attr-label").textContent = explanation ? explanation.label : "…";
    const note = $("attr-note");
    if (!explanation) {
      note.textContent = "Computing attributions…";
    } else if (method === "integrated_gradients" && result) {
      const difference = result.logit - result.baseline_logit;
      note.textContent =
        `Integrated gradients toward “${explanation.label}”, from a baseline of <${result.baseline}> ` +
        `embeddings, ${result.steps} steps: the shading adds up to logit − baseline logit = ` +
        `${signed(difference)} (convergence delta ${result.delta === 0 ? "below 1e-6" : result.delta.toExponential(1)}).`;
      // On long texts the path integral can be too rough for the steps taken; say so.
      if (Math.abs(result.delta) > 0.1 * Math.max(Math.abs(difference), 0.1)) {
        note.textContent +=
          " These attributions have not converged (the delta is large next to the difference):" +
          " read them with care, or switch to occlusion.";
      }
    } else if (result) {
      note.textContent =
        `Occlusion: each token in turn ${result.replacement === "unk" ? "replaced by <unk>" : "dropped"}; ` +
        `the shading is how much the “${explanation.label}” logit falls without it.`;
    } else {
      note.textContent = "";
    }
  }

  // Charts are drawn at the width they are shown at, so their text stays at its CSS size;
  // below MIN_CHART_WIDTH they scroll sideways instead of shrinking.
  const MIN_CHART_WIDTH = 520;

  function chartWidth(box) {
    return Math.max(MIN_CHART_WIDTH, Math.floor(box.clientWidth || 880));
  }

  function renderCurve() {
    const hidden = state.hidden;
    const box = $("curve");
    const legend = $("curve-legend");
    clear(box);
    clear(legend);
    const note = $("steps-note");
    if (!hidden.steps.length) {
      note.hidden = false;
      note.textContent = hidden.steps_note || "No per-step predictions for this model.";
      return;
    }
    note.hidden = true;
    const labels = labelsOf(hidden);
    const tokens = hidden.tokens;
    const count = tokens.length;
    const showWords = count <= 40;
    const width = chartWidth(box);
    const height = showWords ? 300 : 250;
    const margin = { left: 44, right: 12, top: 14, bottom: showWords ? 78 : 30 };
    const plotWidth = width - margin.left - margin.right;
    const plotHeight = height - margin.top - margin.bottom;
    const step = plotWidth / count;
    const x = (t) => margin.left + (t + 0.5) * step;
    const y = (p) => margin.top + (1 - p) * plotHeight;
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": "curve-title",
      id: "curve-svg",
    });
    const summary = labels
      .map((label) => `${label} ends at ${(hidden.steps[count - 1].probabilities[label] * 100).toFixed(0)}%`)
      .join(", ");
    chart.appendChild(
      svg("title", { id: "curve-title" }, `Probability of each label after each of ${count} tokens; ${summary}; ${hidden.flips.length} flips.`),
    );
    for (const p of [0, 0.25, 0.5, 0.75, 1]) {
      chart.appendChild(svg("line", { class: "grid-line", x1: margin.left, x2: width - margin.right, y1: y(p), y2: y(p) }));
      chart.appendChild(
        svg("text", { class: "axis-text", x: margin.left - 6, y: y(p) + 4, "text-anchor": "end" }, `${p * 100}%`),
      );
    }
    for (const t of hidden.flips) {
      const xf = margin.left + t * step;
      chart.appendChild(svg("line", { class: "flip-line", x1: xf, x2: xf, y1: margin.top, y2: margin.top + plotHeight }));
      const to = hidden.steps[t].label;
      const marker = svg("path", {
        d: `M ${xf - 5} ${margin.top - 2} L ${xf + 5} ${margin.top - 2} L ${xf} ${margin.top + 6} Z`,
        fill: labelColor(to, labels.indexOf(to)),
        class: "flip-marker",
      });
      marker.appendChild(svg("title", {}, `Flips to ${to} at “${tokens[t].text}” (#${t})`));
      chart.appendChild(marker);
    }
    labels.forEach((label, index) => {
      const points = hidden.steps.map((s, t) => `${x(t).toFixed(1)},${y(s.probabilities[label]).toFixed(1)}`);
      const line = svg("polyline", {
        points: points.join(" "),
        fill: "none",
        stroke: labelColor(label, index),
        "stroke-width": 2.2,
        "stroke-linejoin": "round",
        "data-label": label,
        class: "curve-line",
      });
      const dash = DASHES[index % DASHES.length];
      if (dash) line.setAttribute("stroke-dasharray", dash);
      chart.appendChild(line);
      if (count <= 60) {
        hidden.steps.forEach((s, t) => {
          chart.appendChild(svg("circle", { cx: x(t), cy: y(s.probabilities[label]), r: 2.6, fill: labelColor(label, index) }));
        });
      }
      const key = el("span", { class: "series-key" });
      const sample = svg("svg", { width: 28, height: 10, "aria-hidden": "true" });
      const sampleLine = svg("line", { x1: 0, x2: 28, y1: 5, y2: 5, stroke: labelColor(label, index), "stroke-width": 2.5 });
      if (dash) sampleLine.setAttribute("stroke-dasharray", dash);
      sample.appendChild(sampleLine);
      key.appendChild(sample);
      key.appendChild(document.createTextNode(label));
      legend.appendChild(key);
    });
    const every = showWords ? 1 : Math.ceil(count / 20);
    tokens.forEach((token, t) => {
      if (t % every === 0) {
        const label = showWords ? shorten(token.text, 12) : String(t);
        const attributes = showWords
          ? { class: "axis-text", x: x(t), y: margin.top + plotHeight + 12, "text-anchor": "end", transform: `rotate(-45 ${x(t)} ${margin.top + plotHeight + 12})` }
          : { class: "axis-text", x: x(t), y: margin.top + plotHeight + 16, "text-anchor": "middle" };
        chart.appendChild(svg("text", attributes, label));
      }
      const target = svg("rect", { class: "hover-target", x: margin.left + t * step, y: margin.top, width: step, height: plotHeight });
      const probabilities = labels.map((l) => `${l} ${(hidden.steps[t].probabilities[l] * 100).toFixed(1)}%`).join(", ");
      target.appendChild(svg("title", {}, `#${t} “${token.text}”: ${hidden.steps[t].label} (${probabilities})`));
      chart.appendChild(target);
    });
    box.appendChild(chart);
  }

  // --- heatmaps (canvas: thousands of cells stay fast) ----------------------------------------

  function colour(value, scale) {
    const mix = (a, b, f) => Math.round(a + (b - a) * f);
    const white = [247, 247, 247];
    if (scale === "sequential") {
      const f = Math.min(Math.max(value, 0), 1);
      const purple = [84, 39, 136];
      return `rgb(${mix(white[0], purple[0], f)}, ${mix(white[1], purple[1], f)}, ${mix(white[2], purple[2], f)})`;
    }
    const f = Math.min(Math.max(value, -1), 1);
    const end = f < 0 ? [33, 102, 172] : [178, 24, 43];
    const g = Math.abs(f);
    return `rgb(${mix(white[0], end[0], g)}, ${mix(white[1], end[1], g)}, ${mix(white[2], end[2], g)})`;
  }

  function drawHeatmap(canvas, spec) {
    // spec: {matrix: [T][U], units: [U], tokens, scale, name, readout, tip}
    const tokens = spec.tokens;
    const count = tokens.length;
    const unitCount = spec.units.length;
    const left = 46;
    const available = Math.max(240, canvas.parentElement.clientWidth - left - 20);
    const cellWidth = Math.max(3, Math.min(44, Math.floor(available / count)));
    const cellHeight = unitCount > 40 ? 8 : unitCount > 20 ? 12 : 16;
    const wordsShown = cellWidth >= 12;
    const bottom = wordsShown ? 64 : 18;
    const width = left + cellWidth * count + 16; // room for the last column's label
    const height = cellHeight * unitCount + bottom;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    canvas.setAttribute("role", "img");
    canvas.setAttribute(
      "aria-label",
      `${spec.name}: ${unitCount} units over ${count} tokens. Focus and use the arrow keys to read values.`,
    );
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    const styles = getComputedStyle(document.documentElement);
    const textColour = styles.getPropertyValue("--muted").trim() || "#4d4d4d";
    const focusColour = styles.getPropertyValue("--focus").trim() || "#b35900";
    context.clearRect(0, 0, width, height);
    for (let t = 0; t < count; t++) {
      const row = spec.matrix[t];
      for (let u = 0; u < unitCount; u++) {
        context.fillStyle = colour(row[u], spec.scale);
        context.fillRect(left + t * cellWidth, u * cellHeight, cellWidth, cellHeight);
      }
    }
    context.fillStyle = textColour;
    context.font = "11px system-ui, sans-serif";
    context.textAlign = "right";
    context.textBaseline = "middle";
    const labelEvery = cellHeight >= 12 ? 1 : 2;
    spec.units.forEach((unit, u) => {
      if (u % labelEvery === 0) context.fillText(`u${unit}`, left - 6, u * cellHeight + cellHeight / 2);
    });
    if (wordsShown) {
      tokens.forEach((token, t) => {
        context.save();
        context.translate(left + t * cellWidth + cellWidth / 2, unitCount * cellHeight + 6);
        context.rotate(-Math.PI / 4);
        context.textAlign = "right";
        context.fillText(shorten(token.text, 10), 0, 0);
        context.restore();
      });
    } else {
      context.textAlign = "center";
      const every = Math.ceil(count / 20);
      for (let t = 0; t < count; t += every) {
        context.fillText(String(t), left + t * cellWidth + cellWidth / 2, unitCount * cellHeight + 10);
      }
    }
    const cursor = spec.cursor;
    if (cursor && document.activeElement === canvas) {
      context.strokeStyle = focusColour;
      context.lineWidth = 2;
      context.strokeRect(left + cursor.t * cellWidth + 1, cursor.u * cellHeight + 1, cellWidth - 2, cellHeight - 2);
    }
    spec.geometry = { left, cellWidth, cellHeight, count, unitCount };
    canvas.heatmap = spec;
  }

  function describeCell(spec, t, u) {
    const token = spec.tokens[t];
    return `${spec.name} · unit ${spec.units[u]} · after “${token.text}” (#${t}): ${signed(spec.matrix[t][u], 3)}`;
  }

  function attachHeatmapEvents(canvas) {
    canvas.addEventListener("mousemove", (event) => {
      const spec = canvas.heatmap;
      if (!spec) return;
      const g = spec.geometry;
      const bounds = canvas.getBoundingClientRect();
      const px = event.clientX - bounds.left;
      const py = event.clientY - bounds.top;
      const t = Math.floor((px - g.left) / g.cellWidth);
      const u = Math.floor(py / g.cellHeight);
      const tip = spec.tip;
      if (t < 0 || t >= g.count || u < 0 || u >= g.unitCount) {
        tip.hidden = true;
        return;
      }
      tip.textContent = describeCell(spec, t, u);
      tip.hidden = false;
      const wrap = canvas.parentElement;
      const x = Math.min(px + 14, wrap.clientWidth - tip.offsetWidth - 4 + wrap.scrollLeft);
      tip.style.left = `${Math.max(0, x)}px`;
      tip.style.top = `${py + 14}px`;
    });
    canvas.addEventListener("mouseleave", () => {
      if (canvas.heatmap) canvas.heatmap.tip.hidden = true;
    });
    const show = () => {
      const spec = canvas.heatmap;
      if (!spec) return;
      spec.cursor = spec.cursor || { t: 0, u: 0 };
      spec.readout.textContent = describeCell(spec, spec.cursor.t, spec.cursor.u);
      drawHeatmap(canvas, spec);
    };
    canvas.addEventListener("focus", show);
    canvas.addEventListener("blur", () => {
      if (canvas.heatmap) drawHeatmap(canvas, canvas.heatmap);
    });
    canvas.addEventListener("keydown", (event) => {
      const spec = canvas.heatmap;
      if (!spec) return;
      const g = spec.geometry;
      const cursor = spec.cursor || { t: 0, u: 0 };
      const moves = {
        ArrowLeft: [-1, 0],
        ArrowRight: [1, 0],
        ArrowUp: [0, -1],
        ArrowDown: [0, 1],
        Home: [-g.count, 0],
        End: [g.count, 0],
      };
      const move = moves[event.key];
      if (!move) return;
      event.preventDefault();
      cursor.t = Math.min(Math.max(cursor.t + move[0], 0), g.count - 1);
      cursor.u = Math.min(Math.max(cursor.u + move[1], 0), g.unitCount - 1);
      spec.cursor = cursor;
      show();
    });
  }

  function renderLayer() {
    const hidden = state.hidden;
    const layer = hidden.layers[state.layer];
    const units = layer.units || layer.hidden[0].map((_, u) => u);
    const total = hidden.hidden_size || (state.model ? state.model.architecture.hidden_size : null);
    $("units-hint").textContent = layer.units
      ? `the ${units.length} most active of ${total || "the"} units (largest mean |h|)`
      : `all ${units.length} units`;
    const previous = $("heatmap").heatmap;
    drawHeatmap($("heatmap"), {
      matrix: layer.hidden,
      units,
      tokens: hidden.tokens,
      scale: "diverging",
      name: "hidden state",
      readout: $("heat-readout"),
      tip: $("heat-tip"),
      cursor: previous && previous.cursor && previous.cursor.t < hidden.tokens.length && previous.cursor.u < units.length ? previous.cursor : null,
    });
    renderGates(layer, units);
    renderSummary(layer);
  }

  function renderGates(layer, units) {
    const names = layer.gates ? Object.keys(layer.gates) : [];
    $("no-gates").hidden = names.length > 0;
    $("gates-body").hidden = names.length === 0;
    if (!names.length) return;
    const select = $("gate");
    const keep = names.includes(state.gate) ? state.gate : names.includes("forget") ? "forget" : names[0];
    clear(select);
    for (const name of names) select.appendChild(el("option", { value: name }, name));
    select.value = keep;
    state.gate = keep;
    const tanh = keep === "candidate";
    $("gate-scale").className = tanh ? "scale-bar diverging" : "scale-bar sequential";
    $("gate-range").textContent = tanh ? "−1 … 0 … +1 (tanh)" : "0 … 1 (sigmoid: closed … open)";
    $("gate-hint").textContent = gateHelp(keep);
    drawHeatmap($("gatemap"), {
      matrix: layer.gates[keep],
      units,
      tokens: state.hidden.tokens,
      scale: tanh ? "diverging" : "sequential",
      name: `${keep} gate`,
      readout: $("gate-readout"),
      tip: $("gate-tip"),
      cursor: null,
    });
  }

  function gateHelp(name) {
    return (
      {
        input: "how much of the new candidate is written to the cell",
        forget: "how much of the old cell state is kept",
        output: "how much of the cell is shown as the hidden state",
        candidate: "the new content proposed for the cell",
        reset: "how much of the old state shapes the new candidate",
        update: "how much of the old state is kept as it was",
      }[name] || ""
    );
  }

  function renderSummary(layer) {
    const box = $("summary");
    clear(box);
    const norms = layer.norm;
    const saturated = layer.saturated;
    const count = norms.length;
    const width = chartWidth(box);
    const height = 170;
    const margin = { left: 44, right: 48, top: 12, bottom: 24 };
    const plotWidth = width - margin.left - margin.right;
    const plotHeight = height - margin.top - margin.bottom;
    const top = Math.max(1e-9, ...norms);
    const x = (t) => margin.left + (t + 0.5) * (plotWidth / count);
    const y = (f) => margin.top + (1 - f) * plotHeight;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "summary-title" });
    chart.appendChild(
      svg("title", { id: "summary-title" }, `Hidden-state norm (up to ${top.toFixed(2)}) and saturated share (up to ${(Math.max(...saturated) * 100).toFixed(0)}%) after each of ${count} tokens.`),
    );
    for (const f of [0, 0.5, 1]) {
      chart.appendChild(svg("line", { class: "grid-line", x1: margin.left, x2: width - margin.right, y1: y(f), y2: y(f) }));
      chart.appendChild(svg("text", { class: "axis-text", x: margin.left - 6, y: y(f) + 4, "text-anchor": "end" }, (top * f).toFixed(2)));
      chart.appendChild(svg("text", { class: "axis-text", x: width - margin.right + 6, y: y(f) + 4 }, `${f * 100}%`));
    }
    const normLine = norms.map((v, t) => `${x(t).toFixed(1)},${y(v / top).toFixed(1)}`).join(" ");
    chart.appendChild(svg("polyline", { points: normLine, fill: "none", stroke: "#0072B2", "stroke-width": 2 }));
    const satLine = saturated.map((v, t) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    chart.appendChild(svg("polyline", { points: satLine, fill: "none", stroke: "#E69F00", "stroke-width": 2, "stroke-dasharray": "6 3" }));
    chart.appendChild(svg("text", { class: "axis-text", x: margin.left, y: height - 4 }, "— ‖h‖ (left axis)   - - saturated share (right axis)"));
    box.appendChild(chart);
  }

  function renderTable() {
    const hidden = state.hidden;
    const explanation = state.explanation;
    const labels = labelsOf(hidden);
    const table = $("table");
    clear(table);
    const head = el("thead");
    const headRow = el("tr");
    const columns = ["#", "token", "unknown", ...(hidden.steps.length ? ["label after", ...labels.map((l) => `p(${l})`)] : []), "‖h‖", "IG", "occlusion"];
    for (const name of columns) headRow.appendChild(el("th", { scope: "col" }, name));
    head.appendChild(headRow);
    table.appendChild(head);
    const body = el("tbody");
    const layer = hidden.layers[state.layer];
    const flips = new Set(hidden.flips);
    const ig = explanation && explanation.integrated_gradients;
    const occlusion = explanation && explanation.occlusion;
    hidden.tokens.forEach((token, t) => {
      const row = el("tr");
      row.appendChild(el("td", {}, String(t)));
      row.appendChild(el("td", {}, token.text));
      row.appendChild(el("td", {}, token.oov ? "yes" : ""));
      if (hidden.steps.length) {
        const step = hidden.steps[t];
        row.appendChild(el("td", {}, step.label + (flips.has(t) ? " (flip)" : "")));
        for (const label of labels) row.appendChild(el("td", {}, step.probabilities[label].toFixed(3)));
      }
      row.appendChild(el("td", {}, layer.norm[t].toFixed(3)));
      row.appendChild(el("td", {}, ig ? signed(ig.attributions[t], 4) : "…"));
      row.appendChild(el("td", {}, occlusion ? signed(occlusion.attributions[t], 4) : "…"));
      body.appendChild(row);
    });
    table.appendChild(body);
  }

  // --- wiring -------------------------------------------------------------------------------

  function saveKey() {
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    loadModel().then(analyse);
  }

  function start() {
    const params = new URLSearchParams(window.location.search);
    const shared = params.get("text");
    if (shared !== null) $("text").value = shared;
    $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";

    const later = debounce(analyse, DEBOUNCE_MS);
    $("text").addEventListener("input", later);
    $("text").addEventListener("input", follow);
    $("text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        analyse();
      }
    });
    $("top-k").addEventListener("change", later);
    $("form").addEventListener("submit", (event) => {
      event.preventDefault();
      analyse();
    });
    $("save-key").addEventListener("click", saveKey);
    $("api-key").addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        saveKey();
      }
    });
    $("forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORAGE);
      $("api-key").value = "";
      setStatus("The key is forgotten.");
    });
    $("copy-link").addEventListener("click", async () => {
      keepInAddress(currentText());
      try {
        await navigator.clipboard.writeText(window.location.href);
        setStatus("Link copied.");
      } catch (_) {
        setStatus(`Link: ${window.location.href}`);
      }
    });
    $("layer").addEventListener("change", () => {
      state.layer = Number($("layer").value);
      renderLayer();
      renderTable();
    });
    $("gate").addEventListener("change", () => {
      state.gate = $("gate").value;
      renderGates(state.hidden.layers[state.layer], state.hidden.layers[state.layer].units || state.hidden.layers[state.layer].hidden[0].map((_, u) => u));
    });
    for (const radio of document.querySelectorAll('input[name="method"]')) {
      radio.addEventListener("change", renderTokens);
    }
    attachHeatmapEvents($("heatmap"));
    attachHeatmapEvents($("gatemap"));
    window.addEventListener(
      "resize",
      debounce(() => {
        if (!state.hidden) return;
        renderCurve();
        renderLayer();
      }, 150),
    );
    loadModel().then(analyse);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
