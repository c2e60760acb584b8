"""pigeon.config: TOML → Config, validation messages, and the search order of find_config."""

from __future__ import annotations

from pathlib import Path

import pytest

from pigeon.config import (
    DEFAULT_CONFIG_TOML,
    EMBEDDED_SOURCE,
    Config,
    ConfigError,
    Endpoint,
    Limits,
    QueueConfig,
    find_config,
    load_config,
    parse_config,
)

MINIMAL = 'hostname = "mx.example.org"\ndata_dir = "data"\n'


def parse(text: str, base: Path = Path("/srv/pigeon")) -> Config:
    return parse_config(text, "test.toml", base)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


def test_minimal_file_gets_every_default() -> None:
    config = parse(MINIMAL)
    assert config.hostname == "mx.example.org"
    assert config.data_dir == Path("/srv/pigeon/data")
    assert config.domains == () and config.relay_domains == ()
    assert config.postmaster is None and config.log_file is None
    assert config.limits == Limits()
    assert config.limits.max_message_size == 50 * 1024 * 1024
    assert config.limits.max_line_length == 65536
    assert config.queue == QueueConfig()
    assert config.queue.retry_schedule == (300, 600, 1200, 2400, 3600)
    assert config.queue.max_lifetime == 5 * 86400 and config.queue.delay_warning == 4 * 3600
    assert config.listen.smtp == () and config.dns.nameservers == ()
    assert config.auth.allow_plaintext_on_loopback is False
    assert config.delivery.remote_port == 25 and config.delivery.smarthost is None
    assert config.smtp.recipient_delimiter == "+" and config.smtp.bare_newline == "reject"
    assert config.source == "test.toml"
    assert config.directory_path == Path("/srv/pigeon/data/directory.sqlite3")


FULL = """
hostname = "MX.Example.ORG."
data_dir = "/var/lib/pigeon"
domains = ["Example.ORG", "example.net", "example.org"]
relay_domains = ["partner.example"]
postmaster = "admin@Example.ORG"
log_file = "logs/pigeon.log"

[listen]
smtp = ["0.0.0.0:25", "[::]:25"]
submission = "127.0.0.1:587"
imaps = ["[2001:db8::1]:993"]

[limits]
max_message_size = "25M"
max_recipients = 500
max_connections = 200
max_connections_per_ip = 20
session_timeout = "10m"
max_errors = 5
max_received_headers = 50
max_line_length = 4096

[auth]
allow_plaintext_on_loopback = true

[dns]
nameservers = ["192.0.2.53", "[2001:db8::53]:5353", "127.0.0.1:5300"]

[queue]
retry_schedule = [60, "2m", "1h"]
max_lifetime = "3d"
delay_warning = 0
jitter = 0.25

[delivery]
remote_port = 2525
smarthost = "relay.example.net:587"

[smtp]
recipient_delimiter = "+-"
bare_newline = "normalize"
greeting = "Pigeon at your service"
"""


