"""``fleet`` under faults: a second run on one folder, signals, SIGKILL of the driver, an
unreachable cluster, bad options; and what its local Ray exposes (loopback only). Runs of the
command go through a subprocess with its own local Ray (two workers at most, the tiny random CLIP).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ros_mm_perception.cli import main
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.imaging.image_io import write_rgb
from offline_helpers import rendered_images, tiny_clip_options

pytest.importorskip("ray")

RUN = "import sys; from ros_mm_perception.cli import main; sys.exit(main())"


def image_folder(path, n, seed=0):
    """An image folder of ``n`` frames (a few rendered ones, repeated)."""
    path.mkdir(parents=True)
    frames = [write_rgb(path / f"seed_{i}.png", image).read_bytes()
              for i, image in enumerate(rendered_images(3, seed))]
    for i in range(n):
        (path / f"frame_{i:04d}.png").write_bytes(frames[i % 3])
    for i in range(3):
        (path / f"seed_{i}.png").unlink()
    return path


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """A short image folder and a long one (long enough to stop the run in its middle)."""
    folder = tmp_path_factory.mktemp("recordings")
    return image_folder(folder / "short", 3), image_folder(folder / "long", 400, seed=1)


@pytest.fixture(scope="module")
def options(tiny_clip_dir):
    return [*tiny_clip_options(tiny_clip_dir, "red circle", "red circle,blue square"),
            "--threads", "1"]


def start(argv, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", RUN, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def wait_for(predicate, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def children(pid):
    """PIDs of the processes whose parent is ``pid``."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as f:
                if name.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(name))
        except (OSError, ValueError):
            continue
    return found


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ray_token(driver):
    """The token that marks the local Ray processes of a fleet run (from its watchdog's command
    line)."""
    for pid in children(driver):
        args = cmdline(pid)
        if b"ros_mm_perception.fleet.watchdog" in args:
            return args[args.index(b"ros_mm_perception.fleet.watchdog") + 1].decode()
    return None


def test_sigkill_of_the_driver_leaves_no_ray_process(recordings, options, tmp_path):
    from ros_mm_perception.fleet.watchdog import marked_pids

    _, long = recordings
    out = tmp_path / "out"
    driver = start(["fleet", str(long), "--out", str(out), "--workers", "2", *options])
    try:
        assert wait_for(lambda: ray_token(driver.pid) is not None)
        token = ray_token(driver.pid)
        # the workers are up: every Ray process of the run exists by now
        assert wait_for(lambda: any(b"ray::LabelWorker" in b"".join(cmdline(p))
                                    for p in marked_pids(token)))
        ray_pids = marked_pids(token)
        names = {b"".join(cmdline(p)[:1]) for p in ray_pids}
        assert len(ray_pids) >= 4 and any(b"raylet" in n for n in names), names
        watchdog = [p for p in children(driver.pid)
                    if b"ros_mm_perception.fleet.watchdog" in cmdline(p)]
    finally:
        driver.kill()
        driver.communicate()
    assert wait_for(lambda: not any(alive(p) for p in ray_pids + watchdog), timeout=120), \
        [(p, cmdline(p)[:1]) for p in ray_pids if alive(p)]
    assert marked_pids(token) == []


def test_sigterm_keeps_finished_recordings_and_exits_143(recordings, options, tmp_path):
    short, long = recordings
    out = tmp_path / "out"
    driver = start(["fleet", str(short), str(long), "--out", str(out), "--workers", "1", *options])
    try:
        assert wait_for(lambda: (out / "short" / "manifest.json").exists())
        token = ray_token(driver.pid)
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 143, err
    assert err.strip().splitlines()[-1] == "ros-mm-perception fleet: stopped by SIGTERM"
    assert "Traceback" not in err
    kept = sorted(p.name for p in (out / "short").iterdir())
    assert kept == ["manifest.json", "perception.mcap"]
    assert sorted(p.name for p in out.iterdir()) == ["short"]  # no half recording, staging or lock
    from ros_mm_perception.fleet.watchdog import marked_pids

    assert token and wait_for(lambda: marked_pids(token) == [], timeout=60)


