"""Pure checks of the runtime's settings and command-line options: a bad value is one line naming the variable or
option, with exit status 2 (never a traceback, never a value that silently means something else)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stream import cli, config, errors, preflight, shadow, worker
from stream.config import Settings, SettingsError
from stream.review import app as review_app


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("LISTINGS_")]:
        monkeypatch.delenv(key)


def refused(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> str:
    """The settings error `var=value` gives; it names the variable."""
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as exc:
        config.load()
    assert var in str(exc.value)
    return str(exc.value)


def options(module: ModuleType, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"listings {module.__name__}")
    module.add_arguments(parser)
    return parser.parse_args(argv)


def bad_option(module: ModuleType, capsys: pytest.CaptureFixture[str], option: str, *argv: str) -> None:
    with pytest.raises(SystemExit) as exc:
        options(module, *argv)
    assert exc.value.code == 2
    assert option in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- settings


def test_the_workers_wait_at_start_backs_off_as_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_retry(what: str, op: Any, **kw: Any) -> None:
        seen.update(kw)

    monkeypatch.setattr(preflight, "retry_forever", fake_retry)
    asyncio.run(preflight.wait_ready(Settings().replace(worker={"retry_max_backoff_s": 42.0})))
    assert seen["max_backoff"] == 42.0


def test_a_zero_batch_wait_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Faust's take(within=0) waits for a full batch however long it takes
    refused(monkeypatch, "LISTINGS_MAX_WAIT_MS", "0")
    monkeypatch.setenv("LISTINGS_MAX_WAIT_MS", "1")
    assert config.load().worker.max_wait_ms == 1


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:abc/0", "redis://127.0.0.1:70000/0", "redis://h:0/0", "redis://h:6379/x", "unix://"]
)
def test_a_bad_redis_url_is_a_settings_error(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    refused(monkeypatch, "LISTINGS_REDIS_URL", url)


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:16379/0", "rediss://u:p%40ss@redis.svc:6380/2", "redis://localhost", "unix:///tmp/r.sock"],
)
def test_good_redis_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("LISTINGS_REDIS_URL", url)
    assert config.load().redis.url == url


def test_a_bad_redis_url_exits_2_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("LISTINGS_REDIS_URL", "redis://127.0.0.1:abc/0")
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LISTINGS_REDIS_URL" in err


def test_preflight_reports_a_redis_client_it_cannot_make() -> None:
    bad = config.RedisSettings.model_construct(**{**config.RedisSettings().__dict__, "url": "redis://h:abc/0"})
    with pytest.raises(errors.Unreachable):
        asyncio.run(preflight.check_redis(bad))


@pytest.mark.parametrize("var", ["LISTINGS_KAFKA_SSL_CAFILE", "LISTINGS_KAFKA_SSL_CERTFILE", "LISTINGS_REDIS_CA_FILE"])
def test_tls_files_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str) -> None:
    assert "no such file" in refused(monkeypatch, var, str(tmp_path / "missing.pem"))
    assert "not a file" in refused(monkeypatch, var, str(tmp_path))
    (tmp_path / "ca.pem").write_text("x")
    monkeypatch.setenv(var, str(tmp_path / "ca.pem"))
    config.load()


def test_an_empty_tls_file_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LISTINGS_KAFKA_SSL_CAFILE", "LISTINGS_KAFKA_SSL_KEYFILE", "LISTINGS_REDIS_CA_FILE"):
        monkeypatch.setenv(var, "")
    s = config.load()
    assert s.kafka.ssl_cafile is None and s.kafka.ssl_keyfile is None and s.redis.ca_file is None


def test_a_missing_ca_file_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("LISTINGS_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("LISTINGS_KAFKA_SSL_CAFILE", "/nonexistent")
    assert cli.main(["topics", "ensure"]) == 2
    assert "LISTINGS_KAFKA_SSL_CAFILE" in capsys.readouterr().err


def test_a_ca_file_that_is_not_one_is_a_settings_error(tmp_path: Path) -> None:
    from stream import connections

    (tmp_path / "ca.pem").write_text("not a certificate")
    k = config.KafkaSettings(security_protocol="SSL", ssl_cafile=tmp_path / "ca.pem")
    with pytest.raises(SettingsError, match="LISTINGS_KAFKA_SSL_CAFILE"):
        connections.kafka(k)


def test_an_empty_review_host_is_neither_loopback_nor_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not review_app.loopback("")  # aiohttp binds "" on every interface
    assert review_app.loopback("127.0.0.1") and review_app.loopback("localhost") and review_app.loopback("::1")
    refused(monkeypatch, "LISTINGS_REVIEW_HOST", "")


@pytest.mark.parametrize("token", ["", "short12"])
def test_an_empty_or_short_review_token_is_refused_unshown(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    message = refused(monkeypatch, "LISTINGS_REVIEW_TOKEN", token)
    assert "<secret>" in message and (not token or token not in message)


def test_a_long_enough_review_token_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTINGS_REVIEW_TOKEN", "8 chars!")
    token = config.load().review.token
    assert token is not None and token.get_secret_value() == "8 chars!"


@pytest.mark.parametrize("port", [70000, -5])
def test_replace_validates(port: int) -> None:
    with pytest.raises(SettingsError, match="LISTINGS_METRICS_PORT"):
        Settings().replace(worker={"metrics_port": port})
    assert Settings().replace(worker={"metrics_port": 0}).worker.metrics_port == 0  # 0: no metrics endpoint


def test_replace_changes_only_what_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    monkeypatch.setenv("LISTINGS_MAX_BATCH", "7")  # the environment is not read again
    t = s.replace(topics={"partitions": 9}, worker={"state_dir": "/tmp/x"})
    assert t.topics.partitions == 9 and t.worker.state_dir == Path("/tmp/x") and t.worker.max_batch == 64
    assert t.topics.input == s.topics.input and t.kafka == s.kafka
    with pytest.raises(TypeError):
        s.replace(worker={"no_such_field": 1})


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("LISTINGS_KAFKA_BOOTSTRAP", "nohostport"),
        ("LISTINGS_KAFKA_BOOTSTRAP", "host:99999"),
        ("LISTINGS_KAFKA_BOOTSTRAP", "a:9092,,b:9092"),
        ("LISTINGS_TRITON_URL", "http://x:y"),
        ("LISTINGS_TRITON_URL", "http://x:8001"),
        ("LISTINGS_TOPIC_INPUT", ""),
        ("LISTINGS_TOPIC_DLQ", "has space"),
        ("LISTINGS_MODEL_NAME", ""),
        ("LISTINGS_GROUP_ID", ""),
        ("LISTINGS_UPDATES_STREAM", ""),
        ("LISTINGS_TRITON_TIMEOUT_S", "nan"),
        ("LISTINGS_BACKFILL_LIVE_TARGET_MS", "inf"),
    ],
)
def test_other_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    refused(monkeypatch, var, value)


def test_endpoints_in_host_port_form_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTINGS_KAFKA_BOOTSTRAP", "k1.svc:9093, k2.svc:9093,[::1]:9092")
    monkeypatch.setenv("LISTINGS_TRITON_URL", "triton:8001")
    s = config.load()
    assert s.kafka.bootstrap.startswith("k1") and s.triton.url == "triton:8001"


# -------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("value", ["0", "70000", "-1", "x"])
def test_review_ui_port_must_be_a_port(capsys: pytest.CaptureFixture, value: str) -> None:
    bad_option(review_app, capsys, "--port", "--port", value)


def test_review_ui_port_given_is_used() -> None:
    assert options(review_app, "--port", "1").port == 1
    assert options(review_app).port is None


@pytest.mark.parametrize("module", [worker, shadow])
@pytest.mark.parametrize("value", ["70000", "-5"])
def test_metrics_port_must_be_a_port_or_0(capsys: pytest.CaptureFixture, module: ModuleType, value: str) -> None:
    bad_option(module, capsys, "--metrics-port", "--metrics-port", value)
    assert options(module, "--metrics-port", "0").metrics_port == 0  # 0: no metrics endpoint


def test_worker_log_level_is_a_level(capsys: pytest.CaptureFixture) -> None:
    bad_option(worker, capsys, "--log-level", "--log-level", "bogus")
    assert options(worker, "--log-level", "debug").log_level == "DEBUG"


@pytest.mark.parametrize(
    "argv", [("--max-events", "-1"), ("--duration", "-1"), ("--idle-timeout", "-5"), ("--duration", "nan")]
)
def test_shadow_limits_are_not_negative(capsys: pytest.CaptureFixture, argv: tuple[str, str]) -> None:
    bad_option(shadow, capsys, argv[0], "--candidate", "2", *argv)
    args = options(shadow, "--candidate", "2", argv[0], "0")
    assert args.max_events == 0 and args.duration == 0 and args.idle_timeout == 0
