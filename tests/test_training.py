"""Training stack (bss2sim.experiments.training): layer gradients, hardware forward
passes, a small MNIST training run, Adam and resumable checkpoints."""
import json
import time

import numpy as np
import pytest

from bss2sim.circuits import constants as K
from bss2sim.digital import Accelerator, BehaviouralParams
from bss2sim.experiments.training import (Adam, Conv2d, ConvertingReLU, Linear, MnistNet, load_checkpoint,
                                  save_checkpoint, softmax_cross_entropy)
from bss2sim.experiments.training import checkpoint as CK
from bss2sim.experiments.training.layers import fold2d, gain_aware_std, relu_output_rms

from test_mnist import require_data
from bss2sim.experiments.datasets import mnist as M

_CACHE = {}


def load_mnist(split, data_dir):
    """The real data, read once per test session."""
    if split not in _CACHE:
        _CACHE[split] = M.load_mnist(split, data_dir)
    return _CACHE[split]


def numeric_grad(f, a, idx, eps=1e-5):
    """Central difference of the scalar f() with respect to a[idx] (a changed in place)."""
    old = a[idx]
    a[idx] = old + eps
    fp = f()
    a[idx] = old - eps
    fm = f()
    a[idx] = old
    return (fp - fm) / (2 * eps)


def check_grad(f, a, analytic, rng, n=25, eps=1e-5, rtol=1e-5, atol=1e-8):
    flat = rng.choice(a.size, size=min(n, a.size), replace=False)
    for k in flat:
        idx = np.unravel_index(k, a.shape)
        num = numeric_grad(f, a, idx, eps)
        assert num == pytest.approx(analytic[idx], rel=rtol, abs=atol), f"at {idx}"


# --- gradients in float mode ------------------------------------------------------------

def test_linear_gradients():
    rng = np.random.default_rng(0)
    layer = Linear(13, 7, num_sends=3, gain=0.01, rng=rng)
    x = rng.uniform(0, 31, (5, 13))
    r = rng.normal(size=(5, 7))
    loss = lambda: float(np.sum(r * layer.forward(x, "float")))
    y = layer.forward(x, "float")
    assert np.allclose(y, 0.01 * 3 * x @ layer.weight)
    gx = layer.backward(r)
    check_grad(loss, layer.weight, layer.grad_weight.copy(), rng)
    check_grad(loss, x, gx, rng)


def test_conv2d_gradients_and_fold():
    rng = np.random.default_rng(1)
    layer = Conv2d(2, 3, (3, 4), stride=(2, 1), padding=(1, 2), num_sends=2, gain=0.02, rng=rng)
    x = rng.uniform(0, 31, (2, 2, 7, 6))
    y = layer.forward(x, "float")
    assert y.shape == (2, 3, 4, 7) and layer.output_shape(7, 6) == (4, 7)
    r = rng.normal(size=y.shape)
    loss = lambda: float(np.sum(r * layer.forward(x, "float")))
    gx = layer.backward(r)
    check_grad(loss, layer.weight, layer.grad_weight.copy(), rng)
    check_grad(loss, x, gx, rng)
    # A direct loop convolution agrees with the im2col forward pass.
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)))
    ref = np.zeros_like(y)
    for o in range(3):
        for i in range(4):
            for j in range(7):
                ref[:, o, i, j] = np.sum(xp[:, :, 2 * i:2 * i + 3, j:j + 4] * layer.weight[o], axis=(1, 2, 3))
    assert np.allclose(y, ref * 0.02 * 2)
    # fold2d is the adjoint of unfold2d: <unfold(x), c> = <x, fold(c)>.
    from bss2sim.digital import unfold2d
    cols, _ = unfold2d(x, (3, 4), (2, 1), (1, 2))
    c = rng.normal(size=cols.shape)
    assert np.sum(cols * c) == pytest.approx(np.sum(x * fold2d(c, x.shape, (3, 4), (2, 1), (1, 2))))


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_converting_relu_gradient(shift):
    rng = np.random.default_rng(2 + shift)
    relu = ConvertingReLU(shift)
    y = rng.uniform(-60, 200, (6, 40))
    kinks = np.array([0.0, relu.upper])
    y[np.min(np.abs(y[..., None] - kinks), axis=-1) < 1e-2] += 0.5   # keep off the kinks
    r = rng.normal(size=y.shape)
    out = relu.forward(y, "float")
    assert out.min() >= 0 and out.max() <= K.INPUT_MAX
    assert np.allclose(out, np.clip(np.clip(y, 0, 127) / 2 ** shift, 0, 31))
    g = relu.backward(r)
    loss = lambda: float(np.sum(r * relu.forward(y, "float")))
    check_grad(loss, y, g, rng, n=60)
    # Outside the linear range the gradient is exactly 0, inside 1 / 2**shift.
    inside = (y > 0) & (y < min(127, 31 * 2 ** shift))
    assert np.all(g[~inside] == 0) and np.allclose(g[inside], r[inside] / 2 ** shift)
    assert inside.any() and (~inside).any()


