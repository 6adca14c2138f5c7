"""``provmint anchor``: commit pending batches on chain; ``anchor status``;
``anchor deploy-registry``."""

from __future__ import annotations

import json as jsonlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provmint.cli._common import (
    ConfigOpt,
    JsonOpt,
    LockTimeoutOpt,
    StoreOpt,
    escape,
    handle_errors,
    print_json,
    settings,
    stderr,
    stdout,
)

if TYPE_CHECKING:
    from provmint.anchor import AnchorRun, ScheduledRun, StatusReport
    from provmint.chain import ChainKey
    from provmint.config import ChainSettings, Settings

app = typer.Typer(
    rich_markup_mode=None,
    invoke_without_command=True,
)

ChainOpt = Annotated[
    str | None,
    typer.Option(
        "--chain",
        help="Chain profile from the config file [env: PROVMINT_CHAIN]",
        show_default=False,
        rich_help_panel="Chain",
    ),
]
RpcOpt = Annotated[
    str | None,
    typer.Option(
        "--rpc-url",
        help="Node JSON-RPC URL [env: PROVMINT_RPC_URL]",
        show_default=False,
        rich_help_panel="Chain",
    ),
]
KeystoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--keystore",
        help="Encrypted keystore of the chain key [env: PROVMINT_KEYSTORE; or a hex "
        "key in PROVMINT_CHAIN_KEY]",
        show_default=False,
        rich_help_panel="Chain",
    ),
]
MaxFeeOpt = Annotated[
    float | None,
    typer.Option("--max-fee-gwei", help="Refuse to pay more per gas than this", show_default=False),
]
MaxSpendOpt = Annotated[
    float | None,
    typer.Option(
        "--max-spend-eth",
        help="Refuse a transaction that could cost more than this",
        show_default=False,
    ),
]


BatchRefsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--batch", help="Anchor only these batches (repeat the option).", show_default=False
    ),
]
MethodOpt = Annotated[
    str | None,
    typer.Option("--method", help="calldata (default) or registry", show_default=False),
]
RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        help="AnchorRegistry address (registry method) [env: PROVMINT_REGISTRY]",
        show_default=False,
    ),
]
ConfirmationsOpt = Annotated[
    int | None,
    typer.Option(
        "--confirmations",
        min=1,
        help="Blocks to wait for (profile default, else 1)",
        show_default=False,
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Show the transaction, its cost and its batches; send nothing."),
]
NoWaitOpt = Annotated[
    bool,
    typer.Option(
        "--no-wait",
        help="Return once the transaction is sent (resume with anchor status --wait).",
    ),
]
EveryOpt = Annotated[
    str | None,
    typer.Option(
        "--every",
        metavar="DURATION",
        help="Keep running: anchor now and then every DURATION (90s, 30m, 1h, 1h30m, 1d; "
        "2s to 7d), one line per run on stderr, until SIGTERM or Ctrl-C.",
        show_default=False,
    ),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        metavar="ADDRESS",
        help="The sender's address: with --dry-run no key is needed (with a key, it must "
        "be the key's address).",
        show_default=False,
        rich_help_panel="Chain",
    ),
]


def chain_settings(
    chain: str | None, rpc_url: str | None, config: Path | None, **overrides: Any
) -> ChainSettings:
    """Chain settings from options, environment and the config file's profile."""
    from provmint.config import resolve_chain

    return resolve_chain(chain=chain, rpc_url=rpc_url, config_file=config, **overrides)


def _password() -> str:
    if not stderr().is_terminal:
        from provmint.errors import AnchorError

        raise AnchorError(
            "the keystore needs a password",
            hint="set PROVMINT_KEYSTORE_PASSWORD (no terminal to ask on)",
        )
    return str(typer.prompt("Keystore password", hide_input=True, err=True))


