"""Progress of long calls: a tqdm bar per phase (in notebooks, tqdm's widget) when tqdm is
installed, or a callable of the caller's."""

import sys

import routelab

#: With progress left to RouteLab, calls shorter than this draw no bar.
AUTO_DELAY_SECONDS = 1.0


class _Bars:
    """Receives the engine's reports ``(what, done, total, text)`` and draws one bar per phase."""

    def __init__(self, on_token=None, delay=0.0):
        import importlib.util

        # tqdm.auto's notebook widget needs ipywidgets; without it, the plain bar.
        if _in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
            from tqdm.notebook import tqdm
        else:
            from tqdm.std import tqdm

        self._tqdm = tqdm
        self._delay = delay
        self._bar = None
        self._what = None
        self._on_token = on_token

    def __call__(self, what, done, total, text):
        if text is not None and self._on_token is not None:
            self._on_token(text)
        if what != self._what:
            self.close()
            unit = "token" if what == "generate" else ("B" if what.startswith("downloading") else "step")
            self._bar = self._tqdm(total=total or None, desc=what, unit=unit, unit_scale=unit == "B", leave=False, delay=self._delay)
            self._what = what
        self._bar.total = total or None
        self._bar.n = done
        self._bar.refresh()

    def close(self):
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self._what = None


class _Tokens:
    """Only hands each generated token's text to ``on_token``."""

    def __init__(self, on_token):
        self._on_token = on_token

    def __call__(self, what, done, total, text):
        if text is not None:
            self._on_token(text)

    def close(self):
        pass


class _Callable:
    def __init__(self, fn, on_token=None):
        self._fn = fn
        self._on_token = on_token

    def __call__(self, what, done, total, text):
        if text is not None and self._on_token is not None:
            self._on_token(text)
        self._fn(what, done, total)

    def close(self):
        pass


def _tqdm_available():
    try:
        import tqdm.auto  # noqa: F401
    except ImportError:
        return False
    return True


def reporter(progress, on_token=None):
    """The callback a long call reports to, or None.

    ``progress``: True (a tqdm bar; an error if tqdm is missing), False (none), None
    (``routelab.progress``, whose default None draws a bar for calls longer than a second when
    tqdm is installed and the output is a notebook or a terminal), or a callable taking
    ``(what, done, total)``. ``on_token`` gets each generated token's text as it comes.
    """
    if callable(progress):
        return _Callable(progress, on_token)
    if progress is None:
        progress = routelab.progress
    if progress is None:
        interactive = _in_notebook() or getattr(sys.stderr, "isatty", lambda: False)()
        if interactive and _tqdm_available():
            # Only calls that take a while get a bar.
            return _Bars(on_token, delay=AUTO_DELAY_SECONDS)
        progress = False
    if progress:
        return _Bars(on_token)
    if on_token is not None:
        return _Tokens(on_token)
    return None


def _in_notebook():
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class reporting:
    """``with reporting(progress, on_token) as report: call(progress=report)``: closes the bar."""

    def __init__(self, progress, on_token=None):
        self.report = reporter(progress, on_token)

    def __enter__(self):
        return self.report

    def __exit__(self, *exc):
        if self.report is not None:
            self.report.close()
        return False
