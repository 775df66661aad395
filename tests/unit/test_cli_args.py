"""The argparse value types the subcommands share, through the real ``exactsync`` parser."""

from __future__ import annotations

import pytest

from shared.cli import build_parser


def test_counts_and_scales_take_positive_numbers() -> None:
    parser = build_parser()
    args = parser.parse_args(["sync", "--workers", "3", "--division", "17"])
    assert (args.workers, args.division) == (3, [17])
    assert parser.parse_args(["sandbox", "--time-scale", "0.5"]).time_scale == 0.5


@pytest.mark.parametrize(
    "argv",
    [
        ["sync", "--workers", "0"],
        ["sync", "--workers", "two"],
        ["sync", "--division", "-4"],
        ["demo", "--workers", "1.5"],
        ["sandbox", "--time-scale", "0"],
        ["sandbox", "--time-scale", "nan"],
        ["sandbox", "--time-scale", "fast"],
    ],
)
def test_anything_else_is_refused_with_the_option_named(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert f"argument {argv[1]}" in capsys.readouterr().err
