"""The `nads` command (typer): one entry point, commands registered by the modules that own them.

Nothing heavy is imported here: `nads --help` stays fast; each command imports what it needs
(torch only for `nads compute` and `nads export`).
"""

from __future__ import annotations

import importlib

import typer

# Modules that expose `register(app: typer.Typer)`; each adds its own commands.
COMMAND_MODULES = ("nads.compute_command", "nads.service_commands", "nads.client_commands",
                   "nads.arch_commands", "nads.catalog_command")


def build_app() -> typer.Typer:
    app = typer.Typer(name="nads", help="Neural anisotropy directions.", no_args_is_help=True,
                      add_completion=False, pretty_exceptions_enable=False)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Runs the command line (exits with the command's status); what it prints is escaped of
    control characters (nads/terminal.py: much of it comes from the service)."""
    from nads.terminal import install

    install()
    build_app()(args=argv, prog_name="nads")


if __name__ == "__main__":
    main()
