"""The docs that are generated or runnable stay true to the code."""

from __future__ import annotations

from pathlib import Path

from drupelet.node.config import load, schema_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_config_reference_is_the_generated_schema() -> None:
    doc = (ROOT / "docs" / "config.md").read_text()
    assert schema_markdown().strip() in doc, "docs/config.md is stale: regenerate it with `drupelet config-doc`"


def test_example_node_config_is_valid() -> None:
    cfg = load(ROOT / "docs" / "examples" / "counter.toml")
    assert [a.name for a in cfg.actors] == ["counter"]
    assert cfg.actors[0].file.resolve() == (ROOT / "counter.wasm").resolve()
    assert {l.target for l in cfg.links} == {"local/keyvalue", "local/messaging"}


def test_readme_walkthrough_config_matches_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "docs" / "examples" / "counter.toml").read_text()
    # every TOML line of the example that sets something appears in the README's walk-through
    settings = [l for l in example.splitlines() if l.strip() and not l.lstrip().startswith("#")
                and not l.startswith("file")]
    missing = [l for l in settings if l not in readme]
    assert not missing, f"README walk-through differs from docs/examples/counter.toml: {missing}"