def test_local_ray_listens_on_loopback_and_gives_back_signals():
    from ros_mm_perception.fleet.ray_session import ray_session
    from ros_mm_perception.fleet.watchdog import marked_pids

    def mine(*_):
        pass

    previous = {sig: signal.signal(sig, mine)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with ray_session() as ray:
            assert all(signal.getsignal(sig) is mine for sig in previous)
            assert ray.cluster_resources().get("CPU", 0) >= 1
            token = ray_token(os.getpid())
            pids = [os.getpid(), *marked_pids(token)]
            listening = listening_addresses(pids)
            assert listening and all(ip in ("127.0.0.1", "::1") for ip, _ in listening), listening
            heads = [cmdline(p) for p in pids
                     if any(a.endswith(b"dashboard/dashboard.py") for a in cmdline(p))]
            # no web UI
            assert all(b"--minimal" in args and b"--disable-frontend" in args for args in heads)
        assert all(signal.getsignal(sig) is mine for sig in previous)
        assert wait_for(lambda: marked_pids(token) == [], timeout=60)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def listening_addresses(pids):
    """(ip, port) of every TCP socket the processes ``pids`` listen on."""
    import ipaddress

    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
            ip = ipaddress.ip_address(raw)
            if ip.version == 6 and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            found.append((str(ip), int(hex_port, 16)))
    return found


def test_unreachable_cluster_is_one_line_within_the_timeout(recordings, options, tmp_path, capsys):
    short, _ = recordings
    assert main(["fleet", str(short), "--out", str(tmp_path / "out"), "--address", "127.0.0.1:1",
                 "--connect-timeout", "3", *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot join Ray at 127.0.0.1:1" in err and "3 s" in err


def test_a_second_run_on_the_same_folder_is_refused(recordings, options, tmp_path, capsys):
    from ros_mm_perception.fleet.lock import RunLock

    short, _ = recordings
    out = tmp_path / "out"
    out.mkdir()
    with RunLock(out):
        assert main(["fleet", str(short), "--out", str(out), *options]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "another fleet run" in err and f"pid {os.getpid()}" in err
        # nothing of the first run touched
        assert sorted(p.name for p in out.iterdir()) == [".fleet-lock"]


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path):
    from ros_mm_perception.fleet.lock import LOCK_NAME, RunLock

    stale = {"pid": 999999, "host": "robot", "started": "then"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    notes = []
    with RunLock(tmp_path, notes.append):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(UserError, match="another fleet run"):
            RunLock(tmp_path).acquire()
    assert len(notes) == 1 and "taking over" in notes[0] and "pid 999999 on robot" in notes[0]
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path, notes.append):  # released: taken again, no note
        pass
    assert len(notes) == 1


def test_staging_is_per_run(tmp_path):
    from ros_mm_perception.fleet.staging import Staging

    first, second = Staging(tmp_path), Staging(tmp_path)
    assert first.root != second.root


@pytest.mark.parametrize("option, value, message", [
    ("--fps", "nan", "--fps must be a positive number"),
    ("--fps", "-1", "--fps must be a positive number"),
    ("--connect-timeout", "nan", "--connect-timeout must be"),
    ("--workers", "0", "--workers must be at least 1")])
def test_options_are_checked_once_before_ray(recordings, options, tmp_path, capsys, option, value,
                                             message):
    import ray

    short, _ = recordings
    out = tmp_path / "out"
    assert main(["fleet", str(short), "--out", str(out), option, value, *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not out.exists() and not ray.is_initialized()


def test_output_names_never_take_the_summary_name(tmp_path):
    from ros_mm_perception.fleet.engine import SUMMARY_NAME
    from ros_mm_perception.fleet.inputs import output_names

    paths = [tmp_path / "fleet.json.mcap", tmp_path / "FLEET.JSON.db3", tmp_path / "a.mcap"]
    for path in paths:
        path.write_bytes(b"")
    names = output_names(paths, reserved=(SUMMARY_NAME,))
    assert names[0].startswith("fleet.json-") and names[1].startswith("FLEET.JSON-")
    assert names[2] == "a"
