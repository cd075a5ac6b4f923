"""The sandbox Fluentd's reading of fluent.conf, tag patterns and record times."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from teleport_sandbox.fluentd.conf import (
    ConfigError,
    TagRouter,
    build_config,
    compile_pattern,
    load_config,
)
from teleport_sandbox.fluentd.records import (
    BadRequest,
    RecordParser,
    TimeParser,
)

# The guide's fluent.conf (seed), with its <buffer> inside <source>.
GUIDE_CONF = """\
<source>
    @type http
    port 8888

    <transport tls>
        client_cert_auth true

        # We are going to run fluentd in Docker. /keys will be mounted from the host file system.
        ca_path /keys/ca.crt
        cert_path /keys/server.crt
        private_key_path /keys/server.key
        private_key_passphrase 0123abcd # Passphrase generated along with the keys
    </transport>

    <parse>
      @type json
      json_parser oj

      # This time format is used by the plugin. This field is required.
      time_type string
      time_format %Y-%m-%dT%H:%M:%S
    </parse>

    <buffer>
      @type file
      flush_thread_count 8
      flush_interval 1s
      chunk_limit_size 10M
      queue_limit_length 16
      retry_max_interval 30
      retry_forever true
    </buffer>
</source>

# Events sent to test.log will be dumped to STDOUT.
<match test.log>
  @type stdout
</match>
"""


def test_guide_conf_reads_like_fluentd_with_its_warnings() -> None:
    config = build_config(GUIDE_CONF, "fluent.conf")
    source = config.source
    assert source.port == 8888
    assert source.bind == "127.0.0.1"  # the sandbox's loopback default
    assert source.tls is not None
    assert source.tls.client_cert_auth is True
    assert source.tls.ca_path == "/keys/ca.crt"
    assert source.tls.private_key_passphrase == "0123abcd"  # trailing comment stripped
    assert source.parse.type == "json"
    assert source.parse.time_type == "string"
    assert source.parse.time_format == "%Y-%m-%dT%H:%M:%S"
    assert source.parse.keep_time_key is False
    assert [m.patterns for m in config.matches] == [("test.log",)]
    assert config.matches[0].type == "stdout"
    assert "fluent.conf:24: section <buffer> is not used in <source> of http plugin" in (
        config.warnings
    )
    assert any("Oj is not installed" in w for w in config.warnings)
    assert len(config.warnings) == 2


def test_values_quotes_units_and_deprecated_type() -> None:
    config = build_config(
        """
<source>
  type http
  port "9999"
  bind 0.0.0.0
  body_size_limit 1m
  keepalive_timeout 2m
  mystery_knob 1
  <transport tls>
    cert_path 'C:\\no\\escapes'
    private_key_path "/k/a b.key"
    private_key_passphrase "p#ss \\"quoted\\""
  </transport>
</source>
<match **>
  @type file
  path /tmp/x
  <buffer tag,time>
    timekey 1h
    flush_interval 0.5s
  </buffer>