def test_full_file() -> None:
    config = parse(FULL)
    assert config.hostname == "mx.example.org"
    assert config.domains == ("example.org", "example.net")  # folded, deduplicated, order kept
    assert config.relay_domains == ("partner.example",)
    assert config.postmaster == "admin@example.org"
    assert config.log_file == Path("/srv/pigeon/logs/pigeon.log")
    assert config.listen.smtp == (Endpoint("0.0.0.0", 25), Endpoint("::", 25))
    assert config.listen.submission == (Endpoint("127.0.0.1", 587),)
    assert config.listen.imaps == (Endpoint("2001:db8::1", 993),)
    assert config.limits.max_message_size == 25 * 1024 * 1024
    assert config.limits.session_timeout == 600
    assert config.limits.max_line_length == 4096
    assert config.auth.allow_plaintext_on_loopback is True
    assert config.dns.nameservers == (
        Endpoint("192.0.2.53", 53), Endpoint("2001:db8::53", 5353), Endpoint("127.0.0.1", 5300))
    assert config.queue.retry_schedule == (60, 120, 3600)
    assert config.queue.max_lifetime == 3 * 86400 and config.queue.delay_warning == 0
    assert config.queue.jitter == 0.25
    assert config.delivery.remote_port == 2525 and config.delivery.smarthost == "relay.example.net:587"
    assert config.smtp.recipient_delimiter == "+-" and config.smtp.bare_newline == "normalize"
    assert config.smtp.greeting == "Pigeon at your service"


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ("[limits]\nmax_recipents = 10\n", "limits.max_recipents", "unknown key"),
        ("colour = 'blue'\n", "colour", "unknown key"),
        ("[bogus]\nx = 1\n", "bogus", "unknown key"),
        ("[limits]\nmax_recipients = '10'\n", "limits.max_recipients", "expected an integer, got a string"),
        ("[limits]\nmax_recipients = true\n", "limits.max_recipients", "expected an integer, got a boolean"),
        ("[limits]\nmax_recipients = 99\n", "limits.max_recipients", "at least 100"),
        ("[limits]\nmax_message_size = 0\n", "limits.max_message_size", "at least 1"),
        ("[limits]\nmax_message_size = '12 parsecs'\n", "limits.max_message_size", "is not a size"),
        ("[limits]\nmax_line_length = 998\n", "limits.max_line_length", "at least 1000"),
        ("[limits]\nsession_timeout = 0\n", "limits.session_timeout", "greater than 0"),
        ("[limits]\nsession_timeout = 'soon'\n", "limits.session_timeout", "is not a duration"),
        ("[limits]\nmax_connections = 10\nmax_connections_per_ip = 11\n", "limits.max_connections_per_ip",
         "must not exceed"),
        ("[listen]\nsmtp = ['127.0.0.1:0']\n", "listen.smtp", "outside 1..65535"),
        ("[listen]\nsmtp = ['127.0.0.1:70000']\n", "listen.smtp", "outside 1..65535"),
        ("[listen]\nsmtp = ['127.0.0.1']\n", "listen.smtp", "a port is required"),
        ("[listen]\nsmtp = ['::1:25']\n", "listen.smtp", "in brackets"),
        ("[listen]\nsmtp = ['[::1]:25', '[::1]:25']\n", "listen.smtp", "listed twice"),
        ("[listen]\nsmtp = '127.0.0.1:25'\nsubmission = '127.0.0.1:25'\n", "listen.submission",
         "already used by listen.smtp"),
        ("[listen]\nsmtp = [25]\n", "listen.smtp", "item 1: expected a string"),
        ("[dns]\nnameservers = ['ns.example.net']\n", "dns.nameservers", "is not an IP address"),
        ("[queue]\nretry_schedule = []\n", "queue.retry_schedule", "must not be empty"),
        ("[queue]\nretry_schedule = [60, -1]\n", "queue.retry_schedule", "greater than 0"),
        ("[queue]\njitter = 0.9\n", "queue.jitter", "between 0 and 0.5"),
        ("[delivery]\nsmarthost = 'relay.example.net:x'\n", "delivery.smarthost", "is not a number"),
        ("[smtp]\nbare_newline = 'fix'\n", "smtp.bare_newline", "must be one of reject, normalize"),
        ("[smtp]\nrecipient_delimiter = '@'\n", "smtp.recipient_delimiter", "cannot be a recipient delimiter"),
        ('[smtp]\ngreeting = "two\\nlines"\n', "smtp.greeting", "one line"),
        ("[smtp]\nprocesses = 0\n", "smtp.processes", "1"),
        ("[smtp]\nprocesses = 65\n", "smtp.processes", "64"),
        ("[smtp]\nprocesses = 'two'\n", "smtp.processes", "integer"),
        ("[imap]\nprocesses = 0\n", "imap.processes", "1"),
        ("[pop3]\nprocesses = 65\n", "pop3.processes", "64"),
        ("[imap]\nthreads = 2\n", "imap.threads", "unknown"),
        ("[auth]\nallow_plaintext_on_loopback = 'yes'\n", "auth.allow_plaintext_on_loopback",
         "expected true or false"),
        ("[auth]\nip_max_failures = 31\n", "auth.ip_max_failures", "30"),
        ("[tls]\ncert = 'c.pem'\n", "tls.key", "set together"),
        ("[submission]\nmessages_per_hour = -1\n", "submission.messages_per_hour", "0"),
        ("[delivery]\nsmarthost_user = 'u'\n", "delivery.smarthost_password_file", "set together"),
        ("[delivery]\nsmarthost_tls = 'maybe'\n", "delivery.smarthost_tls", "required or opportunistic"),
        ("[queue]\nnotify_postmaster = 1\n", "queue.notify_postmaster", "expected true or false"),
        ("[queue]\nflush = 'fsync'\n", "queue.flush", 'must be "filesystem" or "file"'),
        ("limits = 3\n", "limits", "expected a table"),
        ("domains = ['example.org']\nrelay_domains = ['EXAMPLE.org']\n", "relay_domains", "also in domains"),
        ("domains = ['bad_domain!']\n", "domains", "not a valid domain"),
        ("domains = ['[192.0.2.1]']\n", "domains", "not a valid domain"),
        ("postmaster = 'nobody'\n", "postmaster", "must be local@domain"),
    ],
)
def test_errors_name_file_key_and_problem(extra: str, key: str, problem: str) -> None:
    message = error_of(MINIMAL + extra)
    assert message.startswith(f"test.toml: {key}: "), message
    assert problem in message


def test_required_keys() -> None:
    assert error_of('data_dir = "x"\n') == "test.toml: hostname: required key is missing"
    assert error_of('hostname = "a.example"\n') == "test.toml: data_dir: required key is missing"
    assert "hostname: 'not a host' is not a valid domain name" in error_of(
        'hostname = "not a host"\ndata_dir = "d"\n')


def test_bad_toml_names_the_file() -> None:
    message = error_of("hostname = \n")
    assert message.startswith("test.toml: invalid TOML:")


def test_several_unknown_keys_are_all_named() -> None:
    message = error_of(MINIMAL + "zeta = 1\nalpha = 2\n")
    assert message == "test.toml: alpha: unknown key (also unknown: zeta)"


