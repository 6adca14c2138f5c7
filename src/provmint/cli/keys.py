"""``provmint keys``: create, rotate and list issuer keys (never shows a secret)."""

from __future__ import annotations

import typer

from provmint.cli._common import (
    Column,
    ConfigOpt,
    JsonOpt,
    KeyFileOpt,
    handle_errors,
    minute,
    print_json,
    print_table,
    settings,
    stdout,
)

app = typer.Typer(
    rich_markup_mode=None,
    help="Manage the issuer key that authenticates every token.",
    no_args_is_help=True,
)


@app.command("init")
@handle_errors
def init(key_file: KeyFileOpt = None, config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Create a key file (mode 0600) with one fresh 256-bit issuer key.

    Never overwrites an existing file. Back the file up: tokens cannot be checked
    without it.

    Example: provmint keys init --key-file /etc/provmint/keys.json
    """
    from provmint.keys import init_keyring

    cfg = settings(key_file=key_file, config=config)
    key = init_keyring(cfg.key_file)
    if json:
        print_json({"key_file": str(cfg.key_file), "key": key.to_json()})
        return
    stdout().print(f"Created issuer key [bold]{key.id}[/] in {cfg.key_file} (mode 0600).")
    stdout().print("Back this file up: printed tokens can only be checked with it.")


@app.command("rotate")
@handle_errors
def rotate(key_file: KeyFileOpt = None, config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Make a new active key; older keys stay in the file and keep verifying.

    Example: provmint keys rotate
    """
    from provmint.keys import rotate_key

    cfg = settings(key_file=key_file, config=config)
    new, old = rotate_key(cfg.key_file)
    if json:
        print_json(
            {"key_file": str(cfg.key_file), "active": new.to_json(), "retired": old.to_json()}
        )
        return
    stdout().print(f"New active key [bold]{new.id}[/]; {old.id} retired (still verifies).")


@app.command("list")
@handle_errors
def list_keys(key_file: KeyFileOpt = None, config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """List key ids, status and dates (never the secrets).

    Example: provmint keys list --json
    """
    from provmint.keys import load_keyring

    cfg = settings(key_file=key_file, config=config)
    ring = load_keyring(cfg.key_file)
    if json:
        print_json({"key_file": str(cfg.key_file), "keys": [k.to_json() for k in ring.keys]})
        return
    print_table(
        f"Issuer keys in {cfg.key_file}",
        [
            Column("id", whole=True),
            Column("status"),
            Column("created", whole=True, brief=minute),
            Column("retired", brief=minute),
        ],
        [[k.id, k.status, k.created_at, k.retired_at or ""] for k in ring.keys],
    )
