"""``provmint config``: the settings in effect, and where each one came from."""

from __future__ import annotations

import json as jsonlib

import typer

from provmint.cli._common import (
    Column,
    ConfigOpt,
    JsonOpt,
    KeyFileOpt,
    StoreOpt,
    handle_errors,
    print_json,
    print_table,
)

app = typer.Typer(
    rich_markup_mode=None,
    help="Show the settings in effect (options > PROVMINT_* environment > config file > defaults).",
    no_args_is_help=True,
)


@app.command("show")
@handle_errors
def show(
    store: StoreOpt = None,
    key_file: KeyFileOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show every setting's value and where it came from: option, the PROVMINT_*
    variable that set it, file (the config file), or default. Secrets are never
    settings (the issuer key has its own file; chain keys come from the environment),
    and a scan log URL is shown without its password. Exit 2 when a setting is invalid.

    Examples:

      provmint config show

      provmint config show --json
    """
    from provmint.config import explain_settings

    options = {"store": store, "key_file": key_file}
    settings, origins = explain_settings(options=options, config_file=config)
    where = str(settings.config_file) if settings.config_file else None
    if json:
        print_json({"config_file": where, "settings": [o.to_json() for o in origins]})
        return
    title = f"Settings (config file: {where or 'none'})"
    rows = [[o.name, _text(o.value), o.source] for o in origins]
    print_table(title, [_NAME, _VALUE, _SOURCE], rows)


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return jsonlib.dumps(value)


_NAME = Column("setting", whole=True)
_VALUE = Column("value")
_SOURCE = Column("source", whole=True)
