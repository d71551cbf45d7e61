"""Small helpers shared by the test modules."""


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line of `text` containing `needle` (to check the line an error names)."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def assert_refused(tmp_path, config: dict, edit, needle: str) -> None:
    """`phasediag run` of `config` changed by `edit(config)` (a deep copy) is bad input: exit 2, one line on stderr
    containing `needle` (the key it names), and no output directory."""
    import yaml
    from click.testing import CliRunner

    from phasediag.cli import phasediag

    config = yaml.safe_load(yaml.safe_dump(config))
    edit(config)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = CliRunner().invoke(phasediag, ["run", str(path), "--out", str(tmp_path / "out")])
    assert out.exit_code == 2, out.output
    assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "out").exists()
