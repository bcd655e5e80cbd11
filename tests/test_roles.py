"""Roles from the auth file: `user:password` (an examiner) or `user:password:role`, a clear message for a role that
does not exist."""

import pytest

from ui.config import AppConfig, read_users, roles


def config_with(tmp_path, text: str) -> AppConfig:
    (tmp_path / "users").write_text(text)
    return AppConfig(auth_file=str(tmp_path / "users"))


def test_roles_from_the_auth_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADER_AUTH", "env:pw:admin")
    config = config_with(tmp_path, "# examiners\nalice:secret\nbob:s3cret:adjudicator\ncarol:pa:ss:examiner\n"
                                   "dave:x:admin\n")
    assert roles(config) == {"env": "admin", "alice": "examiner", "bob": "adjudicator", "carol": "examiner",
                             "dave": "admin"}
    assert read_users(config) == {"env": "pw", "alice": "secret", "bob": "s3cret", "carol": "pa:ss", "dave": "x"}


@pytest.mark.parametrize("line, message", [
    ("bob:pw:adjudicatr", "unknown role 'adjudicatr'"),
    ("carol:pa:ss", "unknown role 'ss'.*a password with ':' must end with its role"),
    ("dave::admin", "must be user:password or user:password:role"),
    ("erin", "must be user:password")])
def test_bad_auth_lines_are_refused_clearly(tmp_path, monkeypatch, line, message):
    monkeypatch.delenv("GRADER_AUTH", raising=False)
    with pytest.raises(ValueError, match=message):
        roles(config_with(tmp_path, line + "\n"))


def test_no_login_no_roles(monkeypatch):
    monkeypatch.delenv("GRADER_AUTH", raising=False)
    assert roles(AppConfig()) == {} and read_users(AppConfig()) == {}
