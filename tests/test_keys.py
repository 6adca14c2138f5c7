"""Issuer keys (``keys init/rotate/list``), ``token verify`` across rotations, secrets never
leaking, and settings resolution (flags > environment > config file > defaults)."""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_CSV

from provmint.batch import mint_batch
from provmint.config import DEFAULT_URL_BASE, Secret, resolve_settings
from provmint.errors import (
    EXIT_INVALID,
    EXIT_KEY,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    KeyringError,
    MissingFileError,
)
from provmint.keys import init_keyring, key_id_for, load_keyring, rotate_key
from provmint.tokens import format_token, make_token, parse_token

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
KEY_ID = re.compile(r"k-[0-9a-f]{8}")


def secrets_in(key_file: Path) -> list[bytes]:
    doc = json.loads(key_file.read_text())
    return [base64.urlsafe_b64decode(k["secret"]) for k in doc["keys"]]


def secret_spellings(secret: bytes) -> list[str]:
    """Every textual form a leaked secret could take."""
    urlsafe = base64.urlsafe_b64encode(secret).decode()
    standard = base64.b64encode(secret).decode()
    return [
        urlsafe,
        urlsafe.rstrip("="),
        standard,
        standard.rstrip("="),
        secret.hex(),
        secret.hex().upper(),
        urlsafe[:24],
        secret.hex()[:24],
    ]


def assert_no_secret(text: str, secrets: list[bytes]) -> None:
    for secret in secrets:
        for spelling in secret_spellings(secret):
            assert spelling not in text, f"secret leaked as {spelling!r}"
        assert secret.decode("latin-1") not in text


def one_error(r: Any, code: int, *needles: str) -> str:
    assert "Traceback" not in r.stdout + r.stderr
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[0] == errors[0], r.stderr
    assert all(ln.startswith("hint: ") for ln in lines[1:]), r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr
    return errors[0]


def key_file(isolated: Path) -> Path:
    return isolated / "keys" / "keys.json"


# --------------------------------------------------------------------------- keys init


def test_keys_init_creates_a_private_key_file(cli, isolated: Path) -> None:
    path = key_file(isolated)
    r = cli("keys", "init")
    assert r.exit_code == 0, r.output
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    doc = json.loads(path.read_text())
    assert doc["format"] == "provmint-keyring/1"
    assert len(doc["keys"]) == 1
    entry = doc["keys"][0]
    assert set(entry) == {"id", "created_at", "status", "retired_at", "secret"}
    assert entry["status"] == "active" and entry["retired_at"] is None
    secret = base64.urlsafe_b64decode(entry["secret"])
    assert len(secret) == 32
    assert entry["id"] == key_id_for(secret) and KEY_ID.fullmatch(entry["id"])
    assert f"Created issuer key {entry['id']} in {path} (mode 0600)." in r.stdout
    assert_no_secret(r.stdout + r.stderr, [secret])
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_keys_init_json(cli, isolated: Path) -> None:
    r = cli("keys", "init", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out) == {"key_file", "key"}
    assert set(out["key"]) == {"id", "status", "created_at", "retired_at"}
    assert out["key_file"] == str(key_file(isolated))
    assert out["key"]["id"] == load_keyring(key_file(isolated)).active.id
    assert out["key"]["status"] == "active" and out["key"]["retired_at"] is None
    assert_no_secret(r.stdout, secrets_in(key_file(isolated)))


def test_keys_init_with_flag_path(cli, isolated: Path) -> None:
    path = isolated / "elsewhere" / "issuer.json"
    r = cli("keys", "init", "--key-file", path)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not key_file(isolated).exists()


def test_two_key_files_hold_different_secrets(cli, isolated: Path) -> None:
    assert cli("keys", "init").exit_code == 0
    assert cli("keys", "init", "--key-file", isolated / "k2.json").exit_code == 0
    assert secrets_in(key_file(isolated)) != secrets_in(isolated / "k2.json")


