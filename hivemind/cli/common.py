"""Small helpers shared by CLI commands."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import typer

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_FACTOR_MB = {"": 1, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def parse_memory_mb(text: str) -> int:
    """'512', '512m', '2g', '1.5GiB' -> MiB. A bare number means MiB."""
    match = _SIZE.match(text)
    if not match:
        raise typer.BadParameter(f"'{text}' is not a size like 512m or 2g")
    mb = float(match.group(1)) * _FACTOR_MB[match.group(2).lower()]
    if mb < 1:
        raise typer.BadParameter(f"'{text}' is less than 1 MiB")
    return int(mb)


def read_task_zip(path: Path) -> bytes:
    """A task zip's bytes: the file itself, or a directory zipped up."""
    if path.is_dir():
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(path.rglob("*")):
                if file.is_file() and not file.is_symlink():
                    archive.write(file, file.relative_to(path).as_posix())
        return buf.getvalue()
    if path.is_file():
        return path.read_bytes()
    raise typer.BadParameter(f"{path} is neither a zip file nor a directory")


def fail(message: str) -> typer.Exit:
    """Print an error to stderr and return the exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)
