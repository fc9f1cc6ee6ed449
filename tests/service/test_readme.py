"""README.md's examples run as a newcomer runs them, against a fresh `nads serve` (issue 27:
the README's one-line catalog example answered 404 on a fresh install).

The convention (stated in the README's Development section): a fenced block marked `sh` or
`python` is an example and runs; `text` is output and never runs; an example that cannot run
here (a GPU, hours, the suite itself) has `<!-- not run: <reason> -->` on the line above it.
Examples run in README order in a directory that stands for the repository root (`.venv`, a
link to this interpreter's environment, and `var/`, the service's data), with `127.0.0.1:8000`
replaced by the test service's address. Shell blocks share one bash session
(`set -eo pipefail`), so a failing command fails its block; each Python block runs in a fresh
interpreter with the environment the shell blocks exported.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT, clean_env, nads_serve

README = ROOT / "README.md"
FENCE = re.compile(r"^```(?P<language>[^`\s]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>.*?)\s*-->")
RUN = ("sh", "python")
SHOWN = ("text",)
README_ADDRESS = "127.0.0.1:8000"
EXAMPLE_TIMEOUT_S = 300.0  # one example: a job of a minute on two quiet cores, with room


@dataclass(frozen=True)
class Example:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    not_run: str | None  # the marker's reason, None when it runs


def examples(text: str) -> list[Example]:
    """Every fenced block of `text`, with the `not run` marker of the line above it."""
    found = []
    for m in FENCE.finditer(text):
        above = text[:m.start()].rstrip("\n").rpartition("\n")[2]
        marker = NOT_RUN.fullmatch(above.strip())
        found.append(Example(m["language"], m["code"], text.count("\n", 0, m.start()) + 1,
                             marker["reason"] if marker else None))
    return found


def readme_examples() -> list[Example]:
    return examples(README.read_text())


# ---------------------------------------------------------------------------------------------
# The convention, checked without running anything


def test_every_block_is_an_example_or_output_and_every_skip_says_why() -> None:
    text = README.read_text()
    blocks = readme_examples()
    unknown = [(b.line, b.language) for b in blocks if b.language not in RUN + SHOWN]
    assert not unknown, f"fences must say sh, python (run) or text (not run): {unknown}"
    markers = [(n, m["reason"]) for n, line in enumerate(text.splitlines(), 1)
               if (m := NOT_RUN.fullmatch(line.strip()))]
    skipped = {b.line - 1: b.not_run for b in blocks if b.not_run is not None}
    stray = [line for line, _ in markers if line not in skipped]
    assert not stray, f"`not run` markers not directly above an example, lines {stray}"
    vague = [(line, reason) for line, reason in markers if len(reason.split()) < 4]
    assert not vague, f"a `not run` marker must say why it cannot run: {vague}"
    assert all(b.language in RUN for b in blocks if b.not_run is not None)
    assert sum(b.language in RUN and b.not_run is None for b in blocks) >= 15


def test_the_two_commands_come_first() -> None:
    """`bash scripts/serve.sh` and `bash scripts/test.sh` are the project's two commands: the
    README's first two code blocks, nothing else in them."""
    first, second = readme_examples()[:2]
    assert first.code.strip() == "bash scripts/serve.sh"
    assert second.code.strip() == "bash scripts/test.sh"
    assert README.read_text().index(first.code) < 2000


def test_the_examples_parse() -> None:
    """Every example, run or not, is valid bash / Python (the run below checks behaviour)."""
    for e in readme_examples():
        if e.language == "python":
            ast.parse(e.code, f"README.md:{e.line}")
        elif e.language == "sh":
            out = subprocess.run(["bash", "-n"], input=e.code, text=True, capture_output=True)
            assert out.returncode == 0, f"README.md:{e.line}: {out.stderr}"