def test_keys_init_never_overwrites(cli, isolated: Path) -> None:
    assert cli("keys", "init").exit_code == 0
    path = key_file(isolated)
    before = path.read_bytes()
    r = cli("keys", "init")
    one_error(r, EXIT_KEY, "a key file already exists at", "provmint keys rotate")
    assert path.read_bytes() == before
    # also refused when the existing file is not even a key file
    other = isolated / "notes.txt"
    other.write_text("precious")
    one_error(cli("keys", "init", "--key-file", other), EXIT_KEY, "already exists")
    assert other.read_text() == "precious"


# --------------------------------------------------------------------------- list / rotate


def test_keys_list_never_shows_the_secret(cli, isolated: Path) -> None:
    init = cli("keys", "init")
    secrets = secrets_in(key_file(isolated))
    text = cli("keys", "list")
    as_json = cli("keys", "list", "--json")
    assert text.exit_code == as_json.exit_code == 0
    key_id = load_keyring(key_file(isolated)).active.id
    assert key_id in text.stdout and "active" in text.stdout
    listed = json.loads(as_json.stdout)
    assert listed["key_file"] == str(key_file(isolated))
    assert [set(k) for k in listed["keys"]] == [{"id", "status", "created_at", "retired_at"}]
    assert listed["keys"][0]["id"] == key_id
    for r in (init, text, as_json):
        assert_no_secret(r.stdout + r.stderr, secrets)


def test_rotate_keeps_old_keys_and_never_shows_secrets(cli, isolated: Path) -> None:
    assert cli("keys", "init").exit_code == 0
    old_id = load_keyring(key_file(isolated)).active.id
    rotated = cli("keys", "rotate", "--json")
    assert rotated.exit_code == 0, rotated.output
    out = json.loads(rotated.stdout)
    ring = load_keyring(key_file(isolated))
    assert out == {
        "key_file": str(key_file(isolated)),
        "active": {
            "id": ring.active.id,
            "status": "active",
            "created_at": ring.active.created_at,
            "retired_at": None,
        },
        "retired": {
            "id": old_id,
            "status": "retired",
            "created_at": ring.keys[0].created_at,
            "retired_at": ring.keys[0].retired_at,
        },
    }
    assert ring.active.id != old_id
    assert [(k.id, k.status) for k in ring.keys] == [
        (old_id, "retired"),
        (ring.active.id, "active"),
    ]
    assert ring.keys[0].retired_at is not None
    assert stat.S_IMODE(key_file(isolated).stat().st_mode) == 0o600
    text_rotate = cli("keys", "rotate")
    assert text_rotate.exit_code == 0
    assert "retired (still verifies)" in text_rotate.stdout
    listed = json.loads(cli("keys", "list", "--json").stdout)["keys"]
    assert [k["status"] for k in listed] == ["retired", "retired", "active"]
    text = cli("keys", "list")
    secrets = secrets_in(key_file(isolated))
    assert len(set(secrets)) == 3
    for r in (rotated, text_rotate, text):
        assert_no_secret(r.stdout + r.stderr, secrets)
    assert_no_secret(json.dumps(listed), secrets)


def test_rotate_without_a_key_file(cli) -> None:
    one_error(
        cli("keys", "rotate"), EXIT_NOT_FOUND, "issuer key file not found", "provmint keys init"
    )


