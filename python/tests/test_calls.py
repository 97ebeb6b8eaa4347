"""Long calls release the GIL, report progress, and stop when asked: `Session.cancel()` from
another thread, Ctrl-C (an interrupt of the main thread), or a progress callback that raises."""

import _thread
import threading
import time

import pytest

import routelab

LONG = dict(max_new_tokens=100_000, stop_at_eos=False, progress=False)


def test_cancel_from_another_thread_stops_a_run(dense):
    # tiny-dense's context (1024 positions) bounds the run if cancel did nothing; it takes
    # seconds, so the run is stopped well before.
    outcome = {}

    def run():
        started = time.monotonic()
        try:
            dense.generate("The passkey is", **LONG)
            outcome["result"] = "finished"
        except routelab.Cancelled as e:
            outcome["result"] = e
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.3)
    dense.cancel()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert isinstance(outcome["result"], routelab.Cancelled), outcome
    # The session works afterwards.
    assert len(dense.generate("The passkey is", max_new_tokens=3, stop_at_eos=False, progress=False)) > 3


def test_an_interrupt_stops_a_run_with_keyboard_interrupt(dense):
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        dense.generate("The passkey is", **LONG)
    timer.join()
    assert time.monotonic() - started < 30


def test_the_gil_is_released_while_the_model_runs(dense):
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    t.start()
    try:
        started = time.monotonic()
        dense.generate("The passkey is", max_new_tokens=200, stop_at_eos=False, progress=False)
        ended = time.monotonic()
    finally:
        stop.set()
        t.join()
    during = [x for x in ticks if started <= x <= ended]
    # With the GIL held through the call, the other thread could not run at all until it
    # returned; released, it ticks about once per millisecond throughout.
    assert ended - started > 0.05
    assert len(during) >= 10, (len(during), ended - started)


def test_progress_reports_each_token_and_text(moe):
    seen, texts = [], []
    trace = moe.generate(
        "fn main() {",
        max_new_tokens=8,
        stop_at_eos=False,
        progress=lambda what, done, total: seen.append((what, done, total)),
        on_token=texts.append,
    )
    assert seen == [("generate", i, 8) for i in range(1, 9)]
    assert "".join(texts) == trace.text


def test_a_progress_callback_that_raises_stops_the_call(moe):
    def fail(what, done, total):
        if done == 3:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        moe.generate("fn main() {", max_new_tokens=50, stop_at_eos=False, progress=fail)


def test_progress_draws_a_tqdm_bar(moe, capsys):
    pytest.importorskip("tqdm")
    moe.generate("fn main() {", max_new_tokens=5, stop_at_eos=False, progress=True)
    assert "generate" in capsys.readouterr().err


def test_a_scan_stops_on_cancel(dense):
    outcome = {}

    def run():
        try:
            dense.scan_retrieval(lengths=[512], depths=[0.0, 0.5, 1.0], per_cell=20, progress=False)
            outcome["result"] = "finished"
        except routelab.Cancelled as e:
            outcome["result"] = e

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.5)
    dense.cancel()
    worker.join(timeout=120)
    assert isinstance(outcome.get("result"), routelab.Cancelled), outcome