def test_converting_relu_quantised_float_and_hardware():
    y = np.arange(-128, 128)
    relu_q = ConvertingReLU(1, quantise=True)
    acc = Accelerator(behavioural=BehaviouralParams(0.0015, 0.0), noise_seed=None)
    hw = relu_q.forward(y, "behavioural", acc)
    assert hw.dtype == np.int64
    assert np.array_equal(hw, np.clip(np.clip(y, 0, 127) >> 1, 0, 31))
    assert np.array_equal(relu_q.forward(y.astype(float), "float"), hw)
    g = relu_q.backward(np.ones(y.shape))                       # straight-through floor
    assert np.array_equal(g, ((y > 0) & (y < 62)) * 0.5)


def test_loss_gradient():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 40, (7, 10))
    labels = rng.integers(0, 10, 7)
    loss, g = softmax_cross_entropy(logits, labels, 0.1)
    f = lambda: softmax_cross_entropy(logits, labels, 0.1)[0]
    check_grad(f, logits, g, rng, n=40)
    z = logits * 0.1
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(7), labels])))
    # Clamped to the int8 range: no gradient where the chip would saturate.
    big = logits * 5
    _, gc = softmax_cross_entropy(big, labels, 0.1, clip=True)
    out = (big < K.OUTPUT_MIN) | (big > K.OUTPUT_MAX)
    assert out.any() and np.all(gc[out] == 0)
    f = lambda: softmax_cross_entropy(big, labels, 0.1, clip=True)[0]
    check_grad(f, big, gc, rng, n=40)


def test_whole_network_gradients_float():
    rng = np.random.default_rng(4)
    net = MnistNet(gain=0.0015, seed=5)
    images = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8) * (rng.random((6, 28, 28)) < 0.3)
    labels = rng.integers(0, 10, 6)

    def loss():
        return net.loss_and_grad(net.forward(images, "float"), labels)[0]

    logits = net.forward(images, "float")
    l0, g = net.loss_and_grad(logits, labels)
    assert l0 > 0
    grads = [a.copy() for a in net.backward(g)]
    assert all(np.any(a != 0) for a in grads)
    for p, a in zip(net.parameters(), grads):
        big = np.abs(a) > 1e-3 * np.abs(a).max()
        cand = np.flatnonzero(big)
        for k in rng.choice(cand, size=12, replace=False):
            idx = np.unravel_index(k, p.shape)
            num = numeric_grad(loss, p, idx, eps=1e-4)
            assert num == pytest.approx(a[idx], rel=2e-4, abs=1e-9), f"{p.shape} at {idx}"


# --- hardware modes ---------------------------------------------------------------------

