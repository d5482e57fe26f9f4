"""Key names and text to PC AT set 1 scancodes as SPICE sends them."""

import pytest

from spicectl.errors import InvalidInput
from spicectl.spice.keys import break_code, make_code, parse_combo, text_to_strokes


def test_plain_and_extended_make_and_break_codes():
    esc = parse_combo("esc")[0]
    assert (make_code(esc), break_code(esc)) == (0x01, 0x81)
    delete = parse_combo("delete")[0]
    assert (make_code(delete), break_code(delete)) == (0x53E0, 0xD3E0)


def test_combinations_keep_their_order():
    assert [make_code(c) for c in parse_combo("ctrl-alt-delete")] == [0x1D, 0x38, 0x53E0]
    assert parse_combo("ctrl+c") == parse_combo("CTRL-C")


def test_unknown_key_is_a_clear_error():
    with pytest.raises(InvalidInput, match="unknown key 'escc'"):
        parse_combo("escc")


def test_us_layout_text():
    assert text_to_strokes("aA1!\n") == [(0x1E, False), (0x1E, True), (0x02, False), (0x02, True), (0x1C, False)]
    with pytest.raises(InvalidInput, match="US keyboard"):
        text_to_strokes("é")


def test_cli_refuses_unknown_keys_before_connecting(run):
    r = run("send-keys", "nosuchguest", "hyperkey")
    assert r.exit_code == 2
    assert "unknown key 'hyperkey'" in r.stderr
