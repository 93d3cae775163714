"""Parsing, schema validation, names and roles: no server needed."""

from __future__ import annotations

import json

import pytest

from meshkit.configcenter import (
    ConfigName,
    DocumentError,
    InvalidNameError,
    SchemaError,
    SchemaValidationError,
    detect_format,
    load_schema,
    parse_document,
    role_commands,
    validate,
)
from meshkit.configcenter.roles import format_commands

SCHEMA = {
    "type": "object",
    "required": ["db", "name"],
    "properties": {
        "name": {"type": "string"},
        "db": {"type": "object", "required": ["pool"],
               "properties": {"pool": {"type": "integer", "minimum": 1, "maximum": 50}}},
    },
}


def test_yaml_json_properties_parse_to_the_same_mapping() -> None:
    y = parse_document("name: api\ndb:\n  pool: 5\nsince: 2024-01-02\n", "yaml")
    j = parse_document('{"name": "api", "db": {"pool": 5}, "since": "2024-01-02"}', "json")
    assert y == j == {"name": "api", "db": {"pool": 5}, "since": "2024-01-02"}
    p = parse_document("# comment\nname = api\n; other\nexport db.pool=5\nq='x y'\n\n", "properties")
    assert p == {"name": "api", "db.pool": "5", "q": "x y"}


def test_format_from_extension() -> None:
    assert detect_format("a/b.yml") == "yaml"
    assert detect_format("x.JSON") == "json"
    assert detect_format("app.properties") == "properties"
    assert detect_format(".env") == detect_format("prod.env") == "properties"
    with pytest.raises(DocumentError, match="cannot tell the format"):
        detect_format("notes.txt")


@pytest.mark.parametrize(("text", "fmt", "needle", "line"), [
    ("db:\n  pool: [1\n", "yaml", "not valid YAML", 3),
    ("a: 1\na: 2\n", "yaml", "duplicate key 'a'", 2),
    ("a: 1\n---\nb: 2\n", "yaml", "expected one YAML document", None),
    ("- 1\n- 2\n", "yaml", "top level must be a mapping", None),
    ("", "yaml", "an empty document", None),
    ("x: .nan\n", "yaml", "NaN", None),
    ('{"a": 1,\n "b": }', "json", "not valid JSON", 2),
    ('{"a": 1, "a": 2}', "json", "duplicate key 'a'", None),
    ('{"a": NaN}', "json", "NaN is not allowed", None),
    ("a=1\njust words\n", "properties", "expected key=value", 2),
    ("a=1\na=2\n", "properties", "duplicate key 'a'", 2),
])
def test_bad_documents_name_the_reason(text: str, fmt: str, needle: str, line: int | None) -> None:
    with pytest.raises(DocumentError) as ei:
        parse_document(text, fmt, "conf.in")  # type: ignore[arg-type]
    assert needle in str(ei.value)
    assert str(ei.value).startswith("conf.in")
    assert ei.value.line == line


def test_schema_failures_list_every_error_with_its_path() -> None:
    schema = load_schema(json.dumps(SCHEMA))
    validate({"name": "api", "db": {"pool": 5}}, schema)
    with pytest.raises(SchemaValidationError) as ei:
        validate({"name": 7, "db": {"pool": 99}}, schema, "api.yaml")
    assert ei.value.errors == [
        "$.db.pool: 99 is greater than the maximum of 50",
        "$.name: 7 is not of type 'string'",
    ]
    assert "api.yaml fails its schema (2 error(s))" in str(ei.value)


def test_broken_schemas_are_refused() -> None:
    with pytest.raises(SchemaError, match="not valid JSON"):
        load_schema("{nope", "s.json")
    with pytest.raises(SchemaError, match="not a valid JSON Schema"):
        load_schema('{"type": "no-such-type"}', "s.json")
    with pytest.raises(SchemaError, match="must be a JSON object"):
        load_schema("[1]", "s.json")


def test_names_and_key_layout() -> None:
    n = ConfigName.parse("prod/payments/api")
    assert (n.namespace, n.app) == ("prod/payments", "api")
    assert n.current_key == b"/meshkit/config/prod/payments/api/@current"
    assert n.history_key(7) == b"/meshkit/config/prod/payments/api/@history/0000000007"
    # another app can never fall inside this app's history range
    other = ConfigName.parse("prod/payments/api/history")
    assert not other.current_key.startswith(n.history_prefix)
    for bad in ("api", "prod//api", "prod/@x/api", "prod/../api", "prod/a b", ""):
        with pytest.raises(InvalidNameError):
            ConfigName.parse(bad)


def test_role_commands() -> None:
    cmds = role_commands("prod/payments", readers=["app1"], writers=["alice"])
    assert format_commands(cmds) == (
        "etcdctl role add config-read:prod/payments\n"
        "etcdctl role grant-permission --prefix=true config-read:prod/payments read "
        "/meshkit/config/prod/payments/\n"
        "etcdctl role add config-write:prod/payments\n"
        "etcdctl role grant-permission --prefix=true config-write:prod/payments readwrite "
        "/meshkit/config/prod/payments/\n"
        "etcdctl user grant-role app1 config-read:prod/payments\n"
        "etcdctl user grant-role alice config-write:prod/payments\n"
    )
