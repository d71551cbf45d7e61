"""The Python API: what the commands do, as functions of numbers that return objects holding numpy arrays.

    import phasediag
    point = phasediag.solve(width=1000, init_var_u=1e-4, init_var_w=1e-4, times=[0, 10, float("inf")])
    point.m, point.ntk, point.phase, point.to_dict(), point.plot()
    result = phasediag.run("configs/1_width_vs_init.yaml")        # in memory; out=... writes a run directory
    result["ntk_change"], result.coords, result.meta, result.plot("phase"), result.to_xarray()
    phasediag.load("outputs/width_vs_init")                        # the same object from disk
    phasediag.limit(param="mean_field").phase

Every function validates its input first and raises :class:`phasediag.BadInput` (a ValueError) whose message
names the offending field (``lr_u``), config key (with its line) or run option. See docs/api.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from phasediag.config.hyperparameters import Hyperparameters
from phasediag.config.reader import NOT_GIVEN
from phasediag.engine.point import TRAJECTORY_KEYS, grid_times, solve_point
from phasediag.errors import FieldError
from phasediag.results.store import Result

__all__ = ["Point", "Limit", "solve", "simulate", "run", "load", "plot", "limit"]

#: per-time series of `simulate` beyond those of `solve`
SIMULATED_KEYS = ("imbalance", "gram_det")


@dataclass(frozen=True)
class Point:
    """One solved (or simulated) point: the JSON object of ``phasediag solve --json`` (or ``simulate``) with its
    per-time series as numpy arrays (``point.t``, ``point.m``, ``point.ntk``, ``point.alignment``,
    ``point.norm_u2``, ``point.norm_w2``, ``point.loss``, ``point.m_lin``, ``point.loss_lin``; non-finite
    entries, e.g. of a diverging run, are NaN), the initial and final blocks (dicts) and the phase label."""

    data: dict

    def __getattr__(self, name: str) -> np.ndarray:
        if name in TRAJECTORY_KEYS + SIMULATED_KEYS and name in self.data:
            return np.array([np.nan if v is None else v for v in self.data[name]], dtype=float)
        raise AttributeError(name)

    @property
    def trajectory(self) -> dict[str, np.ndarray]:
        """Every per-time series, by name."""
        return {k: getattr(self, k) for k in TRAJECTORY_KEYS + SIMULATED_KEYS if k in self.data}

    @property
    def params(self) -> dict:
        return self.data["params"]

    @property
    def init(self) -> dict:
        return self.data["init"]

    @property
    def final(self) -> dict:
        return self.data["final"]

    @property
    def phase(self) -> str:
        """The phase label at the horizon (docs/theory.md section 6), e.g. "alignment" or "kernel"."""
        return self.data["final"]["label"]

    def to_dict(self) -> dict:
        """The JSON object the command prints with --json (with `meta`: version and elapsed time)."""
        return self.data

    def plot(self):
        """The 2x2 figure of ``--plot`` (m, NTK, alignment, loss against t) as a matplotlib Figure, not saved."""
        from phasediag.plots.trajectory import trajectory_figure

        return trajectory_figure(self.data)


def solve(*, width: int = 100, output_scale: float = 1.0, lr_u: float = 0.1, lr_w: float = 0.1,
          init_var_u: float | None = None, init_var_w: float | None = None, input_var: float = 1.0,
          teacher: float = 1.0, gram: Sequence[float] | None = None, seed: int | None = None,
          times: Sequence[float] | None = None, t_max: float | None = None, t_min: float | None = None,
          points: int | None = None, optimizer: str = "flow", horizon: float = math.inf,
          ntk_threshold: float = 0.1, alignment_threshold: float = 0.1) -> Point:
    """Solve one point exactly, as ``phasediag solve`` does (same defaults; ``init_var_*`` default to 1/width).

    Initialization: typical (U = d sigma_u^2, W = d sigma_w^2, V = 0) unless ``gram=(U, W, V)`` or ``seed=N``
    (an exact sample at this width) is given. Times: ``times`` (``inf`` allowed), or t = 0 and ``points - 1``
    log-spaced times from ``t_min`` to ``t_max`` (defaults 25, T_MAX/1000, 100). ``optimizer="gd"``: exact
    discrete GD, times are step counts.
    """
    hyper = Hyperparameters(width, output_scale, lr_u, lr_w, init_var_u, init_var_w, input_var, teacher)
    _check_times(times, points)
    if gram is not None and seed is not None:
        raise FieldError("gram", "conflicts with seed: choose one initialization")
    init = "gram" if gram is not None else "seed" if seed is not None else "typical"
    return Point(solve_point(hyper, init=init, gram=gram, seed=seed,
                             times=grid_times(times, t_max, t_min, points, steps=optimizer == "gd"),
                             optimizer=optimizer, horizon=horizon, ntk_threshold=ntk_threshold,
                             alignment_threshold=alignment_threshold))


def _check_times(times, points) -> None:
    """`times` a sequence of numbers; `points` at most the CLI's 100,000."""
    if times is not None and (isinstance(times, (str, bytes)) or not hasattr(times, "__len__")):
        raise FieldError("times", f"must be a sequence of times, got {times!r}")
    if points is not None and (isinstance(points, bool) or not isinstance(points, int) or not 2 <= points <= 100_000):
        raise FieldError("points", f"must be an integer in [2, 100,000], got {points!r}")


