"""The log redaction masks a secret's value and keeps the words around it."""

from __future__ import annotations

import logging

from hivemind_celery.observability.logs import TextFormatter, redact


def test_the_word_secret_in_a_sentence_masks_nothing() -> None:
    line = "refused ExecuteTask from ipv4:10.1.2.3:4242: missing or wrong x-hivemind-secret node_id=site1"
    assert redact(line) == line


def test_values_given_after_a_separator_or_bearer_are_masked() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYSJ9.c2lnbmF0dXJl"
    text = redact(f"password=hunter2 token: abc123 authorization: Bearer plain-token x-hivemind-secret=s3 {jwt} ok")
    for secret in ("hunter2", "abc123", "plain-token", "s3 ", jwt):
        assert secret not in text
    assert text.endswith(" ok") and text.startswith("password=[redacted] token: [redacted]")
    assert redact("Bearer opaque-thing next") == "Bearer [redacted] next"


def test_text_log_line_keeps_the_extras_after_a_secret_word() -> None:
    record = logging.makeLogRecord(
        {
            "msg": "refused %s from %s: missing or wrong %s",
            "args": ("ExecuteTask", "ipv4:10.1.2.3:4242", "x-hivemind-secret"),
            "levelname": "WARNING",
            "name": "bridge.callers",
            "node_id": "site1",
            "peer": "ipv4:10.1.2.3:4242",
        }
    )
    line = TextFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line.endswith("missing or wrong x-hivemind-secret node_id=site1 peer=ipv4:10.1.2.3:4242"), line
