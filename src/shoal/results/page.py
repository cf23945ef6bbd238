"""The report page's frame: style, sortable tables, the table of contents, and the check a
browser test reads (every figure rendered, every contents link has its target)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem;margin-top:2.2rem}h3{font-size:1.02rem;margin-top:1.4rem}
nav.toc{background:#f7f7f9;border:1px solid #e5e5ea;padding:.4rem 1rem;font-size:.9rem}
nav.toc ol{margin:.3rem 0;padding-left:1.2rem;columns:2;column-gap:2rem}
nav.toc ol ol{columns:1;margin:0;font-size:.85rem}nav.toc li{break-inside:avoid}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}
th{background:#f5f5f5;cursor:pointer;user-select:none}th.sorted-asc:after{content:" ▲"}
th.sorted-desc:after{content:" ▼"}td:first-child,th:first-child{text-align:left}
pre{background:#f8f8f8;border:1px solid #eee;padding:.5rem;overflow-x:auto;font-size:.8rem}
.fail{color:#b00020}.muted{color:#666;font-size:.9rem}
.fig{width:100%;height:auto;display:block;margin:.6rem 0;border:1px solid #f0f0f0}
.answer{font-size:1.02rem;background:#f3f8ff;border-left:4px solid #4c78a8;
padding:.5rem .9rem;margin:.8rem 0}.answer li{margin:.25rem 0}
"""

SCRIPT = """
<script>
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(function (h) {
        h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      rows.sort(function (a, b) {
        var x = a.cells[col].textContent, y = b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var svgs = Array.prototype.slice.call(document.querySelectorAll("svg.fig"));
  var drawn = svgs.filter(function (s) { return s.getBoundingClientRect().width > 0; });
  document.body.setAttribute("data-images-ok", (ok + drawn.length) + "/" +
                             (imgs.length + svgs.length));
  var links = Array.prototype.slice.call(document.querySelectorAll("nav.toc a"));
  var found = links.filter(function (a) {
    return document.getElementById(a.getAttribute("href").slice(1)); });
  document.body.setAttribute("data-toc-ok", found.length + "/" + links.length);
});
</script>
"""


def table(frame: pd.DataFrame, sortable: bool = True) -> str:
    """A table of ``frame`` (click a header to sort where ``sortable``)."""
    ints = [c for c in frame.columns if str(frame[c].dtype) == "Int64"]
    if ints:  # (pandas writes <NA> for a missing nullable int, whatever na_rep says)
        frame = frame.astype({c: object for c in ints})
        for c in ints:
            frame[c] = frame[c].where(frame[c].notna(), "")
    return frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}",
                         na_rep="", classes="sortable" if sortable else None)


def anchor(text: str) -> str:
    """An id for a section title."""
    return "s-" + "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def toc(sections: list[tuple[str, str, int]]) -> str:
    """The contents: ``(id, title, depth)`` per section (depth 1 or 2; a depth-2 entry
    goes in the list of the depth-1 entry before it)."""
    out = ["<nav class='toc'><strong>Contents</strong><ol>"]
    item = False  # a depth-1 <li> is open
    sub = False  # its <ol> is open
    for sid, title, depth in sections:
        link = f"<a href='#{sid}'>{html.escape(title)}</a>"
        if depth == 2 and item:
            if not sub:
                out.append("<ol>")
                sub = True
            out.append(f"<li>{link}</li>")
            continue
        if sub:
            out.append("</ol>")
            sub = False
        if item:
            out.append("</li>")
        out.append(f"<li>{link}")
        item = True
    out.append(("</ol>" if sub else "") + ("</li>" if item else "") + "</ol></nav>")
    return "".join(out)
