"""Strict pipeline.yaml loading: bad stages, options and types fail before any audio is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline import config, registry
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent


def _yaml_files() -> list[Path]:
    skip = {".venv", ".ci-venv", ".git", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
    return sorted(p for p in ROOT.rglob("*.y*ml") if not skip & set(p.relative_to(ROOT).parts))


def test_there_are_yaml_files():
    names = {p.name for p in _yaml_files()}
    assert "pipeline.yaml" in names and ".pre-commit-hooks.yaml" in names


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_in_the_repo_loads(path: Path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data is not None
    if isinstance(data, dict) and set(data) & {"check", "run"}:
        cfg = config.load(path)  # a pipeline file: every stage and option must build
        assert len(cfg.check) + len(cfg.run) > 0


def test_bundled_default_is_the_repo_pipeline():
    cfg = config.load()
    assert Path(cfg.path or "").resolve() == (ROOT / "pipeline.yaml").resolve()
    assert cfg.check.names()[0] == "validate"
    assert "validate" in cfg.run.names()[-2:]


def _load_text(tmp_path: Path, text: str) -> config.Config:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return config.load(p)


def test_unknown_stage_lists_valid_ones(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        _load_text(tmp_path, "run:\n  - loudnes: {}\n")
    msg = str(err.value)
    assert "unknown stage 'loudnes'" in msg
    for name in registry.available():
        assert name in msg


def test_unknown_option_lists_valid_ones(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        _load_text(tmp_path, "run:\n  - loudness: {target_lfus: -20}\n")
    assert "no option 'target_lfus'" in str(err.value)
    assert "target_lufs" in str(err.value) and "ceiling_dbtp" in str(err.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("run:\n  - loudness: {target_lufs: loud}\n", "expected a number"),
        ("run:\n  - encode: {dither: 1}\n", "expected true or false"),
        ("run:\n  - resample: {target_hz: 24000.5}\n", "expected an integer"),
        ("run:\n  - channel: {policy: left}\n", "is not one of"),
        ("run:\n  - loudness: {target_lufs: 0}\n", "out of range; valid: -40 to -5"),
        ("runn: []\n", "unknown key 'runn'"),
        ("run: loudness\n", "expected a list"),
        ("- just a list\n", "top level must be a mapping"),
        ("run: [\n", "not valid YAML"),
    ],
)
def test_wrong_types_and_shapes(tmp_path: Path, text: str, needle: str):
    with pytest.raises(ConfigError, match=needle):
        _load_text(tmp_path, text)


def test_cli_config_error_is_exit_2_one_line(tmp_path: Path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("check:\n  - validate: {min_speech: 3}\n")
    wav = ROOT / "fixtures" / "speech_librivox_16k.wav"
    assert main(["check", "--config", str(p), str(wav)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no option 'min_speech'" in err[0] and "min_speech_s" in err[0]


def test_int_is_accepted_for_float_and_null_options(tmp_path: Path):
    cfg = _load_text(tmp_path, "run:\n  - window\n  - loudness: {target_lufs: -18}\n  - edges:\n  - encode\n  - validate\n")
    assert cfg.run.stages[1].target_lufs == -18.0
    assert cfg.run.names() == ["window", "loudness", "edges", "encode", "validate"]


def test_check_builds_only_its_chain_and_run_fails_on_first_use(tmp_path: Path, capsys):
    p = tmp_path / "half.yaml"
    p.write_text("check:\n  - validate: {max_duration_s: 30}\nrun:\n  - loudness: {target: -18}\n")
    cfg = config.load(p, chains=("check",))
    assert cfg.check.stages[0].max_duration_s == 30.0
    with pytest.raises(ConfigError) as exc:
        _ = cfg.run  # built (and rejected) on first use
    assert "no option 'target'" in str(exc.value) and str(p) in str(exc.value)
    with pytest.raises(ConfigError):
        config.load(p)  # both chains by default: the bad `run` fails at load
    wav = ROOT / "fixtures" / "speech_librivox_16k.wav"
    assert main(["check", "--config", str(p), str(wav)]) in (0, 1)  # check never reads `run`
    assert main(["run", "--config", str(p), str(wav), "--out", str(tmp_path / "out")]) == 2
    assert "no option 'target'" in capsys.readouterr().err


def test_with_run_replaces_the_run_chain_and_pickles(tmp_path: Path):
    import pickle

    cfg = config.load()
    chain = Pipeline(tuple(s for s in cfg.run if s.name not in ("validate", "quality")))
    other = cfg.with_run(chain)
    assert other.run.names() == chain.names() and cfg.run.names() != chain.names()
    back = pickle.loads(pickle.dumps(other))
    assert back.run.names() == chain.names() and back.check.names() == cfg.check.names()


def test_default_config_is_read_from_its_frozen_copy_without_pyyaml():
    """`check` with the bundled config skips importing PyYAML: the frozen JSON copy is used while
    it matches the bundled pipeline.yaml byte for byte (size and CRC)."""
    import subprocess
    import sys

    probe = "import sys\nfrom pipeline.config import load\ncfg = load()\nprint('yaml' in sys.modules, cfg.run.names())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.startswith("False") and "'window'" in out
    frozen = config._frozen(config.default_config_path().read_bytes())
    assert frozen == yaml.safe_load(config.default_config_path().read_text(encoding="utf-8"))


def test_a_stale_frozen_copy_is_ignored(tmp_path: Path, monkeypatch):
    import json

    stale = tmp_path / "default_config.json"
    data = json.loads(config.FROZEN_DEFAULT.read_text(encoding="utf-8"))
    data["config"]["run"] = ["encode"]  # what the copy says no longer matters once the stamp is off
    data["crc32"] += 1
    stale.write_text(json.dumps(data))
    monkeypatch.setattr(config, "FROZEN_DEFAULT", stale)
    assert config.load().run.names() == yaml_names("run")
    stale.write_text("{not json")
    assert config.load().run.names() == yaml_names("run")


def yaml_names(chain: str) -> list[str]:
    data = yaml.safe_load(config.default_config_path().read_text(encoding="utf-8"))
    return [next(iter(item)) if isinstance(item, dict) else item for item in data[chain]]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("run:\n  - channel\n  - loudness: {target_lufs: -99}\n  - encode\n  - validate\n", 3, "target_lufs"),
        ("check:\n  - validate: {min_speech_s: .nan}\n", 2, "finite"),
        ("check:\n  - validate: {max_duration_s: .inf}\n", 2, "finite"),
        ("check:\n  - validate:\n      min_speech_s: -5\n", 3, "min_speech_s"),
        ("check:\n  - quality\n", 2, "service's rules"),
        ("run:\n  - window\n  - encode\n  - edges\n  - validate\n", 4, "edges"),
        ("run:\n  - channel\n  - validate\n  - encode\n", 2, "after `encode`"),
        ("check: []\n", 1, "empty"),
        ("check: [validate\n", 2, "not valid YAML"),
        ("run:\n  - edges: {target_s: 100000000}\n", 2, "target_s"),
    ],
)
def test_values_that_would_switch_a_rule_off_are_config_errors_with_a_position(tmp_path: Path, capsys, text, line, needle):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    assert main(["run", str(ROOT / "fixtures" / "speech_librivox_16k.wav"), "--config", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert f"{p}:{line}:" in err[0], err
    assert not (tmp_path / "o").exists()


def test_missing_sections_fall_back_to_the_bundled_default(tmp_path: Path):
    import numpy as np
    import soundfile as sf

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 20, np.float32), 16000, subtype="PCM_16")
    for text in ("", "enroll: {prefix: abc}\n", "check:\n", "run: null\n"):
        p = tmp_path / "p.yaml"
        p.write_text(text)
        cfg = config.load(p)
        assert cfg.check.names() == config.load().check.names() and cfg.run.names() == config.load().run.names()
        assert main(["check", "--config", str(p), str(silent)]) == 1  # the rules still apply


def test_a_number_with_thousands_of_digits_is_a_config_error(tmp_path: Path, capsys):
    p = tmp_path / "p.yaml"
    p.write_text("check:\n  - validate: {max_duration_s: " + "9" * 5000 + "}\n")
    assert main(["check", "--config", str(p), str(ROOT / "fixtures" / "speech_librivox_16k.wav")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
