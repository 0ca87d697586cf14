"""Batches on a real loopback Dask cluster and in a moto S3 bucket: the verdicts and WAV bytes of local workers, no input lost to a dead worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURES, write_av

from pipeline.cli import main
from pipeline.dask import DaskExecutor, plan_bag, process_bag, process_delayed
from pipeline.errors import ConfigError
from pipeline.plan import plan

READER = FIXTURES / "speech_librivox_16k.wav"
BUCKET = "voices"
START_TIMEOUT_S = 120.0


def _folder(tmp_path: Path) -> Path:
    """Four real takes (WAV, MP3, stereo WAV at 44.1 kHz, in a subfolder too) and one refused file."""
    src = tmp_path / "in"
    if src.exists():
        return src
    (src / "day1").mkdir(parents=True)
    x, sr = sf.read(READER, dtype="float32")
    sf.write(src / "take0.wav", x, sr, subtype="PCM_16")
    sf.write(src / "day1" / "take1.wav", 0.7 * x, sr, subtype="PCM_16")
    write_av(src / "take2.mp3", 0.8 * x, sr, "mp3", "libmp3lame")
    stereo, _ = sf.read(FIXTURES / "speech_wikipedia_stereo_44k.wav", dtype="float32")
    sf.write(src / "day1" / "wiki.wav", np.tile(stereo, (3, 1)), 44100, subtype="PCM_16")
    sf.write(src / "silence.wav", np.zeros(sr * 12, np.float32), sr, subtype="PCM_16")
    return src


def _one(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    shutil.copy(READER, tmp_path / "in" / "take.wav")
    return tmp_path / "in"


def _lines(report: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in report.read_text().splitlines()]


def _verdicts(report: Path, root: str) -> dict[str, dict[str, Any]]:
    """Each input's report line by its path under ``root``, without what differs from run to run
    (the run id) or by where the outputs went."""
    out = {}
    for d in _lines(report):
        d.pop("run_id")
        d["output"] = d["output"] and d["output"].rsplit("/", 1)[-1]
        out[d["input"][len(root):].lstrip("/")] = d
    return out


def _wavs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.wav"))}


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The folder, and its outputs and report made by local workers (one process): (in, out, report)."""
    tmp = tmp_path_factory.mktemp("ref")
    src, out, report = _folder(tmp), tmp / "out", tmp / "r.jsonl"
    assert main(["run", str(src), "--out", str(out), "--report", str(report), "-q", "--jobs", "1"]) == 1
    assert len(_wavs(out)) == 4  # the silent file is refused
    return src, out, report


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 and the environment that points boto at it (dummy keys, no
    other address: no metadata service, no config files), set in this process too."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "VOICEPREP_CACHE": str(tmp_path_factory.mktemp("cache")),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        import fsspec

        fsspec.filesystem("s3").mkdir(BUCKET)
        yield env
    server.stop()


