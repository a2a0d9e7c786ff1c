"""Remote URLs: what each form means, what is refused, and that the password never shows."""

from __future__ import annotations

import pickle

import pytest

from kvoff.errors import InvalidArgumentError
from kvoff.remote import RemoteConfig

SECRET = "s3cr3t-p@ss/word"
QUOTED = "s3cr3t-p%40ss%2Fword"


def test_plain_url_defaults() -> None:
    c = RemoteConfig.from_url("redis://cache.internal")
    assert (c.host, c.port, c.db, c.username, c.password) == ("cache.internal", 6379, 0, None, None)
    assert (c.tls, c.cluster, c.timeout, c.connect_timeout) == (False, False, 2.0, 0.5)
    assert c.redacted_url == "redis://cache.internal:6379/0"


def test_user_password_db_and_options() -> None:
    c = RemoteConfig.from_url(f"redis://kv:{QUOTED}@10.1.2.3:7000/5?timeout=0.25&connect_timeout=1")
    assert (c.host, c.port, c.db, c.username, c.password) == ("10.1.2.3", 7000, 5, "kv", SECRET)
    assert (c.timeout, c.connect_timeout) == (0.25, 1.0)
    assert c.redacted_url == "redis://kv:***@10.1.2.3:7000/5"


def test_tls_and_cluster_schemes() -> None:
    tls = RemoteConfig.from_url(
        "rediss://h:6380?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=optional&ssl_check_hostname=false"
    )
    assert (tls.tls, tls.cluster, tls.ssl_ca_certs) == (True, False, "/etc/ca.pem")
    assert (tls.ssl_cert_reqs, tls.ssl_check_hostname) == ("optional", False)
    cl = RemoteConfig.from_url("redis+cluster://:pw@h:7001")
    assert (cl.tls, cl.cluster, cl.username, cl.password) == (False, True, None, "pw")
    assert cl.redacted_url == "redis+cluster://:***@h:7001"
    assert RemoteConfig.from_url("rediss+cluster://h").redacted_url == "rediss+cluster://h:6379"


def test_password_absent_from_repr_str_and_pickle_free_strings() -> None:
    c = RemoteConfig.from_url(f"redis://kv:{QUOTED}@h:1/0")
    for text in (repr(c), str(c), c.redacted_url, f"{c}"):
        assert SECRET not in text and QUOTED not in text
        assert "***" in text
    # The config itself may travel to a worker process; it keeps the password.
    assert pickle.loads(pickle.dumps(c)).password == SECRET


def test_scrub_removes_raw_and_quoted_password() -> None:
    c = RemoteConfig.from_url(f"redis://kv:{QUOTED}@h:1/0")
    assert (
        c.scrub(f"AUTH kv {SECRET} failed; url had {QUOTED}") == "AUTH kv *** failed; url had ***"
    )
    assert RemoteConfig.from_url("redis://h").scrub("nothing to hide") == "nothing to hide"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h", "scheme must be one of"),
        ("redis://", "names no host"),
        ("redis://h:port", "the port is not a number"),
        ("redis://h/x", "the path must be a database number"),
        ("redis+cluster://h/2", "a cluster has only database 0"),
        ("redis://h?timeout=soon", "timeout='soon' is not a number of seconds"),
        ("redis://h?timeout=0", "timeout must be a positive number of seconds"),
        ("redis://h?colour=red", "unknown parameter 'colour'"),
        ("redis://h?timeout=1&timeout=2", "'timeout' given twice"),
        ("redis://h?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        ("redis://h?ssl_check_hostname=perhaps", "is not true/false"),
        ("redis://h#frag", "a fragment means nothing here"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message.replace("?", r"\?")):
        RemoteConfig.from_url(url)


def test_errors_about_a_url_never_show_its_password() -> None:
    for url in (
        f"http://u:{QUOTED}@h",
        f"redis://u:{QUOTED}@h:port",
        f"redis://u:{QUOTED}@h/x",
        f"redis://u:{QUOTED}@h?colour=red",
    ):
        with pytest.raises(InvalidArgumentError) as info:
            RemoteConfig.from_url(url)
        assert SECRET not in str(info.value) and QUOTED not in str(info.value)
        assert "u:***@h" in str(info.value)


def test_overrides_and_unknown_override() -> None:
    c = RemoteConfig.from_url("redis://h", timeout=0.1)
    assert c.timeout == 0.1
    with pytest.raises(InvalidArgumentError, match=r"unknown remote option\(s\) \['colour'\]"):
        RemoteConfig.from_url("redis://h", colour="red")
    with pytest.raises(InvalidArgumentError, match="a str"):
        RemoteConfig.from_url(b"redis://h")  # type: ignore[arg-type]
