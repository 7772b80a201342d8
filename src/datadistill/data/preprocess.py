"""Source space <-> model space: layout (channels first) and standardisation fitted on training data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dataset import Dataset


def _channels_last(shape: tuple[int, ...]) -> bool:
    """(H, W, C) when the last axis looks like colour channels and the first does not."""
    return len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4)


@dataclass
class Preprocessor:
    """Maps samples to the float32 layout models take ((N, d) or (N, C, H, W)), standardised.

    ``mean``/``std`` are per feature (tabular) or per channel (images), fitted on a training set;
    :meth:`inverse` returns model-space samples to the source's layout and scale (float32).
    """

    sample_shape: tuple[int, ...]
    mean: np.ndarray
    std: np.ndarray
    source_dtype: str = "float32"

    @classmethod
    def fit(cls, dataset: Dataset, *, max_samples: int = 50_000, random_state: int = 0) -> Preprocessor:
        shape = dataset.sample_shape
        X = dataset.X
        if len(X) > max_samples:
            idx = np.random.default_rng(random_state).choice(len(X), max_samples, replace=False)
            X = X[np.sort(idx)]
        Xm = cls._layout(X.astype(np.float32, copy=False), shape)
        axes = (0,) if Xm.ndim == 2 else (0, 2, 3)
        mean = Xm.mean(axis=axes, dtype=np.float64)
        std = Xm.std(axis=axes, dtype=np.float64)
        std = np.where(std < 1e-8, 1.0, std)
        return cls(tuple(shape), mean.astype(np.float32), std.astype(np.float32), str(dataset.X.dtype))

    @staticmethod
    def _layout(X: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if len(shape) == 1:
            return X
        if len(shape) == 2:
            return X[:, None, :, :]
        if _channels_last(shape):
            return np.ascontiguousarray(X.transpose(0, 3, 1, 2))
        return X

    @property
    def is_image(self) -> bool:
        return len(self.sample_shape) >= 2

    @property
    def model_shape(self) -> tuple[int, ...]:
        """The per-sample shape models see: (d,) or (C, H, W)."""
        s = self.sample_shape
        if len(s) == 1:
            return s
        if len(s) == 2:
            return (1, *s)
        if _channels_last(s):
            return (s[2], s[0], s[1])
        return s

    def _stats(self) -> tuple[np.ndarray, np.ndarray]:
        if self.is_image:
            return self.mean[None, :, None, None], self.std[None, :, None, None]
        return self.mean[None, :], self.std[None, :]

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Source-space samples -> standardised float32 model input."""
        if tuple(X.shape[1:]) != self.sample_shape:
            raise ValueError(f"samples of shape {X.shape[1:]} given to a preprocessor for {self.sample_shape}")
        Xm = self._layout(np.asarray(X, dtype=np.float32), self.sample_shape)
        mean, std = self._stats()
        return ((Xm - mean) / std).astype(np.float32)

    def inverse(self, Xm: np.ndarray) -> np.ndarray:
        """Model-space samples -> the source's layout and scale (float32, not rounded or clipped)."""
        mean, std = self._stats()
        X = np.asarray(Xm, dtype=np.float32) * std + mean
        s = self.sample_shape
        if len(s) == 2:
            X = X[:, 0]
        elif len(s) == 3 and _channels_last(s):
            X = X.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(X, dtype=np.float32)

    def to_dict(self) -> dict:
        return {"sample_shape": list(self.sample_shape), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "source_dtype": self.source_dtype}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessor:
        return cls(tuple(d["sample_shape"]), np.asarray(d["mean"], dtype=np.float32),
                   np.asarray(d["std"], dtype=np.float32), d.get("source_dtype", "float32"))
