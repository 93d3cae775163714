"""`meshkit ctl auth|user|role` against the real etcdctl 3.4: same steps, same output.

Every step runs through the real etcdctl on one fresh server and through `meshkit ctl`
on its twin (the real etcd, then `meshkit server`; tests/tools/ctl/conftest.py), and
exit code, stdout and stderr must match after the harness's normalisation (ids,
terms, ports). Protobuf answers are decoded and their ids zeroed. Password prompts
read from a pipe, so stty's complaint on stderr is compared too.

Auth state lives in the servers: each test starts from no users, no roles and auth
off, and puts them back that way (also when it fails: ``_reset``).

`meshkit ctl` runs in processes forked from one that imported it once (``Forker``):
the same ``main(argv)`` with its own stdin, stdout, stderr, environment and exit
code, without paying the interpreter start and imports for each of ~350 steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import ServerProc
from tests.tools.ctl.conftest import Twins
from tests.tools.ctl.harness import Result, argv_for, decode, env_for, normalise, run

pytestmark = pytest.mark.etcd

ROOT = ("--user", "root:rootpw")


@dataclass(frozen=True)
class Step:
    args: tuple[str, ...]
    stdin: str | None = None
    env: tuple[tuple[str, str], ...] = ()


def S(*args: str, stdin: str | None = None, **env: str) -> Step:
    return Step(args, stdin, tuple(env.items()))


# ---------------------------------------------------------------- meshkit ctl, forked

_FORKER = r"""
import json, os, sys
from meshkit.cli.ctl import main
from meshkit.ctl.app import build_tree
build_tree()  # everything the command tree imports, imported once before forking
req, rep = os.fdopen(int(sys.argv[1]), "r"), os.fdopen(int(sys.argv[2]), "w")
for line in req:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            for fd, (path, flags) in enumerate([(job["stdin"], os.O_RDONLY),
                                                (job["stdout"], os.O_WRONLY | os.O_TRUNC),
                                                (job["stderr"], os.O_WRONLY | os.O_TRUNC)]):
                os.dup2(os.open(path, flags), fd)
            os.environ.clear()
            os.environ.update(job["env"])
            code = main(job["argv"])
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    rep.write(json.dumps(os.waitstatus_to_exitcode(status)) + "\n")
    rep.flush()
"""


class Forker:
    """``meshkit ctl ARGS`` as a fork of a process that imported meshkit once."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        req_r, self._req = os.pipe()
        self._rep, rep_w = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-c", _FORKER, str(req_r), str(rep_w)],
                                     pass_fds=(req_r, rep_w), stdin=subprocess.DEVNULL,
                                     env=env_for(), cwd=tmp)
        os.close(req_r)
        os.close(rep_w)
        self.req = os.fdopen(self._req, "w")
        self.rep = os.fdopen(self._rep, "r")

    def run(self, sp: ServerProc, args: list[str], stdin: str | None = None,
            env: dict[str, str] | None = None) -> Result:
        files = {}
        for name in ("stdin", "stdout", "stderr"):
            fd, path = tempfile.mkstemp(dir=self.tmp, prefix=name)
            os.close(fd)
            files[name] = path
        Path(files["stdin"]).write_bytes((stdin or "").encode())
        job = {**files, "env": env_for(env), "argv": [f"--endpoints={sp.endpoint}", *args]}
        self.req.write(json.dumps(job) + "\n")
        self.req.flush()
        line = self.rep.readline()
        assert line, f"the forker ended ({self.proc.poll()})"
        out = Path(files["stdout"]).read_bytes()
        err = Path(files["stderr"]).read_bytes()
        for path in files.values():
            os.unlink(path)
        return Result(int(json.loads(line)), decode(out), decode(err), out)

    def close(self) -> None:
        self.req.close()
        self.proc.wait(10)
        self.rep.close()


@pytest.fixture(scope="module")
def forker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forker]:
    f = Forker(tmp_path_factory.mktemp("forker"))
    try:
        yield f
    finally:
        f.close()


# ---------------------------------------------------------------- comparing