def simulate(*, width: int = 100, output_scale: float = 1.0, lr_u: float = 0.1, lr_w: float = 0.1,
             init_var_u: float | None = None, init_var_w: float | None = None, input_var: float = 1.0,
             teacher: float = 1.0, seed: int = 0, optimizer: str = "gd", batch_size: int = 32,
             samples: int = 1024, noise_var: float = 0.0, times: Sequence[float] | None = None,
             t_max: float | None = None, t_min: float | None = None, points: int | None = None,
             ntk_threshold: float = 0.1, alignment_threshold: float = 0.1, activation: str = "linear",
             slope: float = 0.01, nodes: int = 64) -> Point:
    """Train the actual vectors u, w in R^d, as ``phasediag simulate`` does (same defaults): ``optimizer`` gd
    (population loss), sgd (minibatches of ``batch_size`` from ``samples`` points with label noise
    ``noise_var``) or flow. The result also holds ``imbalance`` (Delta) and ``gram_det`` (G) per time; its
    ``init`` block is the sampled vectors' Gram, so ``solve(gram=...)`` is the exact prediction.

    ``activation`` (linear, relu, leaky_relu with negative-side ``slope``, tanh, sigmoid, swish) trains
    f(x) = kappa sum_i u_i phi(w_i x) from the same vectors instead; population expectations by a quadrature of
    ``nodes`` points per half-line (docs/theory.md section 10)."""
    from phasediag.training.measure import simulate_point

    hyper = Hyperparameters(width, output_scale, lr_u, lr_w, init_var_u, init_var_w, input_var, teacher)
    _check_times(times, points)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise FieldError("seed", f"must be an integer in [0, 2^63), got {seed!r}")
    return Point(simulate_point(hyper, seed=seed, times=grid_times(times, t_max, t_min, points,
                                                                    steps=optimizer != "flow"),
                                optimizer=optimizer, batch_size=batch_size, samples=samples, noise_var=noise_var,
                                ntk_threshold=ntk_threshold, alignment_threshold=alignment_threshold,
                                activation=activation, slope=slope, nodes=nodes))


