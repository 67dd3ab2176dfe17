"""The PyTorch bridge (bss2sim.experiments.torchbridge): bit for bit the numpy
training stack, the linear-model backward pass, argument checks, batch-split
invariance, the mock parameters and the example training script."""
import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from bss2sim import Accelerator, Chip, measure_behaviour  # noqa: E402
from bss2sim.circuits.checks import WrongTypeError  # noqa: E402
from bss2sim.digital import BehaviouralParams  # noqa: E402
from bss2sim.experiments.calibration import load_calibration  # noqa: E402
from bss2sim.experiments.datasets.mnist import load_test_set  # noqa: E402
from bss2sim.experiments.train import NETWORK_FILE, PACKAGE_DATA  # noqa: E402
from bss2sim.experiments.training import Adam, MnistNet  # noqa: E402
from bss2sim.experiments.training import Linear as NumpyLinear  # noqa: E402
from bss2sim.experiments.training import Conv2d as NumpyConv2d  # noqa: E402
from bss2sim.experiments.training.checkpoint import load_checkpoint  # noqa: E402
from bss2sim.experiments.torchbridge import (  # noqa: E402
    ConvertingReLU, Conv1d, Conv2d, InputScale, Linear, TorchMnistNet, behavioural_from_measurement,
    clamp_weights, conv1d, conv2d, converting_relu, input_scale, matmul, measure_mock_accelerator,
    mock_parameters, set_accelerator, softmax_cross_entropy)
from bss2sim.experiments.torchbridge import train_mnist  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


# --- shared fixtures -------------------------------------------------------------------
@pytest.fixture(scope="module")
def chip0():
    chip = Chip(0)
    load_calibration(chip)           # the shipped calibration of chip 0
    return chip


@pytest.fixture(scope="module")
def measured(chip0):
    return measure_behaviour(chip0)


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint(PACKAGE_DATA / NETWORK_FILE).make_network()


@pytest.fixture(scope="module")
def images():
    x, y = load_test_set()
    return x[:48], y[:48].astype(np.int64)


def _accelerators(mode, chip, measured, seed=7):
    """Two fresh accelerators of one mode with the same noise seed (None, None in float)."""
    if mode == "float":
        return None, None
    if mode == "behavioural":
        return (Accelerator(behavioural=measured.behavioural(), noise_seed=seed),
                Accelerator(behavioural=measured.behavioural(), noise_seed=seed))
    return Accelerator(chip, noise_seed=seed), Accelerator(chip, noise_seed=seed)


def _torch_grads(model):
    return [model.conv.weight.grad.numpy(), model.fc1.weight.grad.numpy().T,
            model.fc2.weight.grad.numpy().T]


# --- item 4: the shipped network, bit for bit --------------------------------------------
@pytest.mark.parametrize("mode", ["float", "behavioural", "chip"])
def test_shipped_network_logits_and_gradients_match_numpy(mode, chip0, measured, shipped, images):
    x, y = images
    a_np, a_t = _accelerators(mode, chip0, measured)
    logits_np = shipped.forward(x, mode, a_np)
    loss_np, g = shipped.loss_and_grad(logits_np, y)
    grads_np = [a.copy() for a in shipped.backward(g)]

    model = TorchMnistNet.from_numpy(shipped, accelerator=a_t)
    logits_t = model(torch.from_numpy(x))
    loss_t = model.loss(logits_t, torch.from_numpy(y))
    loss_t.backward()
    lt = logits_t.detach().numpy()
    if mode == "float":
        np.testing.assert_allclose(lt, logits_np, rtol=0, atol=1e-12)
        assert np.array_equal(lt, logits_np)          # in fact bit for bit as well
    else:
        assert logits_np.dtype.kind == "i" and np.array_equal(lt, logits_np)
        assert len(np.unique(lt)) > 20                # real outputs, not a constant
    assert loss_t.item() == loss_np
    for name, a, b in zip(("conv", "fc1", "fc2"), grads_np, _torch_grads(model)):
        assert a.shape == b.shape and np.abs(a).max() > 0, name
        assert np.array_equal(a, b), name
    if mode != "float":
        # The accelerators were used alike: the same noise positions and chip time.
        assert a_t.noise_state() == a_np.noise_state() == {1: 48 * 25, 2: 48, 3: 48}
        assert a_t.report()["total_s"] == a_np.report()["total_s"]