</match>
""",
        "f.conf",
    )
    source = config.source
    assert (source.port, source.bind) == (9999, "0.0.0.0")
    assert source.body_size_limit == 1024 * 1024
    assert source.keepalive_timeout == 120.0
    assert source.tls is not None
    assert source.tls.cert_path == "C:\\no\\escapes"
    assert source.tls.private_key_path == "/k/a b.key"
    assert source.tls.private_key_passphrase == 'p#ss "quoted"'
    match = config.matches[0]
    assert (match.timekey, match.flush_interval, match.append) == (3600.0, 0.5, False)
    assert match.format.type == "out_file"
    assert "f.conf:3: 'type' is deprecated parameter name. use '@type' instead." in config.warnings
    assert "f.conf:8: parameter 'mystery_knob' in <source> is not used." in config.warnings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<source>\n  @type http\n", "f.conf:1: <source> is never closed: add </source>"),
        (
            "<source>\n  @type http\n</match>\n",
            "f.conf:3: </match> closes <source> opened at line 1",
        ),
        ("<source>\n  port 1\n</source>\n", "f.conf:1: <source> has no @type: add '@type http'"),
        ("<source>\n  @type tail\n</source>\n", "@type tail is not served by the sandbox"),
        ("<source>\n  @type forward\n</source>\n", "in_forward next to an in_http <source>"),
        ("<source>\n  @type http\n  port 70000\n</source>\n", "f.conf:3: port 70000 is out of"),
        ("<source>\n  @type http\n  port x\n</source>\n", "f.conf:3: port in <source>"),
        (
            "<source>\n  @type http\n  keepalive_timeout soon\n</source>\n",
            "f.conf:3: keepalive_timeout in <source>: 'soon' is not a duration",
        ),
        (
            "<source>\n  @type http\n  <transport tls>\n    cert_path /a\n"
            "  </transport>\n</source>\n",
            "f.conf:3: <transport tls> needs cert_path and private_key_path",
        ),
        ("@include other.conf\n", "f.conf:1: @include is not supported by the sandbox"),
        (
            "<source>\n  @type http\n</source>\n<match a>\n  @type file\n</match>\n",
            "f.conf:4: <match a> @type file needs 'path'",
        ),
        (
            "<source>\n  @type http\n</source>\n<match a>\n  @type s3\n</match>\n",
            "f.conf:5: <match a> @type s3 is not available in the sandbox: use file, stdout",
        ),
        (
            "<source>\n  @type http\n</source>\n<match a.{b>\n  @type null\n</match>\n",
            "f.conf:4: pattern 'a.{b' has an unclosed '{'",
        ),
        (
            "<source>\n  @type http\n  <parse>\n    @type json\n    time_type string\n"
            "    time_format %Q\n  </parse>\n</source>\n",
            "time_format '%Q': %Q is not supported",
        ),
        ("<match a>\n  @type null\n</match>\n", "f.conf: no <source>"),
        ("<source>\n  @type http\n  'oops'\n</source>\n", "f.conf:3: cannot read"),
    ],
)
def test_errors_name_the_line_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config = build_config(text, "f.conf")
        RecordParser(config.source)  # time_format is checked when the parser is built
    assert message in str(caught.value)


def test_load_config_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.conf: cannot read the Fluentd config"):
        load_config(str(tmp_path / "absent.conf"))


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("test.log", ["test.log"], ["test", "test.log.x", "xtest.log"]),
        ("a.*", ["a.b", "a."], ["a", "a.b.c", "b.a"]),
        ("session.*.log", ["session.abc.log"], ["session.log", "session.a.b.log"]),
        ("a.**", ["a", "a.b", "a.b.c"], ["ab", "b.a"]),
        ("**", ["", "a", "a.b.c"], []),
        ("**.log", ["log", "x.log", "x.y.log"], ["xlog", "log.x"]),
        ("a.**.z", ["a.z", "a.b.z", "a.b.c.z"], ["az", "a.z.q"]),
        ("{a,b}.log", ["a.log", "b.log"], ["c.log", "ab.log"]),
        ("x.{a.*,b}", ["x.a.q", "x.b"], ["x.a", "x.c"]),
    ],
)
def test_tag_patterns(pattern: str, matching: list[str], not_matching: list[str]) -> None:
    regex = compile_pattern(pattern)
    assert [t for t in matching if regex.match(t)] == matching
    assert [t for t in not_matching if regex.match(t)] == []


def test_first_matching_match_wins_and_several_patterns_per_match() -> None:
    config = build_config(
        "<source>\n  @type http\n</source>\n"
        "<match session.*.log audit.log>\n  @type null\n</match>\n"
        "<match **>\n  @type null\n</match>\n"
        "<match test.log>\n  @type null\n</match>\n",
        "f.conf",
    )
    router = TagRouter(config.matches)
    assert router.route("session.x.log") == 0
    assert router.route("audit.log") == 0
    assert router.route("test.log") == 1  # ** comes first
    only_exact = TagRouter(config.matches[2:])
    assert only_exact.route("nope") is None


def _parse(time_format: str | None, time_type: str = "string", extra: str = "") -> RecordParser:
    fmt = f"    time_format {time_format}\n" if time_format else ""
    config = build_config(
        "<source>\n  @type http\n  <parse>\n    @type json\n"
        f"    time_type {time_type}\n{fmt}{extra}  </parse>\n</source>\n",
        "f.conf",
    )
    return RecordParser(config.source)


def test_teleport_time_is_truncated_to_the_second_and_removed() -> None:
    parser = _parse("%Y-%m-%dT%H:%M:%S", extra="    utc true\n")
    [(when, record)] = parser.parse(b'{"time":"2025-06-01T23:57:37.919Z","a":1}', None)
    expected = datetime.datetime(2025, 6, 1, 23, 57, 37, tzinfo=datetime.UTC).timestamp()
    assert when == int(expected) * 1_000_000_000
    assert record == {"a": 1}


def test_keep_time_key_and_fractions_and_zones() -> None:
    parser = _parse("%Y-%m-%dT%H:%M:%S.%N%z", extra="    keep_time_key true\n")
    [(when, record)] = parser.parse(b'{"time":"2025-06-01T23:57:37.919000001+02:00"}', None)
    base = datetime.datetime(2025, 6, 1, 21, 57, 37, tzinfo=datetime.UTC).timestamp()
    assert when == int(base) * 1_000_000_000 + 919_000_001
    assert record == {"time": "2025-06-01T23:57:37.919000001+02:00"}


def test_time_that_does_not_parse_is_a_bad_request() -> None:
    parser = _parse("%Y-%m-%dT%H:%M:%S")
    with pytest.raises(BadRequest, match="invalid time format"):
        parser.parse(b'{"time":"01/06/2025 23:57"}', None)


def test_time_without_format_reads_iso8601_and_float_type_wants_numbers() -> None:
    iso = TimeParser(_parse(None).parse_config)
    assert iso("2025-06-01T23:57:37.5Z") == (1748822257 * 10**9 + 500_000_000)
    numeric = TimeParser(_parse(None, time_type="float").parse_config)
    assert numeric(1748822257.25) == 1748822257_250_000_000
    with pytest.raises(ValueError, match="expected a number"):
        numeric("2025-06-01T23:57:37Z")


def test_record_without_time_gets_the_current_time() -> None:
    parser = _parse("%Y-%m-%dT%H:%M:%S")
    before = datetime.datetime.now(datetime.UTC).timestamp()
    [(when, record)] = parser.parse(b'{"a":1}', None)
    assert before - 1 <= when / 1e9 <= before + 5
    assert record == {"a": 1}


def test_bodies_with_the_json_parser() -> None:
    parser = _parse("%Y-%m-%dT%H:%M:%S")
    assert [r for _, r in parser.parse(b'[{"a":1},{"a":2}]', None)] == [{"a": 1}, {"a": 2}]
    assert parser.parse(b"[]", None) == []
    for bad in (b'{"a":1}\n{"a":2}\n', b"{nope", b"null"):
        with pytest.raises(BadRequest):
            parser.parse(bad, "application/json")
    # With <parse>, in_http emits what is not an object too (Fluentd 1.16
    # lib/fluent/plugin/parser.rb #parse_time skips non-Hashes); outputs decide.
    assert [r for _, r in parser.parse(b"[1,2]", None)] == [1, 2]
    assert [r for _, r in parser.parse(b'"text"', None)] == ["text"]


def test_bodies_without_parse_section_follow_the_content_type() -> None:
    config = build_config("<source>\n  @type http\n</source>\n", "f.conf")
    parser = RecordParser(config.source)
    [(when, record)] = parser.parse(b'{"a":1,"time":1700000000}', "application/json")
    assert (when, record) == (1700000000 * 10**9, {"a": 1})
    assert len(parser.parse(b'{"a":1}\n{"a":2}\n', "application/x-ndjson")) == 2
    form = parser.parse(b"json=%7B%22a%22%3A3%7D", "application/x-www-form-urlencoded")
    assert [r for _, r in form] == [{"a": 3}]
    with pytest.raises(BadRequest, match="parameter is required"):
        parser.parse(b'{"a":1}', None)