@app.callback()
@handle_errors
def anchor(
    ctx: typer.Context,
    batch: BatchRefsOpt = None,
    method: MethodOpt = None,
    registry: RegistryOpt = None,
    confirmations: ConfirmationsOpt = None,
    max_fee_gwei: MaxFeeOpt = None,
    max_spend_eth: MaxSpendOpt = None,
    dry_run: DryRunOpt = False,
    no_wait: NoWaitOpt = False,
    every: EveryOpt = None,
    chain: ChainOpt = None,
    rpc_url: RpcOpt = None,
    keystore: KeystoreOpt = None,
    from_address: FromOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """Anchor every minted, not-yet-anchored batch in one transaction.

    Unfinished anchors of earlier runs (killed, timed out, dropped, reorged) are finished
    first, with the transactions they saved. With --every it keeps running: one run per
    period, one line each; a run's chain error (node down, funds) is logged and the next
    period tries again; a configuration error ends it. SIGTERM or Ctrl-C stops it (a run
    in progress stops waiting; the next run finishes its anchor). Exit codes: 0 done (or
    nothing pending, or stopped), 10 chain problem (node, chain id, fees, funds, key),
    2 usage.

    \b
    Examples:
      provmint anchor --dry-run --from 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266
      PROVMINT_CHAIN_KEY=0x... provmint anchor --chain sepolia --confirmations 3
      provmint anchor --chain sepolia --every 1h
      provmint anchor --method registry --registry 0x5FbDB2315678afecb367f032d93F642f64180aa3
    """
    if ctx.invoked_subcommand is not None:
        return
    from provmint.anchor import anchor_batches
    from provmint.anchor.schedule import parse_every
    from provmint.chain import chain_sender
    from provmint.errors import ConfigError

    interval = None
    if every is not None:
        if dry_run:
            raise ConfigError(
                "--every sends transactions: it cannot be combined with --dry-run",
                hint="check the plan first with: provmint anchor --dry-run",
            )
        if batch:
            raise ConfigError(
                "--every anchors every pending batch: it cannot be combined with --batch"
            )
        interval = parse_every(every)
    cfg = settings(store, None, config, lock_timeout=lock_timeout)
    chain_cfg = chain_settings(
        chain,
        rpc_url,
        config,
        method=method,
        registry=registry,
        confirmations=confirmations,
        max_fee_gwei=max_fee_gwei,
        max_spend_eth=max_spend_eth,
        keystore=keystore,
    )
    key, sender = chain_sender(chain_cfg, from_address, signing=not dry_run, ask_password=_password)
    if interval is not None:
        assert key is not None  # a run that signs has its key
        _run_every(cfg, chain_cfg, key, interval, wait=not no_wait, json=json)
        return
    err = stderr()
    notify = (lambda message: None) if json else (lambda message: err.print(message))
    run = anchor_batches(
        cfg,
        chain_cfg,
        key,
        batch_refs=batch,
        dry_run=dry_run,
        wait=not no_wait,
        notify=notify,
        sender=sender,
    )
    if json:
        print_json(run.to_json())
    else:
        _render_run(run)


def _run_every(
    cfg: Settings,
    chain_cfg: ChainSettings,
    key: ChainKey,
    interval: float,
    *,
    wait: bool,
    json: bool,
) -> None:
    """``anchor --every``: the schedule, one line per run on stderr (and one JSON
    document per line on stdout with --json), until SIGTERM or Ctrl-C."""
    import threading

    from provmint.anchor.schedule import anchor_every, format_every
    from provmint.chain import mask_url
    from provmint.cli._signals import stop_on_signals

    err = stderr()

    def on_run(done: ScheduledRun) -> None:
        err.print(escape(done.line()))
        if json:
            sys.stdout.write(jsonlib.dumps(done.to_json(), ensure_ascii=False) + "\n")
            sys.stdout.flush()

    node = mask_url(chain_cfg.rpc_url) if chain_cfg.rpc_url else "no node"
    err.print(
        escape(
            f"anchoring every {format_every(interval)} from {key.address} via {node}; "
            "SIGTERM or Ctrl-C stops"
        )
    )
    stop = threading.Event()
    with stop_on_signals(stop) as received:
        runs = anchor_every(cfg, chain_cfg, key, interval, stop=stop, on_run=on_run, wait=wait)
    why = f" on {received[0]}" if received else ""
    err.print(f"stopped{why} after {runs} run(s)")


def _render_run(run: AnchorRun) -> None:
    out = stdout()
    for resumed in run.resumed:
        out.print(
            f"Resumed anchor #{resumed.anchor_id}: {resumed.state} "
            f"({resumed.tx_hash or 'no transaction yet'})"
        )
    if run.plan is None:
        out.print("Nothing to anchor: every batch is anchored or being anchored.")
        return
    plan = run.plan
    if run.dry_run:
        out.print(
            f"[bold]Dry run[/]: would anchor {len(plan.batch_ids)} batch(es) on chain "
            f"{plan.chain_id} by {plan.method}"
        )
        out.print(f"  from {plan.sender} to {plan.to}")
        out.print(f"  data {plan.data}")
        out.print(
            f"  gas {plan.gas:,}, max fee {plan.max_fee_wei / 1e9:.3f} gwei, "
            f"up to {plan.max_cost_wei / 1e18:.8f} ETH (balance "
            f"{plan.balance_wei / 1e18:.8f} ETH)"
        )
        out.print(f"  batches: {', '.join(plan.batch_ids)}")
        return
    record = run.anchor
    if record is None:  # pragma: no cover - a run with a plan records an anchor
        return
    out.print(
        f"[bold green]Anchor #{record.anchor_id}[/] {record.state}: "
        f"{record.tree_size} batch(es) on chain {record.chain_id} ({record.method})"
    )
    out.print(f"  tx     {record.tx_hash}")
    if record.block_number is not None:
        out.print(f"  block  {record.block_number} ({record.block_hash})")
        out.print(
            f"  gas    {record.gas_used:,} used, fee {int(record.fee_wei or 0) / 1e18:.8f} ETH"
        )
    out.print(f"  digest {record.digest}")
    if run.remaining:
        out.print(f"{run.remaining} more batch(es) pending: run provmint anchor again")


@app.command("status")
@handle_errors
def status(
    wait: Annotated[
        bool, typer.Option("--wait", help="Drive open anchors until they have their confirmations.")
    ] = False,
    chain: ChainOpt = None,
    rpc_url: RpcOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """List anchors (state, tx, block, confirmations) and pending batches.

    With a node (--rpc-url or a chain profile), confirmations are counted live and a
    reorg that dropped an anchor's block is noticed.

    Example: provmint anchor status --rpc-url http://127.0.0.1:8545 --wait
    """
    from provmint.anchor import anchor_status

    cfg = settings(store, None, config, lock_timeout=lock_timeout)
    chain_cfg = chain_settings(chain, rpc_url, config)
    err = stderr()
    report = anchor_status(
        cfg,
        chain_cfg if chain_cfg.rpc_url else None,
        wait=wait,
        notify=None if json else (lambda message: err.print(message)),
    )
    if json:
        print_json(report.to_json())
    else:
        _render_status(report)


def _render_status(report: StatusReport) -> None:
    from rich.table import Table

    out = stdout()
    if report.anchors:
        table = Table(title="Anchors", title_justify="left")
        for column in ("#", "state", "chain", "method", "batches", "tx", "block", "confirmations"):
            table.add_column(column)
        for a in report.anchors:
            depth = report.confirmations.get(a.anchor_id)
            table.add_row(
                str(a.anchor_id),
                a.state,
                str(a.chain_id),
                a.method,
                str(a.tree_size),
                a.tx_hash or "",
                "" if a.block_number is None else str(a.block_number),
                "" if depth is None else f"{depth} / {a.confirmations}",
            )
        out.print(table)
    else:
        out.print("No anchors yet.")
    if report.pending:
        out.print(f"Pending batches ({len(report.pending)}): {', '.join(report.pending)}")
    else:
        out.print("No pending batches.")


@app.command("deploy-registry")
@handle_errors
def deploy(
    chain: ChainOpt = None,
    rpc_url: RpcOpt = None,
    keystore: KeystoreOpt = None,
    max_fee_gwei: MaxFeeOpt = None,
    max_spend_eth: MaxSpendOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Deploy the AnchorRegistry contract from the chain key and print its address.

    Example: provmint anchor deploy-registry --rpc-url http://127.0.0.1:8545
    """
    from provmint.anchor import deploy_registry
    from provmint.chain import load_chain_key

    chain_cfg = chain_settings(
        chain,
        rpc_url,
        config,
        keystore=keystore,
        max_fee_gwei=max_fee_gwei,
        max_spend_eth=max_spend_eth,
    )
    key = load_chain_key(chain_cfg, _password)
    deployment = deploy_registry(chain_cfg, key)
    if json:
        print_json(deployment.to_json())
        return
    stdout().print(
        f"AnchorRegistry deployed at [bold]{deployment.address}[/] on chain "
        f"{deployment.chain_id} (block {deployment.block_number}, "
        f"{deployment.gas_used:,} gas)"
    )
    stdout().print(
        f"Use it with: provmint anchor --method registry --registry {deployment.address}"
    )


@app.command("deploy-verifier")
@handle_errors
def deploy_verifier(
    registry: RegistryOpt = None,
    chain: ChainOpt = None,
    rpc_url: RpcOpt = None,
    keystore: KeystoreOpt = None,
    max_fee_gwei: MaxFeeOpt = None,
    max_spend_eth: MaxSpendOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Deploy a ProvmintVerifier, which checks proofs on chain against one AnchorRegistry.

    The registry must run provmint's AnchorRegistry code; the verifier reads it for
    good. Encode a proof's call with provmint proof calldata.

    Example: provmint anchor deploy-verifier --registry 0x5FbDB2315678afecb367f032d93F642f64180aa3
    """
    from provmint.anchor import deploy_verifier as deploy
    from provmint.chain import load_chain_key
    from provmint.errors import ConfigError

    chain_cfg = chain_settings(
        chain,
        rpc_url,
        config,
        registry=registry,
        keystore=keystore,
        max_fee_gwei=max_fee_gwei,
        max_spend_eth=max_spend_eth,
    )
    if chain_cfg.registry is None:
        raise ConfigError(
            "the verifier needs a registry to read",
            hint="pass --registry ADDRESS (provmint anchor deploy-registry makes one)",
        )
    key = load_chain_key(chain_cfg, _password)
    deployment = deploy(chain_cfg, key, chain_cfg.registry)
    if json:
        print_json({**deployment.to_json(), "registry": chain_cfg.registry})
        return
    stdout().print(
        f"ProvmintVerifier deployed at [bold]{deployment.address}[/] on chain "
        f"{deployment.chain_id} (block {deployment.block_number}, "
        f"{deployment.gas_used:,} gas), reading the registry {chain_cfg.registry}"
    )
    stdout().print(
        "Check a proof with: cast call "
        f'{deployment.address} "$(provmint proof calldata proof.json)"'
    )
