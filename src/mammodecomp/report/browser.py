"""The case browser: every out-of-fold ROI of a run, inside the report.

:func:`case_browser_section` returns one ``<section>`` of HTML (inline CSS,
one inline script, no external URL) that lists every ROI the run tested out
of fold: its thumbnail, its K components, its Grad-CAM where the diagnosis
kept one, the label, the fold-ensemble probability (mean over repeats) and
its spread (SD over repeats), the outcome at the run's threshold, patient,
fold and the manifest's subgroup columns. The table sorts by probability,
error or spread, filters by label, outcome (TP/FP/FN/TN), fold and subgroup,
and a click opens the case large.

Invariants
----------
* One image per ROI: a horizontal strip of ``1 + K`` grey tiles (the ROI, then
  the components, finest first) of at most :data:`TILE` px, JPEG, as a
  ``data:`` URI; ROIs with a CAM get a second strip (colour) with the map
  over the ROI and over each component. The page shows a tile by cropping the
  strip (an ``<img>`` in a clipping box), so nothing is decoded twice.
* Lazy: the data sit in one JSON block; only the :data:`PAGE_ROWS` rows of
  the current page exist in the DOM, so their images are the only ones the
  browser decodes. Measured page weight: docs/architecture.md ("Case browser").
* Outcome: a ROI is predicted positive when its mean probability over repeats
  is at least the mean of its folds' thresholds (``oof.csv``'s ``threshold``;
  0.5 when the run has none). FP = predicted positive with label 0,
  FN = predicted negative with label 1.
* Every text from the data reaches the page as JSON and is put in the DOM as
  text (``textContent``), never as markup.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["case_browser_section", "browser_data", "SUBGROUPS", "TILE", "PAGE_ROWS"]

#: side (px) of each thumbnail tile; ROIs are shrunk to it, never enlarged
TILE = 64
#: JPEG quality of the strips
JPEG_QUALITY = 80
#: rows rendered at once (one page of the table)
PAGE_ROWS = 50
#: subgroup filters: shown name -> manifest columns that may hold it (first present wins)
SUBGROUPS = {"view": ("view",), "laterality": ("laterality",),
             "density": ("density", "breast_density", "breast density"),
             "abnormality": ("abnormality", "abnormality_type", "lesion_type"),
             "source": ("source",), "split": ("split",)}
#: a subgroup column with more distinct values than this is not offered as a filter
MAX_LEVELS = 40
#: a float column with more distinct values than this is taken as continuous, not offered
MAX_NUMERIC_LEVELS = 8


def _to_u8(a: np.ndarray, signed: bool) -> np.ndarray:
    a = np.nan_to_num(np.asarray(a, dtype=np.float32))
    if signed:          # a band-pass component: 0 is mid-grey, symmetric stretch
        m = float(np.abs(a).max()) or 1.0
        a = 0.5 + 0.5 * a / m
    else:               # the ROI: its own grey values in [0, 1]
        a = np.clip(a, 0.0, 1.0)
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def _resize(u8: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image
    im = Image.fromarray(u8)
    if im.size != (side, side):
        im = im.resize((side, side), Image.BILINEAR)
    return np.asarray(im)


def _jpeg_uri(arr: np.ndarray) -> str:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _tiles(roi: np.ndarray, comps: np.ndarray, side: int) -> list[np.ndarray]:
    """Grey uint8 tiles: the ROI, then each component (signed stretch unless all >= 0)."""
    out = [_resize(_to_u8(roi, signed=False), side)]
    for c in comps:
        out.append(_resize(_to_u8(c, signed=bool(np.min(c) < 0)), side))
    return out


def _overlay(tile: np.ndarray, cam: np.ndarray, side: int) -> np.ndarray:
    """A grey tile with a CAM (values in [0, 1]) blended over it in colour."""
    from matplotlib import colormaps
    c = _resize((np.clip(np.nan_to_num(np.asarray(cam, np.float32)), 0, 1) * 255).astype(np.uint8), side)
    heat = colormaps["inferno"](c / 255.0)[..., :3]
    g = np.repeat(tile[..., None] / 255.0, 3, axis=2)
    a = 0.55 * (c / 255.0)[..., None]
    return (((1 - a) * g + a * heat).clip(0, 1) * 255).round().astype(np.uint8)


def _subgroups(manifest: pd.DataFrame) -> dict[str, str]:
    """shown name -> manifest column, for the subgroup columns this manifest has."""
    out = {}
    for name, cols in SUBGROUPS.items():
        for c in cols:
            if c in manifest.columns:
                col = manifest[c].dropna()
                # a continuous column (a synthetic density in [0, 1]) is no subgroup to filter by
                numeric = pd.api.types.is_float_dtype(col) and col.nunique() > MAX_NUMERIC_LEVELS
                if 0 < col.astype(str).nunique() <= MAX_LEVELS and not numeric:
                    out[name] = c
                break
    return out


def _cases(run) -> pd.DataFrame:
    """One row per out-of-fold ROI: mean probability and SD over repeats, threshold, outcome."""
    o = run.oof.copy()
    o["roi_id"] = o["roi_id"].astype(str)
    if "threshold" not in o.columns:
        o["threshold"] = 0.5
    first = o[o["repeat"] == o["repeat"].min()].drop_duplicates("roi_id").set_index("roi_id")["fold"]
    g = o.groupby("roi_id", sort=False)
    d = g.agg(patient_id=("patient_id", "first"), label=("label", "first"), prob=("prob", "mean"),
              sd=("prob", lambda s: float(np.std(s, ddof=1)) if len(s) > 1 else np.nan),
              n=("prob", "size"), threshold=("threshold", "mean")).reset_index()
    d["fold"] = d["roi_id"].map(first)
    d["row"] = d["roi_id"].map(run.row_of)
    d = d.dropna(subset=["row"]).sort_values("row").reset_index(drop=True)
    d["row"] = d["row"].astype(int)
    d["label"] = d["label"].astype(int)
    pred = d["prob"].to_numpy() >= d["threshold"].to_numpy()
    y = d["label"].to_numpy() == 1
    d["outcome"] = np.where(pred, np.where(y, "TP", "FP"), np.where(y, "FN", "TN"))
    return d


def _load_cams(path: Path) -> tuple[dict, np.ndarray | None]:
    """manifest row -> index into the CAM array, and the array ((n,H,W) or (n,K,H,W))."""
    f = path / "diagnosis_cams.npz"
    if not f.is_file():
        return {}, None
    z = np.load(f)
    if "rows" not in z or "cams" not in z or len(z["rows"]) == 0:
        return {}, None
    return {int(r): i for i, r in enumerate(z["rows"])}, np.asarray(z["cams"], np.float32)


def _arrays(run):
    """The run's (components, rois) memmaps, found through :mod:`mammodecomp.rundir`."""
    return run.components(), run.rois()


