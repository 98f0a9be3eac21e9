"""`novelview` command line: a thin shell over the Python API.

Every command imports what it needs lazily so ``novelview --help`` stays fast. User errors
(:class:`novelview.errors.NovelviewError`) are printed as one line on stderr with exit code 2, no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from novelview.errors import NovelviewError

app = typer.Typer(
    help="Single-image novel view synthesis with pose-conditional diffusion models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Make, inspect and render multi-view datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# ============================================================== data (issue: foundation)


# ============================================================== models (issue: backbones)


# ============================================================== train


# ============================================================== sample / orbit


# ============================================================== eval


# ============================================================== serve


# ============================================================== demo


# ============================================================== render (data render)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, standalone_mode=True)
    except NovelviewError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)

