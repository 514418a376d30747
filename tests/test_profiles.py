"""Every limit and dialect value a built-in profile carries cites a line of its upstream's page,
and the cited lines really say it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway import profiles

DOCS = Path(__file__).resolve().parents[2] / "shared" / "upstream-docs"
UPSTREAMS = ["powertokens", "token360", "siliconflow", "toapis", "maxtoken"]


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def _citations(name: str) -> tuple[list[tuple[str, str]], dict]:
    raw = yaml.safe_load((profiles.HERE / f"{name}.yaml").read_text())
    items = {**raw.get("dialect", {}), **raw.get("limits", {})}
    return [(key, item["doc"]) for key, item in items.items()], {k: item["value"] for k, item in items.items()}


def _items(value: object) -> list[str]:
    if isinstance(value, bool) or isinstance(value, dict):
        return []
    if isinstance(value, (int, float)):
        return [f"{value:g}"]
    if isinstance(value, list):
        return [i for v in value for i in _items(v)]
    return [] if value in ("zhipu", "siliconflow", "none") else [str(value)]


@pytest.mark.parametrize("name", UPSTREAMS)
def test_every_value_cites_lines_that_say_it(name: str) -> None:
    page = (DOCS / f"{name}.txt").read_text()
    lines = page.splitlines()
    citations, values = _citations(name)
    for key, doc in citations:
        if doc.startswith("(not on the page)"):  # data the page lacks, with the source it comes from
            assert len(doc) > 60 and "error codes" in doc, f"{name}.{key}: name the source of {doc!r}"
            continue
        if doc.startswith("(absent)"):
            assert key not in page.lower(), f"{name}.{key}: cited as absent, but the page mentions {key}"
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))? (.+)", doc)
        assert match, f"{name}.{key}: doc must be 'LINE[-LINE] quote', got {doc!r}"
        first, last = int(match[1]), int(match[2] or match[1])
        cited = _squash(" ".join(lines[first - 1:last]))
        for item in _items(values[key]):  # each number and name the value holds is on those lines
            assert _squash(item) in cited, f"{name}.{key}: {item!r} is not on lines {first}-{last}"
        for fragment in match[3].split("..."):
            assert _squash(fragment) in cited, f"{name}.{key}: {fragment!r} is not on lines {first}-{last}"


@pytest.mark.parametrize("name", UPSTREAMS)
def test_profiles_load_with_a_doc_for_each_limit(name: str) -> None:
    profile = profiles.builtin(name)
    limits = profile.limits
    set_limits = [f for f in limits.__dataclass_fields__ if f != "docs" and getattr(limits, f) not in (None, False)]
    assert sorted(set_limits) == sorted(limits.docs)


def test_headline_limits_match_the_digest() -> None:
    assert profiles.builtin("powertokens").limits.temperature == (0, 1)
    assert profiles.builtin("powertokens").limits.top_p == (0.01, 1)
    assert profiles.builtin("powertokens").limits.stop_max == 1
    assert profiles.builtin("powertokens").stop_as_list
    assert profiles.builtin("siliconflow").limits.messages_max == 10
    assert profiles.builtin("siliconflow").limits.thinking_budget == (128, 32768)
    assert profiles.builtin("toapis").limits.temperature == (0, 2)
    assert profiles.builtin("token360").limits.content_string_only
    assert profiles.builtin("maxtoken").limits.roles == {"system", "user", "assistant"}
    assert profiles.builtin("openai").limits == profiles.Limits()
    assert {n: profiles.builtin(n).thinking.name for n in UPSTREAMS} == {
        "powertokens": "zhipu", "token360": "zhipu", "siliconflow": "siliconflow", "toapis": "none", "maxtoken": "none"}


def test_no_provider_name_outside_profiles_and_simulator() -> None:
    package = Path(profiles.__file__).resolve().parents[1]
    for path in package.rglob("*.py"):
        if "profiles" in path.parts or "simulator" in path.parts:
            continue
        text = path.read_text().lower()
        for name in UPSTREAMS:
            assert name not in text, f"{path.relative_to(package)} names {name}"