def _pb_class(args: tuple[str, ...]) -> type | None:
    from meshkit.api.etcdserverpb import rpc_pb2 as pb

    words = [a for a in args if not a.startswith("-")]
    names = {
        ("user", "add"): pb.AuthUserAddResponse, ("user", "delete"): pb.AuthUserDeleteResponse,
        ("user", "get"): pb.AuthUserGetResponse, ("user", "list"): pb.AuthUserListResponse,
        ("user", "passwd"): pb.AuthUserChangePasswordResponse,
        ("user", "grant-role"): pb.AuthUserGrantRoleResponse,
        ("user", "revoke-role"): pb.AuthUserRevokeRoleResponse,
        ("role", "add"): pb.AuthRoleAddResponse, ("role", "delete"): pb.AuthRoleDeleteResponse,
        ("role", "get"): pb.AuthRoleGetResponse, ("role", "list"): pb.AuthRoleListResponse,
        ("role", "grant-permission"): pb.AuthRoleGrantPermissionResponse,
        ("role", "revoke-permission"): pb.AuthRoleRevokePermissionResponse,
    }
    return names.get((words[0], words[1])) if len(words) >= 2 else None


def _norm(step: Step, r: Result, tw: Twins) -> Result:
    cls = _pb_class(step.args)
    if "protobuf" in step.args and r.code == 0 and cls is not None:
        msg = cls.FromString(r.raw_out)
        msg.header.cluster_id = msg.header.member_id = msg.header.raft_term = 0
        r = Result(r.code, repr(msg), r.err)
    return normalise(r, tw.ref, tw.ours)


# Authenticating is a bcrypt check, slow on a busy machine: etcdctl's 2 s dial deadline
# is not what these tests are about.
PATIENT = ["--dial-timeout=20s", "--command-timeout=30s"]


def run_steps(tw: Twins, fk: Forker, steps: list[Step], name: str) -> None:
    mismatches = []
    with ThreadPoolExecutor(2) as pool:
        for step in steps:
            env = dict(step.env) or None
            args = [*PATIENT, *step.args]
            want_f = pool.submit(run, "etcdctl", tw.ref, args, step.stdin, env, True, 60)
            got = fk.run(tw.ours, args, step.stdin, env)
            want = want_f.result()
            assert "Traceback" not in got.err, f"{name} {step}: {got.err}"
            ref, ours = _norm(step, want, tw), _norm(step, got, tw)
            if ref != ours:
                mismatches.append(f"{name} {step}\n  etcdctl: {ref}\n  meshkit: {ours}")
    assert not mismatches, f"{len(mismatches)} differences on {tw.kind}:\n" + "\n".join(mismatches)


def _lines(sp: ServerProc, *args: str) -> list[str]:
    r = run("etcdctl", sp, [*PATIENT, *args], timeout=60)
    return r.out.splitlines() if r.code == 0 else []


def _reset(tw: Twins) -> None:
    """Back to no users, no roles, auth off, on both servers (with the real etcdctl)."""
    for sp in (tw.ref, tw.ours):
        run("etcdctl", sp, [*PATIENT, "auth", "disable", *ROOT], timeout=60)
        for user in _lines(sp, "user", "list"):
            run("etcdctl", sp, ["user", "delete", user])
        for role in _lines(sp, "role", "list"):
            run("etcdctl", sp, ["role", "delete", role])
        run("etcdctl", sp, ["del", "--prefix", ""])


@pytest.fixture
def clean(twins: Twins) -> Iterator[Twins]:
    for sp in (twins.ref, twins.ours):
        assert _lines(sp, "user", "list") == [] and _lines(sp, "role", "list") == []
    try:
        yield twins
    finally:
        _reset(twins)


# ---------------------------------------------------------------- the steps

