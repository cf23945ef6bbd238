# ruff: noqa: E501  (an embedded web page: its lines are JavaScript and HTML)
"""The dashboard's page: one self-contained HTML document (no network but its own server);
it polls ``/api/state`` every two seconds and redraws."""

PAGE = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>shoal serve</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem auto;
max-width:1150px;color:#222;padding:0 1rem;line-height:1.35}
h1{font-size:1.5rem;margin:0}h2{font-size:1.15rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem;margin-top:1.8rem}.muted{color:#666;font-size:.9rem}
table{border-collapse:collapse;font-size:.88rem;margin:.4rem 0}
th,td{border:1px solid #e3e3e3;padding:.2rem .55rem;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
.bar{width:180px;height:10px;background:#eee;border-radius:5px;overflow:hidden}
.bar>div{height:100%;background:#54a24b}.fail{color:#b00020}
pre{background:#f8f8f8;border:1px solid #eee;padding:.45rem;overflow-x:auto;font-size:.78rem;
max-height:16rem}.answer{background:#f3f8ff;border-left:4px solid #4c78a8;padding:.4rem .9rem}
svg.fig{width:100%;height:auto}.live{color:#2a7a2a}.idle{color:#888}
</style></head>
<body>
<h1 id="title">shoal</h1>
<p class="muted" id="sub">loading…</p>
<h2>Steps</h2>
<table id="steps"><thead><tr><th>step</th><th></th><th>done</th><th>running</th>
<th>failed</th><th>interrupted</th><th>changed</th><th>blocked</th><th>skipped</th>
<th>missing</th><th>ETA</th></tr></thead><tbody></tbody></table>
<div id="detached"></div>
<h2>Running <span id="n-running" class="muted"></span></h2>
<table id="running"><thead><tr><th>task</th><th>elapsed</th><th>host</th><th>attempt</th>
<th></th></tr></thead><tbody></tbody></table>
<h2 class="fail">Failures <span id="n-failures" class="muted"></span></h2>
<div id="failures"></div>
<div id="headline"></div>
<script>
var token = new URLSearchParams(location.search).get("token") || "";
var q = token ? "?token=" + encodeURIComponent(token) : "";
var shownHeadline = null;
function esc(s) { var d = document.createElement("div"); d.textContent = s == null ? "" : String(s); return d.innerHTML; }
function hms(s) {
  if (s == null) return "";
  s = Math.max(0, Math.round(s));
  var h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, x = s % 60;
  return h + ":" + (m < 10 ? "0" : "") + m + ":" + (x < 10 ? "0" : "") + x;
}
function logLink(task) {
  return "/log?task=" + encodeURIComponent(task) + (token ? "&token=" + encodeURIComponent(token) : "");
}
function render(st) {
  document.title = "shoal: " + st.experiment;
  document.getElementById("title").textContent = st.experiment;
  var live = st.controller === "running";
  document.getElementById("sub").innerHTML = esc(st.done.toLocaleString()) + " of " +
    esc(st.total.toLocaleString()) + " tasks done · root " + esc(st.root) + " · " +
    (live ? "<span class='live'>a controller is running</span>" : "<span class='idle'>no controller running</span>") +
    " · updated " + esc(new Date(st.time * 1000).toLocaleTimeString());
  var rows = "";
  Object.keys(st.steps).forEach(function (name) {
    var s = st.steps[name], pct = s.total ? 100 * s.done / s.total : 0;
    rows += "<tr data-step='" + esc(name) + "'><td>" + esc(name) + "</td><td><div class='bar'><div style='width:" +
      pct.toFixed(1) + "%'></div></div></td><td class='done'>" + s.done + "/" + s.total +
      "</td><td class='running'>" + s.running + "</td><td class='failed'>" + s.failed + "</td><td>" + s.interrupted +
      "</td><td>" + s.changed + "</td><td>" + s.blocked + "</td><td>" + s.skipped + "</td><td>" + s.missing +
      "</td><td>" + (s.eta_s == null ? "" : hms(s.eta_s)) + "</td></tr>";
  });
  document.querySelector("#steps tbody").innerHTML = rows;
  var d = st.detached, det = "";
  if (d && d.error) det = "<p class='muted'>detached Slurm jobs: " + esc(d.error) + "</p>";
  else if (d) {
    det = "<p>detached Slurm submission: " + d.elements + " array elements still held" +
      Object.keys(d.steps).map(function (k) { return " · " + esc(k) + ": " + d.steps[k].queued +
      " queued, " + d.steps[k].running + " running"; }).join("") + "</p>";
  }
  document.getElementById("detached").innerHTML = det;
  document.getElementById("n-running").textContent = "(" + st.n_running + ")";
  document.querySelector("#running tbody").innerHTML = st.running.map(function (r) {
    return "<tr><td>" + esc(r.label) + "</td><td>" + hms(r.elapsed_s) + "</td><td>" + esc(r.host) +
      "</td><td>" + esc(r.attempt) + "</td><td><a href='" + logLink(r.task) + "'>log</a></td></tr>";
  }).join("");
  document.getElementById("n-failures").textContent = "(" + st.n_failures + ")";
  document.getElementById("failures").innerHTML = st.failures.length ? st.failures.map(function (f) {
    return "<div class='failure' data-task='" + esc(f.task) + "'><h3 class='fail'>" + esc(f.label) +
      "</h3><p>" + esc(f.error) + " · <a href='" + logLink(f.task) + "'>whole log</a></p>" +
      (f.log_tail ? "<pre class='tail'>" + esc(f.log_tail) + "</pre>" : "") + "</div>";
  }).join("") : "<p>none</p>";
  var h = st.headline, hl = "";
  if (h && h.error) hl = "<h2>Headline</h2><p class='fail'>" + esc(h.error) + "</p>";
  else if (h) {
    hl = "<h2>Headline</h2>" + (h.sentences.length ? "<div class='answer'><ul>" +
      h.sentences.map(function (s) { return "<li>" + esc(s) + "</li>"; }).join("") + "</ul></div>" : "") +
      h.figure + "<p class='muted'>n counts " + esc(h.units) + ". " + esc(h.method) + "</p>" + h.table;
  }
  if (hl !== shownHeadline) { document.getElementById("headline").innerHTML = hl; shownHeadline = hl; }
  document.body.setAttribute("data-done", st.done);
  document.body.setAttribute("data-loaded", "1");
}
function poll() {
  fetch("/api/state" + q, {credentials: "same-origin"}).then(function (r) {
    if (!r.ok) throw new Error("HTTP " + r.status);
    return r.json();
  }).then(render).catch(function (e) {
    document.getElementById("sub").textContent = "cannot reach shoal serve: " + e.message;
  }).finally(function () { setTimeout(poll, 2000); });
}
poll();
</script>
</body></html>
"""
