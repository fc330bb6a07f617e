"""Writers for the demo data: Pascal VOC XML + palette label PNGs, COCO records, VQA v2 JSON files."""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import cv2
import numpy as np
from PIL import Image

from .demo_scene import CLASSES, DemoObject
from .palette import voc_palette as _voc_palette

__all__ = ['voc_palette', 'label_map', 'write_label_png', 'write_voc_xml', 'coco_annotation', 'write_json',
           'DIFFICULT_SIDE']

DIFFICULT_SIDE = 10  # objects whose visible box has a side < 10 px are marked difficult in VOC


def voc_palette() -> list[int]:
    """The 256-entry Pascal VOC colour map as a flat [r, g, b, ...] list, as ``PIL.Image.putpalette`` takes it."""
    return [v for rgb in _voc_palette(256) for v in rgb]


_PALETTE = voc_palette()


def label_map(instances: np.ndarray, objects: list[DemoObject]) -> np.ndarray:
    """Class-index map (H, W) uint8: 0 background, 1..4 shape classes, 255 on object borders.

    A pixel is a border pixel when one of its 4 neighbours belongs to another instance (or to the
    background) and one of the two is an object — a band 2 px wide (1 px each side of every outline), as
    Pascal VOC marks its object boundaries 'void'.

    Args:
        instances: (H, W) uint8 instance ids, 0 = background, k = ``objects[k-1]``.
    """
    lut = np.zeros(256, np.uint8)
    for k, obj in enumerate(objects, start=1):
        lut[k] = CLASSES.index(obj.shape) + 1
    labels = lut[instances]
    pad = np.pad(instances, 1, mode='edge')
    border = np.zeros(instances.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        border |= pad[dy:dy + instances.shape[0], dx:dx + instances.shape[1]] != instances
    labels[border] = 255
    return labels


def write_label_png(path: str, labels: np.ndarray) -> None:
    """Save (H, W) uint8 class indices as a palette ('P') PNG with the VOC colour map."""
    img = Image.fromarray(labels, mode='P')
    img.putpalette(_PALETTE)
    img.save(path, format='PNG', optimize=False)


def write_voc_xml(path: str, file_name: str, size: int, objects: list[DemoObject]) -> None:
    """Pascal VOC annotation. Boxes use VOC's 1-based inclusive pixel convention:
    ``xmin = x1 + 1, ymin = y1 + 1, xmax = x2 + 1, ymax = y2 + 1`` for the 0-based inclusive visible-pixel
    extent (x1, y1, x2, y2), so ``xmin - 1`` equals COCO's ``x`` and ``xmax`` equals COCO's ``x + w``."""
    root = ET.Element('annotation')
    ET.SubElement(root, 'folder').text = 'shapes'
    ET.SubElement(root, 'filename').text = file_name
    src = ET.SubElement(root, 'source')
    ET.SubElement(src, 'database').text = 'attnkit shapes demo'
    sz = ET.SubElement(root, 'size')
    for tag, val in (('width', size), ('height', size), ('depth', 3)):
        ET.SubElement(sz, tag).text = str(val)
    ET.SubElement(root, 'segmented').text = '1'
    for obj in objects:
        x1, y1, x2, y2 = obj.vis_box
        o = ET.SubElement(root, 'object')
        ET.SubElement(o, 'name').text = obj.shape
        ET.SubElement(o, 'pose').text = 'Unspecified'
        ET.SubElement(o, 'truncated').text = '0'
        ET.SubElement(o, 'occluded').text = '1' if obj.mask.sum() < 0.95 * obj.drawn_pixels else '0'
        small = min(x2 - x1 + 1, y2 - y1 + 1) < DIFFICULT_SIDE
        ET.SubElement(o, 'difficult').text = '1' if small else '0'
        bb = ET.SubElement(o, 'bndbox')
        for tag, val in (('xmin', x1 + 1), ('ymin', y1 + 1), ('xmax', x2 + 1), ('ymax', y2 + 1)):
            ET.SubElement(bb, tag).text = str(val)
    ET.indent(root, space='  ')
    ET.ElementTree(root).write(path, encoding='utf-8', xml_declaration=False)


def coco_annotation(obj: DemoObject, ann_id: int, image_id: int) -> dict:
    """COCO instance record of the object's visible region: ``bbox`` [x, y, w, h] of the visible pixels
    (pixel i spans [i, i + 1)), ``area`` = visible pixel count, ``segmentation`` = outer contour polygon(s)
    of the visible mask (traced on a 2x grid, 0.25 px inside the pixel outline, so pycocotools rasterises it
    back to the same pixels), ``category_id`` = class index + 1 (1..4)."""
    x1, y1, x2, y2 = obj.vis_box
    mask = obj.mask.astype(np.uint8)
    # trace on a 2x grid so the polygon runs along pixel edges, not through pixel centres
    big = cv2.resize(mask, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = c.reshape(-1, 2).astype(np.float64)
        if len(pts) < 3:
            continue
        # big pixel p spans [p/2, p/2 + 0.5): its centre p/2 + 0.25 lies 0.25 px inside the visible outline
        pts = pts / 2 + 0.25
        polys.append([float(v) for v in pts.reshape(-1)])
    return {'id': ann_id, 'image_id': image_id, 'category_id': CLASSES.index(obj.shape) + 1,
            'bbox': [x1, y1, x2 - x1 + 1, y2 - y1 + 1], 'area': int(mask.sum()), 'iscrowd': 0,
            'segmentation': polys}


def write_json(path: str, data: dict) -> None:
    """Deterministic compact JSON."""
    with open(path, 'w', encoding='utf-8') as f:
        f.write(json.dumps(data, separators=(',', ':')) + '\n')  # dumps uses the C encoder, dump does not


def ensure_dirs(*dirs: str) -> None:
    for d in dirs:
        os.makedirs(d, exist_ok=True)