def test_batch_create_output_never_shows_the_secret(cli, isolated: Path) -> None:
    assert cli("keys", "init").exit_code == 0
    secrets = secrets_in(key_file(isolated))
    r = cli("batch", "create", EXAMPLE_CSV, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["key_id"] == key_id_for(secrets[0])
    text = cli("batch", "create", EXAMPLE_CSV, "--skip-invalid")  # all duplicates now
    show = cli("batch", "show", json.loads(r.stdout)["batch_id"], "--json")
    for out in (r, text, show):
        assert_no_secret(out.stdout + out.stderr, secrets)


# --------------------------------------------------------------------------- unsafe key files


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o610])
def test_key_file_readable_by_others_is_refused(cli, isolated: Path, mode: int) -> None:
    assert cli("keys", "init").exit_code == 0
    path = key_file(isolated)
    before = path.read_bytes()
    path.chmod(mode)
    for args in (
        ("keys", "list"),
        ("keys", "rotate"),
        ("batch", "create", EXAMPLE_CSV),
        ("token", "verify", "A" * 22, "--gtin", GTIN, "--serial", SERIAL),
    ):
        one_error(
            cli(*args),
            EXIT_KEY,
            "key file is readable by other users",
            f"mode {mode:o}",
            f"hint: run: chmod 600 {path}",
        )
    assert path.read_bytes() == before  # rotate did not touch it
    assert not (isolated / "store" / "batches").exists() or not any(
        (isolated / "store" / "batches").iterdir()
    )
    path.chmod(0o600)
    assert cli("keys", "list").exit_code == 0
    path.chmod(0o400)  # read-only for the owner is private too
    assert cli("keys", "list").exit_code == 0


def test_tampered_secret_is_refused(cli, isolated: Path) -> None:
    assert cli("keys", "init").exit_code == 0
    path = key_file(isolated)
    doc = json.loads(path.read_text())
    secret = doc["keys"][0]["secret"]
    doc["keys"][0]["secret"] = ("B" if secret[0] != "B" else "C") + secret[1:]
    path.write_text(json.dumps(doc))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for args in (
        ("keys", "list"),
        ("batch", "create", EXAMPLE_CSV),
        ("token", "verify", "A" * 22, "--gtin", GTIN, "--serial", SERIAL),
    ):
        one_error(cli(*args), EXIT_KEY, f"key {doc['keys'][0]['id']} does not match its secret")
    assert not (isolated / "store" / "batches").exists() or not any(
        (isolated / "store" / "batches").iterdir()
    )


def test_tampered_key_id_is_refused(isolated: Path) -> None:
    init_keyring(key_file(isolated))
    doc = json.loads(key_file(isolated).read_text())
    doc["keys"][0]["id"] = "k-00000000"
    key_file(isolated).write_text(json.dumps(doc))
    with pytest.raises(KeyringError, match="does not match its secret"):
        load_keyring(key_file(isolated))


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("not json", "not a readable provmint key file"),
        ("[]", "not a provmint-keyring/1 key file"),
        ('{"format": "provmint-keyring/2", "keys": []}', "not a provmint-keyring/1 key file"),
        ('{"format": "provmint-keyring/1", "keys": []}', "holds no keys"),
        ('{"format": "provmint-keyring/1", "keys": [1]}', "not an object"),
        ('{"format": "provmint-keyring/1", "keys": [{"id": "k-1"}]}', "malformed key entry"),
    ],
)
def test_malformed_key_file_is_a_key_problem(
    cli, isolated: Path, content: str, needle: str
) -> None:
    path = key_file(isolated)
    path.parent.mkdir(mode=0o700)
    path.write_text(content)
    path.chmod(0o600)
    one_error(cli("keys", "list"), EXIT_KEY, needle)


def test_short_or_doubly_active_keys_are_refused(isolated: Path) -> None:
    path = key_file(isolated)
    init_keyring(path)
    rotate_key(path)
    doc = json.loads(path.read_text())
    doc["keys"][0]["status"] = "active"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyringError, match="exactly one active key"):
        load_keyring(path)
    short = b"x" * 16
    doc["keys"] = [
        {
            "id": key_id_for(short),
            "created_at": "",
            "status": "active",
            "retired_at": None,
            "secret": base64.urlsafe_b64encode(short).decode(),
        }
    ]
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyringError, match="shorter than 32 bytes"):
        load_keyring(path)


def test_missing_key_file_for_minting(cli, isolated: Path) -> None:
    one_error(
        cli("batch", "create", EXAMPLE_CSV),
        EXIT_NOT_FOUND,
        "issuer key file not found",
        "provmint keys init",
    )