USERS: list[Step] = [
    S("auth", "enable"),  # no root user yet
    S("auth", "enable", "extra"),
    S("auth", "disable", "extra"),
    S("auth", "disable"),  # not enabled: fine
    S("auth", "disable", "-w", "json"),
    S("user", "add", "root:rootpw"),
    S("user", "add", "root:rootpw"),  # already exists
    S("user", "add", "root:x", "-w", "json"),
    S("user", "add", "alice:alicepw", "-w", "json"),
    S("user", "add", "bob", "--new-user-password=bobpw", "-w", "fields"),
    S("user", "add", "carol:pw", "-w", "table"),  # added, then the format is refused
    S("user", "add", "dan:pw", "-w", "protobuf"),
    S("user", "add", "gg:yy", "--new-user-password=xx"),  # the name keeps its colon
    S("user", "add", "nopw", "--no-password"),
    S("user", "add", "erin", "--interactive=false", stdin="  erinpw extra\n"),  # fmt.Scanf("%s")
    S("user", "add", "fay", stdin="fp\nfp\n"),  # asked twice (speakeasy, stty on a pipe)
    S("user", "add", "gus", stdin="a\nb\n"),
    S("user", "add", "hal", stdin=""),
    S("user", "add", "ivy", "--interactive=false", stdin="\nword\n"),  # newline first: ""
    S("user", "add", ":pw"),
    S("user", "add"),
    S("user", "add", "a", "b"),
    S("user", "add", "x", "--bogus"),
    S("user", "get", "root"),
    S("user", "get", "gg:yy"),
    S("user", "get", "alice", "-w", "json"),
    S("user", "get", "alice", "-w", "fields"),
    S("user", "get", "alice", "-w", "table"),
    S("user", "get", "alice", "-w", "protobuf"),
    S("user", "get", "nobody"),
    S("user", "get"),
    S("user", "list"),
    S("user", "list", "-w", "json"),
    S("user", "list", "-w", "fields"),
    S("user", "list", "-w", "protobuf"),
    S("user", "list", "extra"),
    S("user", "delete", "carol"),
    S("user", "delete", "carol"),
    S("user", "delete", "dan", "-w", "json"),
    S("user", "delete", "gg:yy", "-w", "fields"),
    S("user", "delete", "nopw", "-w", "table"),
    S("user", "delete", "ivy", "-w", "protobuf"),
    S("user", "delete"),
    S("user", "delete", "a", "b"),
    S("user", "list"),
    S("user"),
    S("user", "frob"),
    S("user", "add", "--help"),
    S("role"),
    S("auth"),
    S("auth", "status"),  # not in etcdctl 3.4: the group's help
]