def test_converters_roundtrip(shipped):
    model = TorchMnistNet.from_numpy(shipped)
    assert model.config() == shipped.config()
    assert tuple(model.fc1.weight.shape) == (128, 500)       # torch layout (out, in)
    back = model.to_numpy()
    assert back.config() == shipped.config()
    for k, v in shipped.state_dict().items():
        assert np.array_equal(back.state_dict()[k], v), k
    assert [l.stream for l in model.mac_layers] == [1, 2, 3]
    # A new network initialises exactly as the numpy one of the same arguments.
    fresh_np = MnistNet(gain=0.0013, seed=5)
    fresh_t = TorchMnistNet(gain=0.0013, seed=5)
    assert fresh_t.num_sends == fresh_np.num_sends
    for k, v in fresh_np.state_dict().items():
        assert np.array_equal(fresh_t.numpy_state()[k], v), k
    with pytest.raises(WrongTypeError, match="net=.*must be a bss2sim.experiments.training.MnistNet"):
        TorchMnistNet.from_numpy(model)
    with pytest.raises(ValueError, match=r"state fc1.weight has shape \(128, 500\); expected \(500, 128\)"):
        model.load_numpy_state({**shipped.state_dict(), "fc1.weight": np.zeros((128, 500))})


def test_torch_adam_on_bridged_gradients_follows_numpy_adam(images):
    x, y = images
    net = MnistNet(gain=0.00144, seed=0)
    model = TorchMnistNet.from_numpy(net)
    opt_n = Adam(net.parameters(), lr=0.5)
    opt_t = torch.optim.Adam(model.parameters(), lr=0.5)
    for b in range(3):
        xb, yb = x[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
        _, g = net.loss_and_grad(net.forward(xb), yb)
        net.backward(g)
        opt_n.step(net.gradients())
        net.clamp_weights()
        loss = model.loss(model(torch.from_numpy(xb)), torch.from_numpy(yb))
        opt_t.zero_grad()
        loss.backward()
        opt_t.step()
        model.clamp_weights()
    moved = 0.0
    start = MnistNet(gain=0.00144, seed=0).state_dict()
    for k, v in net.state_dict().items():
        np.testing.assert_allclose(model.numpy_state()[k], v, rtol=0, atol=1e-10)
        moved = max(moved, float(np.abs(v - start[k]).max()))
    assert moved > 0.4                # three steps of rate 0.5 moved the weights


# --- gradients: linear model, finite differences, slow references ------------------------------
def _rand(shape, lo, hi, seed, integer=False):
    g = np.random.default_rng(seed)
    a = g.integers(lo, hi + 1, shape) if integer else g.uniform(lo, hi, shape)
    return torch.tensor(a, dtype=torch.float64)


def test_float_functions_pass_gradcheck():
    x = _rand((3, 7), 0, 31, 1).requires_grad_()
    w = _rand((7, 4), -50, 50, 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: matmul(a, b, None, num_sends=3, gain=0.002), (x, w))
    xc = _rand((2, 2, 6, 5), 0, 31, 3).requires_grad_()
    wc = _rand((3, 2, 3, 2), -50, 50, 4).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: conv2d(a, b, None, stride=(2, 1), padding=(1, 2), num_sends=2, gain=0.003), (xc, wc))
    x1 = _rand((2, 3, 9), 0, 31, 5).requires_grad_()
    w1 = _rand((2, 3, 4), -50, 50, 6).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: conv1d(a, b, None, stride=2, padding=1, gain=0.01), (x1, w1))
    # The converting ReLU away from its kinks (0 and 62 for shift 1).
    yr = torch.tensor([[-5.3, 3.1, 20.7, 61.2, 80.0, 130.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: converting_relu(a, 1), (yr,))
    converting_relu(yr, 1).sum().backward()
    assert yr.grad.tolist() == [[0.0, 0.5, 0.5, 0.5, 0.0, 0.0]]


@pytest.mark.parametrize("fidelity", ["behavioural", "chip"])
def test_hardware_backward_is_the_linear_model_of_the_rounded_weights(fidelity, chip0, measured):
    acc = (Accelerator(behavioural=measured.behavioural(), noise_seed=3) if fidelity == "behavioural"
           else Accelerator(chip0, noise_seed=3))
    x = _rand((5, 130), 0, 31, 7, integer=True).requires_grad_()     # two row tiles
    w = _rand((130, 6), -70, 70, 8).requires_grad_()                 # some beyond -63..63
    y = matmul(x, w, acc, num_sends=2, gain=0.0017)
    gy = _rand((5, 6), -1, 1, 9)
    y.backward(gy)
    wr = np.rint(np.clip(w.detach().numpy(), -63, 63))
    xn, gn = x.detach().numpy(), gy.numpy()
    # Slow obvious reference: loops over the sums.
    gx_ref = np.zeros((5, 130))
    gw_ref = np.zeros((130, 6))
    for b in range(5):
        for k in range(130):
            for n in range(6):
                gx_ref[b, k] += 0.0017 * 2 * gn[b, n] * wr[k, n]
                gw_ref[k, n] += 0.0017 * 2 * xn[b, k] * gn[b, n]
    np.testing.assert_allclose(x.grad.numpy(), gx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), gw_ref, rtol=1e-12, atol=1e-12)
    # The forward pass is the accelerator's own result of the rounded, clipped weights.
    twin = (Accelerator(behavioural=measured.behavioural(), noise_seed=3) if fidelity == "behavioural"
            else Accelerator(chip0, noise_seed=3))
    ref = twin.matmul(xn.astype(np.int64), wr.astype(np.int64), num_sends=2)
    assert np.array_equal(y.detach().numpy(), ref)
    assert y.dtype == torch.float64


def test_float_forward_against_loops():
    x = _rand((2, 5), 0, 31, 11)
    w = _rand((5, 3), -80, 80, 12)
    y = matmul(x, w, None, num_sends=4, gain=0.001).numpy()
    wc = np.clip(w.numpy(), -63, 63)
    ref = np.array([[sum(x.numpy()[b, k] * wc[k, n] for k in range(5)) * 0.004 for n in range(3)]
                    for b in range(2)])
    np.testing.assert_allclose(y, ref, rtol=1e-13)
    # conv2d against a direct loop (zero padding, stride).
    xc = _rand((2, 2, 7, 6), 0, 31, 13)
    wc2 = _rand((3, 2, 3, 3), -60, 60, 14)
    out = conv2d(xc, wc2, None, stride=2, padding=1, num_sends=1, gain=0.01).numpy()
    xp = np.pad(xc.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)))
    ho, wo = (7 + 2 - 3) // 2 + 1, (6 + 2 - 3) // 2 + 1
    ref = np.zeros((2, 3, ho, wo))
    for b in range(2):
        for o in range(3):
            for i in range(ho):
                for j in range(wo):
                    ref[b, o, i, j] = 0.01 * np.sum(xp[b, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * wc2.numpy()[o])
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    # conv1d is conv2d on a height of one.
    x1 = _rand((2, 3, 8), 0, 31, 15)
    w1 = _rand((4, 3, 3), -60, 60, 16)
    a = conv1d(x1, w1, None, stride=2, padding=1, gain=0.01)
    b = conv2d(x1[:, :, None, :], w1[:, :, None, :], None, stride=(1, 2), padding=(0, 1), gain=0.01)[:, :, 0]
    assert a.shape == (2, 4, 4) and torch.equal(a, b)


def test_conv_input_gradient_against_scatter_loop():
    xc = _rand((1, 2, 5, 5), 0, 31, 17).requires_grad_()
    wc = _rand((2, 2, 3, 3), -60, 60, 18)
    y = conv2d(xc, wc, None, stride=2, padding=1, gain=0.01)
    gy = _rand(tuple(y.shape), -1, 1, 19)
    y.backward(gy)
    ref = np.zeros((1, 2, 7, 7))
    for o in range(2):
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                ref[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] += 0.01 * gy.numpy()[0, o, i, j] * wc.numpy()[o]
    np.testing.assert_allclose(xc.grad.numpy(), ref[:, :, 1:6, 1:6], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fidelity", ["behavioural", "chip"])
def test_conv_functions_run_on_the_accelerator(fidelity, chip0, measured):
    make = ((lambda: Accelerator(behavioural=measured.behavioural(), noise_seed=2)) if fidelity == "behavioural"
            else (lambda: Accelerator(chip0, noise_seed=2)))
    x = _rand((3, 2, 8, 8), 0, 31, 21, integer=True)
    w = _rand((4, 2, 3, 3), -63, 63, 22)
    y = conv2d(x, w, make(), stride=2, padding=1, num_sends=8, stream=5)
    ref = make().conv2d(x.numpy().astype(np.int64), np.rint(w.numpy()).astype(np.int64), stride=2,
                        padding=1, num_sends=8, stream=5)
    assert np.array_equal(y.numpy(), ref) and np.abs(ref).max() > 3
    x1 = _rand((2, 2, 10), 0, 31, 23, integer=True)
    w1 = _rand((3, 2, 4), -63, 63, 24)
    y1 = conv1d(x1, w1, make(), stride=3, num_sends=8)
    ref1 = make().conv1d(x1.numpy().astype(np.int64), np.rint(w1.numpy()).astype(np.int64), stride=3,
                         num_sends=8)
    assert np.array_equal(y1.numpy(), ref1)


def test_input_scale_and_loss():
    pixels = torch.arange(256, dtype=torch.uint8)
    from bss2sim.experiments.datasets.mnist import quantise_images
    assert np.array_equal(input_scale(pixels, 31 / 255).numpy(), quantise_images(pixels.numpy()))
    x = torch.tensor([-0.2, 0.1, 0.49, 0.5, 1.2], dtype=torch.float64, requires_grad=True)
    y = input_scale(x)                               # scale 31: 0..1 -> 0..31
    assert y.tolist() == [0.0, 3.0, 15.0, 16.0, 31.0]   # 15.19 -> 15, 15.5 -> 16 (half to even)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 31.0, 31.0, 31.0, 0.0]   # straight through, 0 where clamped
    assert input_scale(torch.tensor([0.0, 2.0, 4.0]), "max").tolist() == [0.0, 16.0, 31.0]
    # The loss is the numpy stack's, bit for bit, with clamped logits.
    from bss2sim.experiments.training import softmax_cross_entropy as np_ce
    z = _rand((4, 10), -200, 200, 31).requires_grad_()
    lab = torch.tensor([0, 3, 9, 2])
    loss = softmax_cross_entropy(z, lab, 0.1, True)
    loss.backward()
    ref_loss, ref_grad = np_ce(z.detach().numpy(), lab.numpy(), 0.1, clip=True)
    assert loss.item() == ref_loss and np.array_equal(z.grad.numpy(), ref_grad)
    assert np.any(z.grad.numpy() == 0) and np.any(z.grad.numpy() != 0)


# --- modules ------------------------------------------------------------------------------------
def test_modules_initialise_as_the_numpy_layers():
    lin = Linear(20, 7, num_sends=None, gain=0.0014, rng=np.random.default_rng(4))
    ref = NumpyLinear(20, 7, None, gain=0.0014, rng=np.random.default_rng(4))
    assert lin.num_sends == ref.num_sends and np.array_equal(lin.weight.detach().numpy(), ref.weight.T)
    conv = Conv2d(2, 3, (3, 2), stride=2, padding=1, num_sends=4, rng=np.random.default_rng(5))
    refc = NumpyConv2d(2, 3, (3, 2), 2, 1, 4, rng=np.random.default_rng(5))
    assert np.array_equal(conv.weight.detach().numpy(), refc.weight)
    c1 = Conv1d(2, 3, 4, num_sends=2)
    assert tuple(c1.weight.shape) == (3, 2, 4)
    assert "num_sends=2" in repr(c1) and "mode=float" in repr(c1)


def test_linear_module_shapes_scaling_and_clamping(measured):
    lin = Linear(6, 4, num_sends=2, gain=0.002, weight_scale=2.0)
    with torch.no_grad():
        lin.weight.copy_(_rand((4, 6), -40, 40, 41))
    x = _rand((2, 3, 6), 0, 31, 42, integer=True)
    y = lin(x)
    assert y.shape == (2, 3, 4)
    wc = np.clip(2.0 * lin.weight.detach().numpy(), -63, 63)
    np.testing.assert_allclose(y.detach().numpy(), x.numpy() @ wc.T * 0.004, rtol=1e-12)
    assert torch.equal(lin.hardware_weight(), torch.from_numpy(np.rint(wc).astype(np.int64)))
    clamp_weights(torch.nn.Sequential(lin))
    assert float(lin.weight.detach().abs().max()) <= 31.5
    lin_max = Linear(6, 4, weight_scale="max")
    assert int(lin_max.hardware_weight().abs().max()) == 63
    # On an accelerator the module calls run on its own stream.
    acc = behavioural_from_measurement(measured, noise_seed=1)
    lin.stream = 4
    set_accelerator(lin, acc)
    assert lin.mode == "behavioural"
    lin(x)
    assert acc.noise_state() == {4: 6}


def test_module_argument_errors():
    cases = [
        (lambda: Linear(0, 5), ValueError, r"in_features=0 is not allowed: must be an integer in 1\.\.1048576"),
        (lambda: Linear(4, 5, num_sends=0), ValueError, r"num_sends=0 is not allowed: must be an integer in 1\.\.256"),
        (lambda: Linear(4, 5, wait_between_events=300), ValueError,
         r"wait_between_events=300 is not allowed: must be an integer in 1\.\.255"),
        (lambda: Linear(4, 5, gain=2.0), ValueError, r"gain=2\.0 is not allowed: must be a number in 1e-06\.\.1 output LSB per unit of x\*w per send"),
        (lambda: Linear(4, 5, weight_scale=-1.0), ValueError, r"weight_scale=-1\.0 is out of range: must be > 0"),
        (lambda: Linear(4, 5, weight_scale="big"), ValueError, r"weight_scale='big' is not allowed: .*'max'"),
        (lambda: Linear(4, 5, stream=-1), ValueError, r"stream=-1 is not allowed: must be an integer >= 0"),
        (lambda: Linear(4, 5, accelerator="chip"), WrongTypeError,
         r"accelerator='chip' is not allowed: got a str, must be a bss2sim.digital.Accelerator or None"),
        (lambda: Linear(4, 5, dtype=torch.int64), WrongTypeError, r"dtype=torch.int64 is not allowed"),
        (lambda: Conv2d(1, 2, 3, stride=0), ValueError, r"stride=0 is not allowed: must be an integer >= 1"),
        (lambda: Conv2d(1, 2, (3, 0)), ValueError, r"kernel_size\[1\]=0 is not allowed: must be an integer >= 1"),
        (lambda: Conv2d(1, 2, 3, padding=(1, 2, 3)), ValueError, r"padding=\(1, 2, 3\) is not allowed"),
        (lambda: Conv1d(1, 2, 0), ValueError, r"kernel_size=0 is not allowed: must be an integer >= 1"),
        (lambda: ConvertingReLU(9), ValueError, r"shift=9 is not allowed: must be an integer in 0\.\.7 bits"),
        (lambda: InputScale(0.0), ValueError, r"scale=0\.0 is out of range: must be > 0"),
        (lambda: set_accelerator(Linear(2, 2), 5), WrongTypeError, r"accelerator=5 is not allowed"),
        (lambda: set_accelerator("model", None), WrongTypeError, r"model='model' is not allowed"),
        (lambda: Linear(4, 5)(torch.zeros(2, 3)), ValueError,
         r"Linear\(4, 5\) got input \(2, 3\); expected a tensor \(\*, 4\)"),
        (lambda: Conv2d(2, 3, 2)(torch.zeros(1, 1, 4, 4)), ValueError, r"expected a tensor \(batch, 2, H, W\)"),
    ]
    for make, err, match in cases:
        with pytest.raises(err, match=match):
            make()


def test_functional_argument_errors_leave_the_accelerator_untouched(measured):
    acc = Accelerator(behavioural=measured.behavioural(), noise_seed=0)
    acc.matmul(np.ones((2, 3), np.int64), np.ones((3, 2), np.int64), stream=1)
    state, time_s = acc.noise_state(), acc.report()["total_s"]
    w = torch.ones(3, 2)
    cases = [
        (lambda: matmul(torch.tensor([[1.0, 2.5, 3.0]]), w, acc), ValueError,
         r"x\[0, 1\]=2\.5 is not allowed: on the accelerator the inputs must be integers in 0\.\.31"),
        (lambda: matmul(torch.tensor([[1.0, 32.0, 3.0]]), w, acc), ValueError, r"x\[0, 1\]=32\.0 is not allowed"),
        (lambda: matmul(torch.tensor([[1.0, -1.0, 3.0]]), w, acc), ValueError, r"x\[0, 1\]=-1\.0 is not allowed"),
        (lambda: matmul(torch.ones(2, 4), w, acc), ValueError, r"x has 4 inputs per vector but w has 3 rows"),
        (lambda: matmul(torch.ones(2, 3), w, acc, num_sends=257), ValueError,
         r"num_sends=257 is not allowed: must be an integer in 1\.\.256"),
        (lambda: matmul(torch.ones(2, 3), w, acc, wait_between_events=0), ValueError,
         r"wait_between_events=0 is not allowed: must be an integer in 1\.\.255"),
        (lambda: matmul(torch.ones(2, 3), w, acc, stream=-2), ValueError, r"stream=-2 is not allowed"),
        (lambda: matmul(torch.ones(2, 3), w, acc, gain=0.0), ValueError, r"gain=0\.0 is not allowed: must be a number in 1e-06\.\.1"),
        (lambda: matmul(np.ones((2, 3)), w, acc), WrongTypeError, r"x=array.* must be a torch.Tensor"),
        (lambda: matmul(torch.full((2, 3), float("nan")), w), ValueError, r"x contains NaN or infinity"),
        (lambda: matmul(torch.ones(2, 3), w, "acc"), WrongTypeError, r"accelerator='acc' is not allowed"),
        (lambda: conv2d(torch.ones(1, 2, 4, 4), torch.ones(3, 1, 2, 2), acc), ValueError,
         r"x has 2 input channels but w has 1"),
        (lambda: conv2d(torch.ones(1, 1, 2, 2), torch.ones(3, 1, 5, 5), acc), ValueError,
         r"the kernel \(5, 5\) is larger than the padded input \(2, 2\)"),
        (lambda: conv2d(torch.ones(1, 1, 4, 4), torch.ones(3, 1, 2, 2), acc, padding=-1), ValueError,
         r"padding=-1 is not allowed: must be an integer >= 0"),
        (lambda: conv1d(torch.ones(1, 1, 4), torch.ones(2, 1, 2), acc, stride=0), ValueError,
         r"stride=0 is not allowed: must be an integer >= 1"),
        (lambda: converting_relu(torch.tensor([3.5]), 1, acc), ValueError,
         r"y\[0\]=3\.5 is not allowed: on the accelerator the converting ReLU takes integers in -128\.\.127"),
        (lambda: converting_relu(torch.tensor([3.0]), 8), ValueError, r"shift=8 is not allowed"),
        (lambda: input_scale(torch.ones(2), "min"), ValueError, r"scale='min' is not allowed"),
        (lambda: softmax_cross_entropy(torch.zeros(2, 10), torch.tensor([1, 10])), ValueError,
         r"labels hold 1\.\.10; must be in 0\.\.9"),
        (lambda: softmax_cross_entropy(torch.zeros(2, 10), torch.tensor([1, 2]), temperature=0), ValueError,
         r"temperature=0 is out of range: must be > 0"),
    ]
    for call, err, match in cases:
        with pytest.raises(err, match=match):
            call()
    assert acc.noise_state() == state and acc.report()["total_s"] == time_s


def test_gain_none_takes_the_behavioural_accelerators_gain():
    acc = Accelerator(behavioural=BehaviouralParams(gain=0.004, sigma=0.0), noise_seed=None)
    x = torch.full((1, 2), 10.0)
    w = torch.tensor([[20.0], [30.0]], requires_grad=True)
    y = matmul(x, w, acc, num_sends=3)
    assert y.item() == np.floor(0.004 * 3 * 500)
    y.backward(torch.ones(1, 1))
    assert torch.allclose(w.grad, torch.full((2, 1), 0.004 * 3 * 10.0, dtype=w.grad.dtype))
    # In software without a gain: the numpy stack's default, 0.0015.
    assert matmul(x, w, None).item() == pytest.approx(0.0015 * 500)


# --- batch split and determinism -------------------------------------------------------------------
def test_batch_split_invariance_on_the_chip(chip0, shipped, images):
    x, _ = images
    x = torch.from_numpy(x[:32])
    whole = TorchMnistNet.from_numpy(shipped, accelerator=Accelerator(chip0, noise_seed=11))
    halves = TorchMnistNet.from_numpy(shipped, accelerator=Accelerator(chip0, noise_seed=11))
    with torch.no_grad():
        a = whole(x)
        b = torch.cat([halves(x[:13]), halves(x[13:])])
    assert torch.equal(a, b)
    other = TorchMnistNet.from_numpy(shipped, accelerator=Accelerator(chip0, noise_seed=12))
    with torch.no_grad():
        assert not torch.equal(a, other(x))       # the noise seed matters: the check can fail


def test_same_seeds_same_training(measured, images):
    x, y = images

    def one_epoch():
        model = TorchMnistNet(gain=measured.gain, seed=2,
                              accelerator=behavioural_from_measurement(measured, noise_seed=4))
        opt = torch.optim.Adam(model.parameters(), lr=0.5)
        train_mnist.train_epoch(model, opt, x, y, np.random.default_rng(1), batch_size=16)
        return model.numpy_state()

    a, b = one_epoch(), one_epoch()
    start = TorchMnistNet(gain=measured.gain, seed=2).numpy_state()
    for k in a:
        assert np.array_equal(a[k], b[k]) and not np.array_equal(a[k], start[k]), k


# --- mock parameters -----------------------------------------------------------------------------
def test_mock_parameters_from_measure_behaviour(chip0, measured):
    p = mock_parameters(measured)
    assert p == BehaviouralParams(gain=measured.gain, sigma=measured.sigma_independent,
                                  sigma_shared=measured.sigma_shared)
    assert mock_parameters(measured, "hxtorch").formula == "hxtorch"
    assert 0.001 < p.gain < 0.002 and 1.0 < p.sigma < 3.0
    acc = behavioural_from_measurement(measured, noise_seed=9)
    assert acc.fidelity == "behavioural" and acc.noise_seed == 9 and acc.behavioural == p
    # The mock accelerator's outputs follow the chip's: same gain on average.
    x = _rand((64, 128), 0, 31, 51, integer=True)
    w = _rand((128, 32), -63, 63, 52, integer=True)
    ideal = (x.numpy() @ w.numpy()) * 4
    on_chip = matmul(x, w, Accelerator(chip0, noise_seed=1), num_sends=4).numpy()
    mocked = matmul(x, w, acc, num_sends=4).numpy()
    inside = (np.abs(on_chip) < 70) & (np.abs(mocked) < 70)
    slope = lambda y: float(np.sum(y[inside] * ideal[inside]) / np.sum(ideal[inside] ** 2))  # noqa: E731
    assert slope(mocked) == pytest.approx(slope(on_chip), rel=0.05)
    assert slope(mocked) == pytest.approx(p.gain, rel=0.05)
    acc2, m2 = measure_mock_accelerator(chip0, noise_seed=3, num_vectors=32, repeats=2)
    assert acc2.behavioural.gain == pytest.approx(p.gain, rel=0.05) and m2.num_vmms > 0
    with pytest.raises(WrongTypeError, match="measured=.*must be a bss2sim.digital.MeasuredBehaviour"):
        behavioural_from_measurement(p)


# --- the example script ------------------------------------------------------------------------------
def _idx(path, magic, array):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    """A small MNIST folder in the IDX layout: 600 "training" and 100 test digits
    cut from the shipped test set."""
    folder = tmp_path_factory.mktemp("mnist")
    x, y = load_test_set()
    _idx(folder / "train-images-idx3-ubyte.gz", 0x803, x[:600])
    _idx(folder / "train-labels-idx1-ubyte.gz", 0x801, y[:600])
    _idx(folder / "t10k-images-idx3-ubyte.gz", 0x803, x[9000:9100])
    _idx(folder / "t10k-labels-idx1-ubyte.gz", 0x801, y[9000:9100])
    return folder


@pytest.mark.parametrize("argv, message", [
    (["--float-epochs", "-1"], "argument --float-epochs: -1 is not allowed: must be >= 0"),
    (["--hil-images", "0"], "argument --hil-images: 0 is not allowed: must be >= 1"),
    (["--augment-shift", "28"], "argument --augment-shift: 28 is not allowed: must be <= 27"),
    (["--seed", "x"], "argument --seed: 'x' is not an integer"),
    (["--test-images", "2.5"], "argument --test-images: '2.5' is not an integer"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_example_script_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        train_mnist.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith(train_mnist.PROG)


def test_example_script_refuses_what_it_cannot_do(small_mnist, tmp_path, capsys):
    for argv, message in (
            (["--data-dir", str(tmp_path / "nowhere")], "nowhere"),
            (["--data-dir", str(small_mnist), "--hil-images", "700"],
             "--hil-images 700 is more than the 600 images there are"),
            (["--data-dir", str(small_mnist), "--hil-images", "100", "--test-images", "101"],
             "--test-images 101 is more than the 100 images there are")):
        assert train_mnist.main(argv + ["--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o" / train_mnist.RESULTS_FILE).exists()
    with pytest.raises(ValueError, match=r"--float-epochs -1 is not allowed: must be an integer in 0\.\.1000; "
                                         r"--batch-size 0 is not allowed"):
        train_mnist.run(data_dir=str(small_mnist), float_epochs=-1, batch_size=0)


def test_example_script_end_to_end(small_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    code = train_mnist.main(["--data-dir", str(small_mnist), "--float-epochs", "1", "--noise-epochs", "1",
                             "--hil-images", "100", "--out", str(out), "--threads", "1", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out.strip().splitlines()[-1])
    assert "chip seed 0 (PyTorch)" in captured.err            # human text on stderr with --json
    for key in ("float", "behavioural_after_float", "float_final", "behavioural",
                "chip_without_fine_tuning", "chip_after_fine_tuning"):
        assert 0.3 < res[key] <= 1.0, key                     # above chance (0.1) after 6 steps
    assert res["test_images"] == 100 and res["settings"]["train_images"] == 600
    assert res["settings"]["num_sends"] == [11, 5, 9] and res["chip_time_per_image_s"] > 0
    assert set(res["stage_wall_times_s"]) >= {"float_training", "noise_aware_training", "hil_fine_tuning"}
    saved = json.loads((out / train_mnist.RESULTS_FILE).read_text())
    assert saved["chip_after_fine_tuning"] == res["chip_after_fine_tuning"]
    net = load_checkpoint(out / train_mnist.NETWORK_FILE).make_network()
    model = TorchMnistNet(**net.config())
    model.load_state_dict(torch.load(out / train_mnist.STATE_FILE))
    for k, v in net.state_dict().items():
        assert np.array_equal(model.numpy_state()[k], v), k


def test_example_script_runs_as_a_module(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "bss2sim.experiments.torchbridge.train_mnist",
                           "--noise-epochs", "-3"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "--noise-epochs: -3 is not allowed: must be >= 0" in proc.stderr


def test_folder_readme_example_runs_as_written():
    text = (ROOT / "experiments" / "torchbridge" / "README.md").read_text()
    blocks = text.split("```python\n")[1:]
    assert blocks, "the README has no python example"
    for block in blocks:
        code = block.split("```")[0]
        exec(compile(code, "torchbridge/README.md", "exec"), {"__name__": "readme_example"})
