"""A self-contained API documentation page: inline HTML and JS, no CDN, works offline."""

from __future__ import annotations

__all__ = ["DOCS_HTML"]

DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>orchestra_kit API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#222}
h1{font-size:1.5rem} .op{border:1px solid #ddd;border-radius:6px;margin:.6rem 0}
.op summary{padding:.5rem;cursor:pointer;font-family:monospace}
.m{display:inline-block;min-width:4.5rem;font-weight:bold;color:#fff;border-radius:4px;
text-align:center;margin-right:.5rem;padding:0 .3rem}
.get{background:#2b7bb9}.post{background:#3a9a48}.delete{background:#c0392b}
.body{padding:.5rem 1rem;border-top:1px solid #eee} pre{background:#f6f8fa;padding:.5rem;
overflow:auto;font-size:.85rem} table{border-collapse:collapse} td{padding:.1rem .6rem}
</style></head>
<body>
<h1 id="title">orchestra_kit API</h1>
<p id="desc"></p>
<div id="ops">Loading /openapi.json&hellip;</div>
<h2>Schemas</h2><div id="schemas"></div>
<script>
"use strict";
function el(tag, attrs, text){const e=document.createElement(tag);
  for(const k in (attrs||{})) e.setAttribute(k, attrs[k]);
  if(text!==undefined) e.textContent=text; return e;}
function resolve(spec, s){ if(s && s.$ref){ const n=s.$ref.split("/").pop();
  return spec.components.schemas[n] || s;} return s; }
function pre(obj){ return el("pre", {}, JSON.stringify(obj, null, 2)); }
function render(spec){
  document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
  document.getElementById("desc").textContent = spec.info.description || "";
  const ops = document.getElementById("ops"); ops.textContent = "";
  for(const path of Object.keys(spec.paths)){
    for(const method of Object.keys(spec.paths[path])){
      const op = spec.paths[path][method];
      const d = el("details", {"class": "op"}); const sm = el("summary");
      sm.appendChild(el("span", {"class": "m " + method}, method.toUpperCase()));
      sm.appendChild(document.createTextNode(path + "  \\u2014  " + (op.summary||"")));
      d.appendChild(sm); const b = el("div", {"class": "body"});
      if((op.parameters||[]).length){ b.appendChild(el("h4", {}, "Parameters"));
        const t = el("table"); for(const p of op.parameters){ const r = el("tr");
          r.appendChild(el("td", {}, p.name)); r.appendChild(el("td", {}, p.in));
          r.appendChild(el("td", {}, JSON.stringify(p.schema))); t.appendChild(r);} b.appendChild(t);}
      if(op.requestBody){ b.appendChild(el("h4", {}, "Request body"));
        const c = op.requestBody.content["application/json"];
        b.appendChild(pre(resolve(spec, c.schema))); }
      b.appendChild(el("h4", {}, "Responses"));
      for(const code of Object.keys(op.responses)){ const r = op.responses[code];
        b.appendChild(el("div", {}, code + " \\u2014 " + r.description));}
      d.appendChild(b); ops.appendChild(d);
    }
  }
  const sc = document.getElementById("schemas");
  for(const name of Object.keys(spec.components.schemas)){
    const d = el("details", {"class": "op"}); d.appendChild(el("summary", {}, name));
    d.appendChild(pre(spec.components.schemas[name])); sc.appendChild(d);}
}
fetch("openapi.json").then(r => r.json()).then(render).catch(e => {
  document.getElementById("ops").textContent = "Could not load /openapi.json: " + e; });
</script>
</body></html>
"""
