"""The argument parser every command line of the project uses: a wrong option ends in one
line (the program, the option and what is wrong, and where the options are listed) with
exit 2, instead of argparse's usage block above the error."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line; subcommands inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")