def test_behavioural_forward_matches_float_within_rounding():
    """With sigma = 0 a hardware layer is the float layer (same integer inputs,
    the rounded weights) up to the rounding of each 128-row tile (at most 1/2 LSB
    each) and int8 saturation."""
    x_all, _ = load_mnist("test", require_data())
    images = x_all[:24]
    net = MnistNet(gain=0.0015, seed=1)
    acc = Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=0.0), noise_seed=None)
    x = net.prepare_inputs(images)
    assert x.min() >= 0 and x.max() == 31

    def compare(layer, inp, tiles):
        hw = layer.forward(inp, "behavioural", acc)
        saved = layer.weight.copy()
        layer.weight[...] = layer.hardware_weight()
        fl = layer.forward(inp, "float")
        layer.weight[...] = saved
        # Pure float weights differ from the rounded ones by <= 0.5 each.
        fl_unrounded = layer.forward(inp, "float")
        assert np.issubdtype(hw.dtype, np.integer)
        assert hw.min() >= K.OUTPUT_MIN and hw.max() <= K.OUTPUT_MAX
        ok = np.abs(fl) < 100
        d = fl[ok] - hw[ok]
        assert ok.mean() > 0.9
        assert np.abs(d).max() <= 0.5 * tiles + 1e-9, (d.min(), d.max())
        if tiles == 1:
            assert np.all(hw[fl >= 128] == K.OUTPUT_MAX)
        assert np.abs(fl_unrounded - fl).mean() < 2
        return hw

    h = compare(net.conv, x, 1)                       # 100 rows: one tile
    assert np.std(h) > 5                              # the outputs use the int8 range
    h = net.relu1.forward(h, "behavioural", acc).reshape(len(images), -1)
    assert h.max() > 10
    h = compare(net.fc1, h, 4)                        # 500 rows: four tiles
    h = net.relu2.forward(h, "behavioural", acc)
    compare(net.fc2, h, 1)
    # The whole network in both modes agrees on most digits.
    agree = np.mean(net.predict(images, "behavioural", acc) == net.predict(images, "float"))
    assert agree >= 0.75


def test_hardware_backward_is_linear_model_of_rounded_weights():
    rng = np.random.default_rng(6)
    layer = Linear(200, 30, num_sends=2, gain=0.0015, rng=rng)
    acc = Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=2.0), noise_seed=3)
    x = rng.integers(0, 32, (8, 200))
    y = layer.forward(x, "behavioural", acc)
    g = rng.normal(size=y.shape)
    gx = layer.backward(g)
    w = layer.hardware_weight()
    assert np.allclose(layer.grad_weight, 0.0015 * 2 * x.T @ g)
    assert np.allclose(gx, 0.0015 * 2 * g @ w.T)
    assert np.abs(w).max() <= 63 and np.array_equal(w, np.rint(layer.weight))


