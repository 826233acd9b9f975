"""`edgecompress --help` introduces the tool to someone who has never seen it."""
from edgecompress.cli import build_parser


def test_help_says_what_the_tool_does_in_one_sentence():
    # execute
    text = build_parser().format_help()
    # assert
    assert "wiring" not in text
    desc = build_parser().description
    assert desc.count(". ") == 0 and desc.endswith(".") and "int8" in desc and "classifier" in desc