def browser_data(run, report_dir: str | Path | None = None, *, tile: int = TILE) -> dict:
    """The browser's data (JSON-ready): cases, strips, channel names, filters.

    Parameters
    ----------
    run : :class:`mammodecomp.rundir.Run` (``oof``, ``manifest``,
        ``info``, ``components()``, ``rois()``, ``row_of``).
    report_dir : folder holding ``diagnosis_cams.npz`` (the run's or the
        study's); default the run's.
    tile : thumbnail side in px (at most the ROI's side).
    """
    d = _cases(run)
    comps, rois = _arrays(run)
    if rois is None:
        raise ValueError("the run has neither rois_path nor components_path arrays")
    if comps is None:
        comps = np.asarray(rois)[:, None]
    k = int(comps.shape[1])
    channels = [str(c) for c in (run.info.get("channels") or [f"c{i}" for i in range(k)])][:k]
    side = int(min(tile, rois.shape[-1]))
    cam_of, cams = _load_cams(Path(report_dir) if report_dir is not None else Path(run.path))
    subs = _subgroups(run.manifest)
    man = run.manifest
    strips, cam_strips, cam_max, cases = [], [], [], []
    for rec in d.itertuples(index=False):
        r = int(rec.row)
        tiles = _tiles(np.asarray(rois[r], np.float32), np.asarray(comps[r], np.float32), side)
        strips.append(_jpeg_uri(np.concatenate(tiles, axis=1)))
        ci = -1
        if r in cam_of and cams is not None:
            m = cams[cam_of[r]]
            per = [m.mean(axis=0) if m.ndim == 3 else m] + ([m[j] for j in range(k)] if m.ndim == 3 and
                                                              m.shape[0] == k else [m] * k)
            cam_strips.append(_jpeg_uri(np.concatenate([_overlay(t, c, side) for t, c in zip(tiles, per)], axis=1)))
            cam_max.append(round(float(np.max(m)), 4))
            ci = len(cam_strips) - 1
        sd = None if not np.isfinite(rec.sd) else round(float(rec.sd), 4)
        cases.append([str(rec.roi_id), str(rec.patient_id), int(rec.label), round(float(rec.prob), 6), sd,
                      int(rec.n), None if pd.isna(rec.fold) else int(rec.fold), rec.outcome,
                      round(float(rec.threshold), 4), ci,
                      [None if pd.isna(man[c].iloc[r]) else str(man[c].iloc[r]) for c in subs.values()]])
    return {"fields": ["roi", "patient", "label", "prob", "sd", "n", "fold", "outcome", "threshold", "cam", "sub"],
            "cases": cases, "strips": strips, "cams": cam_strips, "cam_max": cam_max, "channels": channels, "tile": side,
            "subgroups": list(subs), "page": PAGE_ROWS, "run": str(getattr(run, "name", ""))}