def test_key_file_inside_the_store_is_a_config_error(
    cli, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside = isolated / "store" / "keys.json"
    monkeypatch.setenv("PROVMINT_KEY_FILE", str(inside))
    for args in (("keys", "init"), ("keys", "list"), ("batch", "create", EXAMPLE_CSV)):
        one_error(
            cli(*args),
            EXIT_USAGE,
            f"key file {inside} is inside the product store",
            "keep the issuer key outside the store",
        )
    assert not inside.exists()
    # the same through flags, and with the store itself as the key file
    monkeypatch.delenv("PROVMINT_KEY_FILE")
    one_error(
        cli("keys", "init", "--key-file", isolated / "store" / "sub" / "k.json"),
        EXIT_USAGE,
        "is inside the product store",
    )
    with pytest.raises(ConfigError, match="inside the product store"):
        resolve_settings(store=isolated / "s", key_file=isolated / "s")
    with pytest.raises(ConfigError, match="inside the product store"):
        resolve_settings(store=isolated / "s", key_file=isolated / "s" / ".." / "s" / "k")


# --------------------------------------------------------------------------- secrets at rest


def test_secrets_never_appear_in_the_store(cli, keyed, isolated: Path) -> None:
    mint_batch(EXAMPLE_CSV, settings=keyed)
    assert cli("keys", "rotate").exit_code == 0
    source = isolated / "more.csv"
    source.write_text("gtin,serial\n09520123450014,MORE1\n09520123450014,MORE2\n")
    assert cli("batch", "create", source).exit_code == 0
    secrets = secrets_in(keyed.key_file)
    assert len(secrets) == 2
    needles = [
        s for secret in secrets for s in [secret, *(x.encode() for x in secret_spellings(secret))]
    ]
    files = [p for p in (isolated / "store").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.name == "tree.bin" for p in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"secret found in {path}"


def test_issuer_key_repr_hides_the_secret(keyed) -> None:
    ring = load_keyring(keyed.key_file)
    key = ring.active
    secret = key.secret.reveal()
    assert len(secret) == 32
    for text in (
        repr(key),
        str(key),
        repr(ring),
        str(ring),
        repr(key.secret),
        str(key.secret),
        f"{key}",
        f"{key.secret!r}",
    ):
        assert_no_secret(text, [secret])
        assert repr(secret) not in text
    assert "********" in repr(key)
    assert key.id in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key.secret)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert repr(Secret(b"s" * 32)) == "Secret('********')"


# --------------------------------------------------------------------------- token verify


def _token(cli, gtin: str = GTIN, serial: str = SERIAL) -> str:
    r = cli("product", "show", "--gtin", gtin, "--serial", serial, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["token"]


def test_token_verify_valid(cli, keyed) -> None:
    summary = mint_batch(EXAMPLE_CSV, settings=keyed)
    token = _token(cli)
    r = cli("token", "verify", token, "--gtin", GTIN, "--serial", SERIAL)
    assert r.exit_code == EXIT_OK, r.output
    assert r.stdout.strip() == (
        f"VALID: token of GTIN {GTIN} serial {SERIAL} (key {summary.key_id})"
    )
    r = cli("token", "verify", token, "--gtin", GTIN[1:], "--serial", SERIAL, "--json")
    assert r.exit_code == EXIT_OK
    assert json.loads(r.stdout) == {
        "verdict": "valid",
        "reason": f"a token of this product under issuer key {summary.key_id}",
        "gtin": GTIN,
        "serial": SERIAL,
        "key_id": summary.key_id,
    }


def test_tokens_are_the_documented_hmac(cli, keyed) -> None:
    mint_batch(EXAMPLE_CSV, settings=keyed)
    secret = secrets_in(keyed.key_file)[0]
    batch = json.loads(cli("batch", "list", "--json").stdout)["batches"][0]["batch_id"]
    r = cli("batch", "export", batch, "--allow-placeholder")
    lines = r.stdout.strip().split("\n")[1:]  # not splitlines: U+001D is in a field
    assert len(lines) == 9
    for line in lines:
        gtin, serial, *_ = [c.strip('"') for c in line.split(",")]
        token = _token(cli, gtin, serial)
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", token)
        assert parse_token(token) == make_token(secret, gtin, serial)


@pytest.mark.parametrize(
    ("gtin", "serial"),
    [
        (GTIN, "X67Y29DHPXTS"),  # another product's serial
        (GTIN, SERIAL.lower()),
        (GTIN, SERIAL + "0"),
        ("09520123450021", SERIAL),  # another GTIN
    ],
)
def test_token_verify_wrong_product_is_invalid(cli, keyed, gtin: str, serial: str) -> None:
    mint_batch(EXAMPLE_CSV, settings=keyed)
    token = _token(cli)
    r = cli("token", "verify", token, "--gtin", gtin, "--serial", serial)
    assert r.exit_code == EXIT_INVALID, r.output
    assert r.stdout.startswith("INVALID: not a token of GTIN")
    assert "under any issuer key" in r.stdout
    r = cli("token", "verify", token, "--gtin", gtin, "--serial", serial, "--json")
    assert r.exit_code == EXIT_INVALID
    assert json.loads(r.stdout) == {
        "verdict": "invalid",
        "reason": "not a token of this product under any issuer key",
        "gtin": gtin,
        "serial": serial,
        "key_id": None,
    }


@pytest.mark.parametrize("bad", ["abc", "A" * 23, "A" * 21 + "*", "", "A" * 21 + "B"])
def test_token_verify_malformed_token_is_invalid(cli, keyed, bad: str) -> None:
    r = cli("token", "verify", "--gtin", GTIN, "--serial", SERIAL, "--json", "--", bad)
    assert r.exit_code == EXIT_INVALID, r.output
    assert json.loads(r.stdout)["verdict"] == "invalid"


def test_token_verify_bad_gtin_is_a_usage_error(cli, keyed) -> None:
    one_error(
        cli("token", "verify", "A" * 22, "--gtin", "09520123450015", "--serial", SERIAL),
        EXIT_USAGE,
        "GTIN check digit",
    )


def test_token_verify_needs_only_the_key_file(cli, keyed, isolated: Path) -> None:
    mint_batch(EXAMPLE_CSV, settings=keyed)
    token = _token(cli)
    (isolated / "store").rename(isolated / "moved-store")
    r = cli("token", "verify", token, "--gtin", GTIN, "--serial", SERIAL)
    assert r.exit_code == EXIT_OK, r.output


def test_old_tokens_verify_after_rotation(cli, keyed) -> None:
    first = mint_batch(EXAMPLE_CSV, settings=keyed)
    old_token = _token(cli)
    r = cli("keys", "rotate", "--json")
    assert r.exit_code == 0
    rotated = json.loads(r.stdout)
    assert rotated["retired"]["id"] == first.key_id != rotated["active"]["id"]

    r = cli("token", "verify", old_token, "--gtin", GTIN, "--serial", SERIAL, "--json")
    assert r.exit_code == EXIT_OK, r.output
    assert json.loads(r.stdout)["key_id"] == first.key_id  # the old key matched

    source = Path("new.csv")
    source.write_text("gtin,serial\n09520123450014,NEWKEY1\n09520123450014,NEWKEY2\n")
    created = cli("batch", "create", source, "--json")
    assert created.exit_code == 0, created.output
    second = json.loads(created.stdout)
    assert second["key_id"] == rotated["active"]["id"]
    shown = json.loads(cli("batch", "show", second["batch_id"], "--json").stdout)
    assert shown["key_id"] == rotated["active"]["id"]
    old_shown = json.loads(cli("batch", "show", first.batch_id, "--json").stdout)
    assert old_shown["key_id"] == first.key_id

    new_token = _token(cli, GTIN, "NEWKEY1")
    r = cli("token", "verify", new_token, "--gtin", GTIN, "--serial", "NEWKEY1", "--json")
    assert r.exit_code == EXIT_OK
    assert json.loads(r.stdout)["key_id"] == rotated["active"]["id"]
    # the old product's token is not the token the new key would mint
    new_secret = load_keyring(keyed.key_file).active.secret.reveal()
    assert make_token(new_secret, GTIN, SERIAL) != parse_token(old_token)
    # proofs of the old batch still verify with the old token
    proof = cli("proof", "export", "--gtin", GTIN, "--serial", SERIAL)
    assert cli("verify", "-", "--token", old_token, input=proof.stdout).exit_code == 4


def test_token_of_another_key_file_is_invalid(cli, keyed, isolated: Path) -> None:
    mint_batch(EXAMPLE_CSV, settings=keyed)
    token = _token(cli)
    other = isolated / "other-keys.json"
    init_keyring(other)
    r = cli("token", "verify", token, "--gtin", GTIN, "--serial", SERIAL, "--key-file", other)
    assert r.exit_code == EXIT_INVALID, r.output


# --------------------------------------------------------------------------- settings


def write_config(isolated: Path, text: str) -> Path:
    path = isolated / "config.toml"
    path.write_text(text)
    return path


def test_settings_precedence_flag_env_file_default(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(
        isolated,
        f'store = "{isolated / "file-store"}"\n'
        'url_base = "https://file.example.org/"\n'
        "workers = 3\n",
    )
    monkeypatch.setenv("PROVMINT_CONFIG", str(cfg))
    monkeypatch.setenv("PROVMINT_STORE", str(isolated / "env-store"))
    monkeypatch.setenv("PROVMINT_URL_BASE", "https://env.example.org")
    monkeypatch.setenv("PROVMINT_WORKERS", "2")

    flags = resolve_settings(
        store=isolated / "flag-store", url_base="https://flag.example.org", workers=5
    )
    assert (flags.store, flags.url_base, flags.workers) == (
        isolated / "flag-store",
        "https://flag.example.org",
        5,
    )
    assert flags.config_file == cfg

    env = resolve_settings()
    assert (env.store, env.url_base, env.workers) == (
        isolated / "env-store",
        "https://env.example.org",
        2,
    )

    for name in ("PROVMINT_STORE", "PROVMINT_URL_BASE", "PROVMINT_WORKERS"):
        monkeypatch.delenv(name)
    from_file = resolve_settings()
    assert (from_file.store, from_file.url_base, from_file.workers) == (
        isolated / "file-store",
        "https://file.example.org",
        3,
    )  # trailing / dropped

    cfg.write_text("")
    default = resolve_settings()
    assert default.store == isolated / "xdg-data" / "provmint" / "store"
    assert default.url_base == DEFAULT_URL_BASE
    assert default.workers == (os.cpu_count() or 1)


def test_empty_environment_variable_falls_through(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(isolated, 'url_base = "https://file.example.org"\nworkers = 4\n')
    monkeypatch.setenv("PROVMINT_CONFIG", str(cfg))
    monkeypatch.setenv("PROVMINT_URL_BASE", "")
    monkeypatch.setenv("PROVMINT_WORKERS", "")
    s = resolve_settings()
    assert (s.url_base, s.workers) == ("https://file.example.org", 4)


def test_default_config_location(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROVMINT_CONFIG")
    path = isolated / "xdg-config" / "provmint" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text("workers = 7\n")
    s = resolve_settings()
    assert s.workers == 7 and s.config_file == path
    path.unlink()
    assert resolve_settings().config_file is None  # a missing default file is fine


def test_cli_store_precedence(cli, keyed, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(isolated, f'store = "{isolated / "file-store"}"\n')
    monkeypatch.setenv("PROVMINT_CONFIG", str(cfg))

    def created_in(*args: Any) -> str:
        r = cli("batch", "create", EXAMPLE_CSV, "--json", *args)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)["store"]

    assert created_in("--store", isolated / "flag-store") == str(isolated / "flag-store")
    assert created_in() == str(isolated / "store")  # PROVMINT_STORE from the fixture
    monkeypatch.delenv("PROVMINT_STORE")
    assert created_in() == str(isolated / "file-store")
    cfg.write_text("")
    assert created_in() == str(isolated / "xdg-data" / "provmint" / "store")
    # readers follow the same rules
    flag_store = isolated / "flag-store"
    listed = json.loads(cli("batch", "list", "--json", "--store", flag_store).stdout)["batches"]
    assert len(listed) == 1


def test_cli_url_base_precedence(
    cli, keyed, isolated: Path, monkeypatch: pytest.MonkeyPatch, write_csv
) -> None:
    cfg = write_config(isolated, 'url_base = "https://file.example.org"\n')
    monkeypatch.setenv("PROVMINT_CONFIG", str(cfg))
    monkeypatch.setenv("PROVMINT_URL_BASE", "https://env.example.org/")

    def minted_with(n: int, *args: Any) -> str:
        source = write_csv(f"u{n}.csv", f"gtin,serial\n{GTIN},URL{n}\n")
        r = cli("batch", "create", source, "--json", *args)
        assert r.exit_code == 0, r.output
        info = json.loads(cli("batch", "show", json.loads(r.stdout)["batch_id"], "--json").stdout)
        url = json.loads(
            cli("product", "show", "--gtin", GTIN, "--serial", f"URL{n}", "--json").stdout
        )["url"]
        assert url.startswith(info["url_base"] + "/01/")
        return info["url_base"]

    assert minted_with(1, "--url-base", "https://flag.example.org") == "https://flag.example.org"
    assert minted_with(2) == "https://env.example.org"
    monkeypatch.delenv("PROVMINT_URL_BASE")
    assert minted_with(3) == "https://file.example.org"
    cfg.write_text("")
    assert minted_with(4) == DEFAULT_URL_BASE


def test_cli_workers_precedence(
    cli, keyed, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(isolated, "workers = 0\n")
    monkeypatch.setenv("PROVMINT_CONFIG", str(cfg))
    # the bad file value is rejected, naming the file ...
    one_error(
        cli("batch", "create", EXAMPLE_CSV),
        EXIT_USAGE,
        str(cfg),
        "(workers)",
        "workers must be between 1 and 256, got 0",
    )
    # ... unless the environment or a flag overrides it
    monkeypatch.setenv("PROVMINT_WORKERS", "abc")
    one_error(
        cli("batch", "create", EXAMPLE_CSV),
        EXIT_USAGE,
        "PROVMINT_WORKERS: workers must be a whole number, got 'abc'",
    )
    r = cli("batch", "create", EXAMPLE_CSV, "--workers", "1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["workers"] == 1


@pytest.mark.parametrize("value", ["0", "257", "-1"])
def test_cli_workers_flag_out_of_range(cli, keyed, value: str) -> None:
    r = cli("batch", "create", EXAMPLE_CSV, "--workers", value)
    assert r.exit_code == EXIT_USAGE
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    "url",
    [
        "ftp://id.example.com",
        "id.example.com",
        "https://",
        "https://id.example.com/?x=1",
        "https://id.example.com/#f",
        "javascript:alert(1)",
    ],
)
def test_bad_url_base_is_a_usage_error(
    cli, keyed, isolated: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    one_error(
        cli("batch", "create", EXAMPLE_CSV, "--url-base", url),
        EXIT_USAGE,
        "option: url base",
        repr(url),
    )
    monkeypatch.setenv("PROVMINT_URL_BASE", url)
    one_error(cli("batch", "create", EXAMPLE_CSV), EXIT_USAGE, "PROVMINT_URL_BASE: url base")
    monkeypatch.delenv("PROVMINT_URL_BASE")
    cfg = write_config(isolated, f"url_base = {json.dumps(url)}\n")
    monkeypatch.setenv("PROVMINT_CONFIG", str(cfg))
    one_error(cli("batch", "create", EXAMPLE_CSV), EXIT_USAGE, f"{cfg} (url_base): url base")
    assert not (isolated / "store" / "batches").exists() or not any(
        (isolated / "store" / "batches").iterdir()
    )


def test_unknown_config_key_is_a_usage_error(
    cli, keyed, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(isolated, 'url_base = "https://a.example"\ncolour = "blue"\n')
    monkeypatch.setenv("PROVMINT_CONFIG", str(cfg))
    for args in (("batch", "create", EXAMPLE_CSV), ("keys", "list"), ("batch", "list")):
        one_error(
            cli(*args),
            EXIT_USAGE,
            f"{cfg}: unknown setting 'colour'",
            "hint: known settings: brand, chain, copy_signal, key_file, lock_timeout, "
            "scan_log, serve, store, url_base, workers",
        )
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        resolve_settings()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("store = \n", "not valid TOML"),
        (b"\xff\xfe", "not valid TOML"),
        ('workers = "many"\n', "workers must be a whole number"),
        ("lock_timeout = -1\n", "lock_timeout must be between 0 and 86400"),
    ],
)
def test_bad_config_file_is_a_usage_error(
    cli, keyed, isolated: Path, monkeypatch: pytest.MonkeyPatch, text, needle
) -> None:
    path = isolated / "config.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    monkeypatch.setenv("PROVMINT_CONFIG", str(path))
    one_error(cli("batch", "create", EXAMPLE_CSV), EXIT_USAGE, needle)


def test_explicit_missing_config_file_is_not_found(cli, keyed, isolated: Path) -> None:
    one_error(
        cli("keys", "list", "--config", isolated / "nope.toml"),
        EXIT_NOT_FOUND,
        "config file not found",
    )
    with pytest.raises(MissingFileError, match="config file not found"):
        resolve_settings(config_file=isolated / "nope.toml")


def test_config_flag_beats_environment_config(
    cli, keyed, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = write_config(isolated, "colour = 1\n")
    monkeypatch.setenv("PROVMINT_CONFIG", str(bad))
    good = isolated / "good.toml"
    good.write_text('url_base = "https://good.example.org"\n')
    r = cli("batch", "create", EXAMPLE_CSV, "--config", good, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(
        cli("batch", "show", json.loads(r.stdout)["batch_id"], "--json", "--config", good).stdout
    )
    assert info["url_base"] == "https://good.example.org"


def test_tokens_starting_with_a_dash_are_arguments(cli, keyed) -> None:
    """About one token in 64 starts with "-": it must still be read as the token."""
    secret = load_keyring(keyed.key_file).active.secret.reveal()
    serial = next(
        s
        for s in (f"S{i}" for i in range(10_000))
        if format_token(make_token(secret, GTIN, s)).startswith("-")
    )
    token = format_token(make_token(secret, GTIN, serial))
    r = cli("token", "verify", token, "--gtin", GTIN, "--serial", serial)
    assert r.exit_code == 0, r.output
    r = cli("token", "verify", "-" + "A" * 21, "--gtin", GTIN, "--serial", serial)
    assert r.exit_code == EXIT_INVALID, r.output


def test_init_keyring_exist_ok_returns_the_existing_key(isolated: Path) -> None:
    path = key_file(isolated)
    made = init_keyring(path)
    before = path.read_bytes()
    again = init_keyring(path, exist_ok=True)
    assert again.id == made.id and path.read_bytes() == before
    with pytest.raises(KeyringError, match="already exists"):
        init_keyring(path)


def test_readme_library_snippet_runs_twice(tmp_path: Path) -> None:
    """The README's library example, as a user would paste it into a script, twice."""
    import shutil
    import subprocess
    import sys

    root = EXAMPLE_CSV.parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The library in five lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    (tmp_path / "snippet.py").write_text(code.group(1), encoding="utf-8")
    shutil.copytree(root / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVMINT_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")  # no config file of this machine's
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, env=env
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "pending"
