"""The training setups shared by the simulator tests: initialization, hyperparameters, m0 m* < 0 option."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from phasediag.training.simulate import sample_vectors


class Case(NamedTuple):
    """One training setup: initialization, hyperparameters, and whether to force m0 m* < 0."""

    width: int
    init_var_u: float
    init_var_w: float
    output_scale: float
    lr_u: float
    lr_w: float
    input_var: float
    teacher: float
    seed: int
    opposite: bool = False

    def hyper(self) -> dict:
        return dict(
            output_scale=self.output_scale,
            lr_u=self.lr_u,
            lr_w=self.lr_w,
            input_var=self.input_var,
            teacher=self.teacher,
        )

    def start(self) -> tuple[np.ndarray, np.ndarray]:
        u0, w0 = sample_vectors(self.width, self.init_var_u, self.init_var_w, np.random.default_rng(self.seed))
        if self.opposite and (u0 @ w0) * self.teacher > 0:
            u0 = -u0
        return u0, w0

    @property
    def c(self) -> float:
        return self.output_scale * np.sqrt(self.lr_u * self.lr_w)
