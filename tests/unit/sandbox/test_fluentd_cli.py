"""``sandbox-fluentd`` as a process: port file, faults, SIGTERM flush, stats, errors."""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

from fluentd_certs import FluentdCerts, fluent_conf, make_fluentd_certs

from teleport_sandbox.fluentd import read_records

COMMAND = [sys.executable, "-m", "teleport_sandbox.fluentd"]


def _wait_for_port(process: subprocess.Popen[bytes], port_file: Path) -> int:
    deadline = time.monotonic() + 15
    while not port_file.exists():
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline, "sandbox-fluentd did not write its port file"
        time.sleep(0.05)
    return int(port_file.read_text())


def _post(port: int, certs: FluentdCerts, path: str, body: bytes) -> int:
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.load_cert_chain(certs.client_cert, certs.client_key)
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_runs_until_sigterm_then_flushes_and_reports(tmp_path: Path) -> None:
    certs = make_fluentd_certs(tmp_path / "certs")
    conf = tmp_path / "fluent.conf"
    conf.write_text(
        fluent_conf(certs, tmp_path / "out" / "audit", extra_source="  <buffer>\n  </buffer>\n")
    )
    port_file, stats_file, control = (tmp_path / n for n in ("port", "stats.json", "c.json"))
    options = {
        "--config": conf,
        "--port": 0,
        "--port-file": port_file,
        "--stats-file": stats_file,
        "--control-file": control,
        "--fault": "reply_status=201",
        "--flush-interval": 60,
    }
    process = subprocess.Popen(
        [*COMMAND, *(str(part) for pair in options.items() for part in pair)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        port = _wait_for_port(process, port_file)
        event = b'{"event":"user.login","time":"2025-06-01T23:57:37.919Z"}'
        assert _post(port, certs, "/test.log", b"[" + b",".join([event] * 10) + b"]") == 201
        assert _post(port, certs, "/session.s1.log", b'{"sid":"s1"}') == 201
        control.write_text(json.dumps({"status": 503}))
        deadline = time.monotonic() + 5
        while _post(port, certs, "/probe", b'{"dropped":true}') != 503:  # matches nothing
            assert time.monotonic() < deadline, "control file not applied"
            time.sleep(0.05)
        assert not list(tmp_path.glob("out/*"))  # flush interval 60 s: nothing written yet
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    log = stderr.decode()
    assert process.returncode == 0, log
    assert "[warn]: " in log
    assert "section <buffer> is not used in <source> of http plugin" in log
    assert "received SIGTERM" in log
    assert len(read_records(tmp_path / "out" / "audit")) == 11
    stats = json.loads(stats_file.read_text())
    assert stats["tags"]["test.log"]["records"] == 10
    assert stats["tags"]["session.s1.log"] == {"requests": 1, "records": 1}
    assert stats["tags"]["probe"]["records"] == stats["statuses"]["201"] - 2
    assert stats["unmatched_records"] == stats["tags"]["probe"]["records"]


def test_config_errors_exit_1_naming_the_line(tmp_path: Path) -> None:
    conf = tmp_path / "fluent.conf"
    conf.write_text("<source>\n  @type http\n  port eighty\n</source>\n")
    result = subprocess.run(
        [*COMMAND, "--config", str(conf)], capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 1
    assert f"{conf}:3: port in <source>" in result.stderr.decode()
    bad_fault = subprocess.run(
        [*COMMAND, "--config", str(conf), "--fault", "latency_ms=soon"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert bad_fault.returncode == 1
    assert "--fault: fault latency_ms='soon'" in bad_fault.stderr.decode()


def test_dry_run_checks_config_and_keys(tmp_path: Path) -> None:
    certs = make_fluentd_certs(tmp_path / "certs")
    conf = tmp_path / "fluent.conf"
    conf.write_text(fluent_conf(certs, tmp_path / "out"))
    good = subprocess.run(
        [*COMMAND, "--config", str(conf), "--dry-run"], capture_output=True, timeout=30, check=False
    )
    assert good.returncode == 0, good.stderr.decode()
    assert "configuration is valid" in good.stderr.decode()
    conf.write_text(fluent_conf(certs, tmp_path / "out").replace(certs.passphrase, "nope"))
    bad = subprocess.run(
        [*COMMAND, "--config", str(conf), "--dry-run"], capture_output=True, timeout=30, check=False
    )
    assert bad.returncode == 1
    assert "Could not parse PKey" in bad.stderr.decode()
