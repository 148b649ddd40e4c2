"""The training-curve plot: named after the run, the selected epoch marked, the test result shown."""

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

import mmkgc.plotting as plotting  # noqa: E402


def test_training_curve_names_run_marks_selection_and_shows_test(tmp_path: Path, monkeypatch):
    captured = {}
    real_save = plotting.save_figure

    def keep(fig, path):
        captured["fig"] = fig
        ax, ax2 = fig.axes
        captured["title"] = ax.get_title()
        captured["vlines"] = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
        captured["stars"] = [(list(line.get_xdata()), list(line.get_ydata())) for line in ax2.get_lines()
                             if line.get_marker() == "*"]
        captured["texts"] = [t.get_text() for t in ax.texts]
        captured["legend"] = [t.get_text() for t in ax2.get_legend().get_texts()]
        return real_save(fig, path)

    monkeypatch.setattr(plotting, "save_figure", keep)
    history = [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.7, "valid": {"mrr": 0.30}},
               {"epoch": 3, "loss": 0.6}, {"epoch": 4, "loss": 0.5, "valid": {"mrr": 0.25}}]
    out = plotting.plot_training_curve(history, tmp_path / "c.png", name="db15k-complex", selected_epoch=2,
                                       test={"mrr": 0.3626, "hits@1": 0.29, "hits@10": 0.5028, "mr": 869.0},
                                       selection="valid_clean mrr (realistic)")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert captured["title"] == "db15k-complex: training curve"
    assert captured["vlines"] == [2]
    assert captured["stars"] == [([2], [0.30])]
    assert captured["texts"] == ["test (selected model): MRR 36.26  H@1 29.00  H@10 50.28"]
    assert captured["legend"] == ["valid mrr", "selected: epoch 2 (valid_clean mrr (realistic))"]
