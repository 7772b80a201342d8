"""The generative route: distil in the latent space of an autoencoder (or of any decoder you plug in).

A small autoencoder (convolutional for images, an MLP for tabular data) is trained on the real data
within a share of the time budget; the synthetic set is then chosen as latent codes and decoded:

- ``ae-kmeans``: per class, k-means on the latent codes of the real samples; the ``ipc`` centroids are
  decoded (a clustering-plus-generative route in the spirit of D4M, Su et al. 2024).
- ``ae-dm``: distribution matching (Zhao & Bilen 2023) of the decoded samples: the latent codes (started
  at the k-means centroids when an encoder exists) are optimised through the frozen decoder so that the
  per-class mean embedding of fresh random networks matches the real one (latent optimisation as in
  GLaD, Cazenavette et al. 2023).

The artifact stores the decoded samples, so it evaluates like any synthetic set; ``meta["latent"]``
records the bytes one synthetic sample takes in latent form (``latent_dim`` float32 numbers) against
its decoded form, and the decoder's own size.

Pluggable generators: any ``torch.nn.Module`` mapping a latent batch ``z`` of shape ``(B, latent_dim)``
-- and, when its ``forward`` takes a second argument, the class indices ``y`` of shape ``(B,)`` -- to a
sample batch can be the decoder. By default (``decoder_space="model"``) it outputs samples the way
datadistill's models see them: channels first ``(B, C, H, W)`` (or ``(B, d)``), standardised per channel
(feature); with ``decoder_space="source"`` it outputs them in the data's own shape and scale (e.g.
``(B, 28, 28)`` pixels 0..255), and datadistill standardises them. ``ae-kmeans`` (and a k-means start of
``ae-dm``) also needs an ``encoder`` mapping real samples (in the same space) to latents::

    import torch
    from torch import nn
    from datadistill.synth import get_distiller

    class Generator(nn.Module):                     # class-conditional: forward(z, y)
        def __init__(self, latent_dim=16, n_classes=10):
            super().__init__()
            self.embed = nn.Embedding(n_classes, latent_dim)
            self.net = nn.Sequential(nn.Linear(latent_dim, 7 * 7 * 16), nn.ReLU(), nn.Unflatten(1, (16, 7, 7)),
                                     nn.Upsample(scale_factor=4), nn.Conv2d(16, 1, 3, padding=1))

        def forward(self, z, y):
            return self.net(z + self.embed(y))

    gen = Generator()
    gen.load_state_dict(torch.load("generator.pt", weights_only=True))   # your pretrained weights
    synthetic = get_distiller("ae-dm", ipc=10, decoder=gen, latent_dim=16, time_budget=300).fit(mnist)

The decoder is copied and frozen; only the latents are optimised. A decoder whose output does not have
the data's shape is refused before any work, naming both shapes.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
import numbers
import time

import numpy as np
import torch
from torch import nn

from ..data.dataset import Dataset
from ..errors import ConfigError
from .base import Context, register
from .distribution import MatchingDistiller
from .relabel import DEFAULT_MIN_ACCURACY, check_temperature, soft_probabilities, train_teacher_model

AUTOENCODERS = ("auto", "conv", "mlp")
SPACES = ("model", "source")
LATENT_INITS = ("auto", "kmeans", "real", "noise")
DEFAULT_LATENT_DIM = 32


class _Crop(nn.Module):
    """Keep the top-left ``height x width`` of a feature map (transposed convolutions double sizes; odd ones overshoot)."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.height, : self.width]


