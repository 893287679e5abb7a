"""The test harness itself: the leak guard in conftest.py fails each kind of leak and
names it, passes clean tests, and the wait helpers fail with what they waited for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from waiting import poll_until, wait_for, wait_for_async

TESTS = Path(__file__).resolve().parent

LEAKY = '''
import asyncio
import logging
import threading
import time

log = logging.getLogger("drupelet.harness")


def test_clean() -> None:
    pass


async def test_clean_async() -> None:
    await asyncio.sleep(0)


def test_thread_ending_within_the_grace() -> None:
    threading.Thread(target=time.sleep, args=(0.2,), name="short-lived").start()


async def test_task_ending_within_the_grace() -> None:
    asyncio.get_running_loop().create_task(asyncio.sleep(0.05), name="nearly-done")


def test_thread() -> None:
    stop = threading.Event()
    threading.Thread(target=stop.wait, args=(30,), name="leaky-thread").start()
    LEFT.append(stop)


def test_daemon_thread() -> None:
    stop = threading.Event()
    threading.Thread(target=stop.wait, args=(30,), name="actor-leaky-1", daemon=True).start()
    LEFT.append(stop)


async def test_task() -> None:
    async def forgotten() -> None:
        await asyncio.sleep(30)

    asyncio.get_running_loop().create_task(forgotten(), name="forgotten-task")


async def test_timer() -> None:
    def never_cancelled() -> None:
        pass

    asyncio.get_running_loop().call_later(30, never_cancelled)


def test_bad_log_format_in_a_thread() -> None:
    raised: list[TypeError] = []

    def work() -> None:
        try:
            log.debug("two %s %s", "only-one")
        except TypeError as exc:  # pytest's own capture handler raises in the caller's thread
            raised.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_zz_release_the_threads() -> None:
    for stop in LEFT:
        stop.set()


LEFT: list[threading.Event] = []
'''


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Run LEAKY under this suite's conftest in a pytest of its own: test name -> "passed",
    or the message of its error (the guard fails a test at teardown)."""
    where = tmp_path_factory.mktemp("leaky")
    (where / "test_leaky.py").write_text(LEAKY, encoding="utf-8")
    report = where / "report.xml"
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
                           "-p", "no:randomly", "-o", "asyncio_mode=auto",
                           "-o", "asyncio_default_fixture_loop_scope=function",
                           f"--junitxml={report}", "-q", "test_leaky.py"],
                          cwd=where, env=env, capture_output=True, text=True, timeout=120)
    assert report.is_file(), proc.stdout + proc.stderr
    found: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        problem = case.find("error")
        if problem is None:
            problem = case.find("failure")
        found[case.attrib["name"]] = "passed" if problem is None else problem.attrib.get("message", "")
    return found


def test_clean_tests_pass(outcomes: dict[str, str]) -> None:
    for name in ("test_clean", "test_clean_async", "test_thread_ending_within_the_grace",
                 "test_task_ending_within_the_grace", "test_zz_release_the_threads"):
        assert outcomes[name] == "passed", (name, outcomes[name])


@pytest.mark.parametrize("test,needles", [
    ("test_thread", ["threads still running", "thread 'leaky-thread' running Event.wait"]),
    ("test_daemon_thread", ["daemon thread 'actor-leaky-1'"]),
    ("test_task", ["did not clean up its event loop", "task 'forgotten-task' running test_task.<locals>.forgotten"]),
    ("test_timer", ["timer test_timer.<locals>.never_cancelled due in"]),
    ("test_bad_log_format_in_a_thread", ["log calls whose arguments do not fit the format",
                                         "drupelet.harness", "'two %s %s' % ('only-one',)"]),
])
def test_each_leak_fails_its_test_and_is_named(outcomes: dict[str, str], test: str, needles: list[str]) -> None:
    message = outcomes[test]
    assert message != "passed"
    for needle in needles:
        assert needle in message, (needle, message)


def test_wait_for_fails_with_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="timed out after 0.1 s waiting for the sky to fall"):
        wait_for(lambda: False, 0.1, "the sky to fall")
    assert time.monotonic() - started < 2.0
    assert poll_until(lambda: True, 0.0)


async def test_wait_for_async_takes_plain_and_async_checks() -> None:
    calls = 0

    def third_time() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    async def ready() -> bool:
        return True

    await wait_for_async(third_time, 5.0, "the third call")
    await wait_for_async(ready, 5.0, "an async check")
    with pytest.raises(pytest.fail.Exception, match="timed out after 0.05 s waiting for nothing"):
        await wait_for_async(lambda: False, 0.05, "nothing")