ROLES: list[Step] = [
    S("user", "add", "alice:alicepw"),
    S("user", "add", "bob:bobpw"),
    S("role", "add", "r1"),
    S("role", "add", "r1"),
    S("role", "add", "r2", "-w", "json"),
    S("role", "add", "r3", "-w", "fields"),
    S("role", "add", "r4", "-w", "table"),
    S("role", "add", "r5", "-w", "protobuf"),
    S("role", "add", ""),
    S("role", "add"),
    S("role", "grant-permission", "r1", "readwrite", "/a/", "--prefix"),
    S("role", "grant-permission", "r1", "read", "/b", "/c"),
    S("role", "grant-permission", "r1", "write", "/z", "--from-key"),
    S("role", "grant-permission", "r1", "read", "k1"),
    S("role", "grant-permission", "r1", "READ", "k2", "-w", "json"),
    S("role", "grant-permission", "r1", "Readwrite", "k3", "-w", "fields"),
    S("role", "grant-permission", "r1", "read", "k4", "-w", "table"),
    S("role", "grant-permission", "r1", "write", "k5", "-w", "protobuf"),
    S("role", "grant-permission", "r1", "read", "", "--prefix"),
    S("role", "grant-permission", "r2", "read", "", "--from-key"),
    S("role", "grant-permission", "r2", "write", ""),
    S("role", "grant-permission", "r2", "read", "", "zz"),  # the end is ignored for ""
    S("role", "grant-permission", "r2", "read", "m1", "m2", "m3"),
    S("role", "grant-permission", "r2", "readwrite", "\udcff\udcff", "--prefix"),
    S("role", "grant-permission", "r2", "read", "\udcff\x01", "--prefix"),
    S("role", "grant-permission", "r1", "bogus", "k1"),
    S("role", "grant-permission", "r1", "bogus", "k1", "--prefix", "--from-key"),
    S("role", "grant-permission", "r1", "read"),
    S("role", "grant-permission", "r1", "read", "a", "--prefix", "--from-key"),
    S("role", "grant-permission", "r1", "read", "", "--prefix", "--from-key"),
    S("role", "grant-permission", "r1", "read", "a", "b", "--prefix"),
    S("role", "grant-permission", "r1", "read", "a", "b", "--from-key"),
    S("role", "grant-permission", "nope", "read", "k1"),
    S("role", "get", "r1"),
    S("role", "get", "r1", "-w", "json"),
    S("role", "get", "r1", "-w", "fields"),
    S("role", "get", "r1", "-w", "table"),
    S("role", "get", "r1", "-w", "protobuf"),
    S("role", "get", "r2"),
    S("role", "get", "r2", "-w", "fields"),
    S("role", "get", "r3"),
    S("role", "get", "nope"),
    S("role", "get"),
    S("role", "get", "a", "b"),
    S("role", "list"),
    S("role", "list", "-w", "json"),
    S("role", "list", "-w", "fields"),
    S("role", "list", "-w", "table"),
    S("role", "list", "-w", "protobuf"),
    S("role", "list", "extra"),
    S("user", "grant-role", "alice", "r1"),
    S("user", "grant-role", "alice", "r1"),
    S("user", "grant-role", "alice", "r2", "-w", "json"),
    S("user", "grant-role", "alice", "r3", "-w", "fields"),
    S("user", "grant-role", "alice", "r4", "-w", "table"),
    S("user", "grant-role", "alice", "r5", "-w", "protobuf"),
    S("user", "grant-role", "alice", "nope"),
    S("user", "grant-role", "nobody", "r1"),
    S("user", "grant-role", "alice"),
    S("user", "get", "alice"),
    S("user", "get", "alice", "--detail"),
    S("user", "get", "alice", "--detail", "-w", "json"),
    S("user", "get", "alice", "--detail", "-w", "fields"),
    S("user", "get", "alice", "--detail", "-w", "table"),
    S("user", "get", "bob", "--detail", "-w", "table"),  # no roles: only the name
    S("user", "get", "nobody", "--detail"),
    S("user", "revoke-role", "alice", "r5"),
    S("user", "revoke-role", "alice", "r5"),
    S("user", "revoke-role", "alice", "r4", "-w", "json"),
    S("user", "revoke-role", "alice", "r3", "-w", "fields"),
    S("user", "revoke-role", "alice", "r2", "-w", "protobuf"),
    S("user", "revoke-role", "alice", "r1", "-w", "table"),
    S("user", "revoke-role", "alice"),
    S("user", "revoke-role", "nobody", "r1"),
    S("role", "revoke-permission", "r1", "k1"),
    S("role", "revoke-permission", "r1", "k1"),
    S("role", "revoke-permission", "r1", "/a/", "--prefix"),
    S("role", "revoke-permission", "r1", "/z", "--from-key"),
    S("role", "revoke-permission", "r1", "/b", "/c", "-w", "json"),
    S("role", "revoke-permission", "r1", "", "--prefix", "-w", "fields"),
    S("role", "revoke-permission", "r1", "k2", "-w", "table"),
    S("role", "revoke-permission", "r1", "k3", "-w", "protobuf"),
    S("role", "revoke-permission", "r2", "", "--from-key"),
    S("role", "revoke-permission", "r2", "", "zz"),
    S("role", "revoke-permission", "r2", "m1", "m2"),
    S("role", "revoke-permission", "r2", "\udcff\udcff", "--prefix"),
    S("role", "revoke-permission", "r1"),
    S("role", "revoke-permission", "r1", "a", "b", "--prefix"),
    S("role", "revoke-permission", "nope", "k2"),
    S("role", "get", "r1"),
    S("role", "get", "r2"),
    S("user", "grant-role", "bob", "r3"),
    S("role", "delete", "r5"),
    S("role", "delete", "r5"),
    S("role", "delete", "r4", "-w", "json"),
    S("role", "delete", "r3", "-w", "fields"),
    S("role", "delete", "r2", "-w", "table"),
    S("role", "delete", "r1", "-w", "protobuf"),
    S("role", "delete"),
    S("user", "get", "bob"),  # a deleted role leaves its users
    S("role", "list"),
    S("role", "grant-permission", "--help"),
]

