"""Causal per-device normalisation, identical in training and serving.

One global model serves devices of any scale because every input is
expressed in the device's own recent units: an exponentially weighted mean
and variance, updated with each reading *including* it, so nothing is
learned from the future. The model reads ``u_t = (x_t - mean_t) / std_t``
and predicts ``(x_{t+1} - mean_t) / std_t``; the forecast in sensor units is
``mean_t + std_t * prediction``.

The daemon keeps the same statistics per device (three numbers per channel)
and the training code computes them over each series with the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class NormalizationSpec:
    """How inputs are normalised (stored in the model bundle)."""

    span: float = 256.0  # EW span of the running mean and variance, in readings
    min_std: float = 1e-3  # absolute floor of the standard deviation
    relative_min_std: float = 1e-3  # and relative to |mean|, so flat signals stay finite
    clip: float = 20.0  # normalised inputs are clipped to [-clip, clip], in training and serving

    @property
    def alpha(self) -> float:
        """EW weight of the newest reading once the window is full."""
        return 2.0 / (self.span + 1.0)


def update_stats(
    spec: NormalizationSpec, mean: FloatArray, var: FloatArray, count: npt.NDArray[np.int64],
    x: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """New running mean and variance after reading ``x`` (arrays broadcast per device).

    Early on the weight is ``1/(count+1)``, so the statistics are plain sample
    statistics until the exponential window takes over.

    >>> spec = NormalizationSpec(span=1e9)
    >>> m, v = np.zeros(1), np.zeros(1)
    >>> for n, x in enumerate([1.0, 2.0, 3.0]):
    ...     m, v = update_stats(spec, m, v, np.array([n]), np.array([x]))
    >>> m.tolist(), round(float(v[0]), 4)
    ([2.0], 0.6667)
    """
    weight = np.maximum(spec.alpha, 1.0 / (count + 1.0))
    if weight.ndim < np.ndim(x):
        weight = weight.reshape(weight.shape + (1,) * (np.ndim(x) - weight.ndim))
    diff = x - mean
    step = weight * diff
    new_mean = mean + step
    new_var = (1.0 - weight) * (var + step * diff)
    return new_mean, new_var


def std_of(spec: NormalizationSpec, mean: FloatArray, var: FloatArray) -> FloatArray:
    """Standard deviation with the spec's floors."""
    floor = np.maximum(spec.min_std, spec.relative_min_std * np.abs(mean))
    result: FloatArray = np.sqrt(np.maximum(var, floor * floor))
    return result


def normalize(spec: NormalizationSpec, x: FloatArray, mean: FloatArray, std: FloatArray) -> FloatArray:
    """``(x - mean) / std`` clipped to the spec's range.

    >>> normalize(NormalizationSpec(clip=3.0), np.array([10.0]), np.array([0.0]), np.array([1.0])).tolist()
    [3.0]
    """
    result: FloatArray = np.clip((x - mean) / std, -spec.clip, spec.clip)
    return result


def update_normalize(
    spec: NormalizationSpec, moments: FloatArray, count: npt.NDArray[np.int64], x: FloatArray
) -> tuple[FloatArray, npt.NDArray[np.float32]]:
    """The serving path's :func:`update_stats`, :func:`std_of` and :func:`normalize` in one, in place.

    The same arithmetic, operation for operation, so the results are bit for
    bit those of the three functions (and of training); it only allocates
    less and, once every device is past the warm-up weights, skips them.

    Args:
        spec: The bundle's normalisation.
        moments: ``(devices, 2, channels)``: running mean and variance, updated in place.
        count: Readings each device has seen before ``x``.
        x: The new readings ``(devices, channels)``.

    Returns:
        ``(std, u)``: the standard deviation after ``x`` and the normalised
        ``x`` as float32, each ``(devices, channels)``.

    >>> spec = NormalizationSpec(span=1e9)
    >>> moments = np.zeros((1, 2, 1))
    >>> for n, x in enumerate([1.0, 2.0, 3.0]):
    ...     std, u = update_normalize(spec, moments, np.array([n]), np.array([[x]]))
    >>> moments[0, :, 0].tolist(), u.dtype.name
    ([2.0, 0.6666666666666667], 'float32')
    """
    mean = moments[:, 0]
    var = moments[:, 1]
    weight: FloatArray | float
    keep: FloatArray | float
    if len(count) and 1.0 / (float(count.min()) + 1.0) <= spec.alpha:
        weight = spec.alpha  # every device is past the warm-up: the maximum below is alpha
        keep = 1.0 - weight
    else:
        weights: FloatArray = count.astype(np.float64)
        weights += 1.0
        np.divide(1.0, weights, out=weights)
        np.maximum(spec.alpha, weights, out=weights)
        weight = weights[:, None]
        keep = 1.0 - weights[:, None]
    diff = x - mean
    step = weight * diff
    np.add(mean, step, out=mean)
    np.multiply(step, diff, out=step)
    np.add(var, step, out=step)
    np.multiply(keep, step, out=var)
    std = np.abs(mean)
    np.multiply(spec.relative_min_std, std, out=std)
    np.maximum(spec.min_std, std, out=std)
    np.multiply(std, std, out=std)
    np.maximum(var, std, out=std)
    np.sqrt(std, out=std)
    u = x - mean
    np.divide(u, std, out=u)
    # np.clip, in two calls that skip its Python wrapper (same values, NaN included).
    np.maximum(u, -spec.clip, out=u)
    np.minimum(u, spec.clip, out=u)
    return std, u.astype(np.float32)


def normalize_series(
    spec: NormalizationSpec, series: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Running statistics over one series ``(time, channels)``, as the daemon computes them.

    Returns:
        ``(u, mean, std)``, each ``(time, channels)``: the normalised input at
        each step and the statistics after including that step.
    """
    steps, channels = series.shape
    means = np.empty((steps, channels))
    stds = np.empty((steps, channels))
    mean = np.zeros(channels)
    var = np.zeros(channels)
    for t in range(steps):
        mean, var = update_stats(spec, mean, var, np.array(t), series[t])
        means[t] = mean
        stds[t] = std_of(spec, mean, var)
    return normalize(spec, series, means, stds), means, stds
