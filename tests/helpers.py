"""Small helpers shared by the test modules."""


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line of `text` containing `needle` (to check the line an error names)."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)
