(function () {
  "use strict";
  var root = document.documentElement;
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var takes = data.takes, measures = data.measures, limits = data.limits;
  var style = getComputedStyle(root);
  function cssVar(name) { return style.getPropertyValue(name).trim(); }
  var C = {
    speech: cssVar("--speech"), window: cssVar("--window"), windowFill: cssVar("--window-fill"),
    pause: cssVar("--pause"), wave: cssVar("--wave"), waveIn: cssVar("--wave-in"), unknown: cssVar("--unknown"),
    edge: cssVar("--edge"), line: cssVar("--line"), muted: cssVar("--muted"), ok: cssVar("--ok"), bad: cssVar("--bad")
  };
  var SVG = "http://www.w3.org/2000/svg";

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function count(n) { return n.toLocaleString("en"); }
  function words(code) { return data.warnings[code] || code; }
  function seconds(t) { return (Math.round(t * 10) / 10).toFixed(1) + " s"; }
  takes.forEach(function (t, i) { t.idx = i; });

  // ---- the batch at a glance -----------------------------------------------------------------
  var byCode = {}, byWarning = {}, ok = 0, skipped = 0;
  takes.forEach(function (t) {
    if (t.s === "ok") ok++; else byCode[t.c] = (byCode[t.c] || 0) + 1;
    if (t.k) skipped++;
    var seen = {};
    t.w.forEach(function (w) { if (!seen[w[0]]) { seen[w[0]] = 1; byWarning[w[0]] = (byWarning[w[0]] || 0) + 1; } });
  });
  function sortedKeys(obj) { return Object.keys(obj).sort(function (a, b) { return obj[b] - obj[a] || (a < b ? -1 : 1); }); }
  var codes = sortedKeys(byCode), warnings = sortedKeys(byWarning);

  var overview = document.getElementById("overview");
  function bold(text) { overview.appendChild(el("b", null, text)); }
  bold(count(takes.length)); overview.appendChild(document.createTextNode(takes.length === 1 ? " take: " : " takes: "));
  bold(count(ok)); overview.appendChild(document.createTextNode(" accepted, "));
  bold(count(takes.length - ok)); overview.appendChild(document.createTextNode(" refused"));
  if (skipped) overview.appendChild(document.createTextNode(", " + count(skipped) + " unchanged since an earlier run"));
  if (data.runs.length) {
    var runs = data.runs.slice(0, 3).join(", ") + (data.runs.length > 3 ? " and " + (data.runs.length - 3) + " more" : "");
    overview.appendChild(document.createTextNode(" \u00b7 run" + (data.runs.length > 1 ? "s " : " ") + runs));
  }

  var state = { status: "all", code: "all", warning: "all", sort: "order", text: "" };
  var chips = document.getElementById("chips");
  function chip(cls, label, n, apply) {
    var b = el("button", "chip " + cls);
    b.type = "button";
    b.appendChild(document.createTextNode(label));
    b.appendChild(el("span", "n", count(n)));
    b.addEventListener("click", function () { apply(); syncControls(); update(); });
    chips.appendChild(b);
  }
  chip("ok", "Accepted", ok, function () { state.status = state.status === "ok" ? "all" : "ok"; });
  chip("bad", "Refused", takes.length - ok, function () { state.status = state.status === "rejected" ? "all" : "rejected"; });
  codes.forEach(function (c) {
    chip("bad", c + (data.codes[c] ? " \u00b7 " + data.codes[c] : ""), byCode[c], function () {
      state.code = state.code === c ? "all" : c;
    });
  });
  warnings.forEach(function (w) {
    chip("warn", words(w), byWarning[w], function () { state.warning = state.warning === w ? "all" : w; });
  });

  // ---- distributions -------------------------------------------------------------------------
  var charts = [
    { col: 0, title: "SNR", unit: "dB", sub: "speech to noise", lines: [["refuse_snr_db", C.bad], ["min_snr_db", C.pause]] },
    { col: 1, title: "Loudness", unit: "LUFS", sub: "of the input, before gain", lines: [["target_lufs", C.window]] },
    { col: 2, title: "Speech", unit: "s", sub: "in the input", lines: [["min_speech_s", C.bad]] }
  ];
  function niceStep(span, bins) {
    var raw = span / bins, mag = Math.pow(10, Math.floor(Math.log10(raw))), steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * mag >= raw) return steps[i] * mag;
    return 10 * mag;
  }
  function drawChart(box, spec) {
    var vals = [];
    takes.forEach(function (t) { var v = t.x[spec.col]; if (v !== null && v !== undefined) vals.push([v, t.s === "ok"]); });
    box.textContent = "";
    var h = el("h3", null, spec.title + " (" + spec.unit + ")");
    box.appendChild(h);
    box.appendChild(el("div", "sub", spec.sub + " \u00b7 " + count(vals.length) + " measured"));
    if (!vals.length) { box.appendChild(el("div", "none", "not measured in this report")); return; }
    var lo = Infinity, hi = -Infinity;
    vals.forEach(function (v) { lo = Math.min(lo, v[0]); hi = Math.max(hi, v[0]); });
    spec.lines.forEach(function (l) { if (limits[l[0]] !== undefined) { lo = Math.min(lo, limits[l[0]]); hi = Math.max(hi, limits[l[0]]); } });
    var step = niceStep(Math.max(hi - lo, 1), 18);
    lo = Math.floor(lo / step) * step; hi = Math.max(Math.ceil(hi / step) * step, lo + step);
    var n = Math.max(1, Math.round((hi - lo) / step)), good = new Array(n).fill(0), bad = new Array(n).fill(0);
    vals.forEach(function (v) {
      var i = Math.min(n - 1, Math.max(0, Math.floor((v[0] - lo) / step)));
      if (v[1]) good[i]++; else bad[i]++;
    });
    var top = 1;
    for (var i = 0; i < n; i++) top = Math.max(top, good[i] + bad[i]);
    var W = Math.max(box.clientWidth - 24, 120), H = 92, base = 76, left = 2, right = W - 2;
    var s = svg("svg", { width: W, height: H, role: "img", "aria-label": spec.title + " histogram" });
    function X(v) { return left + (v - lo) / (hi - lo) * (right - left); }
    s.appendChild(svg("line", { x1: left, x2: right, y1: base + 0.5, y2: base + 0.5, stroke: C.line }));
    for (i = 0; i < n; i++) {
      var x0 = X(lo + i * step) + 0.5, bw = Math.max(X(lo + (i + 1) * step) - X(lo + i * step) - 1, 1);
      var hb = bad[i] / top * (base - 8), hg = good[i] / top * (base - 8);
      var g = svg("g", {});
      var tip = svg("title", {});
      tip.textContent = (lo + i * step) + " to " + (lo + (i + 1) * step) + " " + spec.unit + ": " + good[i] + " accepted, " + bad[i] + " refused";
      g.appendChild(tip);
      if (hg > 0) g.appendChild(svg("rect", { x: x0, y: base - hg, width: bw, height: hg, fill: C.ok, "fill-opacity": 0.55 }));
      if (hb > 0) g.appendChild(svg("rect", { x: x0, y: base - hg - hb, width: bw, height: hb, fill: C.bad, "fill-opacity": 0.7 }));
      if (hg + hb === 0) g.appendChild(svg("rect", { x: x0, y: base - 1, width: bw, height: 1, fill: "transparent" }));
      s.appendChild(g);
    }
    spec.lines.forEach(function (l) {
      if (limits[l[0]] === undefined) return;
      var x = Math.round(X(limits[l[0]])) + 0.5, right = x > W - 40;
      s.appendChild(svg("line", { x1: x, x2: x, y1: 2, y2: base, stroke: l[1], "stroke-dasharray": "3 2" }));
      var t = svg("text", { x: right ? x - 3 : x + 3, y: 9, "text-anchor": right ? "end" : "start" });
      t.style.fill = l[1];
      t.textContent = String(limits[l[0]]).replace("-", "\u2212");
      s.appendChild(t);
    });
    var ticks = [lo, lo + (hi - lo) / 2, hi];
    ticks.forEach(function (v, k) {
      var t = svg("text", { x: X(v), y: H - 3, "text-anchor": k === 0 ? "start" : k === 2 ? "end" : "middle" });
      t.textContent = String(Math.round(v * 10) / 10).replace("-", "\u2212");
      s.appendChild(t);
    });
    box.appendChild(s);
  }
  var chartBox = document.getElementById("charts");
  var chartEls = charts.map(function () { var b = el("section", "chart"); chartBox.appendChild(b); return b; });
  function drawCharts() { charts.forEach(function (spec, i) { drawChart(chartEls[i], spec); }); }
  drawCharts();

  // ---- legend --------------------------------------------------------------------------------
  var legend = document.getElementById("legend");
  [["l-speech", "speech"], ["l-window", "chosen window"], ["l-pause", "long pause, shortened"],
   ["l-edge", "trimmed or kept edge"], ["l-unknown", "not analysed in detail"]].forEach(function (item) {
    var s = el("span"); s.appendChild(el("i", item[0])); s.appendChild(document.createTextNode(item[1])); legend.appendChild(s);
  });

  // ---- filters and sorting -------------------------------------------------------------------
  function options(select, items) {
    select.textContent = "";
    items.forEach(function (it) { var o = el("option", null, it[1]); o.value = it[0]; select.appendChild(o); });
  }
  var fStatus = document.getElementById("f-status"), fCode = document.getElementById("f-code");
  var fWarning = document.getElementById("f-warning"), fSort = document.getElementById("f-sort");
  var fText = document.getElementById("f-text");
  var statusItems = [["all", "All"], ["ok", "Accepted"], ["rejected", "Refused"]];
  if (skipped) statusItems.push(["skipped", "Unchanged (skipped)"], ["fresh", "Processed this run"]);
  options(fStatus, statusItems);
  options(fCode, [["all", "Any"]].concat(codes.map(function (c) { return [c, c + " (" + byCode[c] + ")"]; })));
  options(fWarning, [["all", "Any"], ["some", "Some warning"], ["none", "No warning"]].concat(
    warnings.map(function (w) { return [w, words(w) + " (" + byWarning[w] + ")"]; })));
  options(fSort, [["order", "Report order"], ["name", "Name"], ["refused", "Refused first"], ["code", "Code"],
    ["warnings", "Most warnings"], ["snr", "SNR, lowest first"], ["speech", "Speech, least first"],
    ["loudness", "Loudness, quietest first"]]);
  function syncControls() {
    fStatus.value = state.status; fCode.value = state.code; fWarning.value = state.warning; fSort.value = state.sort;
    Array.prototype.forEach.call(chips.children, function (b, i) {
      var on = (i === 0 && state.status === "ok") || (i === 1 && state.status === "rejected") ||
        (i >= 2 && i < 2 + codes.length && state.code === codes[i - 2]) ||
        (i >= 2 + codes.length && state.warning === warnings[i - 2 - codes.length]);
      b.classList.toggle("on", on);
    });
  }
  [[fStatus, "status"], [fCode, "code"], [fWarning, "warning"], [fSort, "sort"]].forEach(function (pair) {
    pair[0].addEventListener("change", function () { state[pair[1]] = pair[0].value; syncControls(); update(); });
  });
  var typing = 0;
  fText.addEventListener("input", function () {
    clearTimeout(typing);
    typing = setTimeout(function () { state.text = fText.value.trim().toLowerCase(); update(); }, 120);
  });

  function keep(t) {
    if (state.status === "ok" || state.status === "rejected") { if (t.s !== state.status) return false; }
    else if (state.status === "skipped") { if (!t.k) return false; }
    else if (state.status === "fresh" && t.k) return false;
    if (state.code !== "all" && t.c !== state.code) return false;
    if (state.warning === "some" && !t.w.length) return false;
    if (state.warning === "none" && t.w.length) return false;
    if (state.warning !== "all" && state.warning !== "some" && state.warning !== "none" &&
        !t.w.some(function (w) { return w[0] === state.warning; })) return false;
    return !state.text || t.i.toLowerCase().indexOf(state.text) >= 0;
  }
  function byNumber(col) {
    return function (a, b) {
      var x = a.x[col], y = b.x[col];
      if (x === null && y === null) return a.idx - b.idx;
      if (x === null) return 1;
      if (y === null) return -1;
      return x - y || a.idx - b.idx;
    };
  }
  var sorts = {
    order: function (a, b) { return a.idx - b.idx; },
    name: function (a, b) { return a.n.localeCompare(b.n) || a.idx - b.idx; },
    refused: function (a, b) { return (a.s === "ok") - (b.s === "ok") || (a.c || "").localeCompare(b.c || "") || a.idx - b.idx; },
    code: function (a, b) { return (a.c || "~").localeCompare(b.c || "~") || a.idx - b.idx; },
    warnings: function (a, b) { return b.w.length - a.w.length || a.idx - b.idx; },
    snr: byNumber(0), loudness: byNumber(1), speech: byNumber(2)
  };

  // ---- one take ------------------------------------------------------------------------------
  var list = document.getElementById("takes"), shown = document.getElementById("shown");
  var empty = document.getElementById("empty");
  // Each take's element is in the page already (status, name, code, verdict); its body is
  // built when it nears the screen.
  Array.prototype.forEach.call(list.children, function (node) { takes[+node.getAttribute("data-index")].node = node; });

  function player(label, href, length, missing) {
    var l = el("label", null, label);
    if (!href) { l.appendChild(el("span", "nofile", missing)); return [l, null]; }
    var au = el("audio");
    au.controls = true; au.preload = "none"; au.src = href;
    if (length) au.title = seconds(length);
    l.appendChild(au);
    return [l, au];
  }

  function tiles(t) {
    var box = el("div", "measures"), any = false;
    t.r.forEach(function (row, i) {
      if (!row) return;
      any = true;
      var m = measures[i], clip = t.run && row[1] !== null;
      var tile = el("div", "m" + (row[2] ? " " + row[2] : ""));
      tile.appendChild(el("div", "ml", m[1]));
      tile.appendChild(el("div", "mv", clip ? row[1] : row[0]));
      var sub = t.run ? (clip ? (row[0] !== null ? "input " + row[0] : "") : "in the input") : "";
      tile.appendChild(el("div", "mi", row[3] ? (sub ? sub + ", " : "") + row[3] : sub));
      var lim = el("div", "mlim");
      if (m[3] === "service") lim.appendChild(el("span", "svc", "service "));
      lim.appendChild(document.createTextNode(m[2] || "\u00a0"));
      tile.appendChild(lim);
      box.appendChild(tile);
    });
    if (!any) box.appendChild(el("p", "nothing", "Nothing was measured before the refusal."));
    return box;
  }

  function fill(t) {
    var body = t.node.lastChild;
    body.textContent = "";
    body.classList.add("filled");
    var canvas = el("canvas", "plot" + (t.p && t.p.os ? "" : " short"));
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "waveform of " + t.n);
    body.appendChild(canvas);
    var players = el("div", "players");
    var pin = player("Input", t.a, t.p && t.p.is, "not on this computer");
    var pout = t.run ? player("Clip", t.b, t.p && t.p.os, t.s === "ok" ? "not on this computer" : "none made") : [null, null];
    players.appendChild(pin[0]); if (pout[0]) players.appendChild(pout[0]);
    body.appendChild(players);
    body.appendChild(tiles(t));
    if (t.w.length) {
      var ul = el("ul", "warnings");
      t.w.forEach(function (w) {
        var li = el("li"); li.appendChild(el("b", null, words(w[0])));
        li.appendChild(document.createTextNode(w[1]));
        if (w[2]) li.appendChild(el("span", "wh", " \u2014 " + w[2]));
        ul.appendChild(li);
      });
      body.appendChild(ul);
    }
    t.canvas = canvas; t.audio = [pin[1], pout[1]];
    canvas.addEventListener("mousemove", function (e) { hover(t, e); });
    canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
    canvas.addEventListener("click", function (e) { seek(t, e); });
  }

  // ---- the plot ------------------------------------------------------------------------------
  function bytes(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  var hatches = {};
  function hatch(ctx, color) {
    var key = color;
    if (!hatches[key]) {
      var c = document.createElement("canvas"); c.width = c.height = 6;
      var g = c.getContext("2d"); g.strokeStyle = color; g.lineWidth = 1.5;
      g.beginPath(); g.moveTo(-1, 7); g.lineTo(7, -1); g.moveTo(-1, 1); g.lineTo(1, -1); g.moveTo(5, 7); g.lineTo(7, 5); g.stroke();
      hatches[key] = c;
    }
    return ctx.createPattern(hatches[key], "repeat");
  }
  function inside(segs, t) {
    for (var i = 0; i < segs.length; i++) if (t >= segs[i][0] && t <= segs[i][1]) return true;
    return false;
  }
  function tickStep(span, px) {
    var target = span / Math.max(px / 70, 1), steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600];
    for (var i = 0; i < steps.length; i++) if (steps[i] >= target) return steps[i];
    return 7200;
  }
  function label(t) {
    if (t >= 3600) return Math.floor(t / 3600) + ":" + ("0" + Math.floor(t % 3600 / 60)).slice(-2) + ":" + ("0" + Math.round(t % 60)).slice(-2);
    if (t >= 60) return Math.floor(t / 60) + ":" + ("0" + Math.round(t % 60)).slice(-2);
    return String(t);
  }
  // Vertical layout of a plot (CSS pixels): input lane, its speech strip and axis, then the clip.
  var L = { inTop: 4, inH: 62, strip: 70, axis: 88, link: 94, outTop: 112, outH: 40, outStrip: 154, height: 168, short: 92 };

  // Peaks are drawn on a decibel scale (-48 dB, the envelope's smallest step, to full scale): a
  // quiet recording keeps a readable shape, and pauses still sit well under speech.
  var DB = new Float32Array(256);
  for (var v = 1; v < 256; v++) DB[v] = Math.max(0, 1 + 20 * Math.log10(v / 255) / 48.2);
  function lane(ctx, env, x0, x1, top, h, colorAt) {
    if (!env) return;
    var n = env.length, mid = top + h / 2, amp = h / 2 - 1, w = (x1 - x0) / n;
    for (var i = 0; i < n; i++) {
      var a = Math.max(DB[env[i]] * amp, 0.5);
      ctx.fillStyle = colorAt((i + 0.5) / n);
      ctx.fillRect(x0 + i * w, mid - a, Math.max(w - (w > 2 ? 0.4 : 0), 0.6), 2 * a);
    }
  }
  function axis(ctx, length, x0, x1, y) {
    var step = tickStep(length, x1 - x0);
    ctx.fillStyle = C.muted; ctx.font = "10px system-ui, sans-serif"; ctx.textBaseline = "top";
    for (var s = 0; s <= length + 1e-9; s += step) {
      var x = x0 + s / length * (x1 - x0);
      ctx.fillRect(Math.round(x), y - 2, 1, 3);
      ctx.textAlign = s === 0 ? "left" : x > x1 - 20 ? "right" : "center";
      ctx.fillText(label(s) + (s === 0 ? " s" : ""), x, y + 2);
    }
  }

  function draw(t) {
    var canvas = t.canvas, p = t.p, w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return false;
    var dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var x0 = 1, x1 = w - 1;
    if (!p) {
      ctx.fillStyle = C.muted; ctx.font = "12px system-ui, sans-serif"; ctx.textBaseline = "middle";
      ctx.fillText("No waveform: this report was written without plot data.", 8, h / 2);
      return true;
    }
    if (!t.ie && p.ie) t.ie = bytes(p.ie);
    if (!t.oe && p.oe) t.oe = bytes(p.oe);
    var len = p.is;
    function X(s) { return x0 + Math.min(Math.max(s / len, 0), 1) * (x1 - x0); }
    function band(a, b, top, hh, fill) { ctx.fillStyle = fill; ctx.fillRect(X(a), top, Math.max(X(b) - X(a), 1), hh); }
    var pieces = p.pc, win = p.wn;
    if (win) {
      ctx.fillStyle = "#f1f0ec"; ctx.fillRect(x0, L.inTop, x1 - x0, L.inH);
      band(win[0], win[1], L.inTop, L.inH, "#ffffff");
      band(win[0], win[1], L.inTop, L.inH, C.windowFill);
    }
    for (var i = 0; i + 1 < pieces.length; i++) band(pieces[i][1], pieces[i + 1][0], L.inTop, L.inH, hatch(ctx, C.pause));
    if (win && pieces.length) {
      if (pieces[0][0] - win[0] > 0.01) band(win[0], pieces[0][0], L.inTop, L.inH, hatch(ctx, C.edge));
      if (win[1] - pieces[pieces.length - 1][1] > 0.01) band(pieces[pieces.length - 1][1], win[1], L.inTop, L.inH, hatch(ctx, C.edge));
    }
    var kept = pieces.length ? pieces : (win ? [win] : p.sp);
    lane(ctx, t.ie, x0, x1, L.inTop, L.inH, function (f) { return inside(kept, f * len) ? C.waveIn : C.wave; });
    if (win) {
      ctx.strokeStyle = C.window; ctx.lineWidth = 1.5;
      ctx.strokeRect(X(win[0]), L.inTop + 0.75, Math.max(X(win[1]) - X(win[0]), 1), L.inH - 1.5);
    }
    // the speech map
    ctx.fillStyle = "#ebe9e3"; ctx.fillRect(x0, L.strip, x1 - x0, 7);
    p.sp.forEach(function (s) { band(s[0], s[1], L.strip, 7, C.speech); });
    if (p.ss) {
      if (p.ss[0] > 0) band(0, p.ss[0], L.strip, 7, hatch(ctx, C.unknown));
      if (p.ss[1] < len) band(p.ss[1], len, L.strip, 7, hatch(ctx, C.unknown));
    }
    axis(ctx, len, x0, x1, L.axis - 9);
    if (p.os) {
      var olen = p.os;
      function OX(s) { return x0 + Math.min(Math.max(s / olen, 0), 1) * (x1 - x0); }
      if (win) {
        ctx.fillStyle = C.windowFill;
        ctx.beginPath(); ctx.moveTo(X(win[0]), L.link); ctx.lineTo(X(win[1]), L.link);
        ctx.lineTo(x1, L.outTop - 2); ctx.lineTo(x0, L.outTop - 2); ctx.closePath(); ctx.fill();
      }
      var op = p.op;
      ctx.fillStyle = C.windowFill; ctx.fillRect(x0, L.outTop, x1 - x0, L.outH);
      if (op.length) {
        ctx.fillStyle = hatch(ctx, C.edge);
        ctx.fillRect(x0, L.outTop, OX(op[0][0]) - x0, L.outH);
        ctx.fillRect(OX(op[op.length - 1][1]), L.outTop, x1 - OX(op[op.length - 1][1]), L.outH);
      }
      lane(ctx, t.oe, x0, x1, L.outTop, L.outH, function (f) {
        return !op.length || inside(op, f * olen) ? C.waveIn : C.wave;
      });
      joints(p).forEach(function (s) {
        ctx.fillStyle = C.pause; ctx.fillRect(Math.round(OX(s)) - 1, L.outTop - 3, 2, L.outH + 6);
      });
      ctx.fillStyle = "#ebe9e3"; ctx.fillRect(x0, L.outStrip, x1 - x0, 5);
      op.forEach(function (s) { ctx.fillStyle = C.speech; ctx.fillRect(OX(s[0]), L.outStrip, Math.max(OX(s[1]) - OX(s[0]), 1), 5); });
      ctx.fillStyle = C.muted; ctx.font = "10px system-ui, sans-serif"; ctx.textBaseline = "top";
      ctx.textAlign = "right"; ctx.fillText("clip " + seconds(olen), x1, L.outStrip + 5);
    }
    return true;
  }
  // Where, in the clip's time, the shortened pauses were joined: pieces laid end to end, shifted
  // by what the edges stage took off or added before the first word.
  function joints(p) {
    var pc = p.pc, out = [];
    if (pc.length < 2) return out;
    var shift = 0;
    if (p.op.length) {
      var first = null;
      for (var i = 0; i < p.sp.length; i++) if (p.sp[i][1] > pc[0][0]) { first = Math.max(p.sp[i][0], pc[0][0]); break; }
      if (first !== null && first < pc[0][1]) shift = (first - pc[0][0]) - p.op[0][0];
    }
    var acc = 0;
    for (var k = 0; k + 1 < pc.length; k++) { acc += pc[k][1] - pc[k][0]; out.push(acc - shift); }
    return out.filter(function (s) { return s > 0 && s < p.os; });
  }

  // ---- hover and click-to-listen -------------------------------------------------------------
  var tip = el("div", "tip"); tip.hidden = true; document.body.appendChild(tip);
  function at(t, e) {
    var p = t.p, r = t.canvas.getBoundingClientRect(), y = e.clientY - r.top;
    if (!p) return null;
    var f = Math.min(Math.max((e.clientX - r.left - 1) / (r.width - 2), 0), 1);
    if (y < L.link || !p.os) {
      var s = f * p.is, what = inside(p.sp, s) ? "speech" : "no speech";
      if (p.ss && (s < p.ss[0] || s > p.ss[1])) what = "not analysed";
      if (p.wn && s >= p.wn[0] && s <= p.wn[1]) what += ", in the window";
      return { lane: 0, s: s, text: "input " + seconds(s) + " \u00b7 " + what };
    }
    var o = f * p.os;
    return { lane: 1, s: o, text: "clip " + seconds(o) + " \u00b7 " + (inside(p.op, o) ? "speech" : "no speech") };
  }
  function hover(t, e) {
    var a = at(t, e);
    if (!a) return;
    tip.textContent = a.text + " \u00b7 click to listen";
    tip.hidden = false;
    tip.style.left = Math.min(e.clientX + 12, window.innerWidth - tip.offsetWidth - 8) + "px";
    tip.style.top = (e.clientY + 14) + "px";
  }
  function seek(t, e) {
    var a = at(t, e), au = a && t.audio[a.lane];
    if (!au) return;
    document.querySelectorAll("audio").forEach(function (other) { if (other !== au) other.pause(); });
    au.currentTime = a.s;
    var played = au.play();
    if (played && played.catch) played.catch(function () { /* a missing file shows in the player */ });
  }

  // ---- only what is on screen is filled and drawn --------------------------------------------
  var drawn = 0, firstPass = null;
  var firstDone = new Promise(function (resolve) { firstPass = resolve; });
  function render(batch) {
    batch = batch.filter(function (t) { return !t.node.hasAttribute("data-drawn"); });
    batch.forEach(function (t) { if (!t.canvas) fill(t); });
    batch.forEach(function (t) {
      if (draw(t)) { t.node.setAttribute("data-drawn", "1"); drawn++; }
    });
    root.setAttribute("data-drawn-count", String(drawn));
  }
  var watcher = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    var batch = [];
    entries.forEach(function (en) {
      if (en.isIntersecting) { batch.push(takes[+en.target.getAttribute("data-index")]); watcher.unobserve(en.target); }
    });
    render(batch);
    firstPass();
  }, { rootMargin: "600px 0px" }) : null;

  function update() {
    var visible = takes.filter(keep).sort(sorts[state.sort]);
    var frag = document.createDocumentFragment();
    visible.forEach(function (t) { frag.appendChild(t.node); });
    list.textContent = "";
    list.appendChild(frag);
    // the first screen now, in the same layout as the list; the observer brings the rest
    render(watcher ? visible.slice(0, Math.ceil(window.innerHeight / 300) + 1) : visible);
    empty.hidden = visible.length > 0;
    shown.textContent = visible.length === takes.length ? count(takes.length) + " takes" :
      "showing " + count(visible.length) + " of " + count(takes.length);
    if (!visible.length) firstPass();
  }
  if (watcher) takes.forEach(function (t) { watcher.observe(t.node); });
  syncControls();
  update();

  var resizing = 0, lastWidth = list.clientWidth;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () {
      if (list.clientWidth === lastWidth) return;
      lastWidth = list.clientWidth;
      drawCharts();
      takes.forEach(function (t) { if (t.canvas && t.node.isConnected) draw(t); });
    }, 150);
  });

  // <html data-ready> once the first screen is drawn and the page is idle (tests, benchmarks)
  var idle = window.requestIdleCallback || function (f) { setTimeout(f, 1); };
  firstDone.then(function () {
    requestAnimationFrame(function () {
      idle(function () {
        root.setAttribute("data-ready-ms", performance.now().toFixed(1));
        root.setAttribute("data-ready", "1");
      });
    });
  });
})();
