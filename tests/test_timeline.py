"""``bss2sim timeline``: one vector pair co-simulated and drawn."""
from __future__ import annotations

import json

import pytest

from bss2sim.experiments.cli import main


@pytest.mark.parametrize("sequence", ["published", "tight"])
def test_timeline_reports_its_phases_and_writes_the_figure(tmp_path, capsys, sequence):
    rc = main(["timeline", "--sequence", sequence, "--plots-dir", str(tmp_path), "--json",
               "--calibration", "none"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
    phases = out["phases_us"]
    names = [p["phase"] for p in phases]
    assert names[:3] == ["baseline_read", "reset_neurons", "events"] and names[-1] == "result_reads"
    # The phases tile the entry, and so do the categories.
    assert phases[0]["start_us"] == 0
    assert all(abs(a["end_us"] - b["start_us"]) < 1e-9 for a, b in zip(phases, phases[1:]))
    assert phases[-1]["end_us"] == pytest.approx(out["entry_us"])
    assert sum(out["category_us"].values()) == pytest.approx(out["entry_us"])
    # The events of the longer half: 40 % of 128 inputs, 5 cycles of 8 ns apart.
    assert out["category_us"]["event_phase"] == pytest.approx(51 * 5 * 0.008)
    assert out["events"] == [51, 19]
    if sequence == "published":      # 20 + 4 + 1 + 1 + 10 us of fixed waits, plus events and reads
        assert 38 < out["entry_us"] - out["category_us"]["event_phase"] < 39
    else:
        assert out["entry_us"] < 12
    assert min(out["ppu_instructions"]) > 20


def test_timeline_refuses_an_unknown_sequence(capsys):
    with pytest.raises(SystemExit) as e:
        main(["timeline", "--sequence", "fastest"])
    assert e.value.code == 2
    assert "--sequence" in capsys.readouterr().err