CSS = """
#mdb .bar{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center;font-size:13px;margin:6px 0 10px}
#mdb select,#mdb input{font-size:13px;padding:2px 4px}
#mdb-subs{display:contents}
#mdb .bar label{white-space:nowrap}
#mdb table{width:100%;border-collapse:collapse;font-size:12px}
#mdb td,#mdb th{border-bottom:1px solid #e3e6ea;padding:2px 6px;vertical-align:middle;text-align:left}
#mdb tbody tr{cursor:pointer}
#mdb tbody tr:hover{background:#eef3f9}
#mdb tr.sel{background:#dde8f5}
#mdb .clip{display:inline-block;overflow:hidden;vertical-align:middle;margin-right:2px;background:#000}
#mdb .clip img{max-width:none;margin:0;display:block}
#mdb .o-FP,#mdb .o-FN{color:#c0392b;font-weight:700}
#mdb .o-TP,#mdb .o-TN{color:#27ae60}
#mdb .pager button{font-size:13px;margin:0 4px}
#mdb-detail{border:1px solid #cfd8e3;border-radius:8px;padding:10px 14px;margin:10px 0;background:#fafcfe}
#mdb-detail .tiles{display:flex;flex-wrap:wrap;gap:10px}
#mdb-detail figure{margin:0;font-size:12px;text-align:center}
#mdb-detail .clip img{image-rendering:auto}
"""

