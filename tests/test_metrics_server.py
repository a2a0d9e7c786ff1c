"""start_metrics_server: a real HTTP scrape on localhost, shutdown, and a port already taken."""

from __future__ import annotations

import errno
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from kvoff.errors import InvalidArgumentError, KvoffError
from kvoff.metrics import (
    AddressUnavailableError,
    MetricsServerError,
    OffloadPromMetrics,
    PortInUseError,
    start_metrics_server,
)
from kvoff.metrics.server import _bind_error
from metrics_scenario import C2G, G2C, interval_a, interval_b, interval_c

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return samples, types


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset(labels.items()))


@pytest.fixture
def loopback_port() -> Iterator[socket.socket]:
    """A listening socket on a free loopback port, closed afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock
    sock.close()


def test_http_scrape_returns_the_exact_values() -> None:
    reg = CollectorRegistry()
    exporter = OffloadPromMetrics(
        reg, labels={"model_name": "m"}, vllm_compatible=True, engines=("0", "1")
    )
    exporter.observe(interval_a(), engine="0")
    exporter.observe(interval_b(), engine="0")
    exporter.observe(interval_c(), engine="1")

    with start_metrics_server(0, registry=reg) as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        samples, types = scrape(server.url)

    m = {"model_name": "m"}
    g0 = {**m, "engine": "0", "direction": G2C}
    c1 = {**m, "engine": "1", "direction": C2G}
    expected = {
        key("kvoff_transfer_ops_total", **g0): 4,
        key("kvoff_transfer_failed_ops_total", **g0): 1,
        key("kvoff_transfer_blocks_total", **g0): 1065,
        key("kvoff_transfer_bytes_total", **g0): 5_302_004_096,
        key("kvoff_transfer_failed_bytes_total", **g0): 1_000_000,
        key("kvoff_transfer_seconds_total", **g0): 20.01101,
        key("kvoff_transfer_size_bytes_bucket", **g0, le="4096.0"): 1,
        key("kvoff_transfer_size_bytes_bucket", **g0, le="5e+06"): 2,
        key("kvoff_transfer_size_bytes_bucket", **g0, le="5e+08"): 3,
        key("kvoff_transfer_size_bytes_bucket", **g0, le="+Inf"): 4,
        key("kvoff_transfer_size_bytes_count", **g0): 4,
        key("kvoff_transfer_size_bytes_sum", **g0): 5_302_004_096,
        key("kvoff_transfer_duration_seconds_bucket", **g0, le="0.01"): 3,
        key("kvoff_transfer_duration_seconds_sum", **g0): 20.01101,
        key("kvoff_transfer_throughput_bytes_per_second_bucket", **g0, le="5e+08"): 2,
        key("kvoff_transfer_throughput_bytes_per_second_sum", **g0): 32_659_600_000,
        key("kvoff_transfer_ops_total", **c1): 1,
        key("kvoff_transfer_seconds_total", **c1): 6.5536e-05,
        key("kvoff_transfer_ops_total", **{**c1, "direction": G2C}): 0,
        key("kvoff_lookup_blocks_total", **m, engine="0"): 500,
        key("kvoff_lookup_hit_blocks_total", **m, engine="0"): 312,
        key("kvoff_lookup_tokens_total", **m, engine="0"): 8000,
        key("kvoff_lookup_hit_tokens_total", **m, engine="0"): 4992,
        key("kvoff_cpu_blocks_stored_total", **m, engine="0"): 15,
        key("kvoff_cpu_blocks_evicted_total", **m, engine="0"): 2,
        key("kvoff_cpu_allocation_failures_total", **m, engine="0"): 3,
        key("kvoff_cpu_capacity_blocks", **m, engine="0"): 1000,
        key("kvoff_cpu_resident_blocks", **m, engine="0"): 15,
        key("kvoff_cpu_pinned_blocks", **m, engine="0"): 0,
        key("kvoff_cpu_resident_blocks", **m, engine="1"): 7,
        key("vllm:kv_offload_total_bytes_total", **m, engine="0", transfer_type=G2C): 5_302_004_096,
        key("vllm:kv_offload_total_time_total", **m, engine="0", transfer_type=C2G): 0.005262144,
        key("vllm:kv_offload_size_bucket", **m, engine="0", transfer_type=G2C, le="1e+06"): 1,
        key("vllm:kv_offload_size_bucket", **m, engine="0", transfer_type=G2C, le="2e+08"): 2,
        key("vllm:kv_offload_size_bucket", **m, engine="0", transfer_type=G2C, le="+Inf"): 4,
        key("vllm:kv_offload_size_bucket", **m, engine="0", transfer_type=C2G, le="1.5e+08"): 2,
        key("vllm:kv_offload_size_count", **m, engine="1", transfer_type=C2G): 1,
        key("vllm:kv_offload_store_bytes_total", **m, engine="0"): 5_302_004_096,
        key("vllm:kv_offload_load_time_total", **m, engine="0"): 0.005262144,
        key("vllm:kv_offload_store_size_bucket", **m, engine="0", le="2e+08"): 2,
        key("vllm:kv_offload_load_size_count", **m, engine="1"): 1,
        key("vllm:kv_offload_allocation_failure_total", **m, engine="0"): 3,
        key("vllm:kv_offload_cpu_cache_usage_perc", **m, engine="0"): 0.0,
    }
    assert {k: samples.get(k) for k in expected} == expected
    assert types["kvoff_transfer_bytes"] == "counter"
    assert types["kvoff_transfer_size_bytes"] == "histogram"
    assert types["kvoff_cpu_resident_blocks"] == "gauge"
    assert types["vllm:kv_offload_total_bytes"] == "counter"
    assert types["vllm:kv_offload_size"] == "histogram"
    # 2 engines x 4 directions (2 GPU, 2 remote) x (6 counters + 3 histograms) + 2 engines x
    # (7 counters + 3 gauges + the remote tier's 3 counters, 1 gauge, 2 x 2 tier hits and 8
    # error kinds) + the vLLM families (GPU directions only; 0.33's flat names and the
    # deprecated ones, each 2 counters and an 11-bucket histogram per direction, plus 0.33's
    # allocation-failure counter and usage gauge per engine): nothing missing, nothing extra.
    # Histograms: 18, 19 and 14 buckets (with +Inf), each plus _count and _sum.
    per_direction = 6 + (18 + 2) + (19 + 2) + (14 + 2)
    per_engine = 7 + 3 + 3 + 1 + 2 * 2 + 8
    vllm_per_direction = 2 * (2 + (11 + 2))
    vllm_per_engine = 2
    assert len(samples) == (
        8 * per_direction + 2 * per_engine + 4 * vllm_per_direction + 2 * vllm_per_engine
    )


def test_openmetrics_scrape_parses_with_units() -> None:
    # Prometheus asks for OpenMetrics first. (Only kvoff_ names here: prometheus_client 0.26
    # writes colon names such as vllm:* with underscores in OpenMetrics sample lines, for
    # vLLM's own metrics too, which its own parser then rejects.)
    reg = CollectorRegistry()
    OffloadPromMetrics(reg, engines=("0", "1")).observe(interval_a(), engine="1")
    with start_metrics_server(0, registry=reg) as server:
        request = urllib.request.Request(
            server.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            text = response.read().decode()
    families = {f.name: f for f in openmetrics_families(text)}  # type: ignore[no-untyped-call]
    assert families["kvoff_transfer_bytes"].type == "counter"
    assert families["kvoff_transfer_bytes"].unit == "bytes"
    assert families["kvoff_transfer_duration_seconds"].unit == "seconds"
    values = {
        (s.name, frozenset(s.labels.items())): s.value for f in families.values() for s in f.samples
    }
    assert values[key("kvoff_transfer_bytes_total", engine="1", direction=G2C)] == 2_004_096
    assert values[key("kvoff_transfer_bytes_total", engine="0", direction=G2C)] == 0
    assert values[key("kvoff_transfer_seconds_total", engine="1", direction=C2G)] == 0.005262144
    assert values[key("kvoff_lookup_hit_blocks_total", engine="1")] == 312


def test_values_move_between_scrapes() -> None:
    reg = CollectorRegistry()
    exporter = OffloadPromMetrics(reg)
    with start_metrics_server(0, registry=reg) as server:
        first, _ = scrape(server.url)
        exporter.observe(interval_a())
        second, _ = scrape(server.url)
    ops = key("kvoff_transfer_ops_total", engine="0", direction=G2C)
    assert first[ops] == 0
    assert second[ops] == 2


def test_shutdown_stops_serving_and_frees_the_port() -> None:
    reg = CollectorRegistry()
    OffloadPromMetrics(reg)
    server = start_metrics_server(0, registry=reg)
    port = server.port
    server.shutdown()
    server.shutdown()  # idempotent
    assert "closed" in repr(server)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)
    # The same port can be served again at once.
    with start_metrics_server(port, registry=reg) as again:
        samples, _ = scrape(again.url)
    assert samples[key("kvoff_transfer_ops_total", engine="0", direction=C2G)] == 0


def test_port_in_use_is_a_clear_error(loopback_port: socket.socket) -> None:
    port = loopback_port.getsockname()[1]
    with pytest.raises(PortInUseError) as info:
        start_metrics_server(port, registry=CollectorRegistry())
    err = info.value
    assert isinstance(err, OSError)
    assert isinstance(err, KvoffError)
    assert isinstance(err, MetricsServerError)
    assert err.errno == errno.EADDRINUSE
    assert err.port == port
    assert err.addr == "127.0.0.1"
    assert f"cannot serve metrics on 127.0.0.1:{port}: port {port} is already in use" in str(err)


def test_second_server_on_the_same_port_is_refused() -> None:
    reg = CollectorRegistry()
    with start_metrics_server(0, registry=reg) as server:
        with pytest.raises(PortInUseError, match=f"port {server.port} is already in use"):
            start_metrics_server(server.port, registry=reg)
        scrape(server.url)  # the first one still serves


@pytest.mark.parametrize(
    ("port", "addr", "message"),
    [
        (-1, "127.0.0.1", "port must be an int in 0..65535, got -1"),
        (65536, "127.0.0.1", "port must be an int in 0..65535, got 65536"),
        ("9090", "127.0.0.1", "port must be an int in 0..65535, got '9090'"),
        (True, "127.0.0.1", "port must be an int in 0..65535, got True"),
        (0, "", "addr must be a non-empty str"),
        (0, "\x00", r"addr must be a host name or IP address, got '\\x00'"),
        (0, " 127.0.0.1", "addr must be a host name or IP address, got ' 127.0.0.1'"),
        (0, "gpu\ud800", "addr must be a host name or IP address"),
        # getaddrinfo's IDNA step refuses a DNS label over 63 characters with a UnicodeError.
        (0, "a" * 64 + ".example", f"addr '{'a' * 64}' is not a valid host name or IP address"),
    ],
)
def test_bad_arguments(port: object, addr: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        start_metrics_server(port, addr=addr, registry=CollectorRegistry())  # type: ignore[arg-type]


def test_unresolvable_address_is_a_clear_error() -> None:
    # .invalid never resolves (RFC 6761); offline, getaddrinfo fails the same way.
    with pytest.raises(AddressUnavailableError) as info:
        start_metrics_server(0, addr="no.such.invalid", registry=CollectorRegistry())
    err = info.value
    assert isinstance(err, KvoffError) and isinstance(err, OSError)
    assert isinstance(err.__cause__, socket.gaierror)
    assert err.errno == err.__cause__.errno
    assert (err.addr, err.port) == ("no.such.invalid", 0)
    assert err.strerror == (
        "cannot serve metrics on no.such.invalid:0: address 'no.such.invalid' does not resolve "
        f"({err.__cause__.strerror})"
    )


def test_address_of_another_machine_is_a_clear_error() -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this machine.
    with pytest.raises(AddressUnavailableError) as info:
        start_metrics_server(0, addr="192.0.2.1", registry=CollectorRegistry())
    err = info.value
    assert err.errno == errno.EADDRNOTAVAIL
    assert (err.addr, err.port) == ("192.0.2.1", 0)
    assert err.strerror == (
        "cannot serve metrics on 192.0.2.1:0: 192.0.2.1 is not an address of this machine "
        f"({os.strerror(errno.EADDRNOTAVAIL)})"
    )


def test_any_other_refused_bind_names_the_address_and_keeps_the_errno() -> None:
    # A port below 1024 without the privilege, as the OS reports it (root may bind it, so the
    # mapping is exercised on the OS's error itself).
    err = _bind_error(PermissionError(errno.EACCES, "Permission denied"), "0.0.0.0", 80)
    assert type(err) is MetricsServerError
    assert isinstance(err, KvoffError) and isinstance(err, OSError)
    assert err.errno == errno.EACCES
    assert str(err) == "[Errno 13] cannot serve metrics on 0.0.0.0:80: Permission denied"
    unrelated = OSError("no errno")
    assert _bind_error(unrelated, "0.0.0.0", 80) is unrelated
