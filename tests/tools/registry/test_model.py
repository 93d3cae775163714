"""The key/value layout against etcd Go's documented ``naming/endpoints`` format.

These run without Go: the fixture below holds values as Go's
``encoding/json`` writes ``endpoints/internal.Update{Op, Addr, Metadata}`` (fields in
declaration order, compact, map keys sorted, ``<``, ``>``, ``&`` escaped as \\u003c,
\\u003e, \\u0026, non-ASCII kept as UTF-8), as in etcd's docs
(``{"Op":0,"Addr":"1.2.3.4","Metadata":null}`` for ``AddEndpoint(..., Endpoint{Addr: "1.2.3.4"})``).
With Go installed, test_go_resolver.py also compares meshkit's bytes with Go's own encoder.
"""

from __future__ import annotations

import json

import pytest

from meshkit.registry import (
    OP_ADD,
    Instance,
    InvalidInstanceError,
    InvalidValueError,
    decode_value,
    encode_value,
    go_json,
    instance_from_value,
    instance_key,
    parse_key,
    service_prefix,
)

# (Go-encoded bytes, what they decode to: op, addr, metadata)
GO_VALUES: list[tuple[bytes, int, str, object]] = [
    (b'{"Op":0,"Addr":"1.2.3.4","Metadata":null}', 0, "1.2.3.4", None),
    (b'{"Op":0,"Addr":"10.0.0.7:8080","Metadata":"v1"}', 0, "10.0.0.7:8080", "v1"),
    (b'{"Op":1,"Addr":"10.0.0.7:8080","Metadata":null}', 1, "10.0.0.7:8080", None),
    (b'{"Op":0,"Addr":"[::1]:9000","Metadata":{"a":1,"b":[true,null]}}', 0, "[::1]:9000",
     {"a": 1, "b": [True, None]}),
]

# An Instance and the exact bytes Go's json.Marshal produces for its Update.
ENCODED = (
    Instance(service="web", addr="10.0.0.7:8080", id="web-1",
             metadata={"team": "a&b", "tag": "<x>", "city": "Zürich"},
             weight=5, zone="eu-1", version="1.2.3"),
    b'{"Op":0,"Addr":"10.0.0.7:8080","Metadata":null,"Meshkit":{"id":"web-1","meta":{"city":"Z\xc3\xbcrich",'
    b'"tag":"\\u003cx\\u003e","team":"a\\u0026b"},"service":"web","version":"1.2.3","weight":5,'
    b'"zone":"eu-1"}}',
)
# The earlier layout (meshkit's fields inside Metadata), still read.
EARLIER = (b'{"Op":0,"Addr":"10.0.0.7:8080","Metadata":{"id":"web-1","meta":{"city":"Z\xc3\xbcrich",'
           b'"tag":"\\u003cx\\u003e","team":"a\\u0026b"},"service":"web","version":"1.2.3","weight":5,'
           b'"zone":"eu-1"}}')


@pytest.mark.parametrize(("raw", "op", "addr", "meta"), GO_VALUES)
def test_go_values_decode(raw: bytes, op: int, addr: str, meta: object) -> None:
    up = decode_value(raw)
    assert (up.op, up.addr, up.metadata) == (op, addr, meta)


@pytest.mark.parametrize(("raw", "op", "addr", "meta"), GO_VALUES)
def test_go_values_reencode_byte_for_byte(raw: bytes, op: int, addr: str, meta: object) -> None:
    # The other direction: meshkit's Go-style marshal of the same struct gives Go's bytes.
    body = b'{"Op":%d,"Addr":%s,"Metadata":%s}' % (op, go_json(addr), go_json(meta))
    assert body == raw


def test_instance_encodes_exactly_as_go() -> None:
    inst, expected = ENCODED
    assert encode_value(inst) == expected
    # and back
    back = instance_from_value("meshkit/services", "meshkit/services/web/web-1", expected)
    assert back == inst
    # What Go's resolver sees: Metadata null (a JSON object there panics grpc-go's
    # balancers: the Go map is unhashable); meshkit's fields beside it, ignored by Go.
    up = decode_value(expected)
    assert up.metadata is None and up.meshkit["weight"] == 5
    assert instance_from_value("meshkit/services", "meshkit/services/web/web-1", EARLIER) == inst
    # Go matches field names case-insensitively: so does meshkit for its own field.
    lower = expected.replace(b'"Meshkit"', b'"meshkit"')
    assert instance_from_value("meshkit/services", "meshkit/services/web/web-1", lower) == inst


def test_go_unmarshal_rules() -> None:
    # Go matches field names case-insensitively, keeps zero values for missing fields,
    # ignores unknown fields, and treats null as "leave the zero value".
    assert decode_value(b'{"op":0,"addr":"h:1","extra":3}').addr == "h:1"
    assert decode_value(b'{"Addr":"h:1"}').op == OP_ADD
    assert decode_value(b'{"Op":null,"Addr":null}').addr == ""
    for bad in (b"not json", b"[1]", b'{"Op":"0"}', b'{"Op":256}', b'{"Op":1.5}', b'{"Addr":5}'):
        with pytest.raises(InvalidValueError):
            decode_value(bad, "k")


def test_foreign_values_become_instances() -> None:
    # Written by Go's endpoints.Manager: the id comes from the key, weight defaults to 1.
    inst = instance_from_value("svc", "svc/api/e1", b'{"Op":0,"Addr":"1.2.3.4:80","Metadata":"x"}')
    assert inst == Instance(service="api", addr="1.2.3.4:80", id="e1", metadata={"_raw": '"x"'})
    assert instance_from_value("svc", "svc/api/e1", b'{"Op":1,"Addr":"1.2.3.4:80"}') is None
    assert instance_from_value("svc", "other/api/e1", b"{}") is None


def test_key_layout() -> None:
    assert service_prefix("meshkit/services/", "web") == "meshkit/services/web"
    assert instance_key("meshkit/services", "web", "web-1") == "meshkit/services/web/web-1"
    assert parse_key("meshkit/services", "meshkit/services/web/web-1") == ("web", "web-1")
    assert parse_key("meshkit/services", "meshkit/services/web") is None
    assert parse_key("meshkit/services", "meshkit/servicesX/web/a") is None
    # The default id is the address, like Go's examples (key = target + "/" + addr).
    assert Instance("web", "1.2.3.4:80").instance_id == "1.2.3.4:80"


def test_validate_names_every_broken_rule() -> None:
    inst = Instance(service="a/b", addr="nohost", id="x/y", weight=-1, metadata={"": "v"})
    with pytest.raises(InvalidInstanceError) as ei:
        inst.validate()
    text = " | ".join(ei.value.problems)
    for word in ("service", "id", "addr", "weight", "metadata"):
        assert word in text
    assert len(ei.value.problems) == 5


def test_go_json_refuses_what_go_would_not_write_the_same() -> None:
    with pytest.raises(ValueError):
        go_json(float("nan"))
    with pytest.raises(ValueError):
        go_json({"a": 0.5})
    assert go_json({"b": "\u2028", "a": "é"}) == '{"a":"é","b":"\\u2028"}'.encode()
    assert json.loads(go_json({"k": "<&>"})) == {"k": "<&>"}
