"""Every provider declares its ``[providers.<name>]`` keys once, and checks a table without starting."""

from __future__ import annotations

from importlib.metadata import entry_points

import msgspec
import pytest

from drupelet.providers.base import Provider
from drupelet.providers.schema import NoKeys, SchemaError, key_docs


def provider_classes() -> dict[str, type[Provider]]:
    found: dict[str, type[Provider]] = {}
    for entry in entry_points(group="drupelet.providers"):
        cls = entry.load()
        assert isinstance(cls, type) and issubclass(cls, Provider), entry.value
        found[entry.name] = cls
    return found


PROVIDERS = provider_classes()


def test_drupelet_s_providers_are_all_found() -> None:
    assert set(PROVIDERS) >= {"keyvalue", "messaging", "clock", "gpio", "i2c", "display"}


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_an_empty_table_is_valid_without_starting_the_provider(name: str) -> None:
    cls = PROVIDERS[name]
    parsed = cls.parse_config({})
    assert cls.config_schema is not None, f"provider {name} declares no config schema"
    assert isinstance(parsed, cls.config_schema)


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_an_unknown_key_is_refused_naming_it(name: str) -> None:
    with pytest.raises(SchemaError, match=rf"^providers\.{name}(\.colour: unknown key \(known: |: takes no keys)"):
        PROVIDERS[name].parse_config({"colour": "red"})


@pytest.mark.parametrize("name", sorted(n for n, c in PROVIDERS.items() if c.config_schema is not None))
def test_every_key_has_a_type_a_default_and_a_meaning(name: str) -> None:
    schema = PROVIDERS[name].config_schema
    assert schema is not None
    assert schema.__struct_config__.forbid_unknown_fields
    with pytest.raises(TypeError):  # kw_only: keys by name only
        schema("positional")
    docs = key_docs(schema)
    assert [d.key for d in docs] == [f.encode_name for f in msgspec.structs.fields(schema)]
    assert docs or schema is NoKeys, f"providers.{name} declares an empty schema other than NoKeys"
    for doc in docs:
        assert doc.type and doc.meaning, doc
        assert doc.default != "required", f"providers.{name}.{doc.key} has no default"