# Plain JavaScript, no library. Reads the JSON block, renders one page of rows.
JS = r"""
(function(){
var D=JSON.parse(document.getElementById('mdb-data').textContent);
var F={};D.fields.forEach(function(f,i){F[f]=i;});
var C=D.cases,T=D.tile,K=D.channels.length,page=0,view=[];
function $(id){return document.getElementById(id);}
function el(tag,txt,cls){var e=document.createElement(tag);if(txt!==undefined&&txt!==null)e.textContent=txt;if(cls)e.className=cls;return e;}
function tile(uri,i,scale,alt){var s=T*scale,b=el('span',null,'clip');b.style.width=s+'px';b.style.height=s+'px';
 var im=document.createElement('img');im.src=uri;im.alt=alt;im.width=T*(K+1)*scale;im.height=s;im.style.marginLeft=(-i*s)+'px';
 im.setAttribute('loading','lazy');b.appendChild(im);return b;}
function opt(sel,v,t){var o=el('option',t);o.value=v;sel.appendChild(o);}
function fill(id,vals){var s=$(id);vals.forEach(function(v){opt(s,v,v);});}
var folds={},subs=D.subgroups.map(function(){return {};});
C.forEach(function(c){if(c[F.fold]!==null)folds[c[F.fold]]=1;c[F.sub].forEach(function(v,j){if(v!==null)subs[j][v]=1;});});
fill('mdb-fold',Object.keys(folds).sort(function(a,b){return a-b;}));
var sb=$('mdb-subs');
D.subgroups.forEach(function(name,j){var l=el('label',name+' ');var s=el('select');s.id='mdb-sub-'+name;opt(s,'','all');
 Object.keys(subs[j]).sort().forEach(function(v){opt(s,v,v);});s.onchange=apply;l.appendChild(s);sb.appendChild(l);});
function keyf(){var k=$('mdb-sort').value;
 if(k==='prob-desc')return function(c){return -c[F.prob];};
 if(k==='prob-asc')return function(c){return c[F.prob];};
 if(k==='error')return function(c){return -Math.abs(c[F.label]-c[F.prob]);};
 if(k==='sd')return function(c){return -(c[F.sd]===null?-1:c[F.sd]);};
 return function(c){return c[F.roi];};}
function apply(){var lab=$('mdb-label').value,out=$('mdb-outcome').value,fo=$('mdb-fold').value,q=$('mdb-q').value.toLowerCase();
 var sv=D.subgroups.map(function(n){return $('mdb-sub-'+n).value;});
 view=C.filter(function(c){
  if(lab!==''&&String(c[F.label])!==lab)return false;
  if(out==='err'){if(c[F.outcome]!=='FP'&&c[F.outcome]!=='FN')return false;}
  else if(out!==''&&c[F.outcome]!==out)return false;
  if(fo!==''&&String(c[F.fold])!==fo)return false;
  for(var j=0;j<sv.length;j++){if(sv[j]!==''&&c[F.sub][j]!==sv[j])return false;}
  if(q&&c[F.roi].toLowerCase().indexOf(q)<0&&c[F.patient].toLowerCase().indexOf(q)<0)return false;
  return true;});
 var kf=keyf();view=view.map(function(c,i){return [kf(c),i,c];}).sort(function(a,b){return a[0]<b[0]?-1:a[0]>b[0]?1:a[1]-b[1];}).map(function(x){return x[2];});
 page=0;render();}
function render(){var tb=$('mdb-rows');tb.textContent='';var n=view.length,P=D.page,pages=Math.max(1,Math.ceil(n/P));
 if(page>=pages)page=pages-1;var a=page*P,b=Math.min(n,a+P);
 for(var i=a;i<b;i++){(function(c){var tr=el('tr');tr.setAttribute('data-roi',c[F.roi]);
  var td=el('td');for(var t=0;t<=K;t++)td.appendChild(tile(D.strips[idx[c[F.roi]]],t,t?0.5:1,t?D.channels[t-1]:'ROI'));tr.appendChild(td);
  var tc=el('td');if(c[F.cam]>=0)tc.appendChild(tile(D.cams[c[F.cam]],0,1,'CAM'));else tc.textContent='-';tr.appendChild(tc);
  tr.appendChild(el('td',c[F.roi]));tr.appendChild(el('td',c[F.patient]));tr.appendChild(el('td',String(c[F.label])));
  tr.appendChild(el('td',c[F.prob].toFixed(3)));tr.appendChild(el('td',c[F.sd]===null?'-':c[F.sd].toFixed(3)));
  tr.appendChild(el('td',c[F.outcome],'o-'+c[F.outcome]));tr.appendChild(el('td',c[F.fold]===null?'-':String(c[F.fold])));
  c[F.sub].forEach(function(v){tr.appendChild(el('td',v===null?'-':v));});
  tr.onclick=function(){show(c,tr);};tb.appendChild(tr);})(view[i]);}
 var cnt=$('mdb-count');cnt.setAttribute('data-n',String(n));
 cnt.textContent=n+' of '+C.length+' cases'+(n?' (rows '+(a+1)+'-'+b+', page '+(page+1)+' of '+pages+')':'');}
var idx={};C.forEach(function(c,i){idx[c[F.roi]]=i;});
function show(c,tr){var old=document.querySelector('#mdb tr.sel');if(old)old.className='';if(tr)tr.className='sel';
 var d=$('mdb-detail');d.textContent='';d.style.display='block';d.setAttribute('data-roi',c[F.roi]);
 d.appendChild(el('h3','ROI '+c[F.roi]+' (patient '+c[F.patient]+')'));
 d.appendChild(el('div','label '+c[F.label]+'; probability '+c[F.prob].toFixed(3)+(c[F.sd]===null?'':' \u00b1 '+c[F.sd].toFixed(3)+' (SD over '+c[F.n]+' repeats)')
  +'; threshold '+c[F.threshold].toFixed(3)+'; outcome '+c[F.outcome]+'; fold '+c[F.fold]
  +D.subgroups.map(function(n,j){return '; '+n+' '+(c[F.sub][j]===null?'-':c[F.sub][j]);}).join('')));
 var w=el('div',null,'tiles'),s=D.strips[idx[c[F.roi]]];
 for(var t=0;t<=K;t++){var f=el('figure');f.appendChild(tile(s,t,2,t?D.channels[t-1]:'ROI'));f.appendChild(el('figcaption',t?D.channels[t-1]:'ROI'));w.appendChild(f);}
 d.appendChild(w);
 if(c[F.cam]>=0){d.appendChild(el('div','Grad-CAM of its fold model, over the ROI and each component'+(D.cam_max[c[F.cam]]>0?':':
  ': zero everywhere (nothing in this ROI raised the malignant logit; usual for a confident negative).')));var w2=el('div',null,'tiles');
  for(var u=0;u<=K;u++){var g=el('figure');g.appendChild(tile(D.cams[c[F.cam]],u,2,'CAM '+(u?D.channels[u-1]:'ROI')));g.appendChild(el('figcaption','CAM '+(u?D.channels[u-1]:'ROI')));w2.appendChild(g);}
  d.appendChild(w2);} else d.appendChild(el('div','No Grad-CAM kept for this ROI (the diagnosis keeps a few per outcome).','note'));
 d.scrollIntoView({block:'nearest'});}
['mdb-label','mdb-outcome','mdb-fold','mdb-sort'].forEach(function(id){$(id).onchange=apply;});
$('mdb-q').oninput=apply;
$('mdb-prev').onclick=function(){if(page>0){page--;render();}};
$('mdb-next').onclick=function(){if((page+1)*D.page<view.length){page++;render();}};
apply();
})();
"""


