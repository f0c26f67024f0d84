"""The ``takler`` command: the typer app and the console-script entry point.

``takler child ...`` is dispatched before typer, rich or Trio are imported,
so the child commands jobs send start fast.
"""

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

_app: "typer.Typer | None" = None


def make_app() -> "typer.Typer":
    """The typer application with every command but ``child``."""
    import typer

    from takler_cli import commands, serve, watch

    app = typer.Typer(
        name="takler",
        help="takler: an event-driven workflow scheduler. Start with `takler demo`.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    serve.register(app)
    commands.register(app)
    watch.register(app)

    @app.command(
        "child",
        help="Child commands jobs send: takler child init|event|meter|label|wait|complete|abort.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def child(ctx: typer.Context) -> None:
        from takler_cli.child import main as child_main

        raise typer.Exit(child_main(list(ctx.args)))

    return app


def get_app() -> "typer.Typer":
    global _app
    if _app is None:
        _app = make_app()
    return _app


def __getattr__(name: str) -> Any:
    if name == "app":
        return get_app()
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> int:
    """Run the ``takler`` command line; returns the exit status.

    Exit statuses: 0 ok, 1 refused, 2 usage, 3 server error, 4 unreachable.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["child"]:
        from takler_cli.child import main as child_main

        return child_main(args[1:])
    import typer

    command = typer_command(get_app())
    try:
        result = command.main(args=args, prog_name="takler", standalone_mode=False)
    except typer.TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            # `takler` or `takler token` alone: help, not an error.
            print(ctx.get_help())
            return 0
        where = ctx.command_path if ctx is not None else "takler"
        hint = f" (see {where} --help)" if exc.exit_code == 2 else ""
        print(f"{where}: {' '.join(exc.format_message().split())}{hint}", file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if os.environ.get("TAKLER_DEBUG"):
            raise
        print(f"takler: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    return result if isinstance(result, int) else 0


def typer_command(app: "typer.Typer") -> Any:
    import typer.main

    return typer.main.get_command(app)


if __name__ == "__main__":
    sys.exit(main())
