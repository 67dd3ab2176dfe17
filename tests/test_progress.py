"""The progress bar: what it writes, and that the final line is not repeated."""
import io

from bss2sim.experiments.progress import Progress


def test_progress_draws_final_state_once():
    out = io.StringIO()
    with Progress("work", 4, stream=out, min_interval_s=0.0) as p:
        for _ in range(4):
            p.update(1, "x")
    lines = out.getvalue().split("\r")[1:]
    # One line per update; leaving the block adds only the newline.
    assert len(lines) == 4
    assert "work: [" in lines[0] and " 25.0%" in lines[0]
    assert "100.0%" in lines[-1] and lines[-1].endswith("x   \n")


def test_progress_exit_draws_when_stopped_early():
    out = io.StringIO()
    with Progress("early", 10, stream=out, min_interval_s=1e9) as p:
        p.update(1)
        p.update(2)       # neither drawn: within the interval
    lines = out.getvalue().split("\r")[1:]
    assert len(lines) == 1
    assert " 30.0%" in lines[0] and lines[0].endswith("\n")
