"""Build an EditSpec from an `edit` config: a JSON file/URL, or a request that names regions by label.

A label request (for domains with a segmenter) looks like:
    request:
      context: {label: spire, count: 8}            # the first 8 images whose segmentation shows a spire
      copy:    {label: tree, nth: 0}                # the tree in the first image showing a tree
      paste:   {label: spire, nth: 8}               # the spire in the 9th image showing one
      erase: false
      drank: null
An erase request sets `erase: true` and either `drank: N` (zero the N units most specific to the
context, the paper's) or `erase_fill: surroundings` (fill the region from around it).
A region may also give `image_id` directly instead of `nth`, or `pick: largest` (with `among: N`,
default 8): of the first N images showing the label, the one where it is largest (for the copy, its
largest connected piece), so the example copied or pasted onto is a clear one. The paste may
instead take `pick: reachable` (with `among`): of those images, the one whose paste region the
context's directions at the edit's layer reach most strongly (see rewriting.edits.reach): a rank-one
rewrite can only change what its context directions reach, so a paste object unlike the context's
(a small dome where the context shows large ones) makes the edit spill or do nothing.
`min_piece: N` (in `request`) drops every labelled piece of fewer than N pixels from the regions
(segmenter specks) and counts an image as showing the label only by its pieces of N or more.
`context_extend_up: N` (in `request`) extends each context mask N pixels upward: the context then
also covers the space above the region, where a taller pasted object (a spire on a dome) will stand.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import EditSpecError
from .reach import ReachScorer, default_reach_scorer
from .resolve import (ONE_OBJECT_REGIONS, find_images_with_label, label_masks, label_region_mask, labels_remembered,
                      largest_component, resolve_labels, without_small_pieces)
from .loading import load_edit
from .spec import EditRequest, EditSpec, Region


def _get(config: Any, key: str, default=None):
    if config is None:
        return default
    getter = getattr(config, "get", None)
    return getter(key, default) if getter else getattr(config, key, default)


def spec_from_file(file: str, sha256_prefix: str | None = None, name: str | None = None) -> EditSpec:
    """Load an edit JSON from a path or URL (downloaded, cached and verified)."""
    if "://" in str(file):
        from ..models.download import cached_path
        path = cached_path(str(file), sha256_prefix=sha256_prefix, option_hint="edit.file=PATH (a local copy)")
    else:
        path = Path(file).expanduser()
        if not path.is_file():
            raise EditSpecError(f"edit file {str(file)!r} does not exist; pass edit=NAME (a config in conf/edit/) "
                                f"or edit=PATH to an edit JSON file")
    spec = load_edit(path)
    if name:
        spec.name = name
    return spec


PICKS = ("first", "largest", "reachable")


def _label_region(region_config, generator, segmenter, seed: int, exclude: tuple[int, ...], where: str,
                  min_piece: int = 1, reachable=None) -> Region:
    """A labelled region's image: given, or found by `pick`; `reachable` scores (image id, mask) paste candidates."""
    label = _get(region_config, "label")
    if label is None:
        raise EditSpecError(f"{where} needs a label (a class name) or a painted mask in a JSON edit file")
    image_id = _get(region_config, "image_id")
    pick = str(_get(region_config, "pick", "first"))
    if pick not in PICKS:
        raise EditSpecError(f"{where}: pick={pick!r}; use pick: first (with nth), pick: largest (with among) or, "
                            f"for the paste, pick: reachable (with among)")
    if pick == "reachable" and where != "request.paste":
        raise EditSpecError(f"{where}: pick: reachable chooses where the context's rule must reach, so it is for "
                            f"request.paste only; use pick: first or pick: largest here")
    if image_id is None:
        count = int(_get(region_config, "nth", 0)) + 1 if pick == "first" else int(_get(region_config, "among", 8))
        ids = find_images_with_label(generator, segmenter, label, count, seed=seed, exclude=exclude,
                                     search=int(_get(region_config, "search", 2000)),
                                     min_pixels=int(_get(region_config, "min_pixels", 16)), min_piece=min_piece)
        if pick == "first":
            image_id = ids[-1]
        elif pick == "largest":
            image_id = _largest(generator, segmenter, ids, label, seed, where, min_piece)
        else:
            if reachable is None:
                raise EditSpecError(f"{where}: pick: reachable needs the edit's layer and second moment: give the "
                                    f"layer (layer=N, or `layer` in the edit config) and run the edit with run.py "
                                    f"(from Python: spec_from_config(..., reach_scorer=ReachScorer(...))), or use "
                                    f"pick: largest")
            scores = reachable([(i, label_region_mask(where, Region(i, label=str(label)), generator, segmenter,
                                                      seed, min_piece)) for i in ids])
            image_id = ids[scores.index(max(scores))]
    return Region(int(image_id), label=str(label))


def _largest(generator, segmenter, ids: list[int], label: str, seed: int, where: str, min_piece: int = 1) -> int:
    """The image id whose region (its largest connected piece, as copied or pasted on) has most pixels."""
    masks = [without_small_pieces(mask, min_piece) for mask in label_masks(generator, segmenter, ids, label, seed)]
    if where in ONE_OBJECT_REGIONS:
        masks = [largest_component(mask) for mask in masks]
    areas = [float(mask.sum()) for mask in masks]
    return ids[areas.index(max(areas))]


