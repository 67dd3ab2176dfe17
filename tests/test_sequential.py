"""The general training stack: Sequential (layers in order, config, state),
fit (training any model, checkpoints after every epoch, bit-identical
resumption) and MnistNet as one Sequential, equal to the network it was."""
import json

import numpy as np
import pytest

from bss2sim.circuits import constants as K
from bss2sim.digital import Accelerator, BehaviouralParams
from bss2sim.experiments import common as C
from bss2sim.experiments.datasets.mnist import load_test_set
from bss2sim.experiments.train import NETWORK_FILE, PACKAGE_DATA
from bss2sim.experiments.training import Adam, Conv2d, ConvertingReLU, Linear, MnistNet
from bss2sim.experiments.training import checkpoint as CK
from bss2sim.experiments.training.fit import HISTORY_KEYS, fit
from bss2sim.experiments.training.sequential import (Flatten, QuantiseInput, Repeat, Sequential,
                                                     dense_network, softmax_cross_entropy)

BEH = BehaviouralParams(0.0015, 2.0)


def _toy_data(n=160, seed=0):
    """Two-feature, three-class points in 0..1 (a class per third of the diagonal)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 2))
    y = np.minimum((x.sum(axis=1) / 2 * 3).astype(np.int64), 2)
    return np.concatenate([x, 1 - x], axis=1), y


def _toy_net(seed=0, repeat=2):
    return dense_network((4,), 24, 3, encoding="unit", gain=0.0015, seed=seed, repeat=repeat)


# --- MnistNet: the network it was ---------------------------------------------------------

def _reference_forward(net, images, mode, acc=None):
    """MnistNet's forward pass as the class wrote it before it became a Sequential."""
    x = MnistNet.prepare_inputs(images)
    h = net.conv.forward(x, mode, acc)
    h = net.relu1.forward(h, mode, acc)
    h = h.reshape(h.shape[0], net.fc1.in_features)
    h = net.fc1.forward(h, mode, acc)
    h = net.relu2.forward(h, mode, acc)
    return net.fc2.forward(h, mode, acc)


def _reference_backward(net, grad):
    g = net.fc2.backward(grad)
    g = net.relu2.backward(g)
    g = net.fc1.backward(g)
    g = net.relu1.backward(g.reshape(g.shape[0], 20, 5, 5))
    net.conv.backward(g, need_input_grad=False)
    return [a.copy() for a in net.gradients()]


