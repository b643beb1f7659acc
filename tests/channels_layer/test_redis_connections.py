"""Redis URLs as users write them: passwords and TLS are honoured, never logged."""

import asyncio
import datetime
import ipaddress
import logging
import shutil
import ssl
import subprocess
import time

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from channels_layer import LayerUnavailable
from channels_layer.redis_hosts import parse_hosts
from testsupport.system import free_port


async def round_trip(layer):
    await layer.send("jobs", {"type": "ping"})
    return (await asyncio.wait_for(layer.receive("jobs"), 3))["type"]


async def test_a_password_in_the_url_is_used_and_never_logged(redis_servers, make_layer, caplog):
    (server,) = redis_servers(1, "--requirepass", "s3cret")
    url = f"redis://:s3cret@127.0.0.1:{server.port}/2"
    layer = make_layer(hosts=[url])
    assert await round_trip(layer) == "ping"
    await layer.send("held", {"type": "kept"})
    database_2 = redis.Redis(port=server.port, password="s3cret", db=2)
    assert database_2.exists(f"{layer.prefix}:channel:held")

    wrong = make_layer(hosts=[f"redis://:nope@127.0.0.1:{server.port}/2"], retry_timeout=0.2)
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(LayerUnavailable, match="invalid username-password"),
    ):
        await wrong.send("jobs", {"type": "ping"})
    assert "nope" not in caplog.text and "s3cret" not in caplog.text
    assert parse_hosts([url])[0].label == f"redis://:***@127.0.0.1:{server.port}/2"


@pytest.fixture
def tls_server(tmp_path):
    """A redis-server that speaks only TLS, with a self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [
            shutil.which("redis-server"),
            *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file)),
            *("--tls-ca-cert-file", str(cert_file), "--tls-auth-clients", "no"),
            *("--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(
                    host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert_file)
                ).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "TLS redis-server did not start"
                time.sleep(0.05)
        yield port, str(cert_file)
    finally:
        process.kill()
        process.wait()


async def test_rediss_urls_connect_over_tls(tls_server, make_layer):
    port, ca_file = tls_server
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca_file}"
    assert await round_trip(make_layer(hosts=[url])) == "ping"
    layer = make_layer(hosts=[{"address": f"rediss://127.0.0.1:{port}/0", "ssl_ca_certs": ca_file}])
    assert await round_trip(layer) == "ping"


async def test_an_untrusted_tls_certificate_is_refused(tls_server, make_layer):
    port, _ = tls_server
    layer = make_layer(hosts=[f"rediss://127.0.0.1:{port}/0"], retry_timeout=0.2)
    with pytest.raises((LayerUnavailable, ssl.SSLError)):
        await layer.send("jobs", {"type": "ping"})