def spec_from_labels(request_config, generator, segmenter, name: str, seed: int = 1,
                     reach_scorer: ReachScorer | None = None) -> EditSpec:
    """An EditSpec whose regions are labelled and located in generated images by the segmenter.

    reach_scorer: the edit's layer and second moment, for a paste with `pick: reachable`.
    """
    with labels_remembered():
        return _spec_from_labels(request_config, generator, segmenter, name, seed, reach_scorer)


def _spec_from_labels(request_config, generator, segmenter, name: str, seed: int,
                      reach_scorer: ReachScorer | None) -> EditSpec:
    if segmenter is None:
        raise EditSpecError(f"edit {name!r} names its regions by label, which needs a segmenter for this generator "
                            f"(metrics.segmenter); use an edit JSON file with painted masks instead")
    context_config = _get(request_config, "context")
    min_piece = int(_get(request_config, "min_piece", 1))
    context_extend_up = int(_get(request_config, "context_extend_up", 0))
    if context_extend_up < 0:
        raise EditSpecError(f"request.context_extend_up={context_extend_up}; use 0 (the labelled pixels only) or a "
                            f"positive number of pixels to extend each context mask upward")
    context: list[Region] = []
    if context_config is not None:
        label = _get(context_config, "label")
        ids = _get(context_config, "image_ids")
        if ids is None:
            ids = find_images_with_label(generator, segmenter, label, int(_get(context_config, "count", 8)),
                                         start=int(_get(context_config, "start", 0)), seed=seed,
                                         search=int(_get(context_config, "search", 2000)),
                                         min_pixels=int(_get(context_config, "min_pixels", 16)),
                                         min_piece=min_piece)
        context = [Region(int(i), label=str(label)) for i in ids]
    taken = tuple(r.image_id for r in context)
    erase = bool(_get(request_config, "erase", False))
    copy = None
    if _get(request_config, "copy") is not None:
        copy = _label_region(_get(request_config, "copy"), generator, segmenter, seed, taken, "request.copy",
                             min_piece)
    paste = None
    if _get(request_config, "paste") is not None:
        def reachable(candidates: list) -> list[float]:
            if not context:
                raise EditSpecError("request.paste: pick: reachable scores pastes by the context's directions, and "
                                    "this request has no context; add request.context or use pick: largest")
            context_masks = [(r.image_id, label_region_mask(f"request.context[{i}]", r, generator, segmenter, seed,
                                                            min_piece, context_extend_up))
                             for i, r in enumerate(context)]
            return reach_scorer.scores(context_masks, candidates, seed)
        paste = _label_region(_get(request_config, "paste"), generator, segmenter, seed, taken, "request.paste",
                              min_piece, reachable if reach_scorer is not None else None)
    drank = _get(request_config, "drank")
    request = EditRequest(context=context, copy=copy, paste=paste, erase=erase,
                          drank=int(drank) if drank is not None else None,
                          erase_fill=str(_get(request_config, "erase_fill", "zero_units")),
                          paste_anchor=str(_get(request_config, "paste_anchor", "centre")))
    spec = EditSpec(name=name, generator={}, rank=1, method={"name": "rank_one"}, request=request, seed=seed)
    if min_piece > 1 or context_extend_up > 0:
        # The spec records masks, not these options: resolve them now, so replays get the same regions.
        resolve_labels(spec, generator, segmenter, min_piece, context_extend_up)
    return spec


def spec_from_config(edit_config, generator, segmenter=None, reach_scorer: ReachScorer | None = None) -> EditSpec:
    """The EditSpec an `edit` config group entry describes.

    reach_scorer: for a paste with `pick: reachable` (default: the edit config's layer, default statistics).
    """
    file = _get(edit_config, "file")
    name = _get(edit_config, "name")
    if file:
        spec = spec_from_file(file, _get(edit_config, "sha256_prefix"), name)
    elif _get(edit_config, "request") is not None:
        if reach_scorer is None and generator is not None and _get(edit_config, "layer") is not None:
            # From Python, a `pick: reachable` paste scores by the edit's own layer and the default statistics.
            reach_scorer = default_reach_scorer(generator, int(_get(edit_config, "layer")))
        spec = spec_from_labels(_get(edit_config, "request"), generator, segmenter, name or "edit",
                                int(_get(edit_config, "seed", 1)), reach_scorer)
    else:
        raise EditSpecError("the edit config has neither `file` nor `request`; pass edit=NAME or edit=PATH.json")
    if spec.layer is None and _get(edit_config, "layer") is not None:
        spec.layer = int(_get(edit_config, "layer"))
    if _get(edit_config, "erase") and not spec.request.erase:
        # e.g. the paper's watermark request, recorded with a copy/paste, run as an erase
        request = spec.request
        spec.request = EditRequest(context=request.context_regions(), copy=None, paste=request.paste, erase=True,
                                   drank=int(_get(edit_config, "drank") or 30))
    elif spec.request.erase and _get(edit_config, "drank") is not None:
        spec.request.drank = int(_get(edit_config, "drank"))
    if _get(edit_config, "erase_fill") is not None:
        # e.g. `+edit.erase_fill=surroundings` on a paper erase; replace() re-checks the request
        spec.request = dataclasses.replace(spec.request, erase_fill=str(_get(edit_config, "erase_fill")))
    if _get(edit_config, "paste_anchor") is not None:
        # e.g. `+edit.paste_anchor=bottom` on a paper request read from its JSON file
        spec.request = dataclasses.replace(spec.request, paste_anchor=str(_get(edit_config, "paste_anchor")))
    return spec
