"""What every figure kind shares: publication formats (PDF with TrueType fonts, SVG with text as text), the same
bytes on every run and for any number of drawing processes, and the user's plot options (size, dpi, labels)
reaching the files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from phasediag.jobs import lifecycle
from phasediag.plots import base

SWEEP = """\
name: fig
sweep:
  d: {log: [1, 1e4, 6]}
  s: {log: [1e-4, 1, 5]}
model: {width: d, output_scale: 1 / sqrt(d), lr_u: 1, lr_w: 1, init_var_u: s, init_var_w: s}
train: {times: {log: [0.1, 100, 4]}}
"""


def _run(tmp_path: Path, name: str, text: str, workers: int = 1) -> Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(text)
    out = tmp_path / name
    lifecycle.run(config, out=out, options=lifecycle.Options(workers=workers))
    return out


def _figures(out: Path) -> dict[str, bytes]:
    meta = lifecycle.load(out).meta
    return {n: (out / n).read_bytes() for n in meta["figures"]}


@pytest.fixture(scope="module")
def three_formats(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("formats")
    text = SWEEP + "plot: {formats: [png, pdf, svg]}\n"
    # the second run draws with two processes: the same bytes again and for any number of processes
    return {"first": _run(tmp, "first", text), "workers": _run(tmp, "workers", text, workers=2)}


def test_every_format_is_the_same_bytes_on_every_run_and_for_any_number_of_processes(three_formats):
    first = _figures(three_formats["first"])
    assert {Path(n).suffix for n in first} == {".png", ".pdf", ".svg"}
    assert len(first) == 3 * 5  # four maps and the trajectories, in three formats
    for other in ("workers",):
        again = _figures(three_formats[other])
        assert again.keys() == first.keys()
        differ = [n for n in first if again[n] != first[n]]
        assert not differ, f"{other}: {differ}"


def test_pdf_embeds_truetype_fonts_and_svg_keeps_text_as_text(three_formats):
    figures = _figures(three_formats["first"])
    for name, data in figures.items():
        if name.endswith(".pdf"):
            assert b"/FontFile2" in data, name  # TrueType programs embedded (fonttype 42)
            assert b"/Type3" not in data, name  # no Type 3 bitmaps-as-glyphs
        if name.endswith(".svg"):
            text = data.decode()
            assert "<text" in text, name
            assert not re.search(r"<path[^>]*id=\"DejaVuSans-", text), name  # glyphs not drawn as paths


def test_size_dpi_and_labels_of_the_config_reach_the_files(tmp_path):
    text = SWEEP + "plot:\n  size: column\n  dpi: 200\n  labels: {d: 'hidden units $n$'}\n  formats: [png, svg]\n"
    out = _run(tmp_path, "column", text)
    figures = _figures(out)
    png = next(n for n in figures if n.endswith("__phase__s_vs_d.png"))
    width, height = _png_size(figures[png])
    assert width == round(base.SIZES["column"] * 200)
    assert height <= 1.2 * width
    svg = figures[png.replace(".png", ".svg")].decode()
    assert "hidden units" in svg
    assert lifecycle.load(out).meta["config"]["plot"]["size"] == "column"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_a_failing_figure_process_raises_its_error_in_the_caller(tmp_path):
    def good():
        fig = base.new_figure(2, 2, layout=None)
        fig.add_subplot().plot([0, 1])
        return fig

    def bad():
        raise ValueError("no such metric 'x'")

    with pytest.raises(ValueError, match="no such metric"):
        base.render([("good", good), ("bad", bad)], tmp_path, ["png"], workers=2)
    assert (tmp_path / "good.png").exists()


def test_fit_keeps_every_text_inside_the_figure_and_legends_off_the_axes():
    options = base.FigureOptions(size="column")
    with base.figure_options(options):
        fig = base.new_figure(6.4, 4.2, layout=None)
        ax = fig.add_subplot()
        image = ax.imshow(np.arange(12.0).reshape(3, 4), extent=(0, 4, -4, 2), aspect="auto")
        ax.set_xlabel(r"width $d$")
        ax.set_ylabel(r"$\sigma_u^2 = \sigma_w^2 = s$")
        ax.set_title(r"NTK change $\Theta_T/\Theta_0 - 1$")
        base.colorbar(ax, image, r"$|\Theta_T/\Theta_0 - 1|$")
        base.legend(fig, [base.swatch("#E69F00", "alignment"), base.swatch("#56B4E9", "kernel")], below=True)
        base.fit(fig)
        fig.draw_without_rendering()
        renderer = fig._get_renderer()
        frame = fig.bbox
        for text in fig.findobj(lambda a: hasattr(a, "get_text") and a.get_visible() and a.get_text()):
            box = text.get_window_extent(renderer)
            assert frame.x0 - 0.5 <= box.x0 and box.x1 <= frame.x1 + 0.5, text.get_text()
            assert frame.y0 - 0.5 <= box.y0 and box.y1 <= frame.y1 + 0.5, text.get_text()
        legend_box = fig.legends[0].get_window_extent(renderer)
        for axes in fig.axes:
            assert not legend_box.overlaps(axes.get_window_extent(renderer))


def test_the_readme_plot_example_redraws_a_run_as_it_says(tmp_path):
    import shlex

    from click.testing import CliRunner

    from phasediag import cli

    root = Path(__file__).resolve().parents[1]
    line = next(ln for ln in (root / "README.md").read_text().splitlines()
                if ln.startswith("phasediag plot outputs/width_vs_init --size column"))
    args = shlex.split(line)[1:]
    out = tmp_path / "width_vs_init"
    lifecycle.run(root / "configs" / "1_width_vs_init.yaml", out=out, options=lifecycle.Options(plot=False))
    args[1] = str(out)
    result = CliRunner().invoke(cli.phasediag, args, prog_name="phasediag")
    assert result.exit_code == 0, result.output
    meta = lifecycle.load(out).meta
    assert meta["config"]["plot"]["size"] == "column"
    assert meta["config"]["plot"]["title"] is None
    assert meta["config"]["plot"]["labels"] == {"s": "initial variance $s$"}
    assert meta["figures"] and all(n.endswith(".pdf") for n in meta["figures"])
    assert all(b"/FontFile2" in (out / n).read_bytes() for n in meta["figures"])
