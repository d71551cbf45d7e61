"""One small config of every job kind (each runs in well under a second or two), for tests that must cover
every kind: run, plot, export, merge, load, the Python API."""

SWEEP = """\
name: tiny_sweep
sweep:
  d: {log: [1, 1e4, 5]}
  s: {log: [1e-6, 1, 4]}
model: {width: d, init_var_u: s, init_var_w: s}
train: {times: {values: [0, 1, 10, 100]}}
plot: {x: d, y: s, maps: [phase, ntk_change]}
"""

GD_SWEEP = """\
name: tiny_gd
sweep:
  d: {values: [1, 10, 100]}
  eta: {log: [0.01, 3, 5]}
model: {width: d, init_var_u: 1/d, init_var_w: 1/d, lr_u: eta, lr_w: eta}
train: {optimizer: gd, horizon: inf, max_steps: 2000}
plot: {x: eta, y: d, maps: [gd_outcome, phase]}
"""

SCALING = """\
name: tiny_scaling
mode: scaling
sweep:
  k: {lin: [-1, 0, 5]}
  s: {lin: [-1, 1, 5]}
model:
  output_scale: {exp: k}
  init_var_u: {exp: s}
  init_var_w: {exp: s}
plot: {x: k, y: s, maps: [limit_phase, rho_exp]}
"""

SGD_DRIFT = """\
name: tiny_sgd
experiment: sgd_drift
model: {width: 6, output_scale: 1.5, init_var_u: 0.2, init_var_w: 0.05, lr_ratio: 2}
data: {input_var: 1, teacher: 1, samples: 16}
sweep:
  lr: [0.02, 0.05]
  batch_size: [1, 16]
  noise_var: [0.25]
train: {steps: 60, record: 6}
seeds: 2
seed: 7
"""

NONLINEAR = """\
name: tiny_nonlinear
experiment: nonlinear
dataset: {name: digits, test_fraction: 0.25}
model:
  activations: [tanh]
  widths: [22]
  init: [symmetric]
  output_scale: 1/sqrt(d)
  lr_u: 0.2*sqrt(d)
  lr_w: 0.2*sqrt(d)
sweep:
  init_scale: [0.1, 10]
train: {steps: 20, record: 4, probe_size: 4}
seed: 3
"""

ACTIVATIONS = """\
name: tiny_activations
experiment: activations
model: {width: 40, output_scale: 0.16, lr_u: 5, lr_w: 5, activations: [linear, relu, tanh]}
cases:
  alignment: {init_var_u: 0.0025, init_var_w: 0.0025, teacher: 1}
  disalignment: {init_var_u: 0.1, init_var_w: 0.1, teacher_over_m0: 0.1}
train: {steps: 30, record: 6, nodes: 16}
seed: 2
"""

DEEP = """\
name: tiny_deep
experiment: deep
dataset: {name: digits}
model: {depth: 3, width: 12, activations: [relu], losses: [square, cross_entropy], lr: 0.1, init_var: 2}
sweep: {init_scale: [0.5, 2]}
train: {steps: 10, record: 3, probe_size: 4}
seed: 5
"""

#: kind -> (config text, can be sharded)
CASES = {
    "sweep": (SWEEP, True),
    "gd_sweep": (GD_SWEEP, True),
    "scaling": (SCALING, True),
    "sgd_drift": (SGD_DRIFT, False),
    "nonlinear": (NONLINEAR, False),
    "activations": (ACTIVATIONS, False),
    "deep": (DEEP, False),
}