class ConvAutoencoder(nn.Module):
    """Two stride-2 convolutions to a ``latent_dim`` code; two stride-2 transposed convolutions back to (C, H, W)."""

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int = DEFAULT_LATENT_DIM, width: int = 32):
        super().__init__()
        c, h, w = input_shape
        h1, w1 = math.ceil(h / 2), math.ceil(w / 2)
        h2, w2 = math.ceil(h1 / 2), math.ceil(w1 / 2)
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(c, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * h2 * w2, latent_dim))
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * h2 * w2), nn.ReLU(), nn.Unflatten(1, (2 * width, h2, w2)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), _Crop(h1, w1), nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, 2, 1), _Crop(h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class MLPAutoencoder(nn.Module):
    """d -> hidden -> latent_dim -> hidden -> d, for tabular data."""

    def __init__(self, n_features: int, latent_dim: int = DEFAULT_LATENT_DIM, hidden: int = 128):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def train_autoencoder(ae: nn.Module, X: torch.Tensor, *, steps: int, batch_size: int = 128, lr: float = 2e-3,
                      deadline: float | None = None, seed: int = 0) -> dict:
    """Minimise the mean squared reconstruction error of ``X`` (model space) with Adam, in place.

    Stops after ``steps`` steps or at ``deadline`` (a ``time.perf_counter()`` value), whichever comes
    first (at least one step). Returns steps, seconds, the last loss and whether the deadline stopped it.
    """
    start = time.perf_counter()
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    ae.train()
    n = len(X)
    done, loss_value, stopped = 0, float("nan"), False
    perm = torch.randperm(n, generator=gen)
    pos = 0
    for step in range(int(steps)):
        if step and deadline is not None and time.perf_counter() > deadline:
            stopped = True
            break
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        xb = X[perm[pos:pos + batch_size].to(X.device)]
        pos += batch_size
        loss = nn.functional.mse_loss(ae(xb), xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done, loss_value = step + 1, float(loss.detach())
    ae.eval()
    return {"steps": done, "seconds": time.perf_counter() - start, "reconstruction_mse": loss_value,
            "stopped_by_time": stopped}


def _takes_class(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes a second positional argument (the class indices)."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _module_fingerprint(module: nn.Module) -> str:
    """Class name and a hash of the parameters and buffers: what a checkpoint key needs to tell decoders apart."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return f"{type(module).__name__}:{h.hexdigest()[:16]}"


class LatentDistiller(MatchingDistiller):
    """Shared pieces of the latent-space distillers: the generator (own autoencoder or plugged), latents, teacher.

    Args:
        ipc: synthetic samples per class.
        latent_dim: size of a latent code; ``None``: 32 (at most the number of features for tabular data),
            or the plugged decoder's ``latent_dim`` attribute.
        decoder: a torch module mapping latents ``(B, latent_dim)`` (and class indices ``(B,)`` when its
            forward takes them) to samples; ``None``: train an autoencoder on the data (see module docs).
        encoder: a torch module mapping real samples (in ``decoder_space``) to latents; needed by k-means
            with a plugged decoder.
        conditional: pass class indices to the decoder; ``None``: when its forward takes a second argument.
        decoder_space: ``model`` (standardised, channels first) or ``source`` (the data's own shape and scale).
        autoencoder: ``auto`` (convolutional for images, MLP for tabular data), ``conv`` or ``mlp``.
        ae_width: channels (hidden units: 4x) of the autoencoder.
        ae_steps: Adam steps of autoencoder training (batch ``ae_batch``, learning rate ``ae_lr``).
        ae_time_fraction: share of ``time_budget`` the autoencoder may train for; ``None``: the method's default.
        soft_labels: relabel the synthetic samples with a teacher trained on the real data (see
            :mod:`datadistill.synth.relabel`); probabilities at ``temperature`` go to ``soft_labels``.
        teacher_steps: Adam steps of the teacher (``model``/``model_kwargs`` architecture).
        teacher_time_fraction: share of ``time_budget`` the teacher may train for.
        max_codes_per_class: real samples per class (a seeded random draw) the encoder codes for k-means and
            the ``real`` start; ``None``: all (coding every sample of a large set costs minutes on a CPU).
        Other arguments: see :class:`datadistill.synth.distribution.MatchingDistiller`.
    """

    default_ae_time_fraction = 0.5

    def __init__(self, ipc: int = 10, *, latent_dim: int | None = None, decoder: nn.Module | None = None,
                 encoder: nn.Module | None = None, conditional: bool | None = None, decoder_space: str = "model",
                 autoencoder: str = "auto", ae_width: int = 32, ae_steps: int = 1500, ae_batch: int = 128,
                 ae_lr: float = 2e-3, ae_time_fraction: float | None = None, soft_labels: bool = False,
                 temperature: float = 4.0, teacher_steps: int = 500, teacher_time_fraction: float = 0.2,
                 max_codes_per_class: int | None = 1000, **kwargs):
        super().__init__(ipc, **kwargs)
        self.latent_dim = latent_dim
        self.decoder = decoder
        self.encoder = encoder
        self.conditional = conditional
        self.decoder_space = decoder_space
        self.autoencoder = autoencoder
        self.ae_width = ae_width
        self.ae_steps = ae_steps
        self.ae_batch = ae_batch
        self.ae_lr = ae_lr
        self.ae_time_fraction = ae_time_fraction
        self.soft_labels = soft_labels
        self.temperature = temperature
        self.teacher_steps = teacher_steps
        self.teacher_time_fraction = teacher_time_fraction
        self.max_codes_per_class = max_codes_per_class

    # --- parameters ----------------------------------------------------------------------------
    def _resolved_params(self) -> dict:
        out = super()._resolved_params()
        for name in ("decoder", "encoder"):
            module = getattr(self, name)
            out[name] = _module_fingerprint(module) if isinstance(module, nn.Module) else module
        return out

    def check_params(self) -> None:
        super().check_params()

        def whole(name: str, value, low: int) -> None:
            if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low):
                raise ConfigError(f"{self.name}: {name} must be a whole number >= {low}, got {value!r}")

        def fraction(name: str, value) -> None:
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                    or not 0 < value <= 1):
                raise ConfigError(f"{self.name}: {name} must be a number in (0, 1], got {value!r}")

        if self.latent_dim is not None:
            whole("latent_dim", self.latent_dim, 1)
        if self.max_codes_per_class is not None:
            whole("max_codes_per_class", self.max_codes_per_class, 1)
        for name in ("ae_width", "ae_steps", "ae_batch", "teacher_steps"):
            whole(name, getattr(self, name), 1)
        lr = self.ae_lr
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
            raise ConfigError(f"{self.name}: ae_lr must be a positive number, got {lr!r}")
        if self.ae_time_fraction is not None:
            fraction("ae_time_fraction", self.ae_time_fraction)
        fraction("teacher_time_fraction", self.teacher_time_fraction)
        if self.autoencoder not in AUTOENCODERS:
            raise ConfigError(f"{self.name}: autoencoder must be one of {', '.join(AUTOENCODERS)}, "
                              f"got {self.autoencoder!r}")
        if self.decoder_space not in SPACES:
            raise ConfigError(f"{self.name}: decoder_space must be 'model' or 'source', got {self.decoder_space!r}")
        for name in ("decoder", "encoder"):
            module = getattr(self, name)
            if module is not None and not isinstance(module, nn.Module):
                raise ConfigError(f"{self.name}: {name} must be a torch.nn.Module, got {type(module).__name__}")
        if self.encoder is not None and self.decoder is None:
            raise ConfigError(f"{self.name}: an encoder needs its decoder; pass decoder= too (or neither to "
                              "train an autoencoder)")
        if not isinstance(self.soft_labels, bool):
            raise ConfigError(f"{self.name}: soft_labels must be true or false, got {self.soft_labels!r}")
        check_temperature(self.temperature)

    # --- the generator -------------------------------------------------------------------------
    def _latent_size(self, dataset: Dataset) -> int:
        if self.latent_dim is not None:
            return int(self.latent_dim)
        own = getattr(self.decoder, "latent_dim", None)
        if self.decoder is not None:
            if isinstance(own, numbers.Integral) and own >= 1:
                return int(own)
            raise ConfigError(f"{self.name}: pass latent_dim= with a plugged decoder (it has no latent_dim "
                              "attribute to read it from)")
        if not dataset.is_image:
            return min(DEFAULT_LATENT_DIM, dataset.n_features)
        return DEFAULT_LATENT_DIM

    def _to_model_space(self, ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """Source-space decoder output -> model space (layout and standardisation), differentiably."""
        pre = ctx.preprocessor
        s = pre.sample_shape
        if len(s) == 2:
            x = x.unsqueeze(1)
        elif len(s) == 3 and tuple(pre.model_shape) != tuple(s):
            x = x.permute(0, 3, 1, 2)
        view = (1, -1, 1, 1) if pre.is_image else (1, -1)
        mean = torch.as_tensor(pre.mean, device=x.device).view(view)
        std = torch.as_tensor(pre.std, device=x.device).view(view)
        return (x.float() - mean) / std

    def decode_latents(self, ctx: Context, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Decoded samples in model space for latents ``z`` of classes ``y``."""
        x = self._decoder(z, y) if self._conditional else self._decoder(z)
        return self._to_model_space(ctx, x) if self.decoder_space == "source" else x

    def _check_decoder_output(self, ctx: Context) -> None:
        z = torch.zeros(2, self._latent_dim, device=ctx.device)
        y = ctx.y_syn[:2]
        with torch.no_grad():
            try:
                x = self._decoder(z, y) if self._conditional else self._decoder(z)
            except Exception as exc:  # noqa: BLE001 - any failure of a user's module is reported the same way
                raise ConfigError(f"{self.name}: the decoder failed on a latent batch of shape (2, "
                                  f"{self._latent_dim}){' with class indices' if self._conditional else ''}: "
                                  f"{type(exc).__name__}: {exc}") from None
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"{self.name}: the decoder returned a {type(x).__name__}, not a tensor")
        want = (tuple(ctx.preprocessor.sample_shape) if self.decoder_space == "source"
                else tuple(ctx.input_shape))
        got = tuple(x.shape[1:])
        if got != want or x.shape[0] != 2:
            space = ("the data's own sample shape" if self.decoder_space == "source"
                     else "model space: channels first, standardised")
            raise ConfigError(f"{self.name}: the decoder's output per sample has shape {got} but the data's "
                              f"samples have shape {want} ({space}, decoder_space={self.decoder_space!r}); "
                              "make the decoder produce that shape (or set decoder_space)")

    def _code_rows(self, ctx: Context) -> list[torch.Tensor]:
        """Per class, the real rows whose codes k-means sees: all, or a seeded draw of ``max_codes_per_class``."""
        gen = self.iteration_generator(-6)
        cap = self.max_codes_per_class
        return [idx if cap is None or len(idx) <= cap else idx[torch.randperm(len(idx), generator=gen)[:cap]
                                                                 .to(idx.device)]
                for idx in ctx.class_index]

    def _encode_real(self, ctx: Context, rows: torch.Tensor) -> torch.Tensor | None:
        """Latent codes of real training ``rows`` (None without an encoder)."""
        if self._encoder is None:
            return None
        if self.decoder_space == "source":
            X = torch.as_tensor(np.asarray(ctx.dataset.X[rows.cpu().numpy()], dtype=np.float32), device=ctx.device)
        else:
            X = ctx.X_real[rows]
        with torch.no_grad():
            codes = torch.cat([self._encoder(X[i:i + 4096]).reshape(min(4096, len(X) - i), -1)
                               for i in range(0, len(X), 4096)])
        if codes.shape[1] != self._latent_dim:
            raise ConfigError(f"{self.name}: the encoder gives codes of size {codes.shape[1]} but latent_dim is "
                              f"{self._latent_dim}")
        return codes.float()

    def _deadline(self, fraction: float) -> float | None:
        if self.time_budget is None:
            return None
        return self._fit_started + float(self.time_budget) * fraction

    def _setup_generator(self, ctx: Context) -> None:
        self._latent_dim = self._latent_size(ctx.dataset)
        self._ae_info: dict = {}
        if self.decoder is None:
            image = len(ctx.input_shape) == 3
            kind = self.autoencoder if self.autoencoder != "auto" else ("conv" if image else "mlp")
            if kind == "conv" and not image:
                raise ConfigError(f"{self.name}: a convolutional autoencoder needs image data; "
                                  f"{ctx.dataset.name} is tabular (use autoencoder='mlp' or 'auto')")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.iteration_seed(-2))
                ae = (ConvAutoencoder(ctx.input_shape, self._latent_dim, int(self.ae_width)) if kind == "conv"
                      else MLPAutoencoder(int(np.prod(ctx.input_shape)), self._latent_dim, 4 * int(self.ae_width)))
            ae = ae.to(ctx.device)
            ctx.state["autoencoder"] = ae
            if self._checkpoint_holds(ctx, "autoencoder"):
                self._ae_info = {"restored_from_checkpoint": True}
            else:
                share = self.ae_time_fraction or self.default_ae_time_fraction
                self._ae_info = train_autoencoder(ae, ctx.X_real, steps=int(self.ae_steps),
                                                  batch_size=int(self.ae_batch), lr=float(self.ae_lr),
                                                  deadline=self._deadline(share), seed=self.iteration_seed(-2, 1))
            self._ae_info["architecture"] = kind
            ae.requires_grad_(False)
            self._decoder, self._encoder, self._conditional = ae.decoder, ae.encoder, False
            self._decoder_name = f"own {kind} autoencoder"
        else:
            self._decoder = copy.deepcopy(self.decoder).to(ctx.device).eval().requires_grad_(False)
            self._encoder = (copy.deepcopy(self.encoder).to(ctx.device).eval().requires_grad_(False)
                             if self.encoder is not None else None)
            self._conditional = _takes_class(self._decoder) if self.conditional is None else bool(self.conditional)
            self._decoder_name = type(self.decoder).__name__
        self._check_decoder_output(ctx)

    def _setup_teacher(self, ctx: Context) -> None:
        if not self.soft_labels:
            return
        from ..models import build_model

        net = build_model(self.model, ctx.input_shape, ctx.n_classes, seed=self.iteration_seed(-3),
                          **self._model_options()).to(ctx.device)
        ctx.state["teacher"] = net
        if self._checkpoint_holds(ctx, "teacher"):
            self._teacher_info = {"restored_from_checkpoint": True}
            return
        budget = None if self.time_budget is None else float(self.time_budget) * self.teacher_time_fraction
        X = ctx.X_real.detach().cpu().numpy()
        y = ctx.y_real.detach().cpu().numpy()
        trained, acc, steps, seconds = train_teacher_model(
            X, y, ctx.n_classes, architecture=self.model, model_kwargs=self._model_options(),
            steps=int(self.teacher_steps), min_accuracy=DEFAULT_MIN_ACCURACY, time_budget=budget,
            device=ctx.device, random_state=self.iteration_seed(-3) & 0xFFFF_FFFF)
        net.load_state_dict(trained.state_dict())
        net.eval()
        self._teacher_info = {"architecture": self.model, "validation_accuracy": acc, "steps": steps,
                              "seconds": seconds}

    def _set_samples(self, ctx: Context) -> None:
        """Decode the current latents into ``ctx.X_syn``."""
        with torch.no_grad():
            ctx.X_syn.copy_(self.decode_latents(ctx, ctx.state["latents"].detach(), ctx.y_syn))

    def _kmeans_latents(self, ctx: Context) -> tuple[torch.Tensor, float]:
        """Per class, the ``ipc`` k-means centroids of the real codes (class-major) and the mean inertia."""
        from sklearn.cluster import KMeans

        centres, inertia, n = [], 0.0, 0
        for c, rows in enumerate(self._code_rows(ctx)):
            # scikit-learn's float64 path is the fast one
            codes = self._encode_real(ctx, rows).detach().cpu().numpy().astype(np.float64)
            km = KMeans(n_clusters=self.ipc, n_init=3, random_state=self.iteration_seed(-4, c) & 0xFFFF_FFFF)
            km.fit(codes)
            centres.append(km.cluster_centers_)
            inertia, n = inertia + float(km.inertia_), n + len(codes)
        z = torch.as_tensor(np.concatenate(centres), dtype=torch.float32, device=ctx.device)
        return z, inertia / n

    # --- the run -------------------------------------------------------------------------------
    def _setup(self, ctx: Context) -> None:
        self._setup_augmentation(ctx)
        self._preprocessor = ctx.preprocessor
        self._teacher_info = None
        self._setup_generator(ctx)
        self._setup_teacher(ctx)
        ctx.state["latents"] = torch.zeros(len(ctx.y_syn), self._latent_dim, device=ctx.device)
        self._setup_latents(ctx)
        self._set_samples(ctx)

    def _setup_latents(self, ctx: Context) -> None:
        """Initial latents in ``ctx.state["latents"]`` (and their optimiser)."""

    def _soft_labels(self, ctx: Context) -> np.ndarray | None:
        if not self.soft_labels:
            return None
        return soft_probabilities(ctx.state["teacher"], ctx.X_syn.detach(), self.temperature, device=ctx.device)

    def _training_recipe(self, ctx: Context) -> dict:
        return super()._training_recipe(ctx) | {"soft_labels": bool(self.soft_labels)}

    def fit(self, dataset, y=None):
        """Train the generator (or take the plugged one), distil in its latent space; see the class docs."""
        self._fit_started = time.perf_counter()
        out = super().fit(dataset, y)
        self.latents_ = latents = self._last_latents
        self.decoder_ = self._decoder
        self.encoder_ = self._encoder
        sample_shape = tuple(out.X.shape[1:])
        decoder_parameters = sum(p.numel() for p in self._decoder.parameters())
        out.meta["latent"] = {
            "latent_dim": self._latent_dim, "decoder": self._decoder_name, "conditional": self._conditional,
            "decoder_space": self.decoder_space,
            "latent_bytes_per_sample": int(self._latent_dim * 4),
            "decoded_bytes_per_sample": int(np.prod(sample_shape) * 4),
            "decoder_parameters": int(decoder_parameters), "decoder_bytes": int(decoder_parameters * 4),
            "latent_set_bytes": int(latents.size * 4 + decoder_parameters * 4),
            "decoded_set_bytes": int(len(out.y) * np.prod(sample_shape) * 4),
            "autoencoder_training": self._ae_info or None,
        }
        if self.soft_labels:
            out.meta["soft_labels"] = {"temperature": float(self.temperature), "teacher": self._teacher_info,
                                       "source": self.name}
        return out

    def _check_finite(self, ctx: Context, it: int) -> None:
        # the base loop checks the samples once more right before it builds the artifact: keep the latents then
        super()._check_finite(ctx, it)
        self._last_latents = ctx.state["latents"].detach().cpu().numpy().copy()

    def decode(self, latents, y=None) -> np.ndarray:
        """Decode latents (after ``fit``) into samples in the data's own shape and scale."""
        if not hasattr(self, "decoder_"):
            raise ConfigError(f"{self.name}: call fit() before decode()")
        dev = next(iter(self.decoder_.parameters()), torch.zeros(())).device
        z = torch.as_tensor(np.asarray(latents, dtype=np.float32), device=dev)
        labels = torch.as_tensor(np.zeros(len(z)) if y is None else np.asarray(y), dtype=torch.long, device=dev)
        with torch.no_grad():
            x = self.decoder_(z, labels) if self._conditional else self.decoder_(z)
        x = x.float().cpu().numpy()
        if self.decoder_space == "source":
            return x
        return self._preprocessor.inverse(x)


@register
class AutoencoderKMeans(LatentDistiller):
    """ae-kmeans: k-means prototypes of each class's latent codes, decoded (D4M-style).

    One iteration: the autoencoder (or plugged encoder) codes every real sample, k-means finds ``ipc``
    centroids per class, the decoder turns them into the synthetic samples. Needs an encoder.

    Args: see :class:`LatentDistiller` (``iterations`` is 1: k-means runs once).
    """

    name = "ae-kmeans"
    summary = "autoencoder latent space: per-class k-means centroids of the codes, decoded (D4M-style)"
    recommended_iterations = 1
    default_ae_time_fraction = 0.6

    def __init__(self, ipc: int = 10, *, iterations: int = 1, **kwargs):
        super().__init__(ipc, iterations=iterations, **kwargs)

    def check_params(self) -> None:
        super().check_params()
        if self.decoder is not None and self.encoder is None:
            raise ConfigError(f"{self.name}: k-means needs the latent codes of the real data; pass encoder= with "
                              "the plugged decoder (or use ae-dm, which optimises latents without one)")

    def _step(self, ctx: Context, it: int) -> float:
        z, inertia = self._kmeans_latents(ctx)
        with torch.no_grad():
            ctx.state["latents"].copy_(z)
        self._set_samples(ctx)
        return inertia


@register
class AutoencoderDistributionMatching(LatentDistiller):
    """ae-dm: distribution matching through a frozen decoder, optimising the latent codes (GLaD-style).

    Args:
        lr_images: Adam learning rate of the latent codes.
        latent_init: ``kmeans`` (per-class centroids of the real codes), ``real`` (codes of random real
            samples), ``noise`` (standard normal), or ``auto`` (kmeans when there is an encoder, else noise).
        Other arguments: see :class:`LatentDistiller` and :class:`datadistill.synth.DistributionMatching`.
    """

    name = "ae-dm"
    summary = "autoencoder latent space: distribution matching of decoded latents, latents optimised (GLaD-style)"
    recommended_iterations = 2000
    default_ae_time_fraction = 0.4

    def __init__(self, ipc: int = 10, *, iterations: int = 2000, lr_images: float = 0.03,
                 latent_init: str = "auto", **kwargs):
        super().__init__(ipc, iterations=iterations, lr_images=lr_images, **kwargs)
        self.latent_init = latent_init

    def check_params(self) -> None:
        super().check_params()
        if self.latent_init not in LATENT_INITS:
            raise ConfigError(f"{self.name}: latent_init must be one of {', '.join(LATENT_INITS)}, "
                              f"got {self.latent_init!r}")
        if self.latent_init in ("kmeans", "real") and self.decoder is not None and self.encoder is None:
            raise ConfigError(f"{self.name}: latent_init={self.latent_init!r} needs the real data's codes; pass "
                              "encoder= with the plugged decoder or use latent_init='noise'")

    def _setup_latents(self, ctx: Context) -> None:
        init = self.latent_init
        if init == "auto":
            init = "kmeans" if self._encoder is not None else "noise"
        latents = ctx.state["latents"]
        if init == "noise":
            z = torch.randn(latents.shape, generator=self.iteration_generator(-5)).to(ctx.device)
        elif init == "kmeans":
            z, _ = self._kmeans_latents(ctx)
        else:
            gen = self.iteration_generator(-5)
            rows = torch.cat([idx[torch.randperm(len(idx), generator=gen)[: self.ipc].to(idx.device)]
                              for idx in ctx.class_index])
            z = self._encode_real(ctx, rows)
        with torch.no_grad():
            latents.copy_(z)
        latents.requires_grad_(True)
        ctx.state["optimizer"] = torch.optim.Adam([latents], lr=self.lr_images)

    def _step(self, ctx: Context, it: int) -> float:
        net = self.new_network(ctx, seed=self.iteration_seed(it, 1))
        net.train()
        net.requires_grad_(False)
        real, n = self.real_batches(ctx, self.iteration_generator(it, 0))
        latents = ctx.state["latents"]
        syn = self.decode_latents(ctx, latents, ctx.y_syn)
        real, syn = self.siamese(ctx, real, syn, self.iteration_seed(it, 2))
        k = ctx.n_classes
        with self.autocast(ctx):
            with torch.no_grad():
                mean_real = net.features(real).float().reshape(k, n, -1).mean(dim=1)
            mean_syn = net.features(syn).float().reshape(k, self.ipc, -1).mean(dim=1)
        loss = ((mean_real - mean_syn) ** 2).sum()
        opt = ctx.state["optimizer"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self._set_samples(ctx)
        return float(loss.detach())
