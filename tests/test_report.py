"""The HTML report: written by the pipeline, self-contained, its numbers those on disk, and it
renders in a real browser (Chromium, headless) with every figure decoded.

One tiny experiment (the `tiny` preset through `ckatlas demo --quick`: ResNet-8/14 at widths
1/4 and 1/2 on digits, 1 epoch) is run once per session; every test reads or copies it.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageStat

from ckatlas.analysis import BlockResult, ErrorComparison
from ckatlas.analysis.probes import linear_probes
from ckatlas.cli import main
from ckatlas.errors import UserInputError
from ckatlas.heatmap import CKAResult
from ckatlas.report import HOVER_SCRIPT
from ckatlas.experiment.claims import ClaimsResult
from ckatlas.report.headline import claim_sentences, statistic_sentences, trend_sentences
from ckatlas.io.summary import ExperimentSummary, ModelEntry
from ckatlas.report.html import render_report, write_report
from ckatlas.train import load_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
_VOID = {"img", "meta", "br", "hr", "input", "link"}


# -- a small DOM, enough to find elements and read their text ----------------------------------
class _Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: _Node | None) -> None:
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def iter(self, tag: str | None = None):
        for c in self.children:
            if isinstance(c, _Node):
                if tag is None or c.tag == tag:
                    yield c
                yield from c.iter(tag)


class _Dom(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.current = _Node("document", {}, None)
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        node = _Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in _VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def _section(dom: _Dom, anchor: str) -> _Node | None:
    return next((s for s in dom.root.iter("section") if s.attrs.get("id") == anchor), None)


# -- the experiment --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def experiment(tmp_path_factory) -> tuple[Path, str]:
    """The tiny preset run by `ckatlas demo --quick` (one thread: torch 2.13's oneDNN CPU convolutions can corrupt the heap with two); its stdout."""
    out = tmp_path_factory.mktemp("report") / "tiny"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = main(["demo", "--quick", "--out", str(out), "--threads", "1"])
    assert code == 0
    return out, stdout.getvalue()


@pytest.fixture(scope="session")
def summary(experiment) -> dict:
    return json.loads((experiment[0] / "summary.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def page(experiment) -> str:
    return (experiment[0] / "report" / "index.html").read_text(encoding="utf-8")


@pytest.fixture
def copy(experiment, tmp_path) -> Path:
    """A copy of the experiment to change."""
    return Path(shutil.copytree(experiment[0], tmp_path / "exp"))


def _edit_summary(root: Path, edit) -> None:
    path = root / "summary.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


# -- written by the pipeline, self-contained ------------------------------------------------------------
def test_the_demo_command_runs_the_pipeline_and_its_report_step(experiment, summary):
    root, stdout = experiment
    assert (root / "report" / "index.html").is_file()
    assert "report" in json.loads((root / "timings.json").read_text())  # written by the pipeline's report step
    wall, total = summary["timings"]["wall"], summary["timings"]["total"]
    page = (root / "report" / "index.html").read_text(encoding="utf-8")
    assert f"<td>wall clock (while any step ran)</td><td>{wall:.1f}</td>" in page.replace("\n", "")
    assert f"<td>all steps, summed (steps run side by side each count)</td><td>{total:.1f}</td>" in page.replace("\n", "")
    assert f"report: {root / 'report' / 'index.html'}" in stdout
    assert "block fraction" in stdout
    for row, depth in zip(summary["grid"][0]["block_fraction"], summary["grid"][0]["depths"]):
        assert re.search(rf"^\s*{depth}\s+" + r"\s+".join(f"{v:.2f}" for v in row), stdout, re.M)


def test_the_report_is_self_contained(page):
    assert "http://" not in page and "https://" not in page
    lowered = page.lower()
    for forbidden in ("<link", "<iframe", "@import", "url("):
        assert forbidden not in lowered
    assert lowered.count("<script") == 1  # the heatmaps' hover, inline (no src: checked below)
    dom = _Dom(page)
    images = list(dom.root.iter("img"))
    assert len(images) >= 8
    for img in images:
        src = img.attrs["src"]
        assert src.startswith("data:image/png;base64,")
        picture = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        picture.load()
        assert picture.width > 100 and picture.height > 100
        assert ImageStat.Stat(picture.convert("L")).stddev[0] > 5  # not a blank picture
    for node in dom.root.iter():
        for name in ("href", "action", "poster", "srcset"):
            value = node.attrs.get(name)
            assert value is None or value.startswith("#"), f"{node.tag} {name}={value!r} points outside the page"
        assert node.attrs.get("src") is None or node.tag == "img"
    assert len(page) < 3_000_000


def test_every_section_with_results_is_there(page):
    dom = _Dom(page)
    anchors = {s.attrs["id"] for s in dom.root.iter("section")}
    assert anchors == {"headline", "heatmaps", "blocks", "stability", "pca", "prune", "cross-seed", "origins",
                       "errors"}
    nav = {a.attrs["href"][1:] for a in next(dom.root.iter("nav")).iter("a")}
    assert nav == anchors
    assert "Not computed in this experiment: linear probes" in page
    for anchor in anchors - {"blocks"}:
        assert list(_section(dom, anchor).iter("figcaption")) or anchor == "headline" or (
            anchor == "origins" and "No traced model has a block" in _section(dom, anchor).text)
    assert "Not shown" not in page  # nothing missing


# -- the numbers are those on disk ------------------------------------------------------------------------
def test_the_headline_table_holds_the_numbers_of_summary_json(page, summary):
    cells = [td for td in _Dom(page).root.iter("td") if td.attrs.get("class") == "cell"]
    table = summary["grid"][0]
    assert len(cells) == len(table["depths"]) * len(table["widths"])
    groups = {(g["depth"], g["width"]): g for g in summary["groups"]}
    for td in cells:
        depth, width = int(td.attrs["data-depth"]), float(td.attrs["data-width"])
        i, j = table["depths"].index(depth), table["widths"].index(width)
        assert float(td.attrs["data-block-fraction"]) == table["block_fraction"][i][j]
        assert float(td.attrs["data-test-accuracy"]) == table["test_accuracy"][i][j]
        group = groups[(depth, width)]
        assert int(td.attrs["data-seeds"]) == len(group["runs"])
        shown = f"fraction {group['block_fraction_mean']:.2f}"
        if group["block_fraction_std"] is not None:
            shown += f" ± {group['block_fraction_std']:.2f}"
        assert shown in td.text
        tested = f"area {group['block_area_mean']:.2f}"  # the tested statistic is the large number
        if group.get("block_area_std") is not None:
            tested += f" ± {group['block_area_std']:.2f}"
        large = next(span for span in td.iter("span") if span.attrs.get("class") == "bf")
        assert large.text.strip() == tested and float(td.attrs["data-block-area"]) == pytest.approx(
            group["block_area_mean"])
        assert f"acc {100 * group['test_accuracy_mean']:.1f}" in td.text
        assert f"n = {len(group['runs'])}" in td.text


def test_the_finding_is_stated_from_the_numbers(experiment, page, summary):
    table = summary["grid"][0]
    text = _section(_Dom(page), "headline").text
    typed = ExperimentSummary.from_dict(summary)
    saved = ClaimsResult.load(experiment[0] / "claims.json")
    statistics = claim_sentences({c.key: c.to_dict() for c in saved.claims})  # the verdicts of claims.json, rendered
    assert len(typed.slice_models(typed.grid[0])) == len(
        [m for m in summary["models"] if (m["residual"], m["fraction"]) == (table["residual"], table["fraction"])])
    assert statistics and all(sentence in text for sentence in statistics)  # the verdict: a statistic over seeds
    assert all("permutation p = " in sentence for sentence in statistics if "no trend" not in sentence)
    assert all("block area against" in s for s in statistics if "no trend" not in s)  # not the fraction
    for sentence in trend_sentences(table["depths"], table["widths"], table["block_area"], "Block area")[1:]:
        assert sentence in text  # and, row by row, what the means do


def test_the_block_table_lists_each_models_blocks(experiment, page, summary):
    rows = [[td.text for td in tr.iter("td")] for tr in _section(_Dom(page), "blocks").iter("tr")][1:]
    assert len(rows) == len(summary["models"])
    by_name = {row[0]: row for row in rows}
    for model in summary["models"]:
        result = BlockResult.load(experiment[0] / model["paths"]["blocks"])
        row = by_name[model["name"]]
        for block in result.blocks:
            assert f"{block.start}–{block.end}" in row[6] and f"mean CKA {block.mean_cka:.2f}" in row[6]
        assert len(result.blocks) == len(model["blocks"]) and row[6].count("–") == len(model["blocks"])
        assert row[7] == f"{model['block_fraction']:.2f}"


def test_the_error_section_names_its_tests_and_corrected_p_values(experiment, page):
    result = ErrorComparison.load(experiment[0] / "analysis" / "errors.json")
    section = _section(_Dom(page), "errors")
    text = section.text
    assert result.examples.test in text and f"p = {result.examples.p_value:.3g}" in text
    assert "Holm-Sidak" in text
    table = next(t for t in section.iter("table") if t.attrs.get("class") == "classes")
    rows = list(table.iter("tr"))[1:]
    assert len(rows) == len(result.classes.names)
    for tr, row in zip(rows, result.classes.rows()):
        cells = [td.text for td in tr.iter("td")]
        assert cells[0] == row["name"]
        expected = f"{row['p_holm_sidak']:.3g}" if np.isfinite(row["p_holm_sidak"]) else "–"
        assert cells[7] == expected


# -- text is escaped; missing pieces are skipped ------------------------------------------------------------
def test_text_from_the_experiment_is_escaped(copy):
    evil = '<script>alert("x")</script> & <img src=http://evil.example/x.png>'
    _edit_summary(copy, lambda s: s.update(name=evil, description=evil))
    (copy / "experiment.toml").write_text(f"# {evil}\n", encoding="utf-8")
    page = render_report(copy)
    assert evil not in page and page.count("<script") == 1  # only the page's own hover script
    dom = _Dom(page)
    assert [s.text for s in dom.root.iter("script")] == [HOVER_SCRIPT]
    assert all(img.attrs["src"].startswith("data:image/png;base64,") for img in dom.root.iter("img"))
    assert next(dom.root.iter("h1")).text == evil
    assert next(dom.root.iter("title")).text == f"ckatlas report: {evil}"


def test_missing_results_are_noted_and_their_parts_skipped(copy, summary):
    model = summary["models"][0]
    (copy / model["paths"]["pca"]).unlink()
    (copy / model["paths"]["cka"]).unlink()
    (copy / "analysis" / "errors.json").unlink()
    dom = _Dom(render_report(copy))
    for anchor, missing in (("pca", model["paths"]["pca"]), ("heatmaps", model["paths"]["cka"]),
                            ("errors", "analysis/errors.json")):
        notes = " ".join(p.text for p in _section(dom, anchor).iter("p") if p.attrs.get("class") == "note")
        assert f"{missing} is missing" in notes
    assert not list(_section(dom, "errors").iter("img"))
    assert list(_section(dom, "heatmaps").iter("img"))  # the other models are still drawn


def test_a_probe_result_gets_its_section(copy, summary):
    model = summary["models"][0]
    run = load_run(copy / model["paths"]["run"])
    data = run.config.load_data()
    few = SimpleNamespace(x_train=data.x_train[:300], y_train=data.y_train[:300], x_test=data.x_test[:200],
                          y_test=data.y_test[:200])  # a quick probe: the report only reads its result
    probes = linear_probes(run.model, few, c_grid=[1.0], max_features=32, max_iter=100)
    probes.save(copy / "analysis" / "probes" / f"{model['name']}.json")

    def enable(s: dict) -> None:
        s["analyses"]["enabled"].append("probes")
        for m in s["models"]:
            m["paths"]["probes"] = f"analysis/probes/{m['name']}.json"

    _edit_summary(copy, enable)
    page = render_report(copy)
    section = _section(_Dom(page), "probes")
    assert len(list(section.iter("img"))) == 1
    assert f"Test accuracy ({probes.num_test} examples) of a linear probe" in section.text
    assert "Not computed in this experiment: linear probes" not in page


# -- the finding in words ----------------------------------------------------------------------------------
def test_trend_sentences_say_where_block_fraction_grows_and_where_not():
    growing = trend_sentences([8, 14], [0.5, 1], [[0.2, 0.4], [0.5, 0.9]])
    assert growing[0].startswith("The paper's central finding holds here")
    assert "grows with width at every depth (depth 8: 0.20 → 0.40; depth 14: 0.50 → 0.90)" in growing[1]
    assert "grows with depth at every width" in growing[2]
    mixed = trend_sentences([8, 14], [0.5, 1], [[0.2, 0.4], [0.5, 0.3]])
    assert "holds only in part" in mixed[0] and "2 of the 4" in mixed[0]
    assert "grows with width at depth 8, but not at depth 14" in mixed[1]
    none = trend_sentences([8, 14], [0.5, 1], [[0.5, 0.4], [0.3, 0.3]])
    assert "does not show" in none[0] and "does not grow with width at any depth" in none[1]
    assert trend_sentences([8], [1], [[0.5]]) == [
        "The grid has a single model size, so no trend with width or depth can be read from it."]
    gaps = trend_sentences([8, 14], [0.5, 1], [[0.2, None], [0.3, 0.6]])
    assert "depth 14: 0.30 → 0.60" in gaps[1] and "depth 8" not in gaps[1]
    three = trend_sentences([8, 14, 20], [0.5, 1], [[0.2, 0.4], [0.5, 0.4], [0.6, 0.6]])
    assert "grows with width at depth 8, but not at depths 14 and 20" in three[1]
    assert trend_sentences([8, 14, 20], [1], [[0.2], [0.4], [0.4]])[0].endswith("grows with depth.")


# -- the command line --------------------------------------------------------------------------------------
def test_report_command_writes_where_asked(experiment, tmp_path, capsys):
    out = tmp_path / "mail" / "report.html"
    assert main(["report", str(experiment[0]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert "<h1>tiny</h1>" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", ["empty", "file", "missing", "unfinished", "out-is-a-folder"])
def test_report_command_user_errors_are_one_line(case, experiment, tmp_path, capsys):
    target, extra = tmp_path, []
    if case == "file":
        target = tmp_path / "x.txt"
        target.write_text("hi")
    elif case == "missing":
        target = tmp_path / "nope"
    elif case == "unfinished":
        shutil.copy(experiment[0] / "experiment.json", tmp_path / "experiment.json")
    elif case == "out-is-a-folder":
        target, extra = experiment[0], ["--out", str(tmp_path)]
    assert main(["report", str(target), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ckatlas report: error: ")
    if case == "unfinished":
        assert "unfinished experiment" in err


def test_demo_command_refuses_a_folder_holding_something_else(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--quick", "--out", str(tmp_path), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ckatlas demo: error: ") and "holds no ckatlas experiment" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_write_report_rejects_a_summary_of_something_else(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"format": "something.else"}))
    with pytest.raises(UserInputError, match="not a ckatlas experiment summary"):
        write_report(tmp_path)


# -- a real browser ----------------------------------------------------------------------------------------
def _browser() -> str:
    found = next((path for path in map(shutil.which, BROWSERS) if path), None)
    if found is None:
        pytest.fail("Chromium is not on PATH: install it (apt-get install -y chromium) to run the browser test")
    return found


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _console(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]


# A check appended to a copy of the report (the report itself has no scripts): once the page has
# loaded, count the images the browser decoded. One deliberately broken image shows the check works.
_CHECK = """<img id="broken" src="data:image/png;base64,AAAA" alt=""><script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-decoded", ok + "/" + images.length);
});
</script></body>"""


def test_the_report_renders_in_a_real_browser(experiment, page, tmp_path):
    report = experiment[0] / "report" / "index.html"
    images = len(list(_Dom(page).root.iter("img")))

    run = _chromium(["--virtual-time-budget=10000", "--dump-dom", report.as_uri()], tmp_path / "p1")
    assert run.returncode == 0, run.stderr[-2000:]
    assert _console(run.stderr) == []
    dom = _Dom(run.stdout)
    assert {s.attrs["id"] for s in dom.root.iter("section")} >= {"headline", "heatmaps", "errors"}
    assert len(list(dom.root.iter("img"))) == images

    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", _CHECK), encoding="utf-8")
    run = _chromium(["--virtual-time-budget=10000", "--dump-dom", checked.as_uri()], tmp_path / "p2")
    assert run.returncode == 0, run.stderr[-2000:]
    decoded = re.search(r'data-decoded="(\d+)/(\d+)"', run.stdout)
    assert decoded is not None, "the page never finished loading"
    assert (int(decoded[1]), int(decoded[2])) == (images, images + 1)  # every figure, not the broken one

    shot = tmp_path / "shot.png"
    run = _chromium(["--window-size=1280,2400", f"--screenshot={shot}", report.as_uri()], tmp_path / "p3")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    picture = Image.open(shot).convert("RGB")
    assert picture.size == (1280, 2400)
    assert ImageStat.Stat(picture.convert("L")).stddev[0] > 20  # text, tables and heatmaps, not a blank page
    colours = picture.resize((320, 600)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 200  # the heatmaps' colour map is on screen


_HOVER = """<script>
window.addEventListener("load", function () {
  var img = document.querySelector("#heatmaps img[data-hover]");
  var p = JSON.parse(img.getAttribute("data-hover"))[0], b = p.box, r = img.getBoundingClientRect();
  var row = p.rows.length - 2, col = 1;  /* near the top left of the first panel */
  var fx = b[0] + (col + 0.5) / p.cols.length * (b[2] - b[0]);
  var fy = b[3] - (row + 0.5) / p.rows.length * (b[3] - b[1]);
  img.dispatchEvent(new MouseEvent("mousemove", {clientX: r.left + fx * r.width, clientY: r.top + fy * r.height,
                                                 bubbles: true}));
  document.body.setAttribute("data-tip", document.querySelector(".tip").textContent);
  document.body.setAttribute("data-expected", p.rows[row] + " \\u00d7 " + p.cols[col]);
});
</script></body>"""


def test_heatmap_cells_show_their_layer_pair_and_value_on_hover(experiment, page, summary, tmp_path):
    hovered = tmp_path / "hover.html"
    hovered.write_text(page.replace("</body>", _HOVER), encoding="utf-8")
    run = _chromium(["--window-size=1280,2400", "--virtual-time-budget=10000", "--dump-dom", hovered.as_uri()],
                    tmp_path / "p4")
    assert run.returncode == 0, run.stderr[-2000:]
    tip = re.search(r'data-tip="([^"]*)"', run.stdout)
    expected = re.search(r'data-expected="([^"]*)"', run.stdout)
    assert tip is not None and expected is not None, "the page never ran its hover check"
    pair, value = html.unescape(tip[1]).rsplit(": ", 1)
    assert pair == html.unescape(expected[1])
    # the value is the saved heatmap's, of the model the first panel shows
    panels = json.loads(html.unescape(re.search(r'data-hover="([^"]*)"', page)[1]))
    model = next(m for m in summary["models"] if m["name"] == panels[0]["model"])
    cka = CKAResult.load(experiment[0] / model["paths"]["cka"])
    row_name, col_name = pair.split(" \u00d7 ")
    assert float(value) == pytest.approx(cka.matrix[cka.layers_a.index(row_name), cka.layers_b.index(col_name)],
                                         abs=5e-4)


def test_statistic_sentences_say_plainly_whether_the_trend_is_significant():
    def models(values):
        return [ModelEntry(f"m{i}", "resnet", d, w, True, i, 1.0, block_fraction=v)
                for i, ((d, w), v) in enumerate((cell, v) for cell, vs in values.items() for v in vs)]

    growing = models({(8, 0.5): [0.0, 0.1, 0.0], (8, 1): [0.3, 0.4, 0.35], (8, 2): [0.7, 0.8, 0.75],
                      (14, 0.5): [0.1, 0.0, 0.1], (14, 1): [0.5, 0.4, 0.45], (14, 2): [0.8, 0.9, 0.85]})
    width, depth = statistic_sentences(growing)
    assert "against width within each depth" in width and "claim holds at 0.05: block structure grows" in width
    assert "rho +" in width and "not established" not in width and "95% CI +" in width
    assert "against depth" in depth
    flat = models({(8, 0.5): [0.2, 0.4, 0.3], (8, 1): [0.3, 0.2, 0.4], (8, 2): [0.4, 0.3, 0.2]})
    (only,) = statistic_sentences(flat)  # one depth: only width is tested
    assert "not established at 0.05: this grid shows no significant trend with width either way" in only
    falling = models({(8, 0.5): [0.8, 0.9, 0.85], (8, 1): [0.4, 0.5, 0.45], (8, 2): [0.0, 0.1, 0.05]})
    (against,) = statistic_sentences(falling)
    assert "contradicted at 0.05: block structure falls with width" in against and "not hold" not in against
