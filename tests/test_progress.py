"""The progress bar (tqdm behind the experiments' small interface): what it
writes, and that it ends on the final state."""
import io

from bss2sim.experiments.progress import Progress


def test_progress_shows_label_steps_and_extra():
    out = io.StringIO()
    with Progress("work", 4, stream=out, min_interval_s=0.0) as p:
        for i in range(4):
            p.update(1, f"x{i}")
        assert p.done == 4
    text = out.getvalue()
    final = text.strip().split("\r")[-1]
    assert final.startswith("work:") and "100%" in final and "4/4" in final and "x3" in final
    assert text.endswith("\n")


def test_progress_closes_on_the_state_reached_when_stopped_early():
    out = io.StringIO()
    with Progress("early", 10, stream=out, min_interval_s=1e9) as p:
        p.update(1)
        p.update(2)
    final = out.getvalue().strip().split("\r")[-1]
    assert "3/10" in final and "30%" in final
