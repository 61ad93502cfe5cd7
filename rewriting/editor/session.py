"""The editor's state without any UI: painted masks → an edit request → rewrite → a stack of rules.

The Gradio app (rewriting.editor.app) only turns browser events into calls of `EditorSession`;
everything an edit does is here, and tested without a browser. A rule is one applied edit: its
spec (the project's edit.json), its weight deltas, and whether it is on. The generator always
holds the base weights plus the enabled rules' deltas, added in stack order; with every rule off
or removed it holds the base weights bit for bit.
"""
from __future__ import annotations

import contextlib
import copy as copying
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..atomic import write_json
from ..deltas import add_delta, load_delta, package_version, revert_deltas, save_delta
from ..edits.masks import encode_mask
from ..edits.resolve import generated_images, label_names, mask_pieces
from ..edits.hashing import spec_hash
from ..edits.loading import load_edit
from ..edits.spec import EditRequest, EditSpec, Region
from ..errors import CheckpointError, EditSpecError, MaskError
from ..features import noise_for
from ..lightning_compat import pl
from ..statistics import second_moment
from ..statistics_batches import SecondMoment, latents_for_statistics
from ..visualize import outline, to_uint8

MASK_KINDS = ("context", "copy", "paste")


@dataclass
class Rule:
    """One applied edit in the stack."""
    name: str
    spec: EditSpec
    deltas: dict[str, torch.Tensor]  # state-dict name -> ΔW, in the tensor's shape
    enabled: bool = True
    metrics: dict = field(default_factory=dict)

    @property
    def layer(self) -> int | None:
        return self.spec.layer if self.spec is not None else self.metrics.get("layer")

    def describe(self) -> str:
        state = "on" if self.enabled else "off"
        loss = self.metrics.get("final_loss")
        loss_text = f", loss {loss:.4f}" if isinstance(loss, float) else ""
        return f"{self.name} (layer {self.layer}{loss_text}) [{state}]"


@dataclass
class Preview:
    """Images before and after an edit, each (N, 3, H, W) in [-1, 1], with their captions."""
    before: torch.Tensor
    after: torch.Tensor
    captions: list[str]
    request_count: int  # the first `request_count` columns are the request's images (outlined); the rest held out
    seconds: float = 0.0


def mask_from_painting(layer: np.ndarray | Image.Image | None) -> torch.Tensor | None:
    """A painted layer (H, W, 4) RGBA → mask (H, W) of its painted (opaque) pixels; None if nothing is painted."""
    if layer is None:
        return None
    pixels = np.asarray(layer)
    if pixels.ndim == 2:
        painted = pixels > 0
    elif pixels.ndim == 3 and pixels.shape[-1] == 4:
        painted = pixels[..., 3] > 0
    elif pixels.ndim == 3:
        painted = pixels.max(axis=-1) > 0
    else:
        raise MaskError(f"a painted layer is an image (H, W) or (H, W, 3|4), got shape {pixels.shape}")
    if not painted.any():
        return None
    return torch.from_numpy(painted.astype(np.float32))


def union(first: torch.Tensor | None, second: torch.Tensor) -> torch.Tensor:
    """Two masks of possibly different sizes marked together, at the larger size."""
    if first is None:
        return second
    from ..edits.masks import resize_mask
    size = max(first.shape[-1], second.shape[-1]), max(first.shape[-2], second.shape[-2])
    return torch.maximum(resize_mask(first, size[::-1]), resize_mask(second, size[::-1])).clamp(0, 1)