def test_the_layout_names_what_the_tree_holds() -> None:
    """The layout block names existing paths (relative to the root or to its row's folder),
    and every Python package at the root."""
    text = README.read_text()
    start = text.index("### Layout and design")
    layout = next(b for b in examples(text[start:]))
    missing = []
    for row in layout.code.splitlines():
        folder = row.split()[0] if row.split() else ""
        for name in re.findall(r"(?<![\w`])([\w.-]*[\w-](?:/[\w.-]*)+|[\w-]+\.(?:py|md))\b/?",
                               row):
            if not (ROOT / name).exists() and not (ROOT / folder / name).exists():
                missing.append(name)
    assert not missing, f"README's layout names what the tree does not hold: {missing}"
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py")
                      if p.parent.name != "tests")
    unnamed = [p for p in packages if f"{p}/" not in layout.code]
    assert not unnamed, f"packages missing from README's layout: {unnamed}"


# ---------------------------------------------------------------------------------------------
# The run


class ExampleFailed(AssertionError):
    pass


class Shell:
    """One bash session for every `sh` example, fed through its stdin (each example is
    `source`d with stdin from /dev/null, so no command reads the next example)."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.cwd = cwd
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
                                     env=env, text=True, start_new_session=True)
        self._send("set -eo pipefail")

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def run(self, script: Path, timeout: float) -> dict[str, str]:
        """Runs `script`; returns the environment it leaves exported."""
        env_file = script.with_suffix(".env")
        self._send(f"source {shlex.quote(str(script))} < /dev/null\n"
                   f"env -0 > {shlex.quote(str(env_file))}.part && "
                   f"mv {shlex.quote(str(env_file))}.part {shlex.quote(str(env_file))}")
        deadline = time.monotonic() + timeout
        while not env_file.exists():
            if self.proc.poll() is not None:
                raise ExampleFailed(f"the shell exited with status {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise ExampleFailed(f"still running after {timeout:.0f} s")
            time.sleep(0.2)
        return dict(item.split("=", 1) for item in env_file.read_text().split("\0")
                    if "=" in item)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def _tail(path: Path, start: int = 0, chars: int = 4000) -> str:
    if not path.exists():
        return ""
    text = path.read_text(errors="replace")[start:]
    return text[-chars:]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a bound against a hang: ~4 min on 2 quiet cores
def test_the_readme_examples_run_against_a_fresh_nads_serve(tmp_path: Path) -> None:
    blocks = readme_examples()
    assert shutil.which("curl"), "the README's examples use curl: install it (apt-get install curl)"
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    env = clean_env()
    for b in blocks:
        if b.language in RUN and b.not_run:
            print(f"README.md line {b.line}: not run: {b.not_run}")
    with nads_serve(tmp_path, env) as serve:
        address = serve.url.removeprefix("http://")
        shell = Shell(tmp_path, env, tmp_path / "shell.log")
        timings = []
        try:
            for n, e in enumerate(b for b in blocks if b.language in RUN and b.not_run is None):
                code = e.code.replace(README_ADDRESS, address)
                script = tmp_path / f"example-{n:02d}.{'py' if e.language == 'python' else 'sh'}"
                script.write_text(code)
                started, log_start = time.monotonic(), shell.log_path.stat().st_size
                output = ""
                try:
                    if e.language == "sh":
                        env = shell.run(script, EXAMPLE_TIMEOUT_S)
                        output = _tail(shell.log_path, log_start)
                    else:
                        out = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                                             env=env, capture_output=True, text=True,
                                             timeout=EXAMPLE_TIMEOUT_S)
                        output = (out.stdout + out.stderr)[-4000:]
                        if out.returncode != 0:
                            raise ExampleFailed(f"python exited with {out.returncode}")
                except (ExampleFailed, subprocess.TimeoutExpired) as exc:
                    output = output or _tail(shell.log_path, log_start)
                    raise ExampleFailed(
                        f"README.md line {e.line} ({e.language}) failed: {exc}\n--- example\n"
                        f"{e.code}--- output\n{output}\n--- worker log\n"
                        f"{_tail(tmp_path / 'var' / 'worker.log', chars=3000)}") from None
                timings.append((e.line, time.monotonic() - started))
                print(f"README.md line {e.line} ({e.language}): ok in {timings[-1][1]:.1f} s\n"
                      f"{output}")
        finally:
            shell.close()
    print("seconds per example:", ", ".join(f"line {line}: {s:.0f}" for line, s in timings))
