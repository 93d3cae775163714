"""Resource files: confd's TOML read unchanged, the YAML form, meshkit's extras, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshkit.confd import ResourceConfigError, load_resource, load_resources

CONFD_TOML = """\
[template]
src = "nginx.tmpl"
dest = "/etc/nginx/conf.d/app.conf"
keys = [
  "/myapp/database/url",
  "/myapp/upstream/",
]
prefix = "/production"
mode = "0640"
uid = 0
gid = 0
check_cmd = "/usr/sbin/nginx -t -c {{.src}}"
reload_cmd = "/usr/sbin/service nginx reload"
"""

YAML_SAME = """\
template:
  src: nginx.tmpl
  dest: /etc/nginx/conf.d/app.conf
  keys: [/myapp/database/url, /myapp/upstream/]
  prefix: /production
  mode: "0640"
  uid: 0
  gid: 0
  check_cmd: "/usr/sbin/nginx -t -c {{.src}}"
  reload_cmd: /usr/sbin/service nginx reload
"""


def _conf(tmp_path: Path, name: str, text: str) -> Path:
    d = tmp_path / "conf.d"
    d.mkdir(exist_ok=True)
    (tmp_path / "templates").mkdir(exist_ok=True)
    p = d / name
    p.write_text(text)
    return p


def test_confd_toml_read_unchanged(tmp_path: Path) -> None:
    r = load_resource(_conf(tmp_path, "app.toml", CONFD_TOML), global_prefix="/eu")
    assert r.src == "nginx.tmpl" and r.dest == "/etc/nginx/conf.d/app.conf"
    assert r.mode == 0o640 and r.uid == 0 and r.gid == 0
    assert r.check_cmd == "/usr/sbin/nginx -t -c {{.src}}"
    assert r.reload_cmd == "/usr/sbin/service nginx reload"
    # confd: path.Join("/", global prefix, resource prefix), then path.Join(prefix, key)
    assert r.prefix == "/eu/production"
    assert r.watch_keys == ("/eu/production/myapp/database/url", "/eu/production/myapp/upstream")
    # defaults of the extras
    assert (r.wait_min, r.wait_max, r.missing_key, r.reload_group, r.backup) == (0, 0, "error", "", "")


def test_yaml_form_reads_the_same(tmp_path: Path) -> None:
    a = load_resource(_conf(tmp_path, "app.toml", CONFD_TOML))
    b = load_resource(_conf(tmp_path, "app.yaml", YAML_SAME))
    fields = ("src", "dest", "keys", "prefix", "mode", "uid", "gid", "check_cmd", "reload_cmd")
    assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]


def test_extras(tmp_path: Path) -> None:
    r = load_resource(_conf(tmp_path, "x.toml", """\
[template]
src = "x.tmpl"
dest = "/tmp/x"
keys = ["/x", "meshkit/services"]
wait = { min = "500ms", max = "3s" }
check_timeout = 7
reload_timeout = "1m"
missing_key = "default"
reload_group = "web"
backup = true
delimiters = ["[[", "]]"]
registry_prefix = "/meshkit/services"
[template.defaults]
"/x/port" = 8080
"""))
    assert (r.wait_min, r.wait_max) == (0.5, 3.0)
    assert (r.check_timeout, r.reload_timeout) == (7.0, 60.0)
    assert r.missing_key == "default" and r.defaults == {"/x/port": "8080"}
    assert r.reload_group == "web" and r.group == "web" and r.backup == ".bak"
    assert r.delimiters == ("[[", "]]")
    # no prefix: a relative key is read as written (etcd Go naming's relative keys)
    assert r.watch_keys == ("/x", "meshkit/services")
    short = load_resource(_conf(tmp_path, "y.toml",
                                '[template]\nsrc="y"\ndest="/tmp/y"\nkeys=["/y"]\nwait="2s"\nbackup=".orig"\n'))
    assert (short.wait_min, short.wait_max, short.backup) == (2.0, 8.0, ".orig")


def test_broken_resource_names_every_problem(tmp_path: Path) -> None:
    p = _conf(tmp_path, "bad.toml", """\
[template]
src = "/abs.tmpl"
dest = "relative/out"
keys = []
missing_key = "sometimes"
wait = { min = "5s", max = "1s" }
check_timeout = "soon"
""")
    with pytest.raises(ResourceConfigError) as ei:
        load_resource(p)
    assert any("check_timeout" in x for x in ei.value.problems)
    p.write_text(p.read_text().replace('check_timeout = "soon"\n', ""))
    with pytest.raises(ResourceConfigError) as ei:
        load_resource(p)
    text = " | ".join(ei.value.problems)
    for needle in ("src must be a path under", "dest must be an absolute", "keys must list",
                   "missing_key must be one of", "wait.min must not exceed"):
        assert needle in text
    _conf(tmp_path, "syntax.toml", "[template\nsrc=")
    with pytest.raises(ResourceConfigError):
        load_resource(tmp_path / "conf.d" / "syntax.toml")


def test_one_broken_file_does_not_stop_the_others(tmp_path: Path) -> None:
    _conf(tmp_path, "a.toml", '[template]\nsrc="a"\ndest="/tmp/a"\nkeys=["/a"]\nreload_group="g"\nreload_cmd="true"\n')
    _conf(tmp_path, "b.toml", '[template]\nsrc="b"\ndest="/tmp/b"\nkeys=["/b"]\nreload_group="g"\nreload_cmd="false"\n')
    _conf(tmp_path, "c.toml", "not toml at all [")
    _conf(tmp_path, "d.yml", "template: {src: d, dest: /tmp/d, keys: [/d]}\n")
    _conf(tmp_path, "notes.txt", "ignored")
    resources, errors = load_resources(tmp_path)
    assert [r.name for r in resources] == ["a.toml", "d.yml"]
    assert sorted(Path(e.path).name for e in errors) == ["b.toml", "c.toml"]
    assert any("same reload_cmd" in e.problems[0] for e in errors)