PASSWORDS_AND_AUTH: list[Step] = [
    S("user", "add", "root:rootpw"),
    S("user", "add", "alice:alicepw"),
    S("user", "add", "erin:erinpw"),
    S("role", "add", "r1"),
    S("role", "grant-permission", "r1", "readwrite", "/a/", "--prefix"),
    S("role", "grant-permission", "r1", "read", "/b"),
    S("user", "grant-role", "alice", "r1"),
    S("user", "passwd", "alice", "--interactive=false", stdin="newpw more\n"),
    S("user", "passwd", "alice", "--interactive=false", "-w", "json", stdin="newpw\n"),
    S("user", "passwd", "alice", "--interactive=false", "-w", "fields", stdin="newpw\n"),
    S("user", "passwd", "alice", "--interactive=false", "-w", "table", stdin="newpw\n"),
    S("user", "passwd", "alice", "--interactive=false", "-w", "protobuf", stdin="newpw\n"),
    S("user", "passwd", "alice", stdin="x\ny\n"),
    S("user", "passwd", "alice", stdin=""),
    S("user", "passwd", "alice", stdin=" pw2 \r\n pw2\n"),  # spaces and \r trimmed
    S("user", "passwd", "nobody", "--interactive=false", stdin="pw\n"),
    S("user", "passwd"),
    S("auth", "enable"),  # root has no root role: etcdctl adds it, grants it, enables
    S("auth", "enable", *ROOT),
    S("user", "list"),  # no user given: refused
    S("user", "list", *ROOT),
    S("role", "list", *ROOT),
    S("role", "get", "root", *ROOT),
    S("user", "get", "root", "--detail", *ROOT),
    S("user", "get", "alice", "--user", "alice:pw2"),  # a user may read itself
    S("role", "get", "r1", "--user", "alice:pw2"),  # and its roles
    S("user", "list", "--user", "alice:pw2"),
    S("role", "add", "rx", "--user", "alice:pw2"),
    S("auth", "disable", "--user", "alice:pw2"),
    S("user", "passwd", "erin", "--interactive=false", "--user", "alice:pw2", stdin="e2\n"),
    S("put", "/a/1", "v", "--user", "alice:pw2"),
    S("get", "/b", "--user", "alice:pw2"),
    S("user", "get", "erin", "--user", "erin:erinpw"),
    S("lock", "/a/l", "--user", "alice:pw2", "--", "echo", "locked"),  # under alice's prefix
    S("lock", "nope", "--user", "alice:pw2", "--", "echo", "locked"),
    S("lock", "nope", "--", "echo", "locked"),
    S("elect", "nope", "p", "--user", "alice:pw2"),
    S("user", "get", "root", "--user", "root", "--password", "rootpw"),
    S("user", "list", ETCDCTL_USER="root:rootpw"),
    S("user", "list", ETCDCTL_USER="root", ETCDCTL_PASSWORD="rootpw"),
    S("auth", "disable", *ROOT),
    S("user", "list"),
    S("user", "delete", "root"),
    S("user", "delete", "alice"),
    S("user", "delete", "erin"),
    S("role", "delete", "r1"),
    S("role", "delete", "root"),
    S("auth", "enable"),  # root gone again
]


def test_users(clean: Twins, forker: Forker) -> None:
    run_steps(clean, forker, USERS, "users")


def test_roles_and_permissions(clean: Twins, forker: Forker) -> None:
    run_steps(clean, forker, ROLES, "roles")


def test_passwords_and_auth(clean: Twins, forker: Forker) -> None:
    run_steps(clean, forker, PASSWORDS_AND_AUTH, "auth")


def test_forked_runs_are_plain_runs(twins: Twins, forker: Forker) -> None:
    """The forked `meshkit ctl` answers what a fresh `python -c ... main()` answers."""
    for args, stdin in ((["user", "add", "zed"], "p\nq\n"), (["role", "list", "-w", "json"], None),
                        (["user", "get", "nobody"], None)):
        assert forker.run(twins.ours, args, stdin) == run("meshkit", twins.ours, args, stdin), args


# ---------------------------------------------------------------- known differences

