"""Progress bars of long runs, on stderr, through ``tqdm`` (it handles pipes,
notebooks, nesting and rates), behind the small interface the experiments use:
``with Progress("training", total) as p: p.update(n, "loss 0.31")``."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


class Progress:
    """A progress bar of ``total`` steps labelled ``label``.

    Parameters
    ----------
    label : str
        What is being done.
    total : int
        Steps of the whole run (at least 1).
    stream : file, optional
        Where the bar goes (default stderr; stdout stays for results).
    min_interval_s : float
        Shortest time between two redraws, seconds (default 0.5).
    unit : str
        What one step is, for the rate (default "step").
    """

    def __init__(self, label: str, total: int, stream=None, min_interval_s: float = 0.5,
                 unit: str = "step"):
        self._bar = tqdm(total=max(int(total), 1), desc=label, file=stream if stream is not None else sys.stderr,
                         mininterval=min_interval_s, unit=unit, dynamic_ncols=True, leave=True)

    @property
    def done(self) -> int:
        return int(self._bar.n)

    def update(self, n: int = 1, extra: str = ""):
        """Advance by ``n`` steps; ``extra`` (e.g. a running accuracy) is shown after the bar."""
        if extra:
            self._bar.set_postfix_str(extra, refresh=False)
        self._bar.update(int(n))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._bar.close()
        return False
