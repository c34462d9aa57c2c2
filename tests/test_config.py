"""The one way configs are read from JSON (``config.from_plain``), and the gateway settings'
environment round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoprec.config import (
    IndexKind,
    PipelineConfig,
    RankerConfig,
    RankerKind,
    TextConfig,
    TwoTowerConfig,
    from_plain,
    to_plain,
)
from shoprec.export.triton import ExportConfig, ModelTuning
from shoprec.gateway.settings import Settings


def test_pipeline_config_round_trips_through_json_values() -> None:
    config = PipelineConfig(
        two_tower=TwoTowerConfig(hidden_dims=(32, 16), epochs=1),
        ranker=RankerConfig(kind=RankerKind.GBDT, epochs=5),
    )
    plain = config.to_dict()
    assert plain["ranker"]["kind"] == "gbdt" and plain["two_tower"]["hidden_dims"] == [32, 16]
    assert PipelineConfig.from_dict(plain) == config


def test_a_section_left_out_keeps_its_defaults_and_a_key_its_neighbours() -> None:
    config = PipelineConfig.from_dict({"ranker": {"epochs": 7}})
    assert config.ranker == RankerConfig(epochs=7)
    assert config.two_tower == TwoTowerConfig()


def test_unknown_keys_are_named_with_their_path() -> None:
    with pytest.raises(KeyError, match=r"unknown config key\(s\) in ranker: \['epochz'\]"):
        PipelineConfig.from_dict({"ranker": {"epochz": 1}})
    with pytest.raises(KeyError, match=r"in PipelineConfig: \['rankerz'\]"):
        PipelineConfig.from_dict({"rankerz": {}})


def test_an_enum_value_outside_its_choices_is_named_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"index.kind: 'annoy' is not one of \['auto', 'flat'"):
        PipelineConfig.from_dict({"index": {"kind": "annoy"}})
    assert PipelineConfig.from_dict({"index": {"kind": "hnsw"}}).index.kind is IndexKind.HNSW


def test_a_section_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"ranker must be a JSON object, got 3"):
        PipelineConfig.from_dict({"ranker": 3})


def test_optional_and_mapping_fields() -> None:
    assert from_plain(TextConfig, {"open_clip_pretrained": None}).open_clip_pretrained is None
    export = ExportConfig.from_dict({"tuning": {"ranking": {"instances": 2}}, "ranker": "mlp"})
    assert export.tuning == {"ranking": ModelTuning(instances=2)}
    assert export.ranker is RankerKind.MLP
    assert ExportConfig.from_dict({}).ranker is None  # the trained ranker
    with pytest.raises(KeyError, match=r"export.tuning.ranking: \['thread'\]"):
        ExportConfig.from_dict({"tuning": {"ranking": {"thread": 2}}})
    assert ExportConfig.from_dict(export.to_dict()).to_dict() == export.to_dict()
    assert to_plain(export)["tuning"] == {"ranking": {"instances": 2, "intra_op_threads": 1}}


def test_gateway_settings_travel_as_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"SHOPREC_{name.upper()}", raising=False)
    settings = Settings(triton_url="10.0.0.1:9001", feature_repo=Path("x/feature_repo"), max_k=50)
    env = settings.environment()
    assert env["SHOPREC_TRITON_URL"] == "10.0.0.1:9001"
    assert env["SHOPREC_FEATURE_REPO"] == "x/feature_repo"
    assert "SHOPREC_REDIS_URL" not in env  # unset optional field
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings
