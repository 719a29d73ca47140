"""The build configuration (pqcompile.options.BuildConfig): one JSON-serializable dataclass that the CLI fills,
compile_model takes and the manifest records; bad values are refused naming the option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pqcompile import cli
from pqcompile.options import BuildConfig, OptionError

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_through_json() -> None:
    bc = BuildConfig(config="small", inputs="random", count=7, seed=3, act_bits=4, lut_bits=6, act_calib="mse",
                     lut_calib="percentile", host_layers=("layers.0,layers.1", "layers.9"), batch=2,
                     batch_from="layers.3", op_order="model")
    assert BuildConfig.from_json(json.loads(json.dumps(BuildConfig(batch_from="auto", mem_bw=94).to_json()))) == \
        BuildConfig(batch_from="auto", mem_bw=94)
    assert bc.host_layers == ("layers.0", "layers.1", "layers.9")  # commas separate names too
    d = json.loads(json.dumps(bc.to_json()))
    assert d == {"config": "small", "inputs": "random", "count": 7, "seed": 3, "act_bits": 4, "lut_bits": 6,
                 "act_calib": "mse", "lut_calib": "percentile", "host_layers": ["layers.0", "layers.1", "layers.9"],
                 "batch": 2, "batch_from": "layers.3", "mem_bw": 0, "op_order": "model"}
    assert BuildConfig.from_json(d) == bc


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"count": 0}, "--count must be at least 1"),
    ({"batch": 0}, "--batch must be at least 1"),
    ({"batch": 1.5}, "batch must be an integer or null"),
    ({"batch_from": 3}, "batch_from must be an op name or null"),
    ({"seed": -1}, "--seed must be a non-negative integer"),
    ({"batch_from": "auto", "mem_bw": -1}, "--mem-bw must be 0"),
    ({"mem_bw": "94"}, "mem_bw must be an integer"),
    ({"act_calib": "median"}, "act_calib must be one of max, percentile, mse"),
    ({"op_order": "fastest"}, "op_order must be one of auto, model"),
    ({"lut_bits": 4.5}, "lut_bits must be an integer or null"),
    ({"count": True}, "count must be an integer"),
    ({"config": 3}, "config must be a string"),
    ({"host_layers": "layers.0"}, "host_layers must be a list of layer names"),
])
def test_bad_values_name_the_option(kwargs: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        BuildConfig(**kwargs)


def test_from_json_refuses_unknown_keys_and_non_objects() -> None:
    with pytest.raises(OptionError, match=r"unknown keys \['colour'\]"):
        BuildConfig.from_json({"count": 2, "colour": "red"})
    with pytest.raises(OptionError, match="must be an object"):
        BuildConfig.from_json([1, 2])


def test_the_manifest_records_the_build_config(tmp_path: Path) -> None:
    out = tmp_path / "b"
    bc = BuildConfig(config="small", count=5, act_bits=6)
    man = cli.compile_model(str(ROOT / "models" / "digits_mlp.pt"), str(out), bc, quiet=True)
    assert BuildConfig.from_json(man["build_config"]) == bc
    assert json.loads((out / "manifest.json").read_text())["build_config"] == bc.to_json()
    assert man["act_bits"] == 6 and man["lut_bits"] == 8 and man["n_columns"] == 5  # the resolved widths


def test_cli_refuses_a_bad_option_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main([str(ROOT / "models" / "digits_mlp.pt"), "-o", str(tmp_path / "b"), "--seed", "-4"])
    err = capsys.readouterr().err
    assert rc == 2 and err == "pqcompile: error: --seed must be a non-negative integer\n"
    assert not (tmp_path / "b").exists()