def test_mode_checks():
    net = MnistNet(gain=0.0015, seed=0)
    images = np.zeros((2, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="accelerator"):
        net.forward(images, "behavioural")
    with pytest.raises(ValueError, match="mode"):
        net.forward(images, "analog")
    from bss2sim.circuits import Chip
    chip_acc = Accelerator(Chip(seed=0))
    with pytest.raises(ValueError, match="fidelity 'chip'"):
        net.forward(images, "behavioural", chip_acc)
    with pytest.raises(ValueError, match="images have shape"):
        net.forward(np.zeros((2, 27, 28), np.uint8))
    with pytest.raises(ValueError, match="integer inputs"):
        Linear(3, 2).forward(np.full((1, 3), 0.5), "behavioural",
                             Accelerator(behavioural=BehaviouralParams(0.0015, 0.0)))


def test_chip_mode_forward_and_backward():
    """The cycle-level chip runs the same network (one image) and trains on it."""
    from bss2sim.circuits import Chip
    x_all, y_all = load_mnist("test", require_data())
    net = MnistNet(gain=0.0015, seed=0)
    acc = Accelerator(Chip(seed=3), noise_seed=0)
    logits = net.forward(x_all[:1], "chip", acc)
    assert logits.shape == (1, 10) and np.issubdtype(logits.dtype, np.integer)
    assert logits.min() >= -128 and logits.max() <= 127 and np.ptp(logits) > 0
    _, g = net.loss_and_grad(logits, y_all[:1])
    grads = net.backward(g)
    assert all(np.all(np.isfinite(a)) for a in grads) and np.any(grads[0] != 0)
    assert acc.report()["vmm_passes"] > 0


# --- initialisation -----------------------------------------------------------------------

@pytest.mark.parametrize("gain", [0.0012, 0.0015, 0.003])
def test_gain_aware_initialisation(gain):
    x_all, _ = load_mnist("test", require_data())
    net = MnistNet(gain=gain, seed=0)
    for layer in net.mac_layers:
        assert layer.init_std <= 63 / 3 + 1e-9
        assert np.abs(layer.weight).max() <= 2 * layer.init_std + 1e-9
        assert layer.weight.std() == pytest.approx(0.88 * layer.init_std, rel=0.15)
        # The number of sends is the smallest that keeps the weight spread in range.
        if layer.num_sends > 1:
            assert gain_aware_std(gain, layer.num_sends - 1, layer.fan_in, layer.input_rms,
                                  layer.target_std) > 21
    # Float outputs of real digits spread over a good part of the int8 range.
    h = net.conv.forward(net.prepare_inputs(x_all[:200]), "float")
    assert 10 < h.std() < 60
    h = net.fc1.forward(net.relu1.forward(h).reshape(200, -1))
    assert 10 < h.std() < 60
    assert net.fc2.forward(net.relu2.forward(h)).std() > 10
    y = np.random.default_rng(0).normal(0, 32, 400_000)
    mc = np.sqrt(np.mean(np.clip(y / 2, 0, 31) ** 2))
    assert relu_output_rms(32, 1) == pytest.approx(mc, rel=0.01)


def test_initialisation_reproducible():
    a, b, c = MnistNet(seed=7), MnistNet(seed=7), MnistNet(seed=8)
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters()):
        assert np.array_equal(p, q) and not np.array_equal(p, r)


# --- Adam ---------------------------------------------------------------------------------

