"""Monitors of the time-stepped path: only the chosen columns and quantities
are recorded, bit-identical to a full recording, with memory proportional to
what is recorded; the plotting helper; ``bss2sim traces`` with custom inputs."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numba
import numpy as np
import pytest

import naive
from bss2sim.circuits import (Chip, EventSchedule, Monitor, TraceResult, TrialNoise, integrate_trace,
                              plot_trace)
from bss2sim.circuits import constants as K
from bss2sim.circuits import integrate as integrate_module
from bss2sim.experiments import traces
from helpers import sparse_inputs

COLS = [200, 3, 70, 131]          # any order, both quadrants
ALL = ("membrane", "syn_exc", "syn_inh", "cadc_ramp")


@pytest.fixture(scope="module")
def setup():
    """A chip with weights that drive some columns into the knee and the rails,
    and three vectors with different reads (so the batch has NaN tails)."""
    chip = Chip(5)
    rng = np.random.default_rng(5)
    w = rng.integers(-63, 64, (128, 256))
    w[:, 3] = 63            # saturates upwards
    w[:, 70] = -63          # and downwards
    chip.config.set_logical_weights(0, w)
    x = sparse_inputs(rng, 3, 30)
    x[1, :64] = 31
    sched = EventSchedule.from_inputs(x, wait_between_events=2)
    read = sched.last_cycle() + np.array([20, 5, 60])
    return chip, sched, read


def _run(setup, **kw):
    chip, sched, read = setup
    return integrate_trace(chip, 0, sched, read, substeps_per_cycle=2, **kw)


# --- memory ---------------------------------------------------------------------

def test_memory_is_proportional_to_what_is_recorded(setup):
    full = _run(setup)
    few = _run(setup, monitor=Monitor(columns=COLS[:2], quantities=("membrane",)))
    b, n = full.membrane_v.shape[:2]
    assert few.times_s.shape == full.times_s.shape == (n,)
    assert few.membrane_v.shape == (b, n, 2)
    assert few.syn_exc_c is None and few.syn_inh_c is None and few.cadc_ramp_v is None
    assert few.membrane_v.nbytes == 8 * b * n * 2
    full_bytes = sum(a.nbytes for a in (full.membrane_v, full.syn_exc_c, full.syn_inh_c))
    assert full_bytes == 3 * 8 * b * n * 256
    assert full_bytes == 384 * few.membrane_v.nbytes          # 256 / 2 columns x 3 / 1 quantities
    assert Monitor(columns=COLS[:2]).bytes_per_sample() == 16
    assert Monitor(quantities=ALL).bytes_per_sample() == 8 * 256 * 4
    assert np.array_equal(few.columns, COLS[:2]) and few.columns.dtype == np.int64
    assert np.array_equal(full.columns, np.arange(256))


def test_memory_limit_counts_the_real_size(setup, monkeypatch):
    chip, sched, read = setup
    n = integrate_trace(chip, 0, sched.slice(0, 1), read[:1], substeps_per_cycle=2).times_s.size
    small = 8 * 1 * n * 2                 # one vector, 2 columns, membrane only
    monkeypatch.setattr(integrate_module, "MAX_TRACE_BYTES", small)
    r = integrate_trace(chip, 0, sched.slice(0, 1), read[:1], substeps_per_cycle=2,
                        monitor=Monitor(columns=[1, 2]))
    assert r.membrane_v.nbytes == small
    with pytest.raises(ValueError, match=r"1 vectors x \d+ samples x 3 columns x 1 quantities"):
        integrate_trace(chip, 0, sched.slice(0, 1), read[:1], substeps_per_cycle=2,
                        monitor=Monitor(columns=[1, 2, 3]))
    with pytest.raises(ValueError, match=r"x 256 columns x 3 quantities.*MAX_TRACE_BYTES"):
        integrate_trace(chip, 0, sched.slice(0, 1), read[:1], substeps_per_cycle=2)


# --- the values -------------------------------------------------------------------

def test_monitored_columns_bit_identical_to_full_recording(setup):
    full = _run(setup, noise=TrialNoise(9), monitor=Monitor(quantities=ALL))
    part = _run(setup, noise=TrialNoise(9), monitor=Monitor(columns=COLS, quantities=ALL))
    default = _run(setup, noise=TrialNoise(9))        # no monitor: today's three quantities
    for field in ("membrane_v", "syn_exc_c", "syn_inh_c", "cadc_ramp_v"):
        np.testing.assert_array_equal(getattr(part, field), getattr(full, field)[:, :, COLS])
    for field in ("membrane_v", "syn_exc_c", "syn_inh_c"):
        np.testing.assert_array_equal(getattr(default, field), getattr(full, field))
    assert default.cadc_ramp_v is None
    # The recording is not trivial: the columns saturate, and the early reads leave NaN tails.
    assert np.nanmax(part.membrane_v[:, :, 1]) > 1.0 and np.nanmin(part.membrane_v[:, :, 2]) < 0.4
    valid = (~np.isnan(part.membrane_v[:, :, 0])).sum(1)
    _, _, read = setup
    assert list(np.argsort(valid)) == list(np.argsort(read)) and valid.min() < part.times_s.size
    assert np.nanmax(part.syn_exc_c) > 1e-14
    # Columns given in another order are the same columns.
    assert np.array_equal(part.trace("membrane", 3, vector=1), full.membrane_v[1, :, 3], equal_nan=True)


def test_codes_do_not_depend_on_what_is_monitored(setup):
    runs = [_run(setup, noise=TrialNoise(4), record=False),
            _run(setup, noise=TrialNoise(4)),
            _run(setup, noise=TrialNoise(4), monitor=Monitor(columns=[7], quantities="cadc_ramp",
                                                              record_every=5)),
            _run(setup, noise=TrialNoise(4), monitor=Monitor(columns=COLS, quantities=ALL))]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.codes, runs[0].codes)
        np.testing.assert_array_equal(r.membrane_at_read_v, runs[0].membrane_at_read_v)
    assert runs[0].membrane_v.shape == (3, 0, 256) and runs[0].times_s.shape == (0,)
    assert len(np.unique(runs[0].codes)) > 20


def test_monitor_deterministic_across_thread_counts(setup):
    mon = Monitor(columns=COLS, quantities=ALL)
    default_threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run(setup, noise=TrialNoise(2), monitor=mon)
    finally:
        numba.set_num_threads(default_threads)
    many = _run(setup, noise=TrialNoise(2), monitor=mon)
    for field in ("codes", "membrane_v", "syn_exc_c", "syn_inh_c", "cadc_ramp_v"):
        np.testing.assert_array_equal(getattr(one, field), getattr(many, field))


def test_decimation_matches_slicing_a_full_recording(setup):
    every1 = _run(setup, monitor=Monitor(columns=COLS, quantities=ALL, record_every=1))
    every3 = _run(setup, monitor=Monitor(columns=COLS, quantities=ALL, record_every=3))
    assert every3.times_s.shape[0] == len(range(0, every1.times_s.shape[0], 3))
    np.testing.assert_allclose(every3.times_s, every1.times_s[::3], rtol=1e-12, atol=0)
    for field in ("membrane_v", "syn_exc_c", "syn_inh_c", "cadc_ramp_v"):
        np.testing.assert_array_equal(getattr(every3, field), getattr(every1, field)[:, ::3])
    # record_every given the old way gives the same samples.
    old = _run(setup, record_every=3)
    np.testing.assert_array_equal(old.membrane_v[:, :, COLS], every3.membrane_v)


def test_cadc_ramp_against_numpy_reference(setup):
    chip, sched, read = setup
    substeps, every = 2, 1
    r = _run(setup, monitor=Monitor(columns=COLS, quantities=("cadc_ramp", "membrane"), record_every=every))
    cp = chip.operating_point(0).column_params
    # mV, mV per tick; with noise off the ramp-start cell's refresh droop sits at phase 0.
    start = (cp[naive.CADC_START] - cp[naive.RIPPLE] * (cp[naive.PHASE_START] % 1.0))[COLS]
    step = cp[naive.CADC_STEP][COLS]
    dt = naive.CYCLE_NS / substeps
    tick_ns = K.CADC_TICK_S * 1e9
    for b in range(sched.num_vectors):
        t0 = read[b] * naive.CYCLE_NS
        # Step s ends at (s + 1) dt; the ramp then sits at the value of its latest tick m
        # (start + (m + 1) step), the ticks at t0 + m * tick_ns, m = 0..255.
        steps = np.arange(r.times_s.size) * every - 1
        t_end = (steps + 1) * dt
        ticks_done = ((t0 + np.arange(naive.LEVELS) * tick_ns)[None, :] <= t_end[:, None] + 1e-9).sum(1)
        ref = (start[None, :] + ticks_done[:, None] * step[None, :]) * 1e-3
        ref[ticks_done == 0] = np.nan                       # before the conversion
        # The integration stops after the step that reaches the last tick.
        done_before = np.concatenate([[0], ticks_done[:-1]]) >= naive.LEVELS
        ref[done_before] = np.nan
        np.testing.assert_allclose(r.cadc_ramp_v[b], ref, rtol=0, atol=1e-12)
        # The reference is not trivial: the ramp covers 256 steps of each column.
        seen = ref[~np.isnan(ref[:, 0])]
        np.testing.assert_allclose(seen.max(0) - seen.min(0), 255 * step * 1e-3, rtol=1e-9)
    # The ramp crosses each column's membrane near its code (one LSB per tick, the
    # comparator offset apart): it starts below and ends above.
    v = r.membrane_v[0]
    ramp = r.cadc_ramp_v[0]
    valid = ~np.isnan(ramp[:, 0])
    assert (ramp[valid][0] < v[valid][0] + 0.05).all() and (ramp[valid][-1] > v[valid][-1]).all()


# --- validation -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,error,pattern", [
    ({"columns": [256]}, ValueError, r"columns\[0\]=256 is out of range.*0\.\.255"),
    ({"columns": [3, -1]}, ValueError, r"columns\[1\]=-1 is out of range.*0\.\.255"),
    ({"columns": [3, 4, 3]}, ValueError, r"columns\[2\]=3 .*named twice"),
    ({"columns": []}, ValueError, r"columns=\[\] is not allowed.*0\.\.255"),
    ({"columns": 5}, TypeError, r"columns=5 is not allowed: got a int .*0\.\.255"),
    ({"columns": "3,4"}, TypeError, r"columns='3,4' is not allowed"),
    ({"columns": [1.0]}, TypeError, r"columns\[0\]=1\.0 is not allowed: got a float"),
    ({"columns": [True]}, TypeError, r"columns\[0\]=True is not allowed"),
    ({"columns": np.zeros((2, 2), int)}, TypeError, r"columns=array"),
    ({"quantities": ("voltage",)}, ValueError,
     r"quantities\[0\]='voltage' is unknown: allowed membrane, syn_exc, syn_inh, cadc_ramp"),
    ({"quantities": ()}, ValueError, r"quantities=\(\) is not allowed.*membrane"),
    ({"quantities": ("membrane", "membrane")}, ValueError, r"quantities\[1\]='membrane' is named twice"),
    ({"quantities": [3]}, TypeError, r"quantities\[0\]=3 is not allowed: got a int"),
    ({"quantities": None}, TypeError, r"quantities=None is not allowed"),
    ({"record_every": 0}, ValueError, r"record_every=0 must be an integer >= 1"),
    ({"record_every": 2.0}, TypeError, r"record_every=2\.0 must be an integer >= 1"),
    ({"record_every": True}, TypeError, r"record_every=True must be an integer >= 1"),
])
def test_bad_monitor_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Monitor(**kwargs)


def test_monitor_normalises_its_arguments():
    m = Monitor(columns=np.array([9, 2]), quantities="syn_inh", record_every=np.int32(4))
    assert m.columns == (9, 2) and m.quantities == ("syn_inh",) and m.record_every == 4
    assert type(m.columns[0]) is int and type(m.record_every) is int
    assert Monitor().columns is None and Monitor().quantities == ("membrane",)
    assert hash(m) == hash(Monitor(columns=[9, 2], quantities=["syn_inh"], record_every=4))


def test_bad_integrate_trace_monitor_arguments_refused_before_the_kernel(setup):
    chip, sched, read = setup
    noise = TrialNoise(1)
    with pytest.raises(TypeError, match=r"monitor='membrane' is not allowed: got a str"):
        integrate_trace(chip, 0, sched, read, noise=noise, monitor="membrane")
    with pytest.raises(ValueError, match=r"record_every=2 is given beside monitor"):
        integrate_trace(chip, 0, sched, read, noise=noise, record_every=2, monitor=Monitor())
    with pytest.raises(ValueError, match=r"record=False is given with a monitor"):
        integrate_trace(chip, 0, sched, read, noise=noise, record=False, monitor=Monitor())
    with pytest.raises(TypeError, match=r"record='no' is not allowed"):
        integrate_trace(chip, 0, sched, read, noise=noise, record="no")
    assert noise.next_index == 0, "a refused call must not use up noise"


def test_trace_accessor_names_what_was_not_recorded(setup):
    r = _run(setup, monitor=Monitor(columns=[3]))
    with pytest.raises(ValueError, match=r"quantity='syn_exc' was not recorded"):
        r.trace("syn_exc", 3)
    with pytest.raises(ValueError, match=r"column=4 was not recorded; recorded: \[3\]"):
        r.trace("membrane", 4)


# --- plotting -----------------------------------------------------------------------

def test_plot_trace_axes_units_and_data(setup):
    import matplotlib.pyplot as plt
    chip, sched, read = setup
    r = _run(setup, monitor=Monitor(columns=COLS, quantities=("membrane", "syn_exc")))
    ax = plot_trace(r, vector=1, columns=[3, 70], events=sched)
    try:
        assert ax.get_ylabel() == "voltage (V)"
        assert ax.get_xlabel() == "time after reset (us)"
        twin = [a for a in ax.figure.axes if a is not ax]
        assert len(twin) == 1 and twin[0].get_ylabel().endswith("(fC)")
        lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("column")]
        assert [ln.get_label() for ln in lines] == ["column 3 membrane", "column 70 membrane"]
        np.testing.assert_array_equal(lines[1].get_ydata(), r.membrane_v[1, :, COLS.index(70)])
        np.testing.assert_allclose(lines[0].get_xdata(), r.times_s * 1e6)
        charge = twin[0].get_lines()
        assert len(charge) == 2
        np.testing.assert_allclose(charge[0].get_ydata(), r.syn_exc_c[1, :, COLS.index(3)] * 1e15)
        marks = [ln for ln in ax.get_lines() if ln.get_label().endswith("events")]
        assert len(marks) == 1 and len(marks[0].get_xdata()) == len(sched.vector(1)[0])
        assert len(ax.patches) == 1          # the CADC conversion
    finally:
        plt.close(ax.figure)


def test_plot_trace_charges_only_and_errors(setup):
    import matplotlib.pyplot as plt
    r = _run(setup, monitor=Monitor(columns=[3], quantities=("syn_inh", "membrane")))
    fig, ax = plt.subplots()
    try:
        out = plot_trace(r, ax, quantities=["syn_inh"], conversion=False, label="{column}: {code}")
        assert out is ax and ax.get_ylabel() == "charge on the synaptic input (fC)"
        assert len(fig.axes) == 1 and not ax.patches
        assert ax.get_lines()[0].get_label() == f"3: {r.codes[0, 3]}"
        with pytest.raises(ValueError, match=r"cadc_ramp not recorded"):
            plot_trace(r, ax, quantities="cadc_ramp")
        with pytest.raises(ValueError, match=r"column\(s\) \[4\] not recorded"):
            plot_trace(r, ax, columns=[4])
        with pytest.raises(ValueError, match=r"vector=3 is not allowed"):
            plot_trace(r, ax, vector=3)
        with pytest.raises(TypeError, match=r"result=.* must be a bss2sim\.circuits\.TraceResult"):
            plot_trace(r.codes, ax)
        with pytest.raises(ValueError, match=r"record=False"):
            plot_trace(_run(setup, record=False), ax)
    finally:
        plt.close(fig)
    assert isinstance(r, TraceResult)


# --- bss2sim traces --------------------------------------------------------------------

def test_traces_run_custom_inputs_weights_columns(tmp_path, capsys):
    rng = np.random.default_rng(2)
    x = np.zeros((3, 128), np.int64)
    x[0, :40] = 12
    x[1, ::2] = 31
    x[2, 5] = 7
    w = rng.integers(-63, 64, (128, 256))
    cols = [250, 4, 17]
    chip = Chip(7)
    before = chip.config.weights.copy(), chip.config.row_sign.copy()
    res = traces.run(seed=7, half=1, columns=cols, inputs=x, weights=w, chip=chip, plots=tmp_path,
                     wait_between_events=3)
    assert res["columns"] == cols and res["half"] == 1 and res["chip_seed"] == 7
    assert (tmp_path / "membrane_traces.png").stat().st_size > 10_000
    assert res["figure"] == str(tmp_path / "membrane_traces.png")
    assert [c["num_events"] for c in res["cases"]] == [40, 64, 1]
    assert all(c["wait_between_events"] == 3 for c in res["cases"])
    # The chip's own weights are back, and the run used the given weights and inputs.
    assert np.array_equal(chip.config.weights, before[0]) and np.array_equal(chip.config.row_sign, before[1])
    ref = Chip(7)
    ref.config.set_logical_weights(1, w)
    sched = EventSchedule.from_inputs(x[1:2], 3)
    want = integrate_trace(ref, 1, sched, sched.last_cycle() + traces.POST_EVENT_WAIT_CYCLES, record=False)
    assert res["cases"][1]["codes_trace"] == want.codes[0].tolist()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs,pattern", [
    ({"inputs": np.full((1, 128), 32)}, r"inputs\[0, 0\]=32 is out of range 0\.\.31"),
    ({"inputs": np.zeros((2, 100), np.int64)}, r"inputs has shape \(2, 100\); expected \(num_vectors, 128\)"),
    ({"inputs": np.zeros((9, 128), np.int64)}, r"1\.\.8 vectors"),
    ({"inputs": np.zeros((1, 128))}, r"inputs has dtype float64"),
    ({"weights": np.zeros((128, 255), np.int64)}, r"weights has shape \(128, 255\); expected \(128, 256\)"),
    ({"weights": np.full((128, 256), -64)}, r"weights\[0, 0\]=-64 is out of range -63\.\.63"),
    ({"columns": [3, 300]}, r"columns\[1\]=300 is out of range"),
    ({"columns": list(range(17))}, r"17 columns; at most 16"),
    ({"chip": 3}, r"chip=3 is not allowed"),
    ({"wait_between_events": 2}, r"wait_between_events=2 applies to custom inputs only"),
    ({"inputs": np.ones((1, 128), np.int64), "wait_between_events": 0}, r"wait_between_events=0"),
    ({"half": 2}, r"half=2 is not allowed"),
])
def test_traces_run_validates_before_work(tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        traces.run(plots=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_check_arguments_normalises_without_running():
    got = traces.check_arguments(columns=np.array([9, 1]), inputs=[[0] * 127 + [31]],
                                 weights=None, wait_between_events=np.int64(7))
    assert got["columns"] == [9, 1] and got["weights"] is None and got["wait_between_events"] == 7
    assert got["inputs"].shape == (1, 128) and got["inputs"].dtype == np.int64 and got["inputs"][0, 127] == 31
    assert traces.check_arguments(columns=None)["columns"] == list(traces.DEFAULT_COLUMNS)
    with pytest.raises(ValueError, match=r"wait_between_events=256 is not allowed: "
                                         r"must be an integer in 1\.\.255"):
        traces.check_arguments(inputs=np.ones((1, 128), np.int64), wait_between_events=256)


def test_parse_columns():
    assert traces.parse_columns("3,70,130") == [3, 70, 130]
    assert traces.parse_columns("0-3") == [0, 1, 2, 3]
    assert traces.parse_columns(" 200, 0-1 ") == [200, 0, 1]
    for text, pattern in [("3,x", r"--columns '3,x': 'x' is not a column index"),
                          ("256", r"'256' is out of range: columns are 0\.\.255"),
                          ("5-2", r"range '5-2' must be low-high with low <= high"),
                          ("1,0-2", r"names column 1 twice"), ("", r"'' is not a column index")]:
        with pytest.raises(ValueError, match=pattern):
            traces.parse_columns(text)


def test_load_array(tmp_path):
    a = np.arange(12).reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    np.savetxt(tmp_path / "a.txt", a, fmt="%d")
    np.savetxt(tmp_path / "a.csv", a, fmt="%d", delimiter=",")
    (tmp_path / "row.txt").write_text("# one vector\n1 2 3\n")
    for name in ("a.npy", "a.txt", "a.csv"):
        got = traces.load_array("--inputs", tmp_path / name)
        assert got.dtype == np.int64 and np.array_equal(got, a), name
    assert traces.load_array("--inputs", tmp_path / "row.txt").shape == (1, 3)
    (tmp_path / "frac.csv").write_text("1,2.5\n3,4\n")
    (tmp_path / "junk.txt").write_text("1 2\nthree 4\n")
    (tmp_path / "a.dat").write_text("1\n")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    for name, pattern in [("frac.csv", r"--inputs '.*frac\.csv': entry \[0, 1\] = 2\.5 is not an integer"),
                          ("junk.txt", r"junk\.txt' cannot be read as a table of numbers"),
                          ("a.dat", r"unknown file type '\.dat'; allowed: \.npy, \.txt, \.csv"),
                          ("missing.npy", r"missing\.npy': no such file"),
                          ("s.npy", r"holds <U1 values; expected integers")]:
        with pytest.raises(ValueError, match=pattern):
            traces.load_array("--inputs", tmp_path / name)
    # A loaded file goes straight into run's validation.
    with pytest.raises(ValueError, match=r"inputs has shape \(3, 4\)"):
        traces.run(inputs=traces.load_array("--inputs", tmp_path / "a.npy"), plots=tmp_path / "p")
