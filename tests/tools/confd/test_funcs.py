"""Template functions: memkv's, confd's template_funcs.go, the default form, missing-key
modes, delimiters, registry helpers and DNS lookups (rendered through Jinja2)."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshkit.confd import Renderer, TemplateRenderError, TemplateResource, snapshot_from
from meshkit.confd.dns import lookup_srv
from meshkit.registry.model import Instance, encode_value

DATA = {
    "/app/db/host": "db1",
    "/app/db/port": "5432",
    "/app/upstream/a": "10.0.0.1:80",
    "/app/upstream/b": "10.0.0.2:80",
    "/app/name": "Web",
    "/app/cfg": '{"debug": true, "n": 3}',
    "/app/list": '["x", "y"]',
}


def render(tmp_path: Path, text: str, data: dict[str, str] | None = None, **res: object) -> str:
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "t.tmpl").write_text(text)
    r = TemplateResource(name="t.toml", src="t.tmpl", dest=str(tmp_path / "out"), keys=("/",),
                         **res)  # type: ignore[arg-type]
    return Renderer(r, tmp_path / "templates").render(snapshot_from((data or DATA).items(), revision=42))


def test_memkv_functions(tmp_path: Path) -> None:
    out = render(tmp_path, (
        "{{ getv('/app/db/host') }}:{{ getv('/app/db/port') }}|{{ getv('/nope', 'dflt') }}|"
        "{{ exists('/app/name') }}{{ exists('/nope') }}|"
        "{% for kv in gets('/app/upstream/*') %}{{ kv.Key }}={{ kv.Value }};{% endfor %}|"
        "{{ getvs('/app/upstream/*') | join(',') }}|{{ ls('/app') }}|{{ lsdir('/app') }}|"
        "{{ get('/app/name').Value }}|{{ revision }}"))
    assert out == ("db1:5432|dflt|TrueFalse|/app/upstream/a=10.0.0.1:80;/app/upstream/b=10.0.0.2:80;|"
                   "10.0.0.1:80,10.0.0.2:80|['cfg', 'db', 'list', 'name', 'upstream']|"
                   "['db', 'upstream']|Web|42")


def test_confd_template_funcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFD_TEST_VAR", "from-env")
    existing = tmp_path / "exists.txt"
    existing.write_text("x")
    out = render(tmp_path, (
        "{{ base('/a/b/c') }} {{ dir('/a/b/c') }} {{ split('a:b:c', ':') }} {{ join(['a','b'], '-') }} "
        "{{ json(getv('/app/cfg')).n }} {{ jsonArray(getv('/app/list'))[1] }} "
        "{{ map('k', 'v').k }} {{ toUpper(getv('/app/name')) }} {{ getv('/app/name') | toLower }} "
        "{{ contains('haystack', 'st') }} {{ replace('a.b.c', '.', '/', -1) }} {{ replace('a.b.c', '.', '/', 1) }} "
        "{{ atoi('42') + 1 }} {{ add(2, 3) }} {{ sub(2, 3) }} {{ mul(2, 3) }} {{ div(-7, 2) }} {{ mod(-7, 2) }} "
        "{{ seq(1, 3) }} {{ parseBool('true') }} {{ base64Encode('hi') }} {{ base64Decode('aGk=') }} "
        "{{ reverse(['a', 'b']) }} {{ sortByLength(['ccc', 'a', 'bb']) }} {{ trimSuffix('x.conf', '.conf') }} "
        "{{ fileExists('" + str(existing) + "') }} {{ fileExists('/no/such') }} {{ getenv('CONFD_TEST_VAR') }} "
        "{{ getenv('CONFD_UNSET_VAR', 'd') }} {{ (sortKVByLength(gets('/app/*')) | first).Key }} "
        "{{ datetime().year > 2000 }}"))
    assert out.split(" ") == [
        "c", "/a/b", "['a',", "'b',", "'c']", "a-b", "3", "y", "v", "WEB", "web", "True", "a/b/c", "a/b.c",
        "43", "5", "-1", "6", "-3", "-1", "[1,", "2,", "3]", "True", "aGk=", "hi", "['b',", "'a']",
        "['a',", "'bb',", "'ccc']", "x", "True", "False", "from-env", "d", "/app/cfg", "True",
    ]
    with pytest.raises(TemplateRenderError, match="invalid syntax"):
        render(tmp_path, "{{ atoi('4x') }}")


def test_missing_key_modes(tmp_path: Path) -> None:
    with pytest.raises(TemplateRenderError, match="key does not exist: /missing"):
        render(tmp_path, "{{ getv('/missing') }}")
    assert render(tmp_path, "[{{ getv('/missing') }}]", missing_key="empty") == "[]"
    assert render(tmp_path, "{{ getv('/missing') }}", missing_key="default",
                  defaults={"/missing": "from-defaults"}) == "from-defaults"
    with pytest.raises(TemplateRenderError, match="/other"):
        render(tmp_path, "{{ getv('/other') }}", missing_key="default", defaults={"/missing": "x"})
    # the default value form wins in every mode
    assert render(tmp_path, "{{ getv('/missing', 'inline') }}", missing_key="default",
                  defaults={"/missing": "x"}) == "inline"
    # an undefined variable is an error too, not an empty string
    with pytest.raises(TemplateRenderError, match="undefined"):
        render(tmp_path, "{{ no_such_name }}")


def test_configurable_delimiters(tmp_path: Path) -> None:
    out = render(tmp_path, "[[ getv('/app/name') ]] {{ literal }} <% if true %>yes<% endif %>",
                 delimiters=("[[", "]]"), block_delimiters=("<%", "%>"))
    assert out == "Web {{ literal }} yes"


def _reg(inst: str, addr: str, md: object, op: int = 0) -> str:
    return json.dumps({"Op": op, "Addr": addr, "Metadata": md}, separators=(",", ":"))


def test_registry_helpers(tmp_path: Path) -> None:
    data = {
        "/meshkit/services/web/a": _reg("a", "127.0.0.1:8001", {"id": "a", "service": "web", "weight": 3,
                                                                "zone": "z1", "version": "v2",
                                                                "meta": {"color": "blue"}}),
        "/meshkit/services/web/b": _reg("b", "127.0.0.1:8002", None),  # written by Go's endpoints.Manager
        "/meshkit/services/web/c": _reg("c", "127.0.0.1:8003", None, op=1),  # Op Delete: not an instance
        "/meshkit/services/web/d": "not json",
        # what meshkit's registrar writes today: Metadata null, its fields in "Meshkit"
        "/meshkit/services/web/e": encode_value(Instance(service="web", id="e", addr="127.0.0.1:8004",
                                                         weight=5, zone="z2",
                                                         metadata={"color": "red"})).decode(),
        "/meshkit/services/api/x": _reg("x", "[::1]:9000", {"team": "core"}),
        "/other/key": "v",
    }
    out = render(tmp_path, (
        "{{ services() }}|{% for i in instances('web') %}{{ i.id }} {{ i.addr }} {{ i.host }} {{ i.port }} "
        "w={{ i.weight }} {{ i.zone }} {{ i.metadata.get('color', '-') }};{% endfor %}|"
        "{% for i in instances('api') %}{{ i.host }} {{ i.port }} {{ i.metadata.team }}{% endfor %}|"
        "{{ instances('nope') }}"), data)
    assert out == ("['api', 'web']|a 127.0.0.1:8001 127.0.0.1 8001 w=3 z1 blue;"
                   "b 127.0.0.1:8002 127.0.0.1 8002 w=1  -;e 127.0.0.1:8004 127.0.0.1 8004 w=5 z2 red;"
                   "|::1 9000 core|[]")


def test_lookup_ip(tmp_path: Path) -> None:
    out = render(tmp_path, "{{ lookupIPV4('localhost') }} {{ lookupIP('no-such-host.invalid') }}")
    assert out == "['127.0.0.1'] []"


@pytest.fixture
def fake_dns() -> Iterator[tuple[str, int]]:
    """A one-answer DNS server on loopback: SRV for _http._tcp.example.test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                q, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            qid = struct.unpack("!H", q[:2])[0]
            question = q[12:]
            name_end = question.index(b"\x00") + 1
            qname = question[:name_end]
            answers = b""
            n = 0
            if b"_http" in qname:
                for prio, weight, port, target in ((10, 5, 8080, b"b"), (10, 5, 8081, b"a")):
                    rdata = struct.pack("!HHH", prio, weight, port) + bytes([1]) + target + b"\x04test\x00"
                    answers += b"\xc0\x0c" + struct.pack("!HHIH", 33, 1, 60, len(rdata)) + rdata
                    n += 1
            header = struct.pack("!HHHHHH", qid, 0x8180 if n else 0x8183, 1, n, 0, 0)
            sock.sendto(header + question[: name_end + 4] + answers, peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield sock.getsockname()
    finally:
        stop.set()
        t.join(2)
        sock.close()


def test_lookup_srv(fake_dns: tuple[str, int], tmp_path: Path) -> None:
    recs = lookup_srv("http", "tcp", "example.test", nameservers=[fake_dns])
    assert [(r.Target, r.Port, r.Priority, r.Weight) for r in recs] == [
        ("a.test.", 8081, 10, 5), ("b.test.", 8080, 10, 5)]
    assert lookup_srv("nope", "tcp", "example.test", nameservers=[fake_dns]) == []
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.tmpl").write_text(
        "{% for s in lookupSRV('http', 'tcp', 'example.test') %}{{ s.Target }}:{{ s.Port }} {% endfor %}")
    r = TemplateResource(name="t", src="t.tmpl", dest="/x", keys=("/",))
    out = Renderer(r, tmp_path / "templates", nameservers=[fake_dns]).render(snapshot_from([]))
    assert out == "a.test.:8081 b.test.:8080 "
