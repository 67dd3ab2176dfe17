"""Adam (Kingma & Ba 2015) over a list of numpy parameter arrays.

The parameters are updated in place, so a network that hands out its weight
arrays sees the new values. The whole state (hyperparameters, step count and
both moment estimates) can be saved with :meth:`Adam.state_dict` and restored
with :meth:`Adam.load_state_dict`; the learning rate is part of it, so a
schedule that changes ``lr`` between epochs resumes where it stopped.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Adam"]


def _check_float(name, v, lo, hi, lo_open=False, hi_open=False):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
            or not np.isfinite(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{name}={v!r} is not allowed: must be a number in {lb}{lo}, {hi}{rb}")
    return float(v)


class Adam:
    """Adam with bias correction.

    ``step(grads)``: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g**2``,
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1**t)``
    and ``v_hat = v / (1 - b2**t)``.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, np.ndarray) or p.dtype != np.float64:
                raise ValueError(f"parameter {i} is not a float64 numpy array")
        self.params = params
        self.lr = _check_float("lr", lr, 0.0, np.inf, lo_open=True)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas={betas!r} must be a pair of numbers in [0, 1)")
        self.betas = (_check_float("betas[0]", betas[0], 0.0, 1.0, hi_open=True),
                      _check_float("betas[1]", betas[1], 0.0, 1.0, hi_open=True))
        self.eps = _check_float("eps", eps, 0.0, np.inf, lo_open=True)
        self.t = 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads):
        """One update of every parameter with its gradient (same order and shapes)."""
        from .layers import real_array
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        # Every gradient is checked before anything changes: a refused step leaves no trace.
        grads = [real_array(f"grads[{i}]", g, p.shape).astype(np.float64)
                 for i, (p, g) in enumerate(zip(self.params, grads))]
        self.t += 1
        b1, b2 = self.betas
        c1 = 1.0 - b1 ** self.t
        c2 = 1.0 - b2 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * np.square(g)
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)

    def state_dict(self) -> dict:
        """Hyperparameters, step count and copies of the moment estimates."""
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "t": self.t,
                "m": [a.copy() for a in self.m], "v": [a.copy() for a in self.v]}

    def load_state_dict(self, state: dict):
        """Restore a state from :meth:`state_dict`; shapes must match the parameters."""
        if not isinstance(state, dict):
            raise ValueError(f"optimizer state must be a dict, not {type(state).__name__}")
        missing = [k for k in ("lr", "betas", "eps", "t", "m", "v") if k not in state]
        if missing:
            raise ValueError(f"optimizer state lacks {', '.join(missing)}")
        t = state["t"]
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"optimizer state: t={t!r} must be an integer >= 0")
        for name in ("m", "v"):
            arrays = state[name]
            if len(arrays) != len(self.params):
                raise ValueError(f"optimizer state: {name} has {len(arrays)} arrays for "
                                 f"{len(self.params)} parameters")
            for i, (a, p) in enumerate(zip(arrays, self.params)):
                a = np.asarray(a)
                if a.shape != p.shape:
                    raise ValueError(f"optimizer state: {name}[{i}] has shape {a.shape}; the "
                                     f"parameter has {p.shape}")
                if not np.all(np.isfinite(a)) or (name == "v" and np.any(a < 0)):
                    raise ValueError(f"optimizer state: {name}[{i}] holds invalid values")
        lr = _check_float("lr", state["lr"], 0.0, np.inf, lo_open=True)
        betas = state["betas"]
        betas = (_check_float("betas[0]", betas[0], 0.0, 1.0, hi_open=True),
                 _check_float("betas[1]", betas[1], 0.0, 1.0, hi_open=True))
        eps = _check_float("eps", state["eps"], 0.0, np.inf, lo_open=True)
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, int(t)
        self.m = [np.array(a, np.float64) for a in state["m"]]
        self.v = [np.array(a, np.float64) for a in state["v"]]
