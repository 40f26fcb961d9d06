// The nbmlops runs widget (anywidget): draws what Python computed (rows, chart points,
// a run's details, the promotion's outcome) and sends the user's choices back.
// No libraries: the chart is inline SVG.

const SVG = "http://www.w3.org/2000/svg";

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick" || k === "onchange") el[k] = v;
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function s(tag, attrs = {}, text = null) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== null) el.textContent = text;
  return el;
}

function fmt(value) {
  if (typeof value !== "number") return value ?? "";
  return Math.abs(value) >= 1000 || (value !== 0 && Math.abs(value) < 0.001)
    ? value.toExponential(3)
    : String(Number(value.toPrecision(4)));
}

function select(name, options, current, onchange) {
  return h(
    "select",
    { class: "jp-mod-styled", "data-nbmlops": name, onchange: (e) => onchange(e.target.value) },
    options.map(([value, label]) =>
      h("option", { value, selected: value === current }, label),
    ),
  );
}

// One time format everywhere (table, chart; the JupyterLab panel's too): "12-03 06:50",
// the browser's local time.
function stamp(d) {
  const p = (n) => String(n).padStart(2, "0");
  return `${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

function started(iso) {
  const d = new Date(iso);
  return isNaN(d) ? iso : stamp(d);
}

function columns(model) {
  const metrics = model.get("metrics");
  return [
    { key: "start_time", label: "started", get: (r) => r.start_time, show: started },
    { key: "run_id", label: "run", get: (r) => r.run_id, show: (v) => v.slice(0, 8) },
    { key: "status", label: "status", get: (r) => r.status, show: (v) => v.toLowerCase() },
    ...model.get("params").map((p) => ({
      key: "p:" + p, label: metrics.includes(p) ? `${p} (param)` : p, get: (r) => r.params[p],
      kind: "param",
    })),
    ...metrics.map((m) => ({
      key: "m:" + m, label: m, get: (r) => r.metrics[m], numeric: true, kind: "metric",
    })),
    { key: "cache_hits", label: "cached", get: (r) => r.cache_hits },
    { key: "git_commit", label: "git", get: (r) => (r.git_commit || "").slice(0, 8) },
  ];
}

function table(model, state, rerender) {
  const cols = columns(model);
  const col = cols.find((c) => c.key === state.sortKey) || cols[0];
  const rows = [...model.get("rows")].sort((a, b) => {
    const x = col.get(a), y = col.get(b);
    const cmp = x === undefined ? 1 : y === undefined ? -1 : x < y ? -1 : x > y ? 1 : 0;
    return state.sortDesc ? -cmp : cmp;
  });
  const selected = model.get("selected_run");
  // The row this widget promoted: marked with the alias it now holds.
  const done = model.get("result") || {};
  const promoted = ["promoted", "built"].includes(done.state) ? done.run_id : null;
  const ticked = model.get("compared");
  const tick = (runId, on) => {
    model.set("compared", on ? [...ticked, runId] : ticked.filter((id) => id !== runId));
    model.save_changes();
  };
  const head = h("tr", {}, h("th", { title: "tick two or more runs to compare them" }, "≷"), cols.map((c) =>
    h("th", {
      "data-sort": c.key,
      class: c.kind || null,
      title: c.kind || null,
      onclick: () => {
        state.sortDesc = state.sortKey === c.key ? !state.sortDesc : true;
        state.sortKey = c.key;
        rerender();
      },
    }, c.label + (c.key === col.key ? (state.sortDesc ? " ▼" : " ▲") : "")),
  ));
  const body = rows.map((r) =>
    h("tr", {
      "data-run-id": r.run_id,
      class: r.run_id === selected ? "selected" : null,
      title: r.run_id,
      onclick: () => {
        model.set("selected_run", r.run_id);
        model.save_changes();
      },
    }, h("td", { onclick: (e) => e.stopPropagation() }, h("input", {
      type: "checkbox", checked: ticked.includes(r.run_id), "aria-label": `compare run ${r.run_id}`,
      "data-nbmlops-compare": r.run_id, onchange: (e) => tick(r.run_id, e.target.checked),
    })), cols.map((c, i) => {
      const v = c.get(r);
      const cell = h("td", { class: c.numeric ? "num" : null }, v === undefined || v === null ? "" : c.show ? c.show(v) : fmt(v));
      if (i === 0 && r.run_id === promoted) {
        cell.append(" ", h("span", { class: "alias", "data-nbmlops": "widget-promoted" }, `@${done.alias}`));
      }
      return cell;
    })),
  );
  return h("table", { "data-nbmlops": "widget-runs-table" }, h("thead", {}, head), h("tbody", {}, body));
}

function chart(model) {
  const data = model.get("chart");
  const W = 420, H = 200, L = 48, R = 12, T = 12, B = 32;
  const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-nbmlops": "widget-chart" });
  const points = (data && data.points) || [];
  if (!points.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no runs with this metric"));
    return svg;
  }
  const cats = data.numeric ? null : [...new Set(points.map((p) => p.x))];
  const xs = points.map((p) => (cats ? cats.indexOf(p.x) : p.x));
  const ys = points.map((p) => p.y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (v) => L + (x1 === x0 ? 0.5 : (v - x0) / (x1 - x0)) * (W - L - R);
  const sy = (v) => H - B - (y1 === y0 ? 0.5 : (v - y0) / (y1 - y0)) * (H - T - B);
  svg.append(s("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  svg.append(s("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  svg.append(s("text", { x: L - 4, y: sy(y1) + 4, "text-anchor": "end" }, fmt(y1)));
  svg.append(s("text", { x: L - 4, y: sy(y0) + 4, "text-anchor": "end" }, fmt(y0)));
  const xlabel = (v) =>
    data.x === "start_time" ? stamp(new Date(v * 1000)) : fmt(v);
  svg.append(s("text", { x: L, y: H - B + 14, "text-anchor": "start" }, cats ? cats[0] : xlabel(x0)));
  if (x1 !== x0) {
    svg.append(s("text", { x: W - R, y: H - B + 14, "text-anchor": "end" }, cats ? cats[cats.length - 1] : xlabel(x1)));
  }
  svg.append(s("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "label" },
    `${data.metric} by ${data.x === "start_time" ? "start time" : data.x}`));
  if (data.numeric && points.length > 1) {
    svg.append(s("polyline", { points: points.map((p, i) => `${sx(xs[i])},${sy(ys[i])}`).join(" "), class: "line" }));
  }
  const selected = model.get("selected_run");
  points.forEach((p, i) => {
    const dot = s("circle", {
      cx: sx(xs[i]), cy: sy(ys[i]), r: p.run_id === selected ? 5 : 3.5,
      class: p.run_id === selected ? "dot selected" : "dot", "data-run-id": p.run_id,
    });
    dot.append(s("title", {}, `${p.run_id}: ${fmt(p.y)}`));
    dot.addEventListener("click", () => {
      model.set("selected_run", p.run_id);
      model.save_changes();
    });
    svg.append(dot);
  });
  return svg;
}

function details(model) {
  const d = model.get("details");
  if (!d || !d.run_id) return h("div", { "data-nbmlops": "widget-details", class: "hint" }, "select a run to see its steps and lineage");
  const steps = h("table", { class: "steps" },
    h("tr", {}, ["step", "status", "cache", "seconds", "code hash"].map((c) => h("th", {}, c))),
    (d.steps || []).map((st) => h("tr", { "data-step": st.name },
      h("td", {}, st.name), h("td", {}, st.status.toLowerCase()),
      h("td", {}, st.cache === "hit" ? `hit (${(st.cached_from || "").slice(0, 8)})` : st.cache || ""),
      h("td", { class: "num" }, st.seconds === null || st.cache === "hit" ? "" : st.seconds.toFixed(2)),
      h("td", { class: "hash" }, (st.code_hash || "").slice(0, 12)))),
  );
  const data = Object.entries(d.data || {}).map(([k, v]) => h("li", {}, h("b", {}, k), " ", h("code", {}, v)));
  return h("div", { "data-nbmlops": "widget-details" },
    h("div", {}, h("b", {}, `run ${d.run_id}`), ` ${(d.status || "").toLowerCase()} · seed ${d.seed ?? ""} · git ${d.git_commit ? d.git_commit.slice(0, 8) + (d.git_dirty ? " (dirty)" : "") : "none"}`),
    d.error ? h("div", { class: "error" }, d.failed_step ? `failed in step ${d.failed_step}: ${d.error}` : d.error) : null,
    d.fix ? h("div", { class: "fix" }, "fix: " + d.fix) : null,
    steps,
    data.length ? h("div", {}, "data: ", h("ul", {}, data)) : null,
    d.model_uri ? h("div", {}, "model: ", h("code", {}, d.model_uri)) : null,
  );
}

// Two or more runs ticked: parameters side by side (differences marked), metrics as bars
// (each scaled to its largest value), steps' cache and time.
function comparison(model) {
  const c = model.get("comparison");
  if (!c || !(c.runs || c.error)) return null;
  if (c.error) return h("div", { class: "error", "data-nbmlops": "widget-compare" }, c.error, c.fix ? h("div", { class: "fix" }, "fix: " + c.fix) : null);
  const heads = h("tr", {}, h("th", {}, ""), c.runs.map((r, i) => h("th", { title: r.run_id, class: `series-${i % 5}` },
    h("span", { class: "swatch" }), `#${i + 1} ${started(r.start_time)}`,
    r.aliases.map((a) => h("span", { class: "alias" }, ` @${a}`)))));
  const params = c.params.map((p) => h("tr", { class: p.differs ? "differs" : null, "data-nbmlops-param": p.name, "data-differs": String(p.differs) },
    h("td", {}, h("code", {}, p.name), p.differs ? " ≠" : ""), p.values.map((v) => h("td", {}, v ?? "—"))));
  const W = 260, BAR = 10, GAP = 2, LABEL = 14, VALUE = 48;
  const n = c.runs.length;
  const height = c.metrics.length * (LABEL + n * (BAR + GAP) + 6);
  const svg = s("svg", { width: W, height, viewBox: `0 0 ${W} ${height}`, "data-nbmlops": "widget-compare-bars" });
  let y = 0;
  for (const m of c.metrics) {
    svg.append(s("text", { x: 0, y: y + LABEL - 3 }, m.name));
    y += LABEL;
    const top = Math.max(0, ...m.values.map((v) => (v === null ? 0 : Math.abs(v))));
    m.values.forEach((v, i) => {
      if (v !== null) {
        const w = Math.max(1, top > 0 ? (Math.abs(v) / top) * (W - VALUE) : 0);
        const bar = s("rect", { x: 0, y, width: w, height: BAR, class: `bar series-${i % 5}`, "data-nbmlops-bar": `${m.name}:${c.runs[i].run_id}` });
        bar.append(s("title", {}, `#${i + 1} ${m.name} = ${v}`));
        svg.append(bar, s("text", { x: w + 4, y: y + BAR - 1 }, fmt(v)));
      }
      y += BAR + GAP;
    });
    y += 6;
  }
  const steps = c.steps.map((st) => h("tr", { "data-step": st.name }, h("td", {}, st.name),
    st.runs.map((r) => h("td", {}, r === null ? "—" : r.cache === "hit" ? "cached" : `${r.seconds === null ? "" : r.seconds.toFixed(1) + " s"} ${r.status === "FINISHED" ? "" : r.status.toLowerCase()}`.trim()))));
  return h("div", { class: "compare", "data-nbmlops": "widget-compare" },
    h("b", {}, `Compare ${n} runs`),
    h("div", { class: "body" },
      h("table", { "data-nbmlops": "widget-compare-params" }, heads, params),
      c.metrics.length ? svg : h("div", { class: "hint" }, "no metrics"),
      h("table", { "data-nbmlops": "widget-compare-steps" }, heads.cloneNode(true), steps)),
  );
}

