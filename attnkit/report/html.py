"""The report as one self-contained HTML page: inline CSS, PNGs as base64 data URIs, no external resource.

Sections (``<section id=...>``): ``missing`` (what could not be shown, only when something is), ``metrics`` (table
``#final-metrics``), ``per-class`` (table ``#per-class-table``), ``curves`` (``img.curve``), ``predictions``
(``figure.prediction.best`` / ``.worst``), ``attention`` (``figure.attention``), ``interpretability`` and
``config``. A small inline script marks the ``<body>`` once the page has loaded: ``data-images-total``,
``data-images-broken`` (images that did not decode: ``naturalWidth == 0``) and ``data-images-checked="yes"``, so
a headless browser's DOM dump tells whether every picture rendered.
"""
from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ['Page', 'Picture', 'render']

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em auto;max-width:1250px;color:#222;
padding:0 1em;background:#fff}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}h3{font-size:1em;margin:.8em 0 .3em}
.meta{color:#555;font-size:.9em}table{border-collapse:collapse;font-size:.88em;margin:.4em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}.missing{background:#fff6e0;border:1px solid #e8c66a;padding:.5em 1em}
.missing li{margin:.2em 0}.gallery{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;border:1px solid #ddd;padding:6px;background:#fafafa}
figure img{display:block;max-width:100%}figcaption{font-size:.8em;color:#333;max-width:420px;margin-top:4px}
img.curve{max-width:100%;border:1px solid #eee}pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.8em;
max-height:40em}.none{color:#777;font-style:italic}
"""

CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, broken = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { broken++; imgs[i].setAttribute('data-broken', 'yes'); }
  }
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-broken', String(broken));
  document.body.setAttribute('data-images-checked', 'yes');
});
"""


@dataclass
class Picture:
    """A PNG to embed: ``png`` bytes, a caption, and CSS classes (e.g. ``'prediction best'``)."""

    png: bytes
    caption: str = ''
    css: str = ''
    alt: str = ''


@dataclass
class Page:
    """Everything the page shows; empty parts render as a sentence saying what is missing."""

    title: str
    subtitle: str = ''
    missing: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    metrics_caption: str = ''
    per_class: dict[str, Any] | None = None
    curves: list[tuple[str, str, bytes]] = field(default_factory=list)
    best: list[Picture] = field(default_factory=list)
    worst: list[Picture] = field(default_factory=list)
    predictions_note: str = ''
    attention: list[tuple[str, list[Picture]]] = field(default_factory=list)
    attention_note: str = ''
    interpretability: Any = None
    config_text: str = ''


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def data_uri(png: bytes) -> str:
    return 'data:image/png;base64,' + base64.b64encode(png).decode('ascii')


def _img(pic: Picture, css: str = '') -> str:
    classes = ' '.join(c for c in (css, pic.css) if c)
    return (f'<figure class="{_e(classes)}"><img src="{data_uri(pic.png)}" alt="{_e(pic.alt or pic.caption)}">'
            + (f'<figcaption>{_e(pic.caption)}</figcaption>' if pic.caption else '') + '</figure>')


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return '' if value is None else str(value)
    if isinstance(value, float):
        return f'{value:.4f}' if math.isfinite(value) else str(value)
    return _e(value)


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str = '') -> str:
    head = ''.join(f'<th>{_e(c)}</th>' for c in columns)
    body = ''.join('<tr>' + ''.join(f'<td>{_cell(v)}</td>' for v in row) + '</tr>' for row in rows)
    ident = f' id="{_e(table_id)}"' if table_id else ''
    return f'<table{ident} class="report-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _none(text: str) -> str:
    return f'<p class="none">{_e(text)}</p>'


def _interpretability(data: Any) -> str:
    """``interpretability.json`` of ``attnkit explain --eval`` (docs/interpretability.md): its settings, the table of
    ``rows`` (one per module and method), the best attention placement; other layouts: every list of flat dicts as a
    table, else the JSON text."""
    if isinstance(data, dict) and isinstance(data.get('rows'), list):
        settings = [f'{k}: {data[k]}' for k in ('task', 'model', 'target', 'objects', 'num_images', 'steps', 'seconds')
                    if data.get(k) is not None]
        rows = [r for r in data['rows'] if isinstance(r, dict)]
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        out = [f'<p class="meta">{_e(" · ".join(settings))}</p>' if settings else '',
               _table(columns, [[r.get(c) for c in columns] for r in rows], 'interpretability-table')]
        best = data.get('best_attention')
        if isinstance(best, dict) and best:
            out.append(f'<p>Attention that agrees most with the objects: {_e(", ".join(f"{k} {v}" for k, v in best.items()))}'
                       '</p>')
        if data.get('no_attention_module'):
            out.append('<p>The model has no attention module: gradient saliency only.</p>')
        if data.get('skipped'):
            out.append(f'<p class="meta">{len(data["skipped"])} image(s) skipped (no target or no object).</p>')
        return ''.join(out)
    tables = []

    def walk(obj: Any, name: str) -> None:
        if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj) and \
                all(not isinstance(v, (dict, list)) for r in obj for v in r.values()):
            columns: list[str] = []
            for r in obj:
                columns += [k for k in r if k not in columns]
            tables.append(f'<h3>{_e(name)}</h3>' + _table(columns, [[r.get(c) for c in columns] for r in obj]))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f'{name} / {k}' if name else str(k))

    walk(data, '')
    if tables:
        return ''.join(tables)
    return f'<pre>{_e(json.dumps(data, indent=1)[:20000])}</pre>'


def render(page: Page) -> str:
    """The HTML text of ``page``."""
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(page.title)}</title>'
             f'<style>{STYLE}</style></head><body data-report="attnkit">',
             f'<h1>{_e(page.title)}</h1>']
    if page.subtitle:
        parts.append(f'<p class="meta">{_e(page.subtitle)}</p>')
    if page.missing:
        parts.append('<section id="missing" class="missing"><h2>Not shown</h2><ul>'
                     + ''.join(f'<li>{_e(m)}</li>' for m in page.missing) + '</ul></section>')
    parts.append('<section id="metrics"><h2>Final metrics</h2>')
    if page.metrics:
        if page.metrics_caption:
            parts.append(f'<p class="meta">{_e(page.metrics_caption)}</p>')
        parts.append(_table(['metric', 'value'], list(page.metrics.items()), 'final-metrics'))
    else:
        parts.append(_none('No evaluation in the log.'))
    parts.append('</section><section id="per-class"><h2>Per class</h2>')
    if page.per_class and page.per_class.get('rows'):
        parts.append(f"<p class=\"meta\">{_e(page.per_class.get('title', ''))}</p>"
                     + _table(page.per_class['columns'], page.per_class['rows'], 'per-class-table'))
    else:
        parts.append(_none('No per-class table for this run.'))
    parts.append('</section><section id="curves"><h2>Training curves</h2>')
    if page.curves:
        for ident, caption, png in page.curves:
            parts.append(f'<figure><img class="curve" id="{_e(ident)}" src="{data_uri(png)}" alt="{_e(caption)}">'
                         f'<figcaption>{_e(caption)}</figcaption></figure>')
    else:
        parts.append(_none('No curves: the log has no records.'))
    parts.append('</section><section id="predictions"><h2>Best and worst val predictions</h2>')
    if page.predictions_note:
        parts.append(f'<p class="meta">{_e(page.predictions_note)}</p>')
    if page.best or page.worst:
        for name, pics in (('best', page.best), ('worst', page.worst)):
            parts.append(f'<h3>{name.capitalize()}</h3><div class="gallery" id="gallery-{name}">'
                         + ''.join(_img(p, f'prediction {name}') for p in pics) + '</div>')
    else:
        parts.append(_none('No prediction gallery.'))
    parts.append('</section><section id="attention"><h2>Attention (attnkit explain)</h2>')
    if page.attention_note:
        parts.append(f'<p class="meta">{_e(page.attention_note)}</p>')
    if page.attention:
        for heading, pics in page.attention:
            parts.append(f'<h3>{_e(heading)}</h3><div class="gallery">'
                         + ''.join(_img(p, 'attention') for p in pics) + '</div>')
    else:
        parts.append(_none('No attention gallery.'))
    parts.append('</section><section id="interpretability"><h2>Interpretability (attnkit explain --eval)</h2>')
    parts.append(_interpretability(page.interpretability) if page.interpretability is not None else
                 _none('No interpretability.json in the work dir (attnkit explain --eval writes it).'))
    parts.append('</section><section id="config"><h2>Config</h2>')
    parts.append(f'<pre id="config-text">{_e(page.config_text)}</pre>' if page.config_text else
                 _none('No config.py in the work dir.'))
    parts.append(f'</section><script>{CHECK_SCRIPT}</script></body></html>\n')
    return ''.join(parts)