class EditorSession:
    """A generator being edited interactively: gallery, masks, Apply, the rule stack, Save and Load."""

    def __init__(self, generator, method_configs: dict, default_method: str = "rank_one", segmenter=None,
                 default_layer: int | None = None, statistics: dict | None = None, image_seed: int = 1,
                 samples: dict | None = None, trainer: dict | None = None, seed: int = 0,
                 output_root: str | os.PathLike = "outputs/editor"):
        self.generator = generator
        self.method_configs = method_configs  # method name -> its config (with _target_), as in conf/method/
        if default_method not in method_configs:
            raise EditSpecError(f"method {default_method!r} is not among {sorted(method_configs)}")
        self.default_method = default_method
        self.segmenter = segmenter
        numbers = list(generator.layer_numbers)
        self.default_layer = int(default_layer) if default_layer is not None else numbers[len(numbers) // 2]
        self.statistics = {"num_samples": 1000, "seed": 0, "batch_size": 50, "cache_dir": None, **(statistics or {})}
        self.image_seed = int(image_seed)
        self.samples = {"count": 6, "seed": 0, **(samples or {})}
        self.trainer = dict(trainer or {"accelerator": "auto"})
        self.seed = int(seed)
        self.output_root = Path(output_root)
        self.config: dict = {}  # the composed configuration, recorded in every save
        self.rules: list[Rule] = []
        self.masks: dict[str, dict[int, torch.Tensor]] = {kind: {} for kind in MASK_KINDS}
        self._second_moments: dict[int, SecondMoment] = {}
        self._image_cache: dict[int, torch.Tensor] = {}  # image id -> image of the current weights

    # ----- what the generator can do
    @property
    def layer_numbers(self) -> list[int]:
        return list(self.generator.layer_numbers)

    @property
    def labels(self) -> tuple[str, ...]:
        return label_names(self.segmenter) if self.segmenter is not None else ()

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def images(self, image_ids: list[int]) -> torch.Tensor:
        """The current model's images (N, 3, H, W) of these ids (the fixed latent sample requests use)."""
        missing = [i for i in image_ids if i not in self._image_cache]
        if missing:
            for image_id, image in zip(missing, generated_images(self.generator, missing, self.image_seed)):
                self._image_cache[image_id] = image.cpu()
        return torch.stack([self._image_cache[i] for i in image_ids])

    def page(self, page: int, per_page: int = 12) -> list[int]:
        """The image ids shown on gallery page `page` (0-based)."""
        if page < 0:
            raise EditSpecError(f"page {page} does not exist; pages start at 0")
        return list(range(page * per_page, (page + 1) * per_page))

    # ----- masks
    def set_mask(self, kind: str, image_id: int, mask: torch.Tensor | None, add: bool = True) -> None:
        """Mark (or, with mask None, clear) the `kind` region of one image; a copy or paste has one image only."""
        if kind not in MASK_KINDS:
            raise EditSpecError(f"mask kind {kind!r} is unknown; use one of {', '.join(MASK_KINDS)}")
        image_id = int(image_id)
        if image_id < 0:
            raise EditSpecError(f"image id {image_id} is negative; ids start at 0")
        if mask is None:
            self.masks[kind].pop(image_id, None)
            return
        if mask.dim() != 2 or not torch.isfinite(mask).all() or float(mask.max()) <= 0:
            raise MaskError(f"the {kind} mask of image {image_id} marks nothing; paint over the region first")
        mask = mask.float().clamp(0, 1).cpu()
        if kind != "context":  # one copy source and one paste target, as in the paper's UI
            self.masks[kind] = {image_id: union(self.masks[kind].get(image_id), mask) if add else mask}
        else:
            self.masks[kind][image_id] = union(self.masks[kind].get(image_id), mask) if add else mask

    def clear_masks(self, kind: str | None = None) -> None:
        for name in ([kind] if kind else MASK_KINDS):
            self.masks[name] = {}

    def undo_context(self) -> int | None:
        """Remove the context image marked last; returns its id (None when there was none)."""
        if not self.masks["context"]:
            return None
        last = list(self.masks["context"])[-1]
        del self.masks["context"][last]
        return last

    def pick(self, image_id: int, x: int, y: int, display_size: int | None = None) -> tuple[str, torch.Tensor]:
        """The labelled part under pixel (x, y) of the image: its label and its connected piece's mask (H, W)."""
        if self.segmenter is None:
            raise EditSpecError("this generator has no segmenter, so parts cannot be picked by label; paint the "
                                "region with the brush instead")
        image = self.images([int(image_id)])
        size = image.shape[-1]
        if display_size:
            x, y = int(x * size / display_size), int(y * size / display_size)
        if not (0 <= x < size and 0 <= y < size):
            raise EditSpecError(f"pixel ({x}, {y}) is outside the {size}x{size} image")
        labels = self.segmenter.segment(image.to(self.device)).cpu()[0]
        label = int(labels[y, x])
        pieces, _ = mask_pieces((labels == label).float())
        mask = torch.from_numpy(pieces == pieces[y, x]).float()
        return self.labels[label], mask

    # ----- the edit
    def method(self, name: str | None = None, rank: int | None = None):
        """A method object from its config (conf/method/NAME.yaml), with the rank set when it has one."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf
        name = name or self.default_method
        if name not in self.method_configs:
            raise EditSpecError(f"method {name!r} is unknown; choose one of {', '.join(sorted(self.method_configs))}")
        config = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(self.method_configs[name]), resolve=True))
        if rank is not None and "rank" in config:
            if int(rank) < 1:
                raise EditSpecError(f"rank {rank} must be a positive integer")
            config.rank = int(rank)
        return instantiate(config)

    def check_layer(self, layer) -> int:
        try:
            layer = int(layer)
        except (TypeError, ValueError):
            raise EditSpecError(f"layer {layer!r} is not a number; choose one of {self.layer_numbers}") from None
        self.generator.layer(layer)  # raises LayerError with the valid range
        return layer

    def request(self) -> EditRequest:
        """The painted masks as an edit request, with one clear message for each thing missing."""
        context, copy_masks, paste_masks = (self.masks[kind] for kind in MASK_KINDS)
        if not context:
            raise EditSpecError("no context is painted: choose 'context' and paint the parts the rule should apply "
                                "to (\"tops of towers\") on one or more images")
        if not copy_masks and not paste_masks:
            raise EditSpecError("nothing is copied or pasted: choose 'copy' and paint the feature to copy on one "
                                "image, then 'paste' and paint where it goes on another")
        if not paste_masks:
            raise EditSpecError("the paste target is empty: choose 'paste' and paint where the copied feature goes")
        if not copy_masks:
            raise EditSpecError("nothing is copied: choose 'copy' and paint the feature to copy on one image")
        (copy_id, copy_mask), = copy_masks.items()
        (paste_id, paste_mask), = paste_masks.items()
        regions = [Region(i, mask=encode_mask(m)) for i, m in context.items()]
        return EditRequest(context=regions, copy=Region(copy_id, mask=encode_mask(copy_mask)),
                           paste=Region(paste_id, mask=encode_mask(paste_mask)))

    def spec(self, layer: int, method, name: str | None = None) -> EditSpec:
        generator = {"name": getattr(self.generator, "name", None),
                     "path": str(getattr(self.generator, "checkpoint_path", None) or "") or None,
                     "sha256": getattr(self.generator, "checkpoint_sha256", None)}
        return EditSpec(name=name or f"editor_rule_{len(self.rules) + 1}", generator=generator, rank=method.rank,
                        method=method.describe(), request=self.request(), layer=layer, seed=self.image_seed,
                        notes="painted in the rewriting editor")

    def second_moment(self, layer: int, progress: bool = False) -> SecondMoment:
        """C at `layer` of the base weights, computed once per layer (and cached on disk as run.py caches it)."""
        if layer not in self._second_moments:
            with self.base_weights():
                self._second_moments[layer] = second_moment(
                    self.generator, layer, int(self.statistics["num_samples"]), int(self.statistics["seed"]),
                    int(self.statistics["batch_size"]), cache_dir=self.statistics["cache_dir"], progress=progress)
        return self._second_moments[layer]

    def apply(self, layer: int | None = None, method: str | None = None, rank: int | None = None,
              name: str | None = None, progress: bool = False) -> Rule:
        """Fit the painted edit on the current model and push it on the stack; nothing changes if it fails."""
        from ..rewrite import rewrite
        layer = self.check_layer(self.default_layer if layer is None else layer)
        method_object = self.method(method, rank)
        spec = self.spec(layer, method_object, name)
        statistics = self.second_moment(layer, progress)
        pl.seed_everything(self.seed, workers=True, verbose=False)
        options = {**self.trainer, "logger": False, "enable_progress_bar": False}
        result = rewrite(self.generator, spec, method_object, layer, second_moment=statistics,
                         segmenter=self.segmenter, trainer_options=options, apply=False, progress=progress)
        metrics = {"layer": layer, "method": method_object.describe(), "initial_loss": result.fit.initial_loss,
                   "final_loss": result.fit.final_loss, "edit_seconds": result.edit_seconds}
        rule = Rule(spec.name, spec, result.delta_tensors(), True, metrics)
        self.rules.append(rule)
        self._rebuild()
        return rule

    # ----- the stack
    @contextlib.contextmanager
    def base_weights(self):
        """The unedited weights for the block's duration (the stack is put back after)."""
        revert_deltas(self.generator)
        try:
            yield self.generator
        finally:
            self._rebuild()

    def _rebuild(self) -> None:
        revert_deltas(self.generator)
        for rule in self.rules:
            if rule.enabled:
                add_delta(self.generator, rule.deltas, label=rule.name)
        self._image_cache.clear()

    def set_enabled(self, index: int, enabled: bool) -> None:
        self._rule(index).enabled = bool(enabled)
        self._rebuild()

    def remove(self, index: int) -> Rule:
        rule = self._rule(index)
        self.rules.remove(rule)
        self._rebuild()
        return rule

    def revert_all(self) -> None:
        """Drop every rule: the generator holds its original weights, bit for bit."""
        self.rules.clear()
        self._rebuild()

    def _rule(self, index: int) -> Rule:
        if not 0 <= int(index) < len(self.rules):
            raise EditSpecError(f"there is no rule {int(index) + 1}; the stack has {len(self.rules)}")
        return self.rules[int(index)]

    def enabled_rules(self) -> list[Rule]:
        return [rule for rule in self.rules if rule.enabled]

    def composed_deltas(self) -> dict[str, torch.Tensor]:
        """The enabled rules' deltas summed per tensor (one rule: its delta exactly)."""
        composed: dict[str, torch.Tensor] = {}
        for rule in self.enabled_rules():
            for name, delta in rule.deltas.items():
                composed[name] = composed[name] + delta if name in composed else delta.clone()
        return composed

    # ----- pictures
    @torch.no_grad()
    def heldout_images(self) -> torch.Tensor:
        """Samples the request never saw (N, 3, H, W), the same latents every time."""
        count = int(self.samples["count"])
        z = latents_for_statistics(self.generator.z_dim, count, int(self.samples["seed"]) + 104729).to(self.device)
        return self.generator(z, noise=noise_for(self.generator, count, seed=int(self.samples["seed"]),
                                                  device=self.device)).cpu()

    def preview_images(self, rule: Rule | None = None) -> tuple[torch.Tensor, list[str], int]:
        """The current model's images for a preview: paste, copy, context (outlined), then held-out samples."""
        spec = rule.spec if rule is not None else None
        entries: list[tuple[int, torch.Tensor | None, str]] = []
        if spec is not None:
            request = spec.request
            named = ([(request.paste, "paste")] if request.paste else []) + \
                    [(region, "context") for region in request.context[:3]]
            for region, kind in named:
                entries.append((region.image_id, region.load_mask(spec.base_dir), f"{kind} {region.image_id}"))
        ids = [image_id for image_id, _, _ in entries]
        request_images = self.images(ids) if ids else torch.zeros(0, 3, 1, 1)
        if ids:
            from ..edits.masks import resize_mask
            size = request_images.shape[-1]
            masks = torch.stack([resize_mask(mask, (size, size)) for _, mask, _ in entries])
            request_images = outline(request_images, masks)
        heldout = self.heldout_images()
        captions = [caption for _, _, caption in entries] + [f"sample {i}" for i in range(heldout.shape[0])]
        images = torch.cat([request_images, heldout]) if ids else heldout
        return images, captions, len(ids)

    def apply_with_preview(self, layer=None, method=None, rank=None, name=None, progress=False) -> tuple[Rule, Preview]:
        """Apply, and the same images before (the stack as it was) and after (with the new rule)."""
        started = time.perf_counter()
        # The before row needs the request's regions, which exist only once the spec is built: render it
        # with the new rule switched off.
        rule = self.apply(layer, method, rank, name, progress)
        rule.enabled = False
        self._rebuild()
        before, captions, count = self.preview_images(rule)
        rule.enabled = True
        self._rebuild()
        after, _, _ = self.preview_images(rule)
        return rule, Preview(before, after, captions, count, time.perf_counter() - started)

    # ----- save and load
    def save(self, folder: str | os.PathLike | None = None, edited_generator: bool = False) -> Path:
        """Write the enabled stack as a run.py run writes one edit; the folder appears whole or not at all.

        Layout: delta.safetensors (the enabled rules composed), edit.json (when one rule is enabled),
        rules/NN_name/{edit.json,delta.safetensors} for each, stack.json, optional edited_generator.pt.
        """
        rules = self.enabled_rules()
        if not rules:
            raise EditSpecError("there is nothing to save: apply an edit first (or switch a rule back on)")
        folder = Path(folder) if folder else self.next_output_folder()
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise EditSpecError(f"output folder {str(folder)!r} already exists and is not empty; choose a new folder "
                                "so no earlier result is overwritten")
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
        try:
            self._write(staging, rules, edited_generator)
            if folder.exists():
                folder.rmdir()
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder

    def next_output_folder(self) -> Path:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        folder, number = self.output_root / stamp, 1
        while folder.exists():
            number += 1
            folder = self.output_root / f"{stamp}_{number}"
        return folder

    def _delta_metadata(self, rule: Rule | None, layers: list[int], weight_names: list[str]) -> dict:
        base = getattr(self.generator, "checkpoint_sha256", None)
        metadata = {"base_sha256": base, "family": getattr(self.generator, "family", None),
                    "package_version": package_version(), "source": "rewriting editor"}
        if rule is not None:
            metadata.update({"layer": rule.layer, "rank": rule.spec.rank, "edit": rule.name,
                             "edit_spec_sha256": spec_hash(rule.spec), "method": rule.spec.method.get("name"),
                             "weight_name": weight_names[0] if len(weight_names) == 1 else weight_names})
        else:
            metadata.update({"layers": layers, "edits": [r.name for r in self.enabled_rules()],
                             "weight_names": weight_names})
        return {key: value for key, value in metadata.items() if value is not None}

    def _write(self, folder: Path, rules: list[Rule], edited_generator: bool) -> None:
        composed = self.composed_deltas()
        only = rules[0] if len(rules) == 1 else None
        save_delta(folder / "delta.safetensors", composed,
                   self._delta_metadata(only, sorted({r.layer for r in rules}), sorted(composed)))
        if only is not None:
            only.spec.save(folder / "edit.json")
        listing = []
        for number, rule in enumerate(rules, 1):
            sub = folder / "rules" / f"{number:02d}_{rule.name}"
            sub.mkdir(parents=True)
            rule.spec.save(sub / "edit.json")
            save_delta(sub / "delta.safetensors", rule.deltas, self._delta_metadata(rule, [rule.layer],
                                                                                    sorted(rule.deltas)))
            listing.append({"name": rule.name, "layer": rule.layer, "folder": str(sub.relative_to(folder)),
                            **{k: v for k, v in rule.metrics.items() if k != "layer"}})
        write_json(folder / "stack.json", {
            "rules": listing, "base_checkpoint": getattr(self.generator, "checkpoint_path", None),
            "base_sha256": getattr(self.generator, "checkpoint_sha256", None), "package_version": package_version(),
            "editor_config": self.config,
            "note": "each rule after the first was fitted on the model with the rules before it applied"})
        if edited_generator:
            from ..models.nvlabs_export import save_edited_generator
            device = self.device
            save_edited_generator(self.generator, folder / "edited_generator.pt", composed,
                                  extra={"rewriting": {"base_sha256": getattr(self.generator, "checkpoint_sha256",
                                                                              None),
                                                       "edits": [r.name for r in rules],
                                                       "package_version": package_version()}})
            self.generator.to(device)

    def load(self, path: str | os.PathLike) -> list[Rule]:
        """Add rules from a saved folder, a delta.safetensors, or an edit.json (refitted here)."""
        path = Path(path)
        if path.is_dir():
            rule_folders = sorted((path / "rules").glob("*/delta.safetensors")) if (path / "rules").is_dir() else []
            targets = rule_folders or ([path / "delta.safetensors"] if (path / "delta.safetensors").is_file() else [])
            if not targets:
                raise CheckpointError(f"folder {str(path)!r} holds no delta.safetensors; load a folder the editor or "
                                      "run.py wrote, a delta.safetensors, or an edit.json")
            return [self._load_delta(target) for target in targets]
        if not path.is_file():
            raise CheckpointError(f"{str(path)!r} does not exist; give a delta.safetensors, an edit.json or a "
                                  "folder the editor saved")
        if path.suffix == ".json":
            return [self._load_spec(path)]
        return [self._load_delta(path)]

    def _check_base(self, recorded: str | None, what: str) -> None:
        own = getattr(self.generator, "checkpoint_sha256", None)
        if recorded and own and recorded != own:
            raise CheckpointError(f"{what} was made for a generator with checkpoint sha256 {recorded[:12]}…, but this "
                                  f"editor runs {getattr(self.generator, 'checkpoint_path', 'another one')} "
                                  f"(sha256 {own[:12]}…); start the editor with that generator "
                                  f"(generator.checkpoint=PATH)")

    def _load_delta(self, path: Path) -> Rule:
        tensors, metadata = load_delta(path)
        self._check_base(metadata.get("base_sha256"), f"delta {str(path)!r}")
        state = dict(self.generator.named_parameters())
        for name, tensor in tensors.items():
            if name not in state or tuple(state[name].shape) != tuple(tensor.shape):
                raise CheckpointError(f"delta {str(path)!r} changes {name!r} {tuple(tensor.shape)}, which this "
                                      f"generator does not have in that shape; it belongs to another generator")
        spec_path = path.parent / "edit.json"
        spec = load_edit(spec_path) if spec_path.is_file() else None
        name = (spec.name if spec else None) or str(metadata.get("edit") or path.parent.name)
        layer = metadata.get("layer", spec.layer if spec else None)
        rule = Rule(name, spec, tensors, True, {"layer": layer, "loaded_from": str(path)})
        self.rules.append(rule)
        self._rebuild()
        return rule

    def _load_spec(self, path: Path) -> Rule:
        spec = load_edit(path)
        self._check_base((spec.generator or {}).get("sha256"), f"edit {str(path)!r}")
        if spec.request.erase or spec.request.copy is None:
            raise EditSpecError(f"edit {str(path)!r} is not a copy/paste request; the editor loads copy/paste "
                                "edits (run erase edits with run.py)")
        # The painted masks become the request's; then Apply fits it as if painted here.
        saved = copying.deepcopy(self.masks)
        try:
            self.clear_masks()
            for region in spec.request.context:
                self.set_mask("context", region.image_id, region.load_mask(spec.base_dir))
            self.set_mask("copy", spec.request.copy.image_id, spec.request.copy.load_mask(spec.base_dir))
            self.set_mask("paste", spec.request.paste.image_id, spec.request.paste.load_mask(spec.base_dir))
            method = spec.method.get("name") if spec.method.get("name") in self.method_configs else None
            return self.apply(spec.layer, method, spec.rank, spec.name)
        except BaseException:
            self.masks = saved
            raise

    def summary(self) -> str:
        if not self.rules:
            return "no rules yet"
        return "\n".join(f"{i + 1}. {rule.describe()}" for i, rule in enumerate(self.rules))


def to_pil(image: torch.Tensor, size: int | None = None) -> Image.Image:
    """One image (3, H, W) in [-1, 1] as a PIL image, upscaled with nearest neighbours to `size`."""
    picture = Image.fromarray(to_uint8(image[None])[0].permute(1, 2, 0).numpy())
    if size and size != picture.width:
        picture = picture.resize((size, size), Image.NEAREST)
    return picture


def method_configs_from(conf_dir: Path) -> dict:
    """Every method config in conf/method/, by name."""
    from omegaconf import OmegaConf
    configs = {}
    for path in sorted((conf_dir / "method").glob("*.yaml")):
        config = OmegaConf.load(path)
        configs[str(config.get("name", path.stem))] = OmegaConf.to_container(config)
    return configs