_GLOBAL_USER = [
    # etcdctl authenticates while dialing: a wrong password exits 2 (ExitBadConnection)
    pytest.param(True, S("user", "get", "root", "--user", "root:bad"), id="bad-password-exit-code"),
    # with stdin not a terminal, etcdctl still asks 'Password: ' on stdout and reads stdin
    pytest.param(True, S("user", "get", "root", "--user", "root", stdin="rootpw\n"), id="password-prompt"),
    # etcdctl 3.4 takes the whole --user as the name when --password is given
    pytest.param(True, S("user", "get", "root", "--user", "root:rootpw", "--password", "x"),
                 id="password-flag-keeps-colon"),
    # etcdctl 3.4 ignores --password without --user
    pytest.param(False, S("user", "list", "--password", "x"), id="password-without-user"),
    # clientv3 dials without a token when the server answers 'authentication is not enabled'
    pytest.param(False, S("user", "list", *ROOT), id="user-on-auth-disabled-server"),
]


@pytest.mark.parametrize(("enabled", "step"), _GLOBAL_USER)
def test_global_user_flag(clean: Twins, forker: Forker, enabled: bool, step: Step) -> None:
    if enabled:
        for sp in (clean.ref, clean.ours):
            assert run("etcdctl", sp, ["user", "add", "root:rootpw"]).code == 0
            assert run("etcdctl", sp, ["auth", "enable"]).code == 0
    run_steps(clean, forker, [step], "global --user")


# ---------------------------------------------------------------- on a terminal


def on_tty(tool: str, sp: ServerProc, args: list[str], answers: list[str], timeout: float = 30) -> Result:
    """Run on a pseudo-terminal, typing each answer once the tool turned echo off (as a
    person would, after the prompt); the transcript shows whether the typing was echoed."""
    import pty
    import select
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        argv = argv_for(tool, sp, [*PATIENT, *args])
        os.execvpe(argv[0], argv, env_for())
    out = b""
    todo = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child is gone
                    break
                if not chunk:
                    break
                out += chunk
            if todo and out.rstrip().endswith(b":") and not termios.tcgetattr(fd)[3] & termios.ECHO:
                os.write(fd, todo.pop(0).encode() + b"\n")
                time.sleep(0.1)
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return Result(os.waitstatus_to_exitcode(status), decode(out), "")


def test_password_prompts_on_a_terminal(clean: Twins) -> None:
    """speakeasy on a real terminal: the prompts, no echo of what is typed, the newline."""
    cases = [
        (["user", "add", "tty1"], ["secret", "secret"]),
        (["user", "passwd", "tty1"], ["s2", "s2"]),
        (["user", "add", "tty2"], ["a", "b"]),
        (["user", "add", "tty3"], [""]),
        (["user", "add", "root:rootpw"], []),
        (["auth", "enable"], []),
        (["user", "get", "tty1", "--user", "tty1"], ["s2"]),  # asked by the global --user
    ]
    mismatches = []
    for args, answers in cases:
        if not answers:
            for sp in (clean.ref, clean.ours):
                assert run("etcdctl", sp, args).code == 0
            continue
        got = {tool: normalise(on_tty(tool, sp, args, answers), clean.ref, clean.ours)
               for tool, sp in (("etcdctl", clean.ref), ("meshkit", clean.ours))}
        ref = got["etcdctl"].out
        assert "Password" in ref and not any(a and f"{a}\r" in ref for a in answers), ref  # no echo
        if got["etcdctl"] != got["meshkit"]:
            mismatches.append(f"{args}\n  etcdctl: {got['etcdctl']}\n  meshkit: {got['meshkit']}")
    assert not mismatches, "\n".join(mismatches)


def test_credentials_rule() -> None:
    """etcdctl 3.4's authCfgFromCmd, kept in cmd_auth.credentials for the global --user."""
    from meshkit.ctl.cmd_auth import credentials

    assert credentials("", "") == (None, None)
    assert credentials("", "pw") == (None, None)  # --password alone is ignored
    assert credentials("root:pw", "") == ("root", "pw")
    assert credentials("root:pw:x", "") == ("root", "pw:x")  # split at the first colon
    assert credentials("root:pw", "other") == ("root:pw", "other")  # --password: name kept whole
    assert credentials("root:", "") == (None, None)  # no password: clientv3 does not authenticate