def _reference_train_epoch(net, images, labels, mode, opt, batch_size, rng, acc=None):
    order = rng.permutation(len(images))
    for b in range(-(-len(images) // batch_size)):
        idx = order[b * batch_size:(b + 1) * batch_size]
        logits = _reference_forward(net, images[idx], mode, acc)
        _, grad = softmax_cross_entropy(logits, labels[idx], net.temperature, clip=net.clip_logits)
        opt.step(_reference_backward(net, grad))
        for layer in net.mac_layers:
            np.clip(layer.weight, -K.WEIGHT_MAX, K.WEIGHT_MAX, out=layer.weight)


@pytest.fixture(scope="module")
def digits():
    x, y = load_test_set()
    return x[:240], y[:240]


def test_mnistnet_is_the_sequential_it_names(digits):
    x, y = digits
    net = MnistNet(gain=0.00144, seed=4)
    assert isinstance(net, Sequential)
    assert net.mac_names == ("conv", "fc1", "fc2")
    assert list(net.state_dict()) == ["conv.weight", "fc1.weight", "fc2.weight"]
    assert [l.noise_stream for l in net.mac_layers] == [1, 2, 3]
    assert net.mac_layers == (net.conv, net.fc1, net.fc2)
    # Forward and backward equal, bit for bit, the composition the class wrote out.
    for mode, make in (("float", lambda: None),
                       ("behavioural", lambda: Accelerator(behavioural=BEH, noise_seed=3))):
        a = net.forward(x[:50], mode, make())
        ref = _reference_forward(net, x[:50], mode, make())
        assert a.dtype == ref.dtype and np.array_equal(a, ref)
    logits = net.forward(x[:50], "float")
    _, g = net.loss_and_grad(logits, y[:50])
    mine = [a.copy() for a in net.backward(g)]
    _reference_forward(net, x[:50], "float")
    for p, q in zip(mine, _reference_backward(net, g)):
        assert np.array_equal(p, q)


def test_mnistnet_training_epoch_equals_the_written_out_loop(digits):
    x, y = digits
    a, b = MnistNet(gain=0.0015, seed=2), MnistNet(gain=0.0015, seed=2)
    oa, ob = Adam(a.parameters(), lr=0.5), Adam(b.parameters(), lr=0.5)
    stats = a.train_epoch(x, y, "behavioural", oa, 40, np.random.default_rng(5),
                          accelerator=Accelerator(behavioural=BEH, noise_seed=1))
    _reference_train_epoch(b, x, y, "behavioural", ob, 40, np.random.default_rng(5),
                           Accelerator(behavioural=BEH, noise_seed=1))
    for p, q in zip(a.parameters(), b.parameters()):
        assert np.array_equal(p, q)
    assert stats["batches"] == 6 and 0 <= stats["accuracy"] <= 1


def test_mnistnet_and_the_sequential_of_its_spec_agree(digits):
    """Two constructions of the same network: the class and Sequential.from_config."""
    x, _ = digits
    net = MnistNet(gain=0.0013, seed=9, num_sends=(None, 4, None))
    seq = Sequential.from_config(net.spec())
    assert type(seq) is Sequential and seq.names == net.names
    for p, q in zip(net.parameters(), seq.parameters()):
        assert np.array_equal(p, q)                     # same initial weights from the seed
    for mode, acc in (("float", None), ("behavioural", 1)):
        mk = (lambda: None) if acc is None else (lambda: Accelerator(behavioural=BEH, noise_seed=acc))
        assert np.array_equal(net.forward(x[:30], mode, mk()), seq.forward(x[:30], mode, mk()))
    # The shipped network: the same predictions whichever class carries its weights.
    shipped = CK.load_checkpoint(PACKAGE_DATA / NETWORK_FILE).make_network()
    assert type(shipped) is MnistNet
    seq = Sequential.from_config(shipped.spec())
    seq.load_state_dict(shipped.state_dict())
    for mode in ("float", "behavioural"):
        mk = (lambda: None) if mode == "float" else (lambda: Accelerator(behavioural=BEH, noise_seed=7))
        assert np.array_equal(shipped.predict(x, mode, mk()), seq.predict(x, mode, mk()))


def test_mnistnet_messages_unchanged():
    net = MnistNet()
    with pytest.raises(ValueError, match=r"images have shape \(2, 27, 28\); expected \(batch, 28, 28\)"):
        net.forward(np.zeros((2, 27, 28), np.uint8))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        net.evaluate(np.zeros((3, 28, 28), np.uint8), [0, 1])
    with pytest.raises(ValueError, match="state does not fit MnistNet: missing"):
        net.load_state_dict({"conv.weight": net.conv.weight})
    assert MnistNet.from_config(net.config()).config() == net.config()


# --- Sequential ---------------------------------------------------------------------------

def test_config_rebuilds_the_same_network():
    net = _toy_net(seed=3)
    cfg = net.config()
    assert json.loads(json.dumps(cfg)) == cfg
    assert [l["type"] for l in cfg["layers"]] == ["QuantiseInput", "Repeat", "Linear", "ConvertingReLU",
                                                  "Linear"]
    again = Sequential.from_config(cfg)
    assert again.config() == cfg
    for p, q in zip(net.parameters(), again.parameters()):
        assert np.array_equal(p, q)
    x, _ = _toy_data(30)
    assert np.array_equal(net.forward(x), again.forward(x))
    c = net.clone()
    c.parameters()[0][0, 0] += 1
    assert not np.array_equal(c.parameters()[0], net.parameters()[0])     # a copy, not a view


def test_sequential_of_your_own_layers_and_its_noise_streams():
    rng = np.random.default_rng(0)
    net = Sequential(QuantiseInput((1, 6, 6), "int5"), Conv2d(1, 3, 3, stride=1, rng=rng), ConvertingReLU(2),
                     Flatten(), Linear(48, 5, rng=rng), ConvertingReLU(1), Linear(5, 2, rng=rng),
                     names=["in", "c", "r", "f", "l1", "r2", "l2"])
    assert [l.noise_stream for l in net.mac_layers] == [1, 2, 3]
    assert list(net.state_dict()) == ["c.weight", "l1.weight", "l2.weight"]
    x = rng.integers(0, 32, (17, 6, 6))
    # The same samples give the same outputs however the batches are cut.
    a = net.predict(x, "behavioural", Accelerator(behavioural=BEH, noise_seed=4), batch_size=5)
    b = net.predict(x, "behavioural", Accelerator(behavioural=BEH, noise_seed=4), batch_size=17)
    assert np.array_equal(a, b)
    spec = Sequential.from_config(net.config())
    assert spec.config() == {**net.config()}


def test_float_gradients_of_a_dense_network():
    net = dense_network((2, 2), 7, 3, encoding="int5", gain=0.01, seed=1, num_sends=(2, 3))
    rng = np.random.default_rng(2)
    x = rng.integers(0, 32, (5, 2, 2))
    y = rng.integers(0, 3, 5)

    def loss():
        return net.loss_and_grad(net.forward(x), y)[0]

    _, g = net.loss_and_grad(net.forward(x), y)
    grads = [a.copy() for a in net.backward(g)]
    for p, a in zip(net.parameters(), grads):
        for k in np.flatnonzero(np.abs(a) > 1e-3 * np.abs(a).max())[:8]:
            idx = np.unravel_index(k, p.shape)
            old = p[idx]
            p[idx] = old + 1e-4
            lp = loss()
            p[idx] = old - 1e-4
            lm = loss()
            p[idx] = old
            assert (lp - lm) / 2e-4 == pytest.approx(a[idx], rel=1e-4, abs=1e-10)


def test_repeat_and_flatten_are_adjoint_to_their_backward():
    rng = np.random.default_rng(3)
    r = Repeat(3)
    x = rng.normal(size=(4, 5))
    out = r.forward(x)
    assert np.array_equal(out, np.concatenate([x, x, x], axis=1))
    g = rng.normal(size=out.shape)
    assert np.sum(out * g) == pytest.approx(np.sum(x * r.backward(g)))
    f = Flatten()
    x4 = rng.normal(size=(2, 3, 2, 2))
    assert f.forward(x4).shape == (2, 12)
    assert np.array_equal(f.backward(f.forward(x4)), x4)


@pytest.mark.parametrize("encoding, data, expected", [
    ("uint8", np.array([[0, 128, 255]], np.uint8), [[0, 16, 31]]),
    ("unit", np.array([[0.0, 0.5, 1.0]]), [[0, 16, 31]]),          # 15.5 rounds half to even
    ("int5", np.array([[0, 7, 31]], np.int16), [[0, 7, 31]]),
])
def test_input_encodings(encoding, data, expected):
    q = QuantiseInput((3,), encoding).forward(data)
    assert q.dtype == np.int64 and q.tolist() == expected


@pytest.mark.parametrize("encoding, data, fragment", [
    ("unit", np.array([[0.0, 1.5, 0.2]]), "0..1"),
    ("unit", np.array([[0, 1, 0]]), "takes floats"),
    ("int5", np.array([[0, 32, 1]]), "0..31"),
    ("uint8", np.array([[0.5, 0, 0]]), "expected integers 0..255"),
    ("unit", np.zeros((2, 4)), r"inputs have shape \(2, 4\); expected \(batch, 3\)"),
])
def test_bad_inputs_are_refused(encoding, data, fragment):
    with pytest.raises(ValueError, match=fragment):
        QuantiseInput((3,), encoding).forward(data)


@pytest.mark.parametrize("build, fragment", [
    (lambda: Sequential(Linear(4, 3), ConvertingReLU()), "last layer is a ConvertingReLU"),
    (lambda: Sequential(Linear(4, 3), QuantiseInput(3), Linear(3, 2)), "may only be the first"),
    (lambda: Sequential(QuantiseInput(4), Linear(5, 3)), r"takes 5 features per sample but gets shape \(4,\)"),
    (lambda: Sequential(QuantiseInput((2, 2)), Linear(4, 3)), "put a Flatten before it"),
    (lambda: Sequential(QuantiseInput((2, 5, 5)), Conv2d(1, 2, 3), Flatten(), Linear(18, 2)),
     r"takes \(1, H, W\) per sample"),
    (lambda: Sequential(Linear(4, 3), names=["a", "b"]), "one name per layer"),
    (lambda: Sequential(Linear(4, 4), ConvertingReLU(), Linear(4, 2), names=["a", "a", "b"]), "twice"),
    (lambda: Sequential(Linear(4, 2), names=["a.b"]), "not allowed"),
    (lambda: Sequential(Linear(4, 2), temperature=0), "temperature=0"),
    (lambda: Sequential("dense"), "layers\\[0\\]"),
    (lambda: QuantiseInput((3,), "float"), "encoding='float' is not allowed"),
    (lambda: Repeat(0), "times=0 is not allowed"),
    (lambda: dense_network((4,), 5000, 3), "hidden=5000 is not allowed"),
    (lambda: dense_network((4,), 8, 3, num_sends=(1, 2, 3)), "one per MAC layer \\(2\\)"),
])
def test_bad_networks_are_refused(build, fragment):
    with pytest.raises(ValueError, match=fragment):
        build()


def test_bad_configs_and_states_are_refused():
    net = _toy_net()
    cfg = net.config()
    for change, fragment in [({"layers": []}, "non-empty list"),
                             ({"colour": 1}, "unexpected \\['colour'\\]"),
                             ({"layers": [{"type": "Dropout"}] + cfg["layers"][1:]}, "type 'Dropout'"),
                             ({"layers": [dict(cfg["layers"][0], extra=1)] + cfg["layers"][1:]},
                              "unexpected \\['extra'\\]"),
                             ({"seed": -1}, "seed")]:
        with pytest.raises(ValueError, match=fragment):
            Sequential.from_config({**cfg, **change})
    state = net.state_dict()
    with pytest.raises(ValueError, match="missing \\['fc2.weight'\\]"):
        net.load_state_dict({"fc1.weight": state["fc1.weight"]})
    with pytest.raises(ValueError, match="shape"):
        net.load_state_dict({**state, "fc2.weight": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="-63..63"):
        net.load_state_dict({**state, "fc2.weight": state["fc2.weight"] + 100})
    before = [p.copy() for p in net.parameters()]
    with pytest.raises(ValueError):
        net.load_state_dict({**state, "fc2.weight": np.full_like(state["fc2.weight"], np.nan)})
    assert all(np.array_equal(p, q) for p, q in zip(before, net.parameters()))   # nothing changed


# --- fit ----------------------------------------------------------------------------------

def _noisy(x, rng):
    """An augmentation: jitter the features by up to 0.02, kept in 0..1."""
    return np.clip(x + rng.uniform(-0.02, 0.02, x.shape), 0, 1)


def _fit_kwargs(path=None, **kw):
    x, y = _toy_data(160)
    xv, yv = _toy_data(60, seed=1)
    base = dict(epochs=3, batch_size=32, lr_decay=0.8, augment=_noisy, augment_seed=4, progress=False,
                x_val=xv, y_val=yv, checkpoint=path, metadata={"stage": "toy"})
    base.update(kw)
    return x, y, base


@pytest.mark.parametrize("mode", ["float", "behavioural"])
def test_a_stopped_fit_resumes_bit_for_bit(tmp_path, mode):
    def fresh():
        net = _toy_net(seed=1)
        acc = Accelerator(behavioural=BEH, noise_seed=5) if mode == "behavioural" else None
        return net, Adam(net.parameters(), lr=0.4), np.random.default_rng(7), acc

    x, y, kw = _fit_kwargs()
    net, opt, rng, acc = fresh()
    ref = fit(net, x, y, mode, optimizer=opt, rng=rng, accelerator=acc, **kw)
    assert sorted(ref) == sorted(HISTORY_KEYS) and ref["epoch"] == [1, 2, 3]
    assert ref["lr"] == pytest.approx([0.4, 0.32, 0.256])
    assert all(0 <= v <= 1 for v in ref["val_accuracy"]) and ref["loss"][-1] < ref["loss"][0]

    path = tmp_path / "ck.npz"
    x, y, kw = _fit_kwargs(path)
    net2, opt2, rng2, acc2 = fresh()
    first = fit(net2, x, y, mode, optimizer=opt2, rng=rng2, accelerator=acc2, **{**kw, "epochs": 1})
    assert first["epoch"] == [1] and CK.load_checkpoint(path).epoch == 1
    del net2, opt2, rng2, acc2                       # the process stops here
    net3, opt3, rng3, acc3 = fresh()
    again = fit(net3, x, y, mode, optimizer=opt3, rng=rng3, accelerator=acc3, **kw)
    for p, q in zip(net.parameters(), net3.parameters()):
        assert np.array_equal(p, q)
    for k in ("epoch", "loss", "train_accuracy", "val_accuracy", "lr"):
        assert again[k] == ref[k], k
    assert opt3.state_dict()["t"] == opt.state_dict()["t"] and opt3.lr == opt.lr
    assert rng3.bit_generator.state == rng.bit_generator.state
    if acc is not None:
        assert acc3.noise_state() == acc.noise_state()
    ck = CK.load_checkpoint(path, expect_metadata={"stage": "toy"})
    assert ck.epoch == 3 and ck.model_type == "Sequential" and ck.metadata["history"]["epoch"] == [1, 2, 3]
    # Started again once more: nothing left to do, the same network.
    net4, opt4, rng4, acc4 = fresh()
    assert fit(net4, x, y, mode, optimizer=opt4, rng=rng4, accelerator=acc4, **kw)["loss"] == ref["loss"]
    assert np.array_equal(net4.parameters()[0], net.parameters()[0])


def test_validation_does_not_change_the_training():
    x, y, kw = _fit_kwargs()
    nets = []
    for val in (True, False):
        net = _toy_net(seed=2)
        args = dict(kw) if val else {k: v for k, v in kw.items() if k not in ("x_val", "y_val")}
        h = fit(net, x, y, "behavioural", rng=np.random.default_rng(1),
                accelerator=Accelerator(behavioural=BEH, noise_seed=2), **args)
        assert (h["val_accuracy"][0] is None) != val
        nets.append(net)
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        assert np.array_equal(p, q)


def test_fit_trains_mnistnet_as_train_epoch_does(digits):
    x, y = digits
    a, b = MnistNet(seed=1), MnistNet(seed=1)
    oa, ob = Adam(a.parameters(), lr=0.5), Adam(b.parameters(), lr=0.5)
    ra, rb = np.random.default_rng(3), np.random.default_rng(3)
    fit(a, x, y, "float", epochs=2, optimizer=oa, batch_size=60, rng=ra, lr_decay=0.75, progress=False)
    for _ in range(2):
        b.train_epoch(x, y, "float", ob, 60, rb)
        ob.lr *= 0.75
    for p, q in zip(a.parameters(), b.parameters()):
        assert np.array_equal(p, q)


def test_fit_refuses_another_runs_checkpoint(tmp_path):
    path = tmp_path / "ck.npz"
    x, y, kw = _fit_kwargs(path, epochs=1, x_val=None, y_val=None)
    fit(_toy_net(), x, y, "float", **kw)
    with pytest.raises(ValueError, match="stage='toy', not 'other'"):
        fit(_toy_net(), x, y, "float", **{**kw, "metadata": {"stage": "other"}})
    with pytest.raises(ValueError, match="written by a run in float mode; this one trains in behavioural"):
        fit(_toy_net(), x, y, "behavioural", accelerator=Accelerator(behavioural=BEH), **kw)
    with pytest.raises(ValueError, match="configuration differs"):
        fit(_toy_net(repeat=3), x, y, "float", **kw)
    fit(_toy_net(), x, y, "float", **{**kw, "epochs": 2})
    with pytest.raises(ValueError, match="holds 2 epochs, more than epochs=1"):
        fit(_toy_net(), x, y, "float", **kw)
    # resume=False starts afresh (and overwrites the checkpoint).
    fit(_toy_net(), x, y, "float", **{**kw, "resume": False})
    assert CK.load_checkpoint(path).epoch == 1


@pytest.mark.parametrize("change, fragment", [
    ({"epochs": -1}, "epochs=-1 is not allowed"),
    ({"batch_size": 0}, "batch_size=0 is not allowed"),
    ({"lr_decay": 1.5}, "lr_decay=1.5 is out of range"),
    ({"lr": 0}, "lr=0 is out of range"),
    ({"augment": 3}, "augment=3 is not allowed"),
    ({"rng": 5}, "rng=5 is not allowed"),
    ({"metadata": {"history": 1}}, "reserved"),
    ({"x_val": np.zeros((3, 4))}, "x_val and y_val together"),
    ({"y": np.full(160, 3)}, "3 classes"),
    ({"x": np.zeros((160, 5))}, r"x has shape \(160, 5\); expected \(batch, 4\)"),
    ({"x": np.zeros((0, 4)), "y": np.zeros(0, np.int64)}, "empty"),
    ({"mode": "chip"}, "accelerator"),
    ({"optimizer": "adam"}, "optimizer='adam' is not allowed"),
])
def test_fit_checks_its_arguments_before_training(change, fragment):
    x, y = _toy_data(160)
    net = _toy_net()
    before = [p.copy() for p in net.parameters()]
    kw = dict(x=x, y=y, mode="float", epochs=1, progress=False)
    kw.update(change)
    with pytest.raises(ValueError, match=fragment):
        fit(net, **kw)
    assert all(np.array_equal(p, q) for p, q in zip(before, net.parameters()))
    with pytest.raises(ValueError, match="does not hold this model's parameters"):
        fit(net, x, y, optimizer=Adam(_toy_net().parameters()), progress=False)


# --- checkpoints of either model -------------------------------------------------------

def test_checkpoint_of_a_sequential(tmp_path):
    net = _toy_net(seed=5)
    opt = Adam(net.parameters(), lr=0.2)
    opt.step([np.ones_like(p) for p in net.parameters()])
    path = CK.save_checkpoint(tmp_path / "s.npz", net, opt, 4, np.random.default_rng(1))
    with np.load(path) as z:
        header = json.loads(z["header"].tobytes())
    assert header["format_version"] == 1 and header["network"] == {"model": "Sequential",
                                                                   "config": net.config()}
    ck = CK.load_checkpoint(path)
    assert ck.model_type == "Sequential" and ck.epoch == 4
    back = ck.make_network()
    assert type(back) is Sequential and back.config() == net.config()
    for p, q in zip(back.parameters(), net.parameters()):
        assert np.array_equal(p, q)
    with pytest.raises(ValueError, match="network is a MnistNet but the checkpoint holds a Sequential"):
        ck.restore(MnistNet())
    # A foreign network entry with a valid checksum is refused, naming the file.
    cfg = net.config()
    bad = {**cfg, "layers": cfg["layers"][:-1]}
    arrays = {f"param.{k}": v for k, v in net.state_dict().items()}
    arrays.update({f"adam.{k}.{i}": np.zeros_like(p) for k in "mv" for i, p in enumerate(net.parameters())})
    fields = {f: header[f] for f in ("epoch", "param_names", "optimizer", "rng", "accelerator", "metadata")}
    for entry, fragment in (({"model": "Sequential", "config": bad}, "cannot be rebuilt"),
                            ({"model": "Transformer", "config": cfg}, "names model 'Transformer'"),
                            ({"model": "Sequential", "config": cfg, "x": 1}, "names model")):
        C.write_archive(tmp_path / "bad.npz", CK.KIND, CK.FORMAT_VERSION, {**fields, "network": entry}, arrays)
        with pytest.raises(ValueError, match=f"bad.npz.*{fragment}"):
            CK.load_checkpoint(tmp_path / "bad.npz")


def test_mnistnet_checkpoints_keep_the_version_1_layout(tmp_path):
    net = MnistNet(seed=2)
    path = CK.save_checkpoint(tmp_path / "m.npz", net, Adam(net.parameters()), 0, np.random.default_rng(0))
    with np.load(path) as z:
        header = json.loads(z["header"].tobytes())
    assert header["format_version"] == 1 and header["network"] == net.config()    # no "model" key
    ck = CK.load_checkpoint(PACKAGE_DATA / NETWORK_FILE)
    assert ck.format_version == 1 and ck.model_type == "MnistNet"
    assert type(ck.make_network()) is MnistNet
    with pytest.raises(ValueError, match="network is a Sequential but the checkpoint holds a MnistNet"):
        ck.restore(_toy_net())
