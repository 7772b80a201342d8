"""RDED: realistic, diverse patches of real images, picked by a teacher and stitched (Sun et al., CVPR 2024).

"On the Diversity and Realism of Distilled Dataset: An Efficient Dataset Distillation Paradigm" builds a
synthetic set without any optimisation of pixels, in one pass:

1. a teacher (``model``, trained on the real data within a share of ``time_budget``) is the observer;
2. per class, ``real_per_class`` real images (a seeded draw) each give ``crops_per_image`` random crops
   (random area in [``min_crop_scale``, 1] of the image and aspect ratio in [3/4, 4/3], resized to the full
   image size); each crop is scored by its realism, the teacher's log-probability of the true class
   (``-cross_entropy``);
3. each image keeps its best crop (diversity: one patch per real image) and the ``ipc x patches_per_image``
   best of those across the class are kept;
4. ``patches_per_image`` = 4: four patches, each downscaled to half the height and width, are stitched
   into a 2 x 2 grid, one synthetic image (four real views in the room of one); 1: a patch is the image;
5. the stitched images are relabelled with the teacher's soft labels at ``temperature``: per patch region
   (``soft_label_mode="patches"``: the mean of the teacher's probabilities of the image's patches, each
   seen at full size, as the method labels each region) or of the whole stitched image (``"image"``).

The artifact is a normal synthetic DistilledSet: the stitched images (in the data's own scale), their
classes, the soft labels (``soft_labels``; evaluation trains on them) and, under ``meta["rded"]``, the
teacher, the realism scores and where every patch came from (training row and crop box). After ``fit``,
``region_soft_labels_`` holds the teacher's probabilities of each patch region, ``(n, patches, K)``,
``patch_realism_`` each patch's realism score and ``patch_sources_`` its (row, top, left, height, width).

    from datadistill.synth import get_distiller
    synthetic = get_distiller("rded", ipc=10, time_budget=120).fit(cifar10)

``patches_per_image`` defaults to 1 (each synthetic image is the best full-size crop). The 2 x 2 grid of the
paper pays off when the student trains on random crops of the stitched images, each relabelled by the
teacher as it trains; evaluation here trains on whole images with their fixed soft labels, and a student
that saw only half-size patches does not recognise whole images (8 x 8 digits, IPC 5, convnet of width 32
and depth 2, 100 epochs: about 0.87 test accuracy with 1 patch per image, 0.09 with 4).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..models import build_model
from .base import Context, Distiller, register
from .relabel import DEFAULT_MIN_ACCURACY, DEFAULT_TEMPERATURE, check_temperature, train_teacher_model

PATCHES = (1, 4)
LABEL_MODES = ("patches", "image")
SCORE_BATCH = 1024
RATIO = (3 / 4, 4 / 3)


def crop_resize(X: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop ``boxes`` (top, left, height, width; pixels) out of ``X`` (M, C, H, W), each resized to ``size``.

    Bilinear, ``align_corners=False``, sampling only pixels inside the box: the same as
    ``F.interpolate(X[i, :, top:top + h, left:left + w][None], size, mode="bilinear")`` per row, in one batch.
    """
    H, W = X.shape[-2:]
    out_h, out_w = size
    boxes = boxes.to(X.device, torch.float32)
    top, left, h, w = boxes.unbind(1)

    def coords(start, length, n_out, n_in):
        j = torch.arange(n_out, device=X.device, dtype=torch.float32) + 0.5
        px = start[:, None] + j[None, :] * (length / n_out)[:, None] - 0.5
        px = torch.minimum(torch.maximum(px, start[:, None]), (start + length - 1)[:, None])
        return (2 * px + 1) / n_in - 1

    ys, xs = coords(top, h, out_h, H), coords(left, w, out_w, W)
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)
    return F.grid_sample(X, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_boxes(n: int, height: int, width: int, min_scale: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` random crop boxes (top, left, height, width): area share in [min_scale, 1], aspect ratio in [3/4, 4/3].

    A draw that does not fit the image is retried (10 times), then the whole image is the crop.
    """
    boxes = np.tile(np.array([0, 0, height, width], dtype=np.int64), (n, 1))
    area = height * width
    log_ratio = np.log(RATIO)
    for i in range(n):
        for _ in range(10):
            share = rng.uniform(min_scale, 1.0)
            ratio = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(share * area * ratio)))
            h = int(round(math.sqrt(share * area / ratio)))
            if 1 <= h <= height and 1 <= w <= width:
                boxes[i] = (rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w)
                break
    return boxes


def grid_cells(height: int, width: int, patches: int) -> list[tuple[int, int, int, int]]:
    """The (top, left, height, width) cells of a synthetic image holding ``patches`` patches (1: whole; 4: 2 x 2)."""
    if patches == 1:
        return [(0, 0, height, width)]
    h0, w0 = height // 2, width // 2
    return [(0, 0, h0, w0), (0, w0, h0, width - w0), (h0, 0, height - h0, w0), (h0, w0, height - h0, width - w0)]


@register
class RDED(Distiller):
    """rded: teacher-picked realistic crops of real images, kept whole or stitched 2 x 2, soft-relabelled (RDED).

    Args:
        ipc: synthetic images per class.
        model: the teacher's architecture (``convnet``); ``model_kwargs`` its options.
        patches_per_image: 1 (each synthetic image is one crop) or 4 (a 2 x 2 grid of half-size crops; see the
            module docs for when it pays off).
        crops_per_image: random candidate crops of every real image scored by the teacher.
        real_per_class: real images per class that give candidates (a seeded draw; ``None``: all); at least
            ``ipc x patches_per_image``, since every patch comes from another real image.
        min_crop_scale: the smallest share of the image's area a candidate crop covers, in (0, 1].
        temperature: softening temperature of the soft labels, ``softmax(logits / T)``.
        soft_label_mode: ``patches`` (the mean of the teacher's probabilities of the patch regions) or
            ``image`` (the teacher's probabilities of the stitched image).
        teacher_steps: Adam steps of the teacher's training (batch 128).
        teacher_time_fraction: share of ``time_budget`` the teacher may train for.
        min_accuracy: the teacher's held-out accuracy below which a warning says its soft labels would
            mislead (``None``: never warn).
        iterations: 1 (the method makes its set in one pass).
        Other arguments: see :class:`datadistill.synth.Distiller` (``lr_images``, ``init`` and
        ``batch_real`` do not apply).
    """

    name = "rded"
    summary = ("teacher-scored crops of real images (optionally stitched 2x2), soft-relabelled (RDED); experimental: "
               "lost to random real images on MNIST at IPC 10 under the DC protocol")
    needs_images = True
    recommended_iterations = 1

    def __init__(self, ipc: int = 10, *, iterations: int = 1, patches_per_image: int = 1, crops_per_image: int = 5,
                 real_per_class: int | None = 300, min_crop_scale: float = 0.25,
                 temperature: float = DEFAULT_TEMPERATURE, soft_label_mode: str = "patches",
                 teacher_steps: int = 500, teacher_time_fraction: float = 0.8,
                 min_accuracy: float | None = DEFAULT_MIN_ACCURACY, **kwargs):
        super().__init__(ipc, iterations=iterations, **kwargs)
        self.patches_per_image = patches_per_image
        self.crops_per_image = crops_per_image
        self.real_per_class = real_per_class
        self.min_crop_scale = min_crop_scale
        self.temperature = temperature
        self.soft_label_mode = soft_label_mode
        self.teacher_steps = teacher_steps
        self.teacher_time_fraction = teacher_time_fraction
        self.min_accuracy = min_accuracy

    # --- parameters ----------------------------------------------------------------------------
    def check_params(self) -> None:
        super().check_params()
        if self.iterations != 1:
            raise ConfigError(f"{self.name} makes its set in one pass: iterations must be 1, got {self.iterations!r}")
        if isinstance(self.patches_per_image, bool) or self.patches_per_image not in PATCHES:
            raise ConfigError(f"{self.name}: patches_per_image must be 1 or 4 (a 2 x 2 grid), "
                              f"got {self.patches_per_image!r}")

        def whole(name: str, value, low: int) -> None:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ConfigError(f"{self.name}: {name} must be a whole number >= {low}, got {value!r}")

        def share(name: str, value) -> None:
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                    or not 0 < value <= 1):
                raise ConfigError(f"{self.name}: {name} must be a number in (0, 1], got {value!r}")

        whole("crops_per_image", self.crops_per_image, 1)
        whole("teacher_steps", self.teacher_steps, 1)
        share("min_crop_scale", self.min_crop_scale)
        share("teacher_time_fraction", self.teacher_time_fraction)
        if self.real_per_class is not None:
            whole("real_per_class", self.real_per_class, 1)
            if self.real_per_class < self.ipc * self.patches_per_image:
                raise ConfigError(f"{self.name}: real_per_class ({self.real_per_class}) must be at least ipc x "
                                  f"patches_per_image = {self.ipc * self.patches_per_image}: every patch comes from "
                                  "another real image")
        if self.min_accuracy is not None and (isinstance(self.min_accuracy, bool)
                                              or not isinstance(self.min_accuracy, numbers.Real)
                                              or not 0 <= self.min_accuracy <= 1):
            raise ConfigError(f"{self.name}: min_accuracy must be a number in [0, 1] or None, got {self.min_accuracy!r}")
        if self.soft_label_mode not in LABEL_MODES:
            raise ConfigError(f"{self.name}: soft_label_mode must be 'patches' or 'image', got {self.soft_label_mode!r}")
        check_temperature(self.temperature)

    def _check_data(self, ctx: Context) -> None:
        """Refuse data the method cannot stitch, before the teacher trains."""
        need = self.ipc * self.patches_per_image
        counts = [len(idx) for idx in ctx.class_index]
        c = int(np.argmin(counts))
        if counts[c] < need:
            hint = " or patches_per_image=1" if self.patches_per_image > 1 else ""
            raise DataError(f"{self.name}: ipc {self.ipc} x {self.patches_per_image} patches needs {need} real images "
                            f"per class, but class '{ctx.dataset.classes[c]}' has {counts[c]} for distillation; "
                            f"use --ipc {counts[c] // self.patches_per_image} or less{hint}")
        H, W = ctx.input_shape[-2:]
        if self.patches_per_image == 4 and min(H, W) < 2:
            raise DataError(f"{self.name}: images of {H} x {W} pixels cannot hold a 2 x 2 grid; use "
                            "patches_per_image=1")

    # --- the run -------------------------------------------------------------------------------
    def _split_validation(self, dataset):
        train_set, val_rows = super()._split_validation(dataset)
        rows = np.arange(len(dataset.y))
        self._train_rows = rows if val_rows is None else np.setdiff1d(rows, val_rows)
        return train_set, val_rows

    def _setup(self, ctx: Context) -> None:
        self._check_data(ctx)
        n, p = len(ctx.y_syn), self.patches_per_image
        ctx.state["teacher"] = build_model(self.model, ctx.input_shape, ctx.n_classes, seed=self.iteration_seed(-3),
                                           **self._model_options()).to(ctx.device)
        self._train_teacher(ctx)
        ctx.state["soft_labels"] = torch.zeros(n, ctx.n_classes, device=ctx.device)
        ctx.state["region_soft_labels"] = torch.zeros(n, p, ctx.n_classes, device=ctx.device)
        ctx.state["patch_sources"] = torch.full((n, p, 5), -1, dtype=torch.long, device=ctx.device)
        ctx.state["realism"] = torch.zeros(n, p, device=ctx.device)
        with torch.no_grad():  # the starting samples (real draws) get the teacher's labels too, as evaluation sees them
            probs = self._probabilities(ctx, ctx.X_syn.detach())
            ctx.state["soft_labels"].copy_(probs)
            ctx.state["region_soft_labels"].copy_(probs[:, None, :].expand(n, p, -1))

    def _train_teacher(self, ctx: Context) -> None:
        if self._checkpoint_holds(ctx, "teacher"):
            self._teacher_info = {"architecture": self.model, "restored_from_checkpoint": True}
            return
        budget = None if self.time_budget is None else float(self.time_budget) * float(self.teacher_time_fraction)
        trained, acc, steps, seconds = train_teacher_model(
            ctx.X_real.detach().cpu().numpy(), ctx.y_real.detach().cpu().numpy(), ctx.n_classes,
            architecture=self.model, model_kwargs=self._model_options(), steps=int(self.teacher_steps),
            min_accuracy=self.min_accuracy, time_budget=budget, device=ctx.device,
            random_state=self.iteration_seed(-3) & 0xFFFF_FFFF)
        ctx.state["teacher"].load_state_dict(trained.state_dict())
        self._teacher_info = {"architecture": self.model, "validation_accuracy": acc, "steps": steps,
                              "seconds": seconds, "min_accuracy": self.min_accuracy,
                              "below_min_accuracy": bool(acc is not None and self.min_accuracy is not None
                                                         and acc < self.min_accuracy)}

    def _logits(self, ctx: Context, X: torch.Tensor) -> torch.Tensor:
        net = ctx.state["teacher"].eval()
        with torch.no_grad():
            return torch.cat([net(X[i:i + SCORE_BATCH].to(ctx.device)).float() for i in range(0, len(X), SCORE_BATCH)])

    def _probabilities(self, ctx: Context, X: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self._logits(ctx, X) / float(self.temperature), dim=1)

    def _candidates(self, ctx: Context, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class ``c``'s real rows (a seeded draw), each one's best crop box and that crop's realism score."""
        rng = np.random.default_rng(self.iteration_seed(0, 100 + c))
        rows = ctx.class_index[c].cpu().numpy()
        if self.real_per_class is not None and len(rows) > self.real_per_class:
            rows = np.sort(rng.choice(rows, int(self.real_per_class), replace=False))
        H, W = ctx.input_shape[-2:]
        k = int(self.crops_per_image)
        boxes = torch.as_tensor(random_boxes(len(rows) * k, H, W, float(self.min_crop_scale), rng))
        images = ctx.X_real[torch.as_tensor(rows, device=ctx.device)].repeat_interleave(k, dim=0)
        crops = torch.cat([crop_resize(images[i:i + SCORE_BATCH], boxes[i:i + SCORE_BATCH], (H, W))
                           for i in range(0, len(images), SCORE_BATCH)])
        target = torch.full((len(crops),), c, dtype=torch.long, device=ctx.device)
        realism = -F.cross_entropy(self._logits(ctx, crops), target, reduction="none").view(len(rows), k)
        best_score, best = realism.max(dim=1)
        best_boxes = boxes.view(len(rows), k, 4)[torch.arange(len(rows)), best.cpu()]
        return torch.as_tensor(rows), best_boxes, best_score

    def _step(self, ctx: Context, it: int) -> float:
        """Score candidate crops per class, keep the most realistic, stitch them and relabel the images."""
        p, H, W = self.patches_per_image, *ctx.input_shape[-2:]
        cells = grid_cells(H, W, p)
        new_X = torch.empty_like(ctx.X_syn.detach())
        for c in range(ctx.n_classes):
            rows, boxes, scores = self._candidates(ctx, c)
            order = torch.argsort(scores.cpu(), descending=True, stable=True)[: self.ipc * p]
            rows, boxes, scores = rows[order], boxes[order], scores[order.to(scores.device)]
            images = ctx.X_real[rows.to(ctx.device)]
            syn = slice(c * self.ipc, (c + 1) * self.ipc)
            for q, (top, left, h, w) in enumerate(cells):  # patch q of every image: ranks q, q + p, q + 2p, ...
                new_X[syn, :, top:top + h, left:left + w] = crop_resize(images[q::p], boxes[q::p], (h, w))
            full = crop_resize(images, boxes, (H, W))
            ctx.state["region_soft_labels"][syn] = self._probabilities(ctx, full).view(self.ipc, p, -1)
            ctx.state["patch_sources"][syn] = torch.cat([rows[:, None], boxes], dim=1).view(self.ipc, p, 5).to(ctx.device)
            ctx.state["realism"][syn] = scores.view(self.ipc, p)
        with torch.no_grad():
            ctx.X_syn.copy_(new_X)
        regions = ctx.state["region_soft_labels"]
        labels = regions.mean(dim=1) if self.soft_label_mode == "patches" else self._probabilities(ctx, new_X)
        ctx.state["soft_labels"].copy_(labels)
        return float(-ctx.state["realism"].mean())

    def _soft_labels(self, ctx: Context) -> np.ndarray | None:
        return ctx.state["soft_labels"].detach().float().cpu().numpy()

    def _training_recipe(self, ctx: Context) -> dict:
        return {"soft_labels": True}

    def fit(self, dataset, y=None):
        """Train the teacher, pick and stitch the most realistic crops per class, relabel; see the module docs."""
        self._last_state = None
        out = super().fit(dataset, y)
        state = self._last_state
        self.region_soft_labels_ = state["region_soft_labels"]
        self.patch_realism_ = state["realism"]
        sources = state["patch_sources"].copy()
        picked = sources[..., 0] >= 0
        sources[..., 0][picked] = self._train_rows[sources[..., 0][picked]]  # rows of the data given to fit
        self.patch_sources_ = sources
        out.meta["soft_labels"] = {"temperature": float(self.temperature), "teacher": self._teacher_info,
                                   "source": self.name, "mode": self.soft_label_mode}
        out.meta["rded"] = {
            "patches_per_image": int(self.patches_per_image), "crops_per_image": int(self.crops_per_image),
            "real_per_class": self.real_per_class, "min_crop_scale": float(self.min_crop_scale),
            "mean_realism": float(state["realism"].mean()) if picked.all() else None,
            "patch_rows": sources[..., 0].tolist(), "patch_boxes": sources[..., 1:].tolist(),
        }
        return out

    def _check_finite(self, ctx: Context, it: int) -> None:
        # the base loop checks the samples once more right before it builds the artifact: keep the state then
        super()._check_finite(ctx, it)
        self._last_state = {k: ctx.state[k].detach().cpu().numpy().copy()
                            for k in ("region_soft_labels", "patch_sources", "realism")}
