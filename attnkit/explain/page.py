"""One self-contained HTML page of an ``explain`` run: per image, per module, every view's PNG embedded (base64)."""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Sequence

__all__ = ['write_page', 'embed_png']

_STYLE = """body{font-family:sans-serif;margin:1em 2em;color:#222}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
h3{margin:.8em 0 .3em;font-size:1em;color:#444}.row{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;border:1px solid #ddd;padding:4px;background:#fafafa}figcaption{font-size:.8em;max-width:400px}
.note{background:#fff4d6;border:1px solid #e0c060;padding:.4em .8em;display:inline-block}
code{background:#eee;padding:0 3px}"""


def embed_png(path: str | os.PathLike) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    return 'data:image/png;base64,' + base64.b64encode(Path(path).read_bytes()).decode('ascii')


def _group(views: Sequence[dict]) -> list[tuple[str, list[dict]]]:
    groups: dict[str, list[dict]] = {}
    for v in views:
        module = v.get('module')
        if module and module.endswith('.channel'):  # CBAM's channel part beside its spatial part
            module = module[: -len('.channel')]
        groups.setdefault(module or _SECTION.get(v['kind'], v['kind']), []).append(v)
    return list(groups.items())


_SECTION = {'prediction': 'prediction', 'gradcam': 'gradient saliency', 'gradcam++': 'gradient saliency',
            'rollout': 'attention rollout', 'fusion_attention': 'fusion head'}


def write_page(path: str | os.PathLike, results: Sequence[dict], title: str, header: Sequence[str] = ()) -> Path:
    """Write the page.

    Args:
        path: the .html file.
        results: :func:`~attnkit.explain.run.explain_images`'s list (``image``, ``views``, ``notes``).
        title: the page title.
        header: lines under the title (config, checkpoint, target).
    """
    parts = [f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
             f'<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>']
    parts += [f'<p>{html.escape(line)}</p>' for line in header]
    for res in results:
        parts.append(f'<section class="image"><h2>{html.escape(str(res["image"]))}</h2>')
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in res.get('notes', [])]
        for section, views in _group(res['views']):
            parts.append(f'<h3>{html.escape(section)}</h3><div class="row">')
            for v in views:
                parts.append(f'<figure><img src="{embed_png(v["png"])}" alt="{html.escape(v["title"])}">'
                             f'<figcaption>{html.escape(v["title"])} <code>{html.escape(v["kind"])}</code>'
                             '</figcaption></figure>')
            parts.append('</div>')
        parts.append('</section>')
    parts.append('</body></html>')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(parts), encoding='utf-8')
    return path