def test_adam_step_and_state():
    p = np.array([1.0, -2.0, 3.0])
    opt = Adam([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    g = np.array([0.5, -1.0, 0.0])
    opt.step([g])
    # First step: m_hat = g, v_hat = g**2, so the update is lr * sign(g).
    assert np.allclose(p, [0.9, -1.9, 3.0])
    opt.step([g * 2])
    m = 0.9 * 0.1 * g + 0.1 * 2 * g
    v = 0.99 * 0.01 * g ** 2 + 0.01 * 4 * g ** 2
    step = 0.1 * (m / (1 - 0.81)) / (np.sqrt(v / (1 - 0.99 ** 2)) + 1e-8)
    assert np.allclose(p, np.array([0.9, -1.9, 3.0]) - step)
    st = opt.state_dict()
    q = p.copy()
    opt2 = Adam([q], lr=1.0)
    opt2.load_state_dict(st)
    opt.step([g])
    opt2.step([g])
    assert np.array_equal(p, q) and opt2.t == 3
    with pytest.raises(ValueError, match="shape"):
        opt.step([np.zeros(2)])
    with pytest.raises(ValueError, match="lr"):
        Adam([p], lr=0)


# --- training -----------------------------------------------------------------------------

def test_small_training_run_beats_chance():
    x_tr, y_tr = load_mnist("train", require_data())
    x_te, y_te = load_mnist("test", require_data())
    net = MnistNet(gain=0.0015, seed=0)
    opt = Adam(net.parameters(), lr=0.5)
    rng = np.random.default_rng(0)
    before = net.evaluate(x_te[:1000], y_te[:1000])
    t0 = time.perf_counter()
    losses = []
    for _ in range(4):
        losses.append(net.train_epoch(x_tr[:1000], y_tr[:1000], "float", opt, 50, rng)["loss"])
    seconds = time.perf_counter() - t0
    acc = net.evaluate(x_te[:1000], y_te[:1000])
    assert losses[-1] < 0.5 * losses[0]
    assert acc > 0.8, f"held-out accuracy {acc:.3f} after training on 1000 digits (before: {before:.3f})"
    assert acc > before + 0.4
    assert seconds < 30
    for p in net.parameters():
        assert np.abs(p).max() <= K.WEIGHT_MAX
    # The trained net also works on the behavioural chip model with its noise.
    acc_hw = net.evaluate(x_te[:300], y_te[:300], "behavioural",
                          Accelerator(behavioural=BehaviouralParams(0.0015, 2.0), noise_seed=0))
    assert acc_hw > 0.75


def test_weights_clamped_after_each_step():
    x, y = load_mnist("test", require_data())
    net = MnistNet(gain=0.0015, seed=3)
    opt = Adam(net.parameters(), lr=40.0)           # steps large enough to leave -63..63
    net.train_epoch(x[:60], y[:60], "float", opt, 20, np.random.default_rng(0))
    top = max(np.abs(p).max() for p in net.parameters())
    assert top == K.WEIGHT_MAX
    for layer in net.mac_layers:
        assert np.array_equal(layer.hardware_weight(), np.rint(layer.weight))


def test_behavioural_training_step_reduces_loss():
    x_tr, y_tr = load_mnist("test", require_data())
    x, y = x_tr[:200], y_tr[:200]
    net = MnistNet(gain=0.0015, seed=2)
    acc = Accelerator(behavioural=BehaviouralParams(0.0015, 2.0), noise_seed=1)
    opt = Adam(net.parameters(), lr=0.5)
    rng = np.random.default_rng(1)
    seen = []
    s1 = net.train_epoch(x, y, "behavioural", opt, 20, rng, accelerator=acc,
                         progress=lambda b, n, l: seen.append((b, n)))
    s2 = net.train_epoch(x, y, "behavioural", opt, 20, rng, accelerator=acc)
    assert seen == [(b, 10) for b in range(10)]
    assert s2["loss"] < s1["loss"] and s2["accuracy"] > 0.5


# --- checkpoints --------------------------------------------------------------------------

def _fresh(seed=0):
    net = MnistNet(gain=0.0015, seed=seed)
    return net, Adam(net.parameters(), lr=0.5), np.random.default_rng(seed)


def _small_data(n=300):
    x, y = load_mnist("test", require_data())
    return x[:n], y[:n]


def test_checkpoint_resume_is_bit_identical(tmp_path):
    x, y = _small_data()
    net, opt, rng = _fresh()
    for _ in range(2):
        net.train_epoch(x, y, "float", opt, 32, rng)
        opt.lr *= 0.7
    ref = [p.copy() for p in net.parameters()]

    net, opt, rng = _fresh()
    net.train_epoch(x, y, "float", opt, 32, rng)
    opt.lr *= 0.7
    path = save_checkpoint(tmp_path / "ck.npz", net, opt, 1, rng, metadata={"note": "epoch 1"})
    del net, opt, rng
    ck = load_checkpoint(path)
    assert ck.epoch == 1 and ck.metadata == {"note": "epoch 1"} and ck.accelerator_state is None
    net2, opt2, rng2 = ck.build()
    net2.train_epoch(x, y, "float", opt2, 32, rng2)
    for p, q in zip(ref, net2.parameters()):
        assert np.array_equal(p, q)
    # Restoring into existing objects works the same.
    net3, opt3, rng3 = _fresh(seed=0)
    ck.restore(net3, opt3, rng3)
    net3.train_epoch(x, y, "float", opt3, 32, rng3)
    for p, q in zip(ref, net3.parameters()):
        assert np.array_equal(p, q)
    # A different continuation (without the optimiser state) does differ.
    net4 = ck.make_network()
    opt4 = Adam(net4.parameters(), lr=0.35)
    net4.train_epoch(x, y, "float", opt4, 32, ck.make_rng())
    assert not np.array_equal(ref[0], net4.parameters()[0])


def test_checkpoint_resume_behavioural_noise(tmp_path):
    x, y = _small_data(80)
    beh = BehaviouralParams(0.0015, 2.0)
    net, opt, rng = _fresh(1)
    acc = Accelerator(behavioural=beh, noise_seed=5)
    for _ in range(2):
        net.train_epoch(x, y, "behavioural", opt, 40, rng, accelerator=acc)
    ref = [p.copy() for p in net.parameters()]

    net, opt, rng = _fresh(1)
    acc = Accelerator(behavioural=beh, noise_seed=5)
    net.train_epoch(x, y, "behavioural", opt, 40, rng, accelerator=acc)
    save_checkpoint(tmp_path / "b.npz", net, opt, 1, rng, accelerator=acc)
    ck = load_checkpoint(tmp_path / "b.npz")
    assert ck.accelerator_state["noise_seed"] == 5
    acc2 = Accelerator(behavioural=beh, noise_seed=5)
    net2, opt2, rng2 = ck.build(accelerator=acc2)
    net2.train_epoch(x, y, "behavioural", opt2, 40, rng2, accelerator=acc2)
    for p, q in zip(ref, net2.parameters()):
        assert np.array_equal(p, q)
    with pytest.raises(ValueError, match="noise_seed"):
        ck.restore_accelerator(Accelerator(behavioural=beh, noise_seed=6))


@pytest.fixture
def saved(tmp_path):
    net, opt, rng = _fresh()
    opt.step([np.ones_like(p) for p in net.parameters()])
    return save_checkpoint(tmp_path / "ck.npz", net, opt, 3, rng, metadata={"a": [1, 2]})


def _rewrite(path, header=None, arrays=None, drop=()):
    with np.load(path) as z:
        stored = {k: z[k] for k in z.files}
    head = json.loads(stored.pop("header").tobytes().decode())
    head.update(header or {})
    stored.update(arrays or {})
    for k in drop:
        stored.pop(k)
    stored["header"] = np.frombuffer(json.dumps(head).encode(), np.uint8)
    np.savez(path, **stored)


def test_checkpoint_roundtrip_contents(saved):
    ck = load_checkpoint(saved)
    assert ck.epoch == 3 and ck.metadata == {"a": [1, 2]} and ck.format_version == CK.FORMAT_VERSION
    assert ck.optimizer_state["t"] == 1
    net = ck.make_network()
    assert net.num_sends == (10, 5, 9)
    assert not [f for f in saved.parent.iterdir() if f.name.endswith(".tmp")]


def test_checkpoint_truncated(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="ck.npz.*(truncated|corrupt)"):
        load_checkpoint(saved)
    saved.write_bytes(b"")
    with pytest.raises(ValueError, match="not an .npz"):
        load_checkpoint(saved)


def test_checkpoint_wrong_version(saved):
    _rewrite(saved, header={"format_version": 2})
    with pytest.raises(ValueError, match="format_version 2.*only version 1"):
        load_checkpoint(saved)


def test_checkpoint_corrupt(saved, tmp_path):
    with np.load(saved) as z:
        w = z["param.fc1.weight"].copy()
    w[0, 0] += 1
    _rewrite(saved, arrays={"param.fc1.weight": w})
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(saved)
    _rewrite(saved, drop=("adam.v.2",))
    with pytest.raises(ValueError, match="lacks the array.*adam.v.2"):
        load_checkpoint(saved)
    _rewrite(saved, header={"magic": "something-else"})
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_checkpoint(saved)
    p = tmp_path / "flipped.npz"
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")
    # A flipped byte in the middle of the zip: refused one way or another.
    p2 = tmp_path / "other.npz"
    net, opt, rng = _fresh()
    save_checkpoint(p2, net, opt, 0, rng)
    data = bytearray(p2.read_bytes())
    data[len(data) // 3] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        load_checkpoint(p)


def test_checkpoint_refuses_foreign_optimizer(tmp_path):
    net, _, rng = _fresh()
    other = MnistNet(seed=1)
    with pytest.raises(ValueError, match="optimiser does not hold"):
        save_checkpoint(tmp_path / "x.npz", net, Adam(other.parameters()), 0, rng)
    assert not (tmp_path / "x.npz").exists()
