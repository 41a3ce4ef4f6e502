"""The page as a person uses it: headless Chromium (Debian's, driven by Playwright's Python package) against serve.py
on 127.0.0.1. The page loads with every request outside the server refused, a pasted dialogue comes back summarized,
the Explore tab lists the runs, opens the worst example with its matches marked, and shows two runs side by side
with their comparison; without a model_dir the Explore tab is served alone. Screenshots go to each test's tmp dir.
The Explore tab's functions (the page's side of sumlab.analysis) are also tested without a browser.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import compose_config
from serve_process import Server
from test_predict import make_run

from sumlab.analysis import explore
from sumlab.analysis.roots import PathRefused, Roots
from sumlab.serve import explore_tab

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
TIMEOUT = 60_000  # ms: a loaded 2-core machine


def chromium() -> str | None:
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """(model run, root, beams-4 predictions, greedy predictions): two predict.py outputs under one root."""
    from sumlab.predict.runner import run

    model = make_run(tmp_path_factory.mktemp("page-t5"), "t5")
    root = tmp_path_factory.mktemp("root")
    outs = []
    for name, extra in (("beam4", []), ("greedy", ["generation.num_beams=1"])):
        out = root / "predict" / name
        overrides = [f"model_dir={model}", "data.synthetic_sizes.test=12", *extra, f"output.dir={out}",
                     f"paths.run_dir={out}", "trainer.enable_progress_bar=false"]  # fmt: skip
        run(compose_config(overrides, config_name="predict"))
        outs.append(out)
    return model, root, outs[0], outs[1]


# --- the Explore tab's functions, no browser -------------------------------------------------------
def test_explore_functions_read_runs_under_the_roots_only(runs: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    _, root, beam, greedy = runs
    roots = Roots([root])
    rows, choices = explore_tab.run_rows(roots)
    assert {c[1] for c in choices} == {str(beam), str(greedy)}
    page, line, offset = explore_tab.example_rows(roots, str(beam), "", "worst", 0)
    scores = [float(r[2]) for r in page]
    assert scores == sorted(scores) and offset == 0 and "of 12" in line  # worst first
    _, _, last = explore_tab.example_rows(roots, str(beam), "", "worst", 100)
    assert last == 0  # paging past the end shows the last page
    worst = page[0][1]
    assert "<mark" in explore_tab.example_html(roots, str(beam), worst, "unigram") or float(page[0][3]) == 0
    both = explore_tab.side_by_side_html(roots, str(beam), str(greedy), worst, "lcs")
    assert str(beam) in both and str(greedy) in both
    assert [r[0] for r in explore_tab.compare_rows(roots, str(beam), str(greedy))][-1] == "rouge_combined"
    outside = tmp_path / "elsewhere"
    shutil.copytree(beam, outside)
    for path in (str(outside), f"{root}/predict/../../{outside.name}", "/etc"):
        with pytest.raises(PathRefused):
            explore_tab.example_rows(roots, path, "", "worst", 0)


# --- in a browser ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Any:  # Playwright's Browser
    executable = chromium()
    if executable is None:
        pytest.skip("no Chromium found (apt-get install chromium chromium-driver): the page's browser tests need one")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the page's browser tests drive Chromium with it")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture()
def page(browser: Any, tmp_path: Path) -> Any:
    """A fresh page whose requests may only go to 127.0.0.1: any other is refused and recorded (an offline page)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.outside = []

    def local_only(route: Any) -> None:
        if route.request.url.startswith("http://127.0.0.1"):
            route.continue_()
        else:
            context.outside.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT)
    yield tab
    tab.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    assert context.outside == []  # fonts, scripts and styles all come from the server (Gradio's wheel)
    context.close()


@pytest.fixture(scope="module")
def server(runs: tuple[Path, Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Server:
    model, root, _, _ = runs
    srv = Server(tmp_path_factory.mktemp("page-log"), f"model_dir={model}", f"roots=[{root}]")
    yield srv
    assert srv.stop() == 0  # SIGTERM: a clean stop with the page mounted too


@pytest.mark.slow
def test_pasted_dialogue_comes_back_summarized(server: Server, page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    dialogue = "#Person1#: I'd like to rent an apartment near the park.\n#Person2#: How many rooms do you need?"
    page.goto(server.url)
    page.get_by_label("Dialogue").fill(dialogue)
    page.get_by_role("button", name="Summarize").click()
    expected = httpx.post(f"{server.url}/v1/summarize", json={"text": dialogue}, timeout=60).json()["summary"]
    expect(page.locator("#summary textarea")).to_have_value(expected)
    expect(page.get_by_text("ms generating")).to_be_visible()
    page.screenshot(path=str(tmp_path / "summarize.png"), full_page=True)


@pytest.mark.slow
def test_explore_opens_the_worst_example_and_two_runs_side_by_side(
    server: Server, page: Any, runs: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    _, root, beam, greedy = runs
    worst = explore.examples_page(explore.open_run(Roots([root]), str(beam))).rows[0].id
    page.goto(server.url)
    page.get_by_role("tab", name="Explore").click()
    expect(page.locator("#runs")).to_contain_text("predict/beam4")
    expect(page.locator("#runs")).to_contain_text("predict/greedy")
    page.locator("#run-a input").click()
    page.get_by_role("option", name="predict/beam4").click()
    first = page.locator("#examples").get_by_role("row").nth(1)  # row 0: the header
    expect(first).to_contain_text(worst)
    first.get_by_role("gridcell").nth(1).click()
    expect(page.locator("#example")).to_contain_text(worst)
    expect(page.locator("#example")).to_contain_text("Reference")
    page.screenshot(path=str(tmp_path / "explore-example.png"), full_page=True)
    page.locator("#run-b input").click()
    page.get_by_role("option", name="predict/greedy").click()
    expect(page.locator("#side-by-side")).to_contain_text(str(beam))
    expect(page.locator("#side-by-side")).to_contain_text(str(greedy))
    expect(page.locator("#comparison")).to_contain_text("rouge_combined")
    page.screenshot(path=str(tmp_path / "explore-side-by-side.png"), full_page=True)


@pytest.mark.slow
def test_without_a_model_the_explore_tab_alone(runs: tuple[Path, Path, Path, Path], page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _, root, _, _ = runs
    srv = Server(tmp_path, f"roots=[{root}]")
    try:
        assert httpx.post(f"{srv.url}/v1/summarize", json={"text": "hi"}).status_code == 404
        page.goto(srv.url)
        expect(page.locator("#runs")).to_contain_text("predict/beam4")
        expect(page.get_by_role("tab", name="Summarize")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "explore-only.png"), full_page=True)
        page.goto("about:blank")  # an open page holds an event stream, which a stop waits for (shutdown_timeout)
    finally:
        assert srv.stop() == 0
    assert srv.output().count("serve: stopped") == 1