function result(model) {
  const r = model.get("result") || {};
  return h("div", { "data-nbmlops": "widget-result", "data-state": r.state || "", class: `result ${r.state || ""}` },
    r.message || "",
    r.fix ? h("div", { class: "fix" }, "fix: " + r.fix) : null,
  );
}

function controls(model) {
  const busy = model.get("busy");
  const set = (key) => (value) => { model.set(key, value); model.save_changes(); };
  const gates = h("input", {
    type: "text", class: "jp-mod-styled", placeholder: "gates, e.g. f1>=0.9", value: model.get("gates").join(", "),
    "data-nbmlops": "widget-gates",
    onchange: (e) => set("gates")(e.target.value.split(",").map((g) => g.trim()).filter(Boolean)),
  });
  const alias = h("input", {
    type: "text", class: "jp-mod-styled", value: model.get("alias"), size: 10, "data-nbmlops": "widget-alias",
    onchange: (e) => set("alias")(e.target.value.trim()),
  });
  return h("div", { class: "controls" },
    h("label", {}, "metric ", select("widget-metric", model.get("metrics").map((m) => [m, m]), model.get("metric"), set("metric"))),
    h("label", {}, "x ", select("widget-x", [["", "start time"], ...model.get("params").map((p) => [p, p])], model.get("x_param"), set("x_param"))),
    h("label", {}, "mode ", select("widget-mode", model.get("modes").map((m) => [m, m]), model.get("mode"), set("mode"))),
    gates,
    h("label", {}, "alias ", alias),
    h("button", { class: "jp-mod-styled jp-mod-accept", "data-nbmlops": "widget-promote-best", disabled: busy || !model.get("metric"),
      onclick: () => model.send({ action: "promote_best" }) }, "Promote best"),
    h("button", { class: "jp-mod-styled jp-mod-accept", "data-nbmlops": "widget-promote-selected", disabled: busy || !model.get("selected_run"),
      onclick: () => model.send({ action: "promote", run_id: model.get("selected_run") }) }, "Promote selected"),
    h("button", { class: "jp-mod-styled jp-mod-reject", "data-nbmlops": "widget-refresh", disabled: busy, onclick: () => model.send({ action: "refresh" }) }, "Refresh"),
  );
}

function render({ model, el }) {
  const state = { sortKey: "start_time", sortDesc: true };
  const root = h("div", { class: "nbmlops-runs", "data-nbmlops": "widget" });
  el.append(root);
  const draw = () => {
    const parts = [
      h("div", { class: "title" }, h("b", {}, "nbmlops"), ` runs of ${model.get("experiment")}`),
      model.get("error") ? h("div", { class: "hint" }, model.get("error")) : null,
      controls(model),
      h("div", { class: "body" }, chart(model), details(model)),
      table(model, state, draw),
      comparison(model),
      result(model),
    ];
    root.replaceChildren(...parts.filter(Boolean));
  };
  // Not "mode", "gates", "alias": only the user's own inputs change them, and redrawing
  // then would replace the button the user is clicking (typing gates, then clicking
  // "Promote best", blurs the input: its change event fires first).
  const events = ["rows", "metrics", "params", "metric", "x_param", "chart", "selected_run",
    "details", "busy", "result", "error", "compared", "comparison"];
  for (const e of events) model.on(`change:${e}`, draw);
  draw();
  return () => { for (const e of events) model.off(`change:${e}`, draw); };
}

export default { render };