def _json_block(data: dict) -> str:
    # "</" cannot close the script element; the JSON parser reads "<\/" as "</"
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def case_browser_section(run, report_dir: str | Path | None = None) -> str:
    """The report's case-browser ``<section>``; a short note when it cannot be made."""
    try:
        data = browser_data(run, report_dir)
    except Exception as e:  # noqa: BLE001 - the report is still written, saying why there is no browser
        return ("<section><h2>Case browser</h2><p class=\"note\">not available: "
                f"{html.escape(type(e).__name__ + ': ' + str(e))}</p></section>")
    e = html.escape
    subs = "".join(f"<th>{e(s)}</th>" for s in data["subgroups"])
    head = (f"<tr><th>ROI, then {e(', '.join(data['channels']))}</th><th>CAM</th><th>ROI id</th><th>patient</th>"
            f"<th>label</th><th>probability</th><th>spread (SD)</th><th>outcome</th><th>fold</th>{subs}</tr>")
    bar = ('<div class="bar">'
           '<label>sort <select id="mdb-sort"><option value="error">largest error first</option>'
           '<option value="prob-desc">probability, high to low</option>'
           '<option value="prob-asc">probability, low to high</option>'
           '<option value="sd">spread over repeats</option><option value="id">ROI id</option></select></label>'
           '<label>label <select id="mdb-label"><option value="">all</option><option value="0">0 benign</option>'
           '<option value="1">1 malignant</option></select></label>'
           '<label>outcome <select id="mdb-outcome"><option value="">all</option>'
           '<option value="err">errors (FP + FN)</option><option value="FP">false positive</option>'
           '<option value="FN">false negative</option><option value="TP">true positive</option>'
           '<option value="TN">true negative</option></select></label>'
           '<label>fold <select id="mdb-fold"><option value="">all</option></select></label>'
           '<span id="mdb-subs"></span>'
           '<label>find <input id="mdb-q" size="12" placeholder="ROI or patient"></label></div>')
    n_cam = len(data["cams"])
    return (f'<section id="mdb"><h2>Case browser: every out-of-fold ROI</h2>'
            f'<p class="note">Run {e(data["run"])}: {len(data["cases"])} ROIs tested out of fold. Probability: the '
            "mean over repeats of each ROI's out-of-fold probability (spread: SD over repeats); outcome at the "
            "mean of its folds' thresholds. Thumbnails at most "
            f'{data["tile"]} px; click a row for the case large. Grad-CAM kept for {n_cam} ROIs.</p>'
            f'<style>{CSS}</style>{bar}'
            '<div class="pager"><button id="mdb-prev">&larr; previous</button><span id="mdb-count"></span>'
            '<button id="mdb-next">next &rarr;</button></div>'
            f'<div id="mdb-detail" style="display:none"></div>'
            f'<table><thead>{head}</thead><tbody id="mdb-rows"></tbody></table>'
            f'<script type="application/json" id="mdb-data">{_json_block(data)}</script>'
            f"<script>{JS}</script></section>")
