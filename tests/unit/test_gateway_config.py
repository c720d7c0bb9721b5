"""The gateway's token file and settings hash (enova.gateway.config)."""

from __future__ import annotations

import pytest

from enova.errors import UsageError
from enova.gateway.config import load_tokens, normalize_settings, settings_hash

SETTINGS = {"host": "127.0.0.1", "port": 9199, "token_file": None, "max_body_bytes": 1024, "queue_size": 10,
            "queue_timeout": 30}


def test_a_token_file_holds_one_token_per_line_with_blank_lines_and_comments_ignored(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# rotation: new first, old until clients moved\n  new-token  \n\nold-token\nnew-token\n")
    assert load_tokens(path) == ("new-token", "old-token")


@pytest.mark.parametrize("text", ["", "\n  \n", "# only a comment\n"])
def test_a_token_file_without_a_token_is_refused_naming_the_file(tmp_path, text):
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(UsageError, match=f"token_file {path}: the file holds no token"):
        load_tokens(path)


def test_the_settings_hash_changes_with_the_tokens_and_not_with_number_spelling():
    assert settings_hash(SETTINGS, ("a",)) != settings_hash(SETTINGS, ("a", "b"))
    assert settings_hash(SETTINGS, ("a", "b")) == settings_hash({**SETTINGS, "queue_timeout": 30.0}, ("b", "a"))


def test_bad_settings_are_refused_naming_the_key():
    with pytest.raises(UsageError, match="queue_size must be an integer >= 0"):
        normalize_settings({**SETTINGS, "queue_size": -1})
    with pytest.raises(UsageError, match="unknown key"):
        normalize_settings({**SETTINGS, "tokne_file": "x"})