def test_embedded_default_parses_and_is_a_loopback_dev_setup(tmp_path: Path) -> None:
    config = parse_config(DEFAULT_CONFIG_TOML, EMBEDDED_SOURCE, tmp_path)
    assert config.hostname == "localhost"
    assert config.domains == ("example.test",)
    assert config.data_dir == tmp_path / "pigeon-data"
    assert config.auth.allow_plaintext_on_loopback is True
    ports = {name: getattr(config.listen, name) for name in
             ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")}
    assert ports == {
        "smtp": (Endpoint("127.0.0.1", 2525),), "submission": (Endpoint("127.0.0.1", 2587),),
        "submissions": (Endpoint("127.0.0.1", 2465),), "imap": (Endpoint("127.0.0.1", 2143),),
        "imaps": (Endpoint("127.0.0.1", 2993),), "pop3": (Endpoint("127.0.0.1", 2110),),
        "pop3s": (Endpoint("127.0.0.1", 2995),),
    }
    assert config.limits == Limits() and config.queue == QueueConfig()


def test_load_config_resolves_relative_paths_against_the_file(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    path = etc / "pigeon.toml"
    path.write_text(MINIMAL + 'log_file = "../log/p.log"\n', encoding="utf-8")
    config = load_config(path)
    assert config.data_dir == etc / "data"
    assert config.log_file is not None and config.log_file.resolve() == (tmp_path / "log" / "p.log").resolve()
    assert config.source == str(path)


def test_load_config_missing_and_undecodable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.toml: no such file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'hostname = "\xff"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: not UTF-8"):
        load_config(bad)


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = tmp_path / "cli.toml"
    cli.write_text('hostname = "cli.example"\ndata_dir = "d"\n', encoding="utf-8")
    env = tmp_path / "env.toml"
    env.write_text('hostname = "env.example"\ndata_dir = "d"\n', encoding="utf-8")
    system = tmp_path / "system.toml"
    system.write_text('hostname = "system.example"\ndata_dir = "d"\n', encoding="utf-8")
    environ = {"PIGEON_CONFIG": str(env)}

    assert find_config(str(cli), environ, system_path=system).hostname == "cli.example"
    assert find_config(None, environ, system_path=system).hostname == "env.example"
    assert find_config(None, {"PIGEON_CONFIG": ""}, system_path=system).hostname == "system.example"
    default = find_config(None, {}, system_path=tmp_path / "absent.toml")
    assert default.source == EMBEDDED_SOURCE
    assert default.data_dir == tmp_path / "pigeon-data"
    home = find_config(None, {"PIGEON_HOME": "home"}, system_path=tmp_path / "absent.toml")
    assert home.data_dir == tmp_path / "home"


def test_find_config_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        find_config(str(tmp_path / "missing.toml"), {}, system_path=tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="no such file"):
        find_config(None, {"PIGEON_CONFIG": str(tmp_path / "gone.toml")}, system_path=tmp_path / "x")


def test_config_is_frozen() -> None:
    config = parse(MINIMAL)
    with pytest.raises(AttributeError):
        config.hostname = "other"  # type: ignore[misc]


def test_submission_tls_auth_and_delivery_keys() -> None:
    config = parse(MINIMAL + "[auth]\nsmtp_auth = true\nip_max_failures = 30\nblock_time = '1h'\n"
                   "[tls]\ncert = 'tls/c.pem'\nkey = 'tls/k.pem'\n"
                   "[submission]\nmessages_per_hour = 0\n"
                   "[queue]\nnotify_postmaster = true\n"
                   "[delivery]\nsmarthost = 'relay.isp.test:587'\nsmarthost_user = 'me'\n"
                   "smarthost_password_file = 'pw'\nsmarthost_tls_verify = false\n")
    assert config.auth.smtp_auth and config.auth.throttle.ip_max_failures == 30
    assert config.auth.throttle.block_time == 3600.0
    assert config.tls.cert == Path("/srv/pigeon/tls/c.pem") and config.tls.key == Path("/srv/pigeon/tls/k.pem")
    assert config.submission.messages_per_hour == 0 and config.submission.recipients_per_message == 100
    assert config.queue.notify_postmaster
    d = config.delivery
    assert d.smarthost_user == "me" and d.smarthost_password_file == Path("/srv/pigeon/pw")
    assert d.smarthost_tls == "required" and d.smarthost_tls_verify is False


def test_queue_flush_defaults_to_the_file_system_and_can_be_per_file() -> None:
    assert parse(MINIMAL).queue.flush == "filesystem"
    assert parse(MINIMAL + "[queue]\nflush = 'file'\n").queue.flush == "file"
    assert parse(MINIMAL + "[queue]\nflush = 'filesystem'\n").queue.flush == "filesystem"


def test_imap_and_pop3_processes() -> None:
    assert parse(MINIMAL).imap.processes == 1 and parse(MINIMAL).pop3.processes == 1
    cfg = parse(MINIMAL + "[imap]\nprocesses = 3\n[pop3]\nprocesses = 2\n")
    assert (cfg.imap.processes, cfg.pop3.processes) == (3, 2)
