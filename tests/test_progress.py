"""Progress when output is not a terminal: lines at intervals with counts and a time estimate."""

import io
import sys
from pathlib import Path

from mmkgc.progress import IntervalReporter, progress

sys.path.insert(0, str(Path(__file__).parent))


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_interval_lines_with_hand_computed_estimates():
    out, clock = io.StringIO(), _Clock()
    rep = IntervalReporter(1000, "DB15K text", interval=30, stream=out, clock=clock)
    clock.now += 10
    rep.advance(100)  # 10 s after the start: too early for a line
    clock.now += 30
    rep.advance(100)  # 40 s, 200 done: 800 left at 0.2 s each = 160 s
    clock.now += 20
    rep.advance(300)  # 20 s after the last line: none
    clock.now += 140
    rep.advance(500)  # all done: the closing line says so
    rep.close()
    assert out.getvalue().splitlines() == [
        "DB15K text: 0/1,000 to do",
        "DB15K text: 200/1,000 (20.0%) after 40 s, about 2.7 min left",
        "DB15K text: 1,000/1,000 done in 3.3 min",
    ]
    stopped = io.StringIO()
    rep = IntervalReporter(10, "x", interval=30, stream=stopped, clock=clock)
    rep.advance(4)
    rep.close()
    assert stopped.getvalue().splitlines()[-1] == "x: stopped at 4/10 after 0 s"


def test_feature_cache_reports_progress_when_piped(tmp_path, monkeypatch, capsys):
    """The feature cache (``mmkgc features extract``, ``encoder:`` in a training config) writes progress lines to
    stderr when it is not a terminal (pytest's captured stderr is not one)."""
    from mmkgc.features.cache import cached_text_features
    from test_text_features import LABELS, FakeEncoder

    monkeypatch.setenv("MMKGC_HOME", str(tmp_path))
    monkeypatch.setenv("MMKGC_PROGRESS_SECONDS", "0")  # a line after every chunk
    cached_text_features("toy", LABELS, FakeEncoder(), chunk_size=4, progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("toy text")]
    # 9 texts to encode in chunks of 4: the start, after 4 and 8, then done
    assert [line.split(": ", 1)[1].split(" (")[0].split(" after")[0] for line in lines] == [
        "0/9 to do", "4/9", "8/9", "9/9 done in 0 s"]
    with progress(False, 5, "quiet") as advance:
        advance(5)
    assert capsys.readouterr().err == ""


def test_download_progress_without_a_terminal_or_tqdm(tmp_path, monkeypatch, capsys):
    """``datasets check --download`` when piped: pooch drives :class:`DownloadProgress` (tqdm is not needed)."""
    import functools
    import http.server
    import threading

    from mmkgc.data.formats import write_openke
    from mmkgc.data.registry import download_dataset
    from test_registry import URL_PREFIX, _QuietHandler, registered_as_tiny, tiny_set

    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MMKGC_PROGRESS_SECONDS", "1000")
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as in the core install
    served = tmp_path / "served"
    write_openke(tiny_set(), served / URL_PREFIX / "TIVA")
    registered_as_tiny(monkeypatch, "TIVA")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        download_dataset("TIVA", base_url=f"http://127.0.0.1:{server.server_address[1]}/{URL_PREFIX}",
                         allow_unpinned=True, progress=True)
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err.splitlines()
    size = (served / URL_PREFIX / "TIVA" / "train2id.txt").stat().st_size
    assert f"TIVA/train2id.txt (bytes): 0/{size:,} to do" in err
    assert any(line.startswith(f"TIVA/train2id.txt (bytes): {size:,}/{size:,} done in") for line in err)