@pytest.fixture(scope="module")
def cluster(s3_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dask scheduler` and `dask worker --nworkers 2 --nthreads 1` on 127.0.0.1 (free ports), each
    in a session of its own (so Ctrl-C sent to a batch does not reach them), killed at the end.
    A task is given up after killing two workers (allowed-failures 1) to keep the test short; the
    workers can import this module (for the functions a test maps)."""
    folder = tmp_path_factory.mktemp("dask")
    info = folder / "scheduler.json"
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, **s3_env, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1", "PYTHONPATH": path}
    dask_cli = [sys.executable, "-m", "dask"]
    # the HTTP server a scheduler or worker runs even without a dashboard: 127.0.0.1, a free port
    common = ["--scheduler-file", str(info), "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    procs = [subprocess.Popen([*dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", *common],
                              env=env, cwd=folder, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        procs.append(subprocess.Popen(
            [*dask_cli, "worker", "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1", *common],
            env=env, cwd=folder, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = json.loads(info.read_text())["address"]
        _wait_for_workers(address, 2)
        yield address
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGKILL)  # the process and the workers it started
            proc.wait()


def _wait_for_workers(address: str, n: int) -> dict[str, int]:
    """The worker processes' pids once ``n`` workers are connected."""
    from distributed import Client

    with Client(address, timeout=START_TIMEOUT_S, set_as_default=False) as client:
        client.wait_for_workers(n, timeout=START_TIMEOUT_S)
        return client.run(os.getpid)  # type: ignore[no-any-return]


def test_a_dask_cluster_gives_the_verdicts_and_wav_bytes_of_local_workers(
        cluster: str, ref: tuple[Path, Path, Path], tmp_path: Path):
    src, ref_out, ref_report = ref
    assert main(["run", str(src), "--out", str(tmp_path / "dask"), "--report", str(tmp_path / "dask.jsonl"), "-q",
                 "--executor", "dask", "--scheduler", cluster]) == 1
    local, remote = _verdicts(ref_report, str(src)), _verdicts(tmp_path / "dask.jsonl", str(src))
    assert len(remote) == 5 and remote == local
    assert [d["status"] for _, d in sorted(remote.items())] == ["ok", "ok", "rejected", "ok", "ok"]
    assert _wavs(tmp_path / "dask") == _wavs(ref_out)
    # a rerun on the cluster hands it nothing: every input unchanged
    assert main(["run", str(src), "--out", str(tmp_path / "dask"), "--report", str(tmp_path / "again.jsonl"), "-q",
                 "--executor", "dask", "--scheduler", cluster]) == 1
    assert all(d["skipped"] for d in _lines(tmp_path / "again.jsonl"))


def test_s3_inputs_and_outputs_with_the_dask_and_the_local_executor(
        cluster: str, ref: tuple[Path, Path, Path], tmp_path: Path):
    import fsspec

    fs = fsspec.filesystem("s3")
    src, ref_out, _ = ref
    names = ["take0.wav", "silence.wav", "day1/take1.wav"]
    for name in names:
        fs.put_file(str(src / name), f"{BUCKET}/in/{name}")
    expected = {k: v for k, v in _wavs(ref_out).items() if k in ("take0.wav", "day1/take1.wav")}
    base = f"s3://{BUCKET}"
    for name, how in (("dask", ["--executor", "dask", "--scheduler", cluster]), ("local", ["--jobs", "2"])):
        report = tmp_path / f"{name}.jsonl"
        assert main(["run", f"{base}/in/", "--out", f"{base}/out-{name}/", "--report", str(report), "-q", *how]) == 1
        lines = _lines(report)
        assert sorted(d["input"] for d in lines) == sorted(f"{base}/in/{n}" for n in names)
        for d in lines:
            assert d["output"] is None or d["output"].startswith(f"{base}/out-{name}/")
        got = {k[len(f"{BUCKET}/out-{name}/"):]: fs.cat_file(k) for k in fs.find(f"{BUCKET}/out-{name}/")
               if k.endswith(".wav")}
        assert got == expected
        assert fs.exists(f"{BUCKET}/out-{name}/.voiceprep/manifest.sqlite")
        assert not list(tmp_path.rglob("*.part"))
        # the manifest came back from the bucket: nothing is done again, every verdict kept
        assert main(["run", f"{base}/in/", "--out", f"{base}/out-{name}/", "--report", str(report), "-q", *how]) == 1
        again = _lines(report)
        assert len(again) == 3 and all(d["skipped"] for d in again)
        assert {d["input"]: d["status"] for d in again} == {d["input"]: d["status"] for d in lines}
    fs.pipe_file(f"{BUCKET}/in/take0.wav", (src / "silence.wav").read_bytes())  # changed content, same name
    report = tmp_path / "changed.jsonl"
    main(["run", f"{base}/in/", "--out", f"{base}/out-local/", "--report", str(report), "-q", "--jobs", "1"])
    done = {d["input"].rsplit("/", 1)[-1]: d for d in _lines(report) if not d["skipped"]}
    assert list(done) == ["take0.wav"] and done["take0.wav"]["code"] == "Audio.AudioSilentError"


def test_an_output_folder_in_the_bucket_may_not_replace_the_inputs(s3_env: dict[str, str], capsys):
    import fsspec

    fsspec.filesystem("s3").pipe_file(f"{BUCKET}/same/a.wav", READER.read_bytes())
    capsys.readouterr()
    assert main(["run", f"s3://{BUCKET}/same/", "--out", f"s3://{BUCKET}//same"]) == 2
    assert "input" in capsys.readouterr().err
    assert fsspec.filesystem("s3").cat_file(f"{BUCKET}/same/a.wav") == READER.read_bytes()


def _die_on_three(k: int) -> int:
    if k == 3:
        os._exit(9)
    return k * 10


def test_a_file_that_kills_every_worker_it_reaches_is_that_files_error_and_submission_is_bounded(cluster: str):
    from distributed import Client

    pulled, returned, most = [0], [0], [0]

    def tasks() -> Iterator[tuple[int, int]]:
        for k in range(12):
            pulled[0] += 1
            most[0] = max(most[0], pulled[0] - returned[0])
            yield k, k

    try:
        with Client(cluster, set_as_default=False) as client:
            executor = DaskExecutor(client=client)
            results = {}
            for key, value in executor.map(_die_on_three, tasks(), lambda k, t, why: f"crashed: {why}"):
                returned[0] += 1
                results[key] = value
    finally:
        _wait_for_workers(cluster, 2)  # the nanny replaces what the file killed
    assert sorted(results) == list(range(12))  # one result each
    assert results[3].startswith("crashed") and "died" in results[3]
    for k, v in results.items():  # a task the dying workers held may share their fate (it never runs twice)
        assert k == 3 or v == k * 10 or "died" in str(v), (k, v)
    assert sum(v == k * 10 for k, v in results.items()) >= 9
    assert most[0] <= 2  # never more tasks handed over than the two workers have threads


def test_killing_a_worker_mid_batch_loses_no_input(cluster: str, tmp_path: Path):
    src, out, rep = tmp_path / "many", tmp_path / "out", tmp_path / "r.jsonl"
    src.mkdir()
    for k in range(5):
        shutil.copy(READER, src / f"t{k:02d}.wav")
    pids = _wait_for_workers(cluster, 2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(src), "--out", str(out), "--report", str(rep), "-q",
         "--executor", "dask", "--scheduler", cluster],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        for _ in range(1200):
            if (rep.exists() and rep.read_text().count("\n") >= 1) or proc.poll() is not None:
                break
            time.sleep(0.05)
        os.kill(sorted(pids.values())[0], signal.SIGKILL)  # a worker process, busy on some file
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode in (0, 1), err
    lines = _lines(rep)
    assert sorted(Path(d["input"]).name for d in lines) == [f"t{k:02d}.wav" for k in range(5)]
    for d in lines:  # retried elsewhere, or that file's error
        assert d["status"] == "ok" or d["code"] == "voiceprep.UnexpectedError", d
        if d["status"] == "ok":
            y, sr = sf.read(d["output"])
            assert 10.0 <= len(y) / sr <= 20.0
    assert not list(out.rglob("*.part"))
    _wait_for_workers(cluster, 2)


def test_a_scheduler_that_goes_away_costs_the_files_not_done_an_error_each_not_the_batch(tmp_path: Path):
    import threading

    from pipeline import load_config
    from pipeline.runner import run_batch

    info = tmp_path / "scheduler.json"
    proc = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--scheduler-file", str(info), "--no-dashboard", "--dashboard-address", "127.0.0.1:0"],
                            cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(int(START_TIMEOUT_S * 10)):
            if info.exists():
                break
            time.sleep(0.1)
        src = _one(tmp_path)
        for k in range(5):
            shutil.copy(READER, src / f"more{k}.wav")
        # no worker: the files wait at the scheduler until it is killed
        executor = DaskExecutor(json.loads(info.read_text())["address"], connect_timeout_s=1.0)
        threading.Timer(1.0, lambda: os.killpg(proc.pid, signal.SIGKILL)).start()
        results: list[Any] = []
        run_batch(plan([str(src)], tmp_path / "out"), load_config(), tmp_path / "out", executor=executor,
                  on_result=results.append)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert sorted(Path(r.input).name for r in results) == sorted(p.name for p in src.iterdir())
    assert all(r.code == "voiceprep.UnexpectedError" and "scheduler went away" in r.message for r in results)


def test_the_library_maps_the_chain_over_a_bag_and_over_delayed_tasks(
        cluster: str, ref: tuple[Path, Path, Path], tmp_path: Path):
    import dask
    from distributed import Client

    src, ref_out, _ = ref
    with Client(cluster, set_as_default=False) as client:
        bagged = process_bag(plan_bag([str(src / "day1")], str(tmp_path / "bag"))).compute(scheduler=client)
        jobs = [(str(src / n), str(tmp_path / "delayed" / n)) for n in ("take0.wav", "silence.wav")]
        delayed = dask.compute(*process_delayed(jobs), scheduler=client)
    assert sorted(r.status for r in bagged) == ["ok", "ok"]
    assert _wavs(tmp_path / "bag") == {k[len("day1/"):]: v for k, v in _wavs(ref_out).items() if k.startswith("day1/")}
    assert [r.status for r in delayed] == ["ok", "rejected"] and delayed[1].code == "Audio.AudioSilentError"
    assert _wavs(tmp_path / "delayed") == {"take0.wav": _wavs(ref_out)["take0.wav"]}


def test_local_cluster_stops_at_ctrl_c_leaving_nothing_partial_and_no_worker(tmp_path: Path):
    src, out, rep = tmp_path / "many", tmp_path / "out", tmp_path / "r.jsonl"
    src.mkdir()
    for k in range(12):
        shutil.copy(READER, src / f"t{k:02d}.wav")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(src), "--out", str(out), "--report", str(rep), "-q",
         "--executor", "dask", "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        for _ in range(2400):
            if list(out.rglob("*.wav")) or proc.poll() is not None:
                break
            time.sleep(0.05)
        children = _children(proc.pid)
        assert len(children) >= 2  # the cluster's workers
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert not list(out.rglob("*.part"))
    lines = _lines(rep)
    assert len(lines) == len({d["input"] for d in lines}) < 12
    for d in lines:
        if d["status"] == "ok":
            assert sf.info(d["output"]).frames > 0
    for _ in range(100):  # helpers exit when they see their parent gone
        if not [pid for pid in children if _alive(pid)]:
            break
        time.sleep(0.1)
    assert not [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children if _alive(pid)]
    assert b"Traceback" not in err, err.decode(errors="replace")


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(p.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_without_dask_or_fsspec_run_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    src = _one(tmp_path)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "fsspec", None)
    monkeypatch.setitem(sys.modules, "fsspec.core", None)
    assert main(["run", str(src), "--out", str(tmp_path / "o"), "--executor", "dask"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'voiceprep[dask]'" in err
    assert main(["run", f"s3://{BUCKET}/in/", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'voiceprep[cloud]'" in err
    assert not (tmp_path / "o").exists()


def test_executor_options_are_checked(tmp_path: Path, capsys):
    src = _one(tmp_path)
    for bad in (["--scheduler", "tcp://127.0.0.1:1"], ["--workers", "2"], ["--executor", "dask", "--jobs", "2"],
                ["--executor", "dask", "--workers", "0"], ["--executor", "dask", "--workers", "1", "--scheduler", "x"],
                ["--report", "s3://b/r.jsonl"]):
        assert main(["run", str(src), "--out", str(tmp_path / "o"), *bad]) == 2, bad
        assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(ConfigError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"):
        DaskExecutor("tcp://127.0.0.1:9", connect_timeout_s=0.5)
