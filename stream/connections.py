"""How every client connects: Kafka (kafka-python, aiokafka, Faust) and Redis (sync and asyncio), with the
security settings (SASL over TLS, Redis ACL user and TLS) applied the same way everywhere."""

from __future__ import annotations

import ssl
from typing import Any

from stream.config import KafkaSettings, RedisSettings, SettingsError


def _ssl_context(k: KafkaSettings) -> ssl.SSLContext | None:
    """TLS for Kafka; a CA bundle or client certificate that does not load is a bad setting (exit 2), not a
    traceback (the settings checked the files exist; this reads them)."""
    if not k.uses_tls:
        return None
    cafile = str(k.ssl_cafile) if k.ssl_cafile else None
    try:
        ctx = ssl.create_default_context(cafile=cafile)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        if cafile is None:
            raise
        raise SettingsError(f"LISTINGS_KAFKA_SSL_CAFILE='{cafile}': not a CA bundle ({exc})") from None
    if k.ssl_certfile:
        try:
            ctx.load_cert_chain(str(k.ssl_certfile), str(k.ssl_keyfile) if k.ssl_keyfile else None)
        except (OSError, ValueError) as exc:
            raise SettingsError(
                f"LISTINGS_KAFKA_SSL_CERTFILE='{k.ssl_certfile}' / _SSL_KEYFILE='{k.ssl_keyfile}': "
                f"not a certificate and its key ({exc})"
            ) from None
    return ctx


def kafka(k: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for kafka-python's and aiokafka's producers, consumers and admin clients (both take
    the same names)."""
    kw: dict[str, Any] = {"bootstrap_servers": k.bootstrap, "security_protocol": k.security_protocol}
    if k.uses_sasl:
        kw.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.sasl_username,
            sasl_plain_password=k.sasl_password.get_secret_value() if k.sasl_password else None,
        )
    if k.uses_tls:
        kw["ssl_context"] = _ssl_context(k)
    return {**kw, **extra}


def faust_broker(k: KafkaSettings) -> tuple[list[str], Any]:
    """Faust's broker URLs and credentials."""
    import faust

    urls = [f"kafka://{host.strip()}" for host in k.bootstrap.split(",") if host.strip()]
    creds: Any = None
    if k.uses_sasl:
        creds = faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value() if k.sasl_password else None,
            mechanism=k.sasl_mechanism,
            ssl_context=_ssl_context(k),
        )
    elif k.uses_tls:
        creds = faust.SSLCredentials(_ssl_context(k))
    return urls, creds


def _redis_kwargs(r: RedisSettings) -> dict[str, Any]:
    kw: dict[str, Any] = {"socket_timeout": 10, "socket_connect_timeout": 5}
    if r.username:
        kw["username"] = r.username
    if r.password is not None:
        kw["password"] = r.password.get_secret_value()
    if r.url.startswith("rediss://") and r.ca_file:
        kw["ssl_ca_certs"] = str(r.ca_file)
    return kw


def redis_sync(r: RedisSettings, **extra: Any) -> Any:
    import redis

    return redis.Redis.from_url(r.url, **{**_redis_kwargs(r), **extra})


def redis_async(r: RedisSettings, **extra: Any) -> Any:
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(r.url, **{**_redis_kwargs(r), **extra})