def run(config: str | Path | dict, out: str | Path | None = None, *, workers: int = 1, shard: str | None = None,
        resume: bool = False, plot: bool = True, chunk_size: int | None = None,
        checkpoint_every: float | None = None, validate: bool = False, **settings: Any) -> Result:
    """Run a config (a YAML path, or a dict of the YAML's content) of any kind, as ``phasediag run`` does.

    ``out=None`` computes in memory and writes nothing; a path writes the run directory there (with the
    figures unless ``plot=False``). ``validate=True`` runs ``phasediag validate`` on a sweep config (its
    settings as keywords: points, max_width, step, max_steps, method). The result: ``result["ntk_change"]``
    (the array results.npz holds), ``result.coords``, ``result.meta``, ``result.plot(name)``,
    ``result.to_xarray()``; ``result.summary`` is what ``--json`` prints."""
    from phasediag.engine.sweep import CHECKPOINT_EVERY, DEFAULT_CHUNK
    from phasediag.jobs import lifecycle

    if not isinstance(config, (str, Path, dict)):
        raise FieldError("config", f"must be a path or a dict, got {type(config).__name__}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise FieldError("workers", f"must be an integer >= 1, got {workers!r}")
    extra = {}
    if validate:
        from dataclasses import fields

        from phasediag.studies.validation import Settings

        known = [f.name for f in fields(Settings)]
        for name in settings:
            if name not in known:
                raise FieldError(name, f"not a validation setting; known: {', '.join(known)}")
        extra["settings"] = Settings(**settings)
    elif settings:
        name = next(iter(settings))
        raise FieldError(name, "not an option of run (validation settings need validate=True)")
    try:
        parsed = lifecycle.parse_shard(shard)
    except ValueError as e:
        raise FieldError("shard", str(e)) from None
    chunk = DEFAULT_CHUNK if chunk_size is None else chunk_size
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise FieldError("chunk_size", f"must be an integer >= 1, got {chunk_size!r}")
    every = CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not 0 <= every < math.inf:
        raise FieldError("checkpoint_every", f"must be a number of seconds >= 0, got {checkpoint_every!r}")
    options = lifecycle.Options(workers=workers, shard=parsed, resume=resume, plot=plot, chunk_size=chunk,
                                checkpoint_every=float(every), **extra)
    result, summary = lifecycle.run(config, out=out, options=options, validate=validate)
    result.summary = summary.to_dict()
    return result


def load(directory: str | Path, *, mmap: bool = False) -> Result:
    """The result of a run directory written by ``phasediag run`` (or ``validate``, ``merge``), any kind,
    verified against its manifest. ``mmap=True``: a sweep's data variables as read-only ``numpy.memmap``
    arrays over its results.npz, read only where they are used (results larger than memory)."""
    from phasediag.jobs import lifecycle

    if not isinstance(mmap, bool):
        raise FieldError("mmap", f"must be True or False, got {mmap!r}")
    return lifecycle.load(directory, mmap=mmap)


def plot(directory: str | Path, formats: Sequence[str] | None = None, *, labels: dict[str, str] | None = None,
         title: Any = NOT_GIVEN, size: str | Sequence[float] | None = None, style: str | Path | None = None,
         dpi: int | None = None) -> list[Path]:
    """Re-draw the figures of a run directory, as ``phasediag plot`` does; returns the paths written.

    ``formats`` (default: the config's plot.formats); the figure settings, as a config's plot section has
    them and over its own: ``labels={"s": "$\\sigma^2$"}`` (a sweep variable's or metric's axis or colour-bar
    label, mathtext), ``title`` (a text, ``None`` for no title, or ``{figure or metric: text or None}``),
    ``size`` ("column", "page" or ``(width, height)`` in inches), ``style`` (a matplotlib style name or
    file), ``dpi`` (PNG resolution). meta.json records them; the data are not touched. A bad value raises
    :class:`phasediag.FieldError` naming the keyword."""
    from phasediag.config.reader import figure_option_values
    from phasediag.jobs import lifecycle

    options = figure_option_values(labels=labels, title=title, size=size, style=style, dpi=dpi)
    return lifecycle.plot(directory, formats, options or None)


@dataclass(frozen=True)
class Limit:
    """The infinite-width limit (docs/theory.md section 7): ``phase`` ("kernel" | "feature_learning"),
    ``exponents`` (name -> exact exponent as a fraction string such as "-1/2"), ``health`` (flags)."""

    data: dict

    @property
    def phase(self) -> str:
        return self.data["phase"]

    @property
    def exponents(self) -> dict[str, str]:
        return self.data["exponents"]

    @property
    def health(self) -> list[str]:
        return self.data["health"]

    def to_dict(self) -> dict:
        """The JSON object ``phasediag limit --json`` prints."""
        return self.data


def limit(*, output_scale_exp=None, init_var_u_exp=None, init_var_w_exp=None, lr_u_exp=None, lr_w_exp=None,
          param: str | None = None, init: str = "typical", check: bool = False) -> Limit:
    """The limit of kappa ~ d^output_scale_exp, sigma_u^2 ~ d^init_var_u_exp, ... (exponents: numbers or
    fractions such as "-1/2"; missing ones are 0), or of a named parametrization (``param="mean_field"``:
    ntk, mean_field, mup, standard, standard_stable, lazy). ``check=True`` also measures the exponents on the
    exact finite-width solution."""
    from phasediag.engine.limit import exponents_of, limit_result

    given = {"output_scale_exp": output_scale_exp, "init_var_u_exp": init_var_u_exp,
             "init_var_w_exp": init_var_w_exp, "lr_u_exp": lr_u_exp, "lr_w_exp": lr_w_exp}
    name, exps = exponents_of(param, given)
    return Limit(limit_result(name, exps, init, check))
