"""The README's generated blocks: written in place, and a changed number is caught in one line."""

import pytest

from iwshift import readme

TEXT = "# Title\n\nintro\n<!-- claims:begin -->\nold\n<!-- claims:end -->\ntail\n"


def test_replace_then_check_round_trips_and_keeps_the_rest():
    block = "| claim | value |\n|---|---|\n| (b) | +0.041 |"
    text = readme.replace_block(TEXT, "claims", block)
    assert text.startswith("# Title\n\nintro\n") and text.endswith("<!-- claims:end -->\ntail\n")
    assert readme.find_block(text, "claims") == block
    assert readme.check_block(text, "claims", block) is None


def test_an_edited_number_is_reported_in_one_line():
    block = "| claim | value |\n|---|---|\n| (b) | +0.041 |\n| (c) | +0.005 |"
    edited = readme.replace_block(TEXT, "claims", block.replace("+0.041", "+0.051"))
    message = readme.check_block(edited, "claims", block)
    assert message is not None and "\n" not in message
    assert message.startswith("1 of 4 lines differ") and "+0.051" in message


def test_missing_markers_are_named():
    assert "claims:begin" in readme.check_block("no block here", "claims", "x")
    with pytest.raises(ValueError, match="claims:begin"):
        readme.replace_block("no block here", "claims", "x")
