"""Run the official client's own system tests, unmodified, against ``spanpool serve``.

The tests come from the ``google-cloud-spanner`` sdist pinned in ``constraints.txt``; they run
the way the client's emulator CI runs them (``SPANNER_EMULATOR_HOST`` pointing at the server,
a created instance, no backup tests, the GoogleSQL dialect): first the sync suite
(``tests/system`` without ``_async``), then the asyncio suite (``tests/system/_async``).

    ./dev systest                    # both suites, then the counts
    ./dev systest --regular-sessions # as the client's "with regular sessions" emulator CI
    ./dev systest --suite sync --show-failures -- -k test_dbapi

Everything lives in ``.systest/`` (the sdist, its tests, a virtual environment with the test
dependencies of the ``systest`` extra); it is reused by later runs. The exit status is 1 when
fewer tests pass than ``--min-sync`` / ``--min-async`` ask for.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".systest"
PACKAGE = "google-cloud-spanner"


def _pinned_version() -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if name.lower() == PACKAGE:
            return version
    raise SystemExit(f"{PACKAGE} is not pinned in constraints.txt")


def _run(*command: str | Path, **kwargs: object) -> None:
    subprocess.run([str(c) for c in command], check=True, **kwargs)  # type: ignore[call-overload]


def _environment() -> Path:
    """``.systest/venv`` with spanpool and the ``systest`` extra; rebuilt when pins change."""
    venv = WORK / "venv"
    python = venv / "bin" / "python"
    pins = (ROOT / "pyproject.toml").read_bytes() + (ROOT / "constraints.txt").read_bytes()
    stamp = hashlib.sha256(pins).hexdigest()
    stamp_file = venv / ".stamp"
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return python
    print("setting up .systest/venv ...", file=sys.stderr, flush=True)
    _run(sys.executable, "-m", "venv", "--clear", venv)
    _run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    _run(
        python, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt",
        "-e", f"{ROOT}[systest]",
    )  # fmt: skip
    stamp_file.write_text(stamp)
    return python


def _tests(python: Path, version: str) -> Path:
    """The unpacked sdist of the pinned client (its ``tests/system`` is what runs)."""
    folder = WORK / f"google_cloud_spanner-{version}"
    if (folder / "tests" / "system").is_dir():
        return folder
    archive = WORK / f"google_cloud_spanner-{version}.tar.gz"
    if not archive.exists():
        _run(
            python, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
            "--dest", WORK, f"{PACKAGE}=={version}",
        )  # fmt: skip
    with tarfile.open(archive) as tar:
        tar.extractall(WORK, filter="data")
    return folder


class _Server:
    """``spanpool serve --strict`` in a child process, as the emulator would run."""

    def __init__(self, python: Path) -> None:
        self.process = subprocess.Popen(
            [str(python), "-m", "spanpool", "serve", "--strict"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.endpoint = self.process.stdout.readline().strip()
        if not self.endpoint:
            raise SystemExit(f"spanpool serve exited with status {self.process.wait()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """Test id -> (outcome, message) from a JUnit XML report."""
    found: dict[str, tuple[str, str]] = {}
    if not report.exists():
        return found
    for case in ET.parse(report).getroot().iter("testcase"):
        module = (case.get("classname") or "").rpartition("tests.system.")[2]
        test_id = f"{module}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, (child.get("message") or "").splitlines()[0:1]
                message = message[0] if message else ""
                break
        found[test_id] = (outcome, message)
    return found


REGULAR_SESSIONS = {
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS": "false",
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_PARTITIONED_OPS": "false",
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW": "false",
}


def _suite(
    python: Path, folder: Path, endpoint: str, name: str, extra: list[str], regular: bool
) -> dict[str, tuple[str, str]]:
    env = dict(
        os.environ,
        **(REGULAR_SESSIONS if regular else {}),
        SPANNER_EMULATOR_HOST=endpoint,
        GOOGLE_CLOUD_PROJECT="emulator-test-project",
        GOOGLE_CLOUD_TESTS_CREATE_SPANNER_INSTANCE="true",
        SKIP_BACKUP_TESTS="true",
        SPANNER_DATABASE_DIALECT="GOOGLE_STANDARD_SQL",
    )
    report = WORK / f"{name}.xml"
    report.unlink(missing_ok=True)
    if name == "sync":
        paths = ["tests/system", "--ignore=tests/system/_async"]
    else:
        paths = ["tests/system/_async"]
    command = [
        str(python), "-m", "pytest", "--quiet", "-o", "asyncio_mode=auto", "-p", "no:cacheprovider",
        f"--junitxml={report}", *paths, *extra,
    ]  # fmt: skip
    subprocess.run(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, check=False)
    return _outcomes(report)


def _summary(name: str, outcomes: dict[str, tuple[str, str]], seconds: float, show: bool) -> int:
    counts = Counter(outcome for outcome, _ in outcomes.values())
    ran = len(outcomes) - counts["skipped"]
    print(
        f"{name}: {counts['passed']}/{ran} passed of the tests that run "
        f"({len(outcomes)} collected, {counts['skipped']} skipped by the suite, "
        f"{counts['failure']} failed, {counts['error']} errors) in {seconds:.0f} s"
    )
    if show:
        for test_id, (outcome, message) in sorted(outcomes.items()):
            if outcome in ("failure", "error"):
                print(f"  {outcome:7} {test_id}: {message[:160]}")
    return counts["passed"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("both", "sync", "async"), default="both")
    parser.add_argument("--min-sync", type=int, default=0, metavar="N")
    parser.add_argument("--min-async", type=int, default=0, metavar="N")
    parser.add_argument("--show-failures", action="store_true")
    parser.add_argument(
        "--regular-sessions",
        action="store_true",
        help="turn the client's multiplexed sessions off, as its second emulator CI does",
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)

    WORK.mkdir(exist_ok=True)
    python = _environment()
    folder = _tests(python, _pinned_version())
    server = _Server(python)
    status = 0
    try:
        for name, minimum in (("sync", args.min_sync), ("async", args.min_async)):
            if args.suite not in ("both", name):
                continue
            started = time.monotonic()
            outcomes = _suite(
                python, folder, server.endpoint, name, args.pytest_args, args.regular_sessions
            )
            passed = _summary(name, outcomes, time.monotonic() - started, args.show_failures)
            if passed < minimum:
                print(f"{name}: fewer than {minimum} passed")
                status = 1
    finally:
        server.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
