"""Unit tests of the chain edge that need no node: cleaning node text, masking RPC URLs,
the chain key's secrecy, chain settings resolution and the ``provmint-anchor/1`` tree,
digest and calldata."""

from __future__ import annotations

import hashlib
import pickle
import random
import re
import socket
import struct
from pathlib import Path

import pytest
from conftest import dev_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provmint import merkle
from provmint.anchoring import (
    MAX_BATCHES_PER_ANCHOR,
    anchor_digest,
    anchor_leaf,
    anchor_section,
    build_anchor_tree,
    calldata_payload,
    digest_from_calldata,
    parse_anchor_section,
)
from provmint.chain import (
    ChainKey,
    Node,
    clean_remote_text,
    mask_url,
    registry_anchor_data,
)
from provmint.config import ChainSettings, Secret, resolve_chain
from provmint.errors import (
    EXIT_CHAIN,
    EXIT_USAGE,
    AnchorError,
    ConfigError,
    NodeUnreachableError,
)

# --------------------------------------------------------------------------- clean_remote_text


def test_clean_remote_text_makes_one_printable_line() -> None:
    hostile = "execution reverted:\n\x1b[31mFAKE\x1b[0m\r\nerror: \x00all good\t\x7f ünïcode"
    cleaned = clean_remote_text(hostile)
    assert "\n" not in cleaned and "\r" not in cleaned and "\x1b" not in cleaned
    assert all(0x20 <= ord(ch) <= 0x7E for ch in cleaned)
    # each run of unprintable characters becomes one space
    assert cleaned == "execution reverted: [31mFAKE [0m error:  all good   n code"
    assert clean_remote_text("\n\n  padded \x00") == "padded"


def test_clean_remote_text_caps_the_length() -> None:
    assert clean_remote_text("x" * 500) == "x" * 199 + "…"
    assert len(clean_remote_text("y" * 500)) == 200
    assert clean_remote_text("abcdef", 4) == "abc…"
    assert clean_remote_text("abcd", 4) == "abcd"  # exactly at the limit: untouched


def test_clean_remote_text_accepts_any_object() -> None:
    assert clean_remote_text(ValueError("bad\nthing")) == "bad thing"
    assert clean_remote_text({"message": "x"}) == "{'message': 'x'}"


@given(st.text(max_size=600), st.integers(min_value=2, max_value=300))
def test_clean_remote_text_property(text: str, limit: int) -> None:
    cleaned = clean_remote_text(text, limit)
    assert len(cleaned) <= limit
    body = cleaned.removesuffix("…")
    assert all(0x20 <= ord(ch) <= 0x7E for ch in body)


# --------------------------------------------------------------------------- mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://user:pw@mainnet.infura.io/v3/SECRET?x=1", "https://mainnet.infura.io/…"),
        ("https://eth-mainnet.g.alchemy.com/v2/KEY", "https://eth-mainnet.g.alchemy.com/…"),
        ("https://rpc.example.org/?apikey=KEY", "https://rpc.example.org/…"),
        ("https://rpc.example.org?apikey=KEY", "https://rpc.example.org/…"),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("http://127.0.0.1:8545/", "http://127.0.0.1:8545"),
        ("http://user:pw@localhost:8545/", "http://localhost:8545"),
        ("https://node.example#fragment-secret", "https://node.example"),
        ("http://host:99999/x", "<rpc url>"),  # an impossible port: nothing is shown
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


_SECRET = st.text(alphabet="ABCDEFGHJKMNPQRSTUVWXYZ23456789", min_size=12, max_size=30)


@given(user=_SECRET, password=_SECRET, path=_SECRET, query=_SECRET)
def test_mask_url_never_shows_credentials_path_or_query(
    user: str, password: str, path: str, query: str
) -> None:
    url = f"https://{user}:{password}@rpc.example.org:8443/v3/{path}?key={query}"
    masked = mask_url(url)
    assert masked == "https://rpc.example.org:8443/…"
    for secret in (user, password, path, query):
        assert secret not in masked


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def test_unreachable_node_error_names_the_masked_url() -> None:
    port = _closed_port()
    with pytest.raises(NodeUnreachableError) as caught:
        Node(f"http://127.0.0.1:{port}").chain_id()
    message = str(caught.value)
    assert message.startswith(f"cannot reach the node at http://127.0.0.1:{port} (eth_chainId)")
    assert "\n" not in message
    assert caught.value.exit_code == EXIT_CHAIN
    assert caught.value.hint and "--rpc-url" in caught.value.hint


def test_unreachable_node_error_does_not_leak_the_url_path_or_query() -> None:
    """The requests error text repeats the request path and query ("Max retries exceeded
    with url: /v3/<API key>?..."), so it is left out: the key mask_url hides stays hidden."""
    port = _closed_port()
    with pytest.raises(NodeUnreachableError) as caught:
        Node(f"http://127.0.0.1:{port}/v3/APIKEY0123456789?token=QUERYSECRET").chain_id()
    message = str(caught.value)
    assert f"http://127.0.0.1:{port}/…" in message
    assert "APIKEY0123456789" not in message
    assert "QUERYSECRET" not in message


# --------------------------------------------------------------------------- ChainKey

DEV0_ADDRESS, DEV0_KEY = dev_key(0)


def _key_forms(hex_key: str) -> list[str]:
    bare = hex_key.removeprefix("0x")
    return [bare, bare.upper(), "0x" + bare]


def test_chain_key_address_and_secrecy() -> None:
    key = ChainKey.from_hex(DEV0_KEY, "PROVMINT_CHAIN_KEY")
    assert key.address == DEV0_ADDRESS
    shown = [repr(key), str(key), f"{key}", f"{key!r}", repr(vars(key)), repr([key])]
    for text in shown:
        for form in _key_forms(DEV0_KEY):
            assert form not in text
    assert repr(key) == f"ChainKey(address={DEV0_ADDRESS})"
    raw = bytes.fromhex(DEV0_KEY[2:])
    assert repr(raw) not in repr(vars(key))


def test_chain_key_cannot_be_pickled() -> None:
    key = ChainKey.from_hex(DEV0_KEY, "PROVMINT_CHAIN_KEY")
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        pickle.dumps(Secret(b"abc"))
    assert repr(Secret(b"abc")) == str(Secret(b"abc")) == "Secret('********')"


@pytest.mark.parametrize(
    "text", ["  " + DEV0_KEY + "\n", DEV0_KEY[2:], DEV0_KEY.upper().replace("0X", "0x")]
)
def test_chain_key_from_hex_accepts_usual_forms(text: str) -> None:
    assert ChainKey.from_hex(text, "PROVMINT_CHAIN_KEY").address == DEV0_ADDRESS


_N = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"  # secp256k1 order


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a private key"),
        ("0x", "not a private key"),
        ("0x" + "g" * 64, "not a private key"),
        (DEV0_KEY[:-1], "not a private key"),  # 63 digits
        (DEV0_KEY + "0", "not a private key"),  # 65 digits
        (DEV0_KEY[2:] * 2, "not a private key"),
        ("0x" + "12" * 31 + " 3", "not a private key"),
        ("0x" + "00" * 32, "not a valid secp256k1 private key"),
        ("0x" + _N, "not a valid secp256k1 private key"),
    ],
)
def test_chain_key_from_hex_rejects(text: str, reason: str) -> None:
    with pytest.raises(AnchorError) as caught:
        ChainKey.from_hex(text, "PROVMINT_CHAIN_KEY")
    assert caught.value.exit_code == EXIT_CHAIN == 10
    assert str(caught.value) == f"PROVMINT_CHAIN_KEY is {reason}" + (
        " (64 hex digits)" if reason == "not a private key" else ""
    )
    if len(text.strip()) > 8:
        assert text.strip().removeprefix("0x")[:40] not in str(caught.value)


def test_chain_key_signs_a_transaction_it_can_be_recovered_from() -> None:
    from eth_account import Account

    key = ChainKey.from_hex(DEV0_KEY, "k")
    raw, tx_hash = key.sign(
        {
            "type": 2,
            "chainId": 31337,
            "nonce": 0,
            "to": DEV0_ADDRESS,
            "value": 0,
            "data": "0x",
            "gas": 21000,
            "maxFeePerGas": 10**9,
            "maxPriorityFeePerGas": 1,
        }
    )
    assert Account.recover_transaction(raw) == DEV0_ADDRESS
    assert DEV0_KEY[2:] not in raw.hex()
    from eth_utils import keccak

    assert "0x" + keccak(raw).hex() == tx_hash


# --------------------------------------------------------------------------- resolve_chain

PROFILE_URL = "http://profile.example:8545"
ENV_URL = "http://env.example:8545"
FLAG_URL = "http://flag.example:8545"
REG_PROFILE = "0x" + "11" * 20
REG_ENV = "0x" + "22" * 20
REG_FLAG = "0x" + "33" * 20


@pytest.fixture
def chain_config(tmp_path: Path) -> Path:
    path = tmp_path / "chains.toml"
    path.write_text(
        "[chains.local]\n"
        f'rpc_url = "{PROFILE_URL}"\n'
        "chain_id = 31337\n"
        "confirmations = 3\n"
        'method = "registry"\n'
        f'registry = "{REG_PROFILE}"\n'
        "[chains.other]\n"
        'rpc_url = "http://other.example:8545"\n'
        "chain_id = 5\n"
    )
    return path


def test_resolve_chain_defaults(chain_config: Path) -> None:
    cfg = resolve_chain(config_file=chain_config, env={})
    assert cfg.profile is None
    assert cfg.rpc_url is None and cfg.chain_id is None and cfg.registry is None
    assert (cfg.method, cfg.confirmations, cfg.poa, cfg.receipt_timeout) == (
        "calldata",
        1,
        False,
        120.0,
    )
    assert cfg.chain_key is None and cfg.keystore is None


def test_resolve_chain_profile(chain_config: Path) -> None:
    cfg = resolve_chain(chain="local", config_file=chain_config, env={})
    assert cfg.profile == "local"
    assert (cfg.rpc_url, cfg.chain_id, cfg.confirmations, cfg.method, cfg.registry) == (
        PROFILE_URL,
        31337,
        3,
        "registry",
        REG_PROFILE,
    )


def test_resolve_chain_precedence_flag_env_profile(chain_config: Path) -> None:
    env = {"PROVMINT_RPC_URL": ENV_URL, "PROVMINT_REGISTRY": REG_ENV}
    by_env = resolve_chain(chain="local", config_file=chain_config, env=env)
    assert by_env.rpc_url == ENV_URL and by_env.registry == REG_ENV
    assert by_env.chain_id == 31337  # still from the profile
    by_flag = resolve_chain(
        chain="local",
        rpc_url=FLAG_URL,
        registry=REG_FLAG,
        confirmations=7,
        method="calldata",
        chain_id=1,
        config_file=chain_config,
        env=env,
    )
    assert (
        by_flag.rpc_url,
        by_flag.registry,
        by_flag.confirmations,
        by_flag.method,
        by_flag.chain_id,
    ) == (FLAG_URL, REG_FLAG, 7, "calldata", 1)
    no_profile = resolve_chain(config_file=chain_config, env=env)
    assert no_profile.rpc_url == ENV_URL and no_profile.chain_id is None


def test_resolve_chain_profile_selection(chain_config: Path, tmp_path: Path) -> None:
    assert resolve_chain(config_file=chain_config, env={"PROVMINT_CHAIN": "other"}).chain_id == 5
    # the flag beats PROVMINT_CHAIN
    assert (
        resolve_chain(
            chain="local", config_file=chain_config, env={"PROVMINT_CHAIN": "other"}
        ).chain_id
        == 31337
    )
    # the file's top-level ``chain`` is the default profile
    with_default = tmp_path / "default.toml"
    with_default.write_text('chain = "other"\n' + chain_config.read_text())
    assert resolve_chain(config_file=with_default, env={}).profile == "other"
    assert (
        resolve_chain(config_file=with_default, env={"PROVMINT_CHAIN": "local"}).profile == "local"
    )


def test_resolve_chain_unknown_profile(chain_config: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_chain(chain="mainnet", config_file=chain_config, env={})
    assert caught.value.exit_code == EXIT_USAGE
    assert "'mainnet'" in str(caught.value) and "local, other" in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "kwargs", "words"),
    [
        ('[chains.x]\nmethod = "blob"\n', {"chain": "x"}, "method must be calldata or registry"),
        ("", {"method": "blob"}, "method must be calldata or registry"),
        ('[chains.x]\nregistry = "0x1234"\n', {"chain": "x"}, "registry must be a contract"),
        ("", {"registry": "not-an-address"}, "registry must be a contract"),
        ("", {"registry": "0x" + "1" * 41}, "registry must be a contract"),
        (
            '[chains.x]\nrpc_url = "http://a"\nprivate_key = "0xab"\n',
            {"chain": "x"},
            "unknown setting 'private_key' in [chains.x]",
        ),
        # an unknown key is refused even when that profile is not the one chosen
        ('[chains.x]\nrpc_urll = "http://a"\n', {}, "unknown setting 'rpc_urll' in [chains.x]"),
        ('[chains.x]\npoa = "yes"\n', {"chain": "x"}, "poa must be true or false"),
        ("[chains.x]\nchain_id = 0\n", {"chain": "x"}, "chain_id must be between"),
        ("", {"confirmations": 0}, "confirmations must be between"),
        ("", {"rpc_url": "ws://127.0.0.1:8546"}, "the RPC URL must be an http(s) URL"),
        ('chains = "x"\n', {}, "[chains.NAME] sections must be tables"),
    ],
)
def test_resolve_chain_rejects(tmp_path: Path, toml: str, kwargs: dict, words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        resolve_chain(config_file=path, env={}, **kwargs)
    assert words in str(caught.value) + " " + (caught.value.hint or "")
    assert caught.value.exit_code == EXIT_USAGE


def test_resolve_chain_bad_url_is_not_echoed(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ConfigError) as caught:
        resolve_chain(rpc_url="wss://node.example/v3/SECRETAPIKEY", config_file=empty, env={})
    assert str(caught.value) == "the RPC URL must be an http(s) URL"


def test_chain_settings_repr_hides_url_and_secrets(chain_config: Path) -> None:
    env = {
        "PROVMINT_RPC_URL": "https://user:pa55word@mainnet.infura.io/v3/INFURASECRET",
        "PROVMINT_CHAIN_KEY": DEV0_KEY,
        "PROVMINT_KEYSTORE_PASSWORD": "KEYSTOREPASSWORD",
    }
    cfg = resolve_chain(chain="local", config_file=chain_config, env=env)
    assert cfg.rpc_url == env["PROVMINT_RPC_URL"]  # available to the code that needs it
    assert cfg.chain_key is not None and cfg.chain_key.reveal() == DEV0_KEY.encode()
    assert cfg.keystore_password is not None
    for text in (repr(cfg), str(cfg), f"{cfg}"):
        for secret in (
            "INFURASECRET",
            "pa55word",
            "mainnet.infura.io",
            "KEYSTOREPASSWORD",
            *_key_forms(DEV0_KEY),
        ):
            assert secret not in text
    assert "ChainSettings(profile='local'" in repr(cfg)


def test_chain_settings_dataclass_hides_rpc_url_field() -> None:
    cfg = ChainSettings(profile=None, rpc_url="http://h/SECRETPATH")
    assert "SECRETPATH" not in repr(cfg)


# --------------------------------------------------------------------------- anchor tree


def _commitments(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(n)]


def test_anchor_tree_is_sorted_and_independent_of_input_order() -> None:
    items = _commitments(37)
    first = build_anchor_tree(items)
    shuffled = items[:]
    random.Random(7).shuffle(shuffled)
    second = build_anchor_tree(shuffled)
    assert first.commitments == tuple(sorted(items)) == second.commitments
    assert first.root == second.root and first.digest == second.digest
    assert first.size == 37
    # the leaves are the tagged commitments in sorted order
    leaves = b"".join(anchor_leaf(c) for c in sorted(items))
    assert first.root == merkle.build_levels(leaves)[-1]
    for c in items:
        assert first.index_of(c) == sorted(items).index(c)


def test_anchor_leaf_and_digest_formulas() -> None:
    c = bytes(range(32))
    assert anchor_leaf(c) == hashlib.sha256(b"\x00PMAL" + c).digest()
    root = hashlib.sha256(b"r").digest()
    assert anchor_digest(5, root) == hashlib.sha256(b"PMAD" + struct.pack(">Q", 5) + root).digest()
    single = build_anchor_tree([c])
    assert single.root == anchor_leaf(c)
    assert single.digest == anchor_digest(1, anchor_leaf(c))
    assert single.path(0) == []


def test_anchor_tree_rejects_duplicates_empty_and_too_many() -> None:
    items = _commitments(3)
    with pytest.raises(ValueError, match="twice"):
        build_anchor_tree([*items, items[1]])
    with pytest.raises(ValueError, match="at least one"):
        build_anchor_tree([])
    with pytest.raises(ValueError, match=f"at most {MAX_BATCHES_PER_ANCHOR}"):
        build_anchor_tree(_commitments(MAX_BATCHES_PER_ANCHOR + 1))
    assert build_anchor_tree(_commitments(MAX_BATCHES_PER_ANCHOR)).size == MAX_BATCHES_PER_ANCHOR
    with pytest.raises(ValueError):
        build_anchor_tree([b"\x01" * 31])


@pytest.mark.parametrize(
    ("size", "root"),
    [(0, b"r" * 32), (2**64, b"r" * 32), (1, b"r" * 31), (-1, b"r" * 32), (1, b"r" * 33)],
)
def test_anchor_digest_rejects(size: int, root: bytes) -> None:
    with pytest.raises(ValueError):
        anchor_digest(size, root)


def test_calldata_round_trip_and_rejections() -> None:
    digest = hashlib.sha256(b"d").digest()
    payload = calldata_payload(digest)
    assert payload == b"PMNT\x01" + digest and len(payload) == 37
    assert digest_from_calldata(payload) == digest
    assert digest_from_calldata(bytearray(payload)) == digest
    others = [
        b"",
        payload[:-1],
        payload + b"\x00",
        b"PMNT\x02" + digest,
        b"PMNX\x01" + digest,
        b"pmnt\x01" + digest,
        bytes.fromhex(registry_anchor_data(digest)[2:]),
        b"\x00" * 37,
    ]
    for data in others:
        assert digest_from_calldata(data) is None
    for bad in (b"", digest[:31], digest + b"\x00"):
        with pytest.raises(ValueError):
            calldata_payload(bad)


def test_registry_anchor_data_is_the_abi_call() -> None:
    digest = bytes(range(32))
    data = registry_anchor_data(digest)
    assert re.fullmatch(r"0x[0-9a-f]{72}", data)
    from eth_utils import keccak

    assert data == "0x" + keccak(text="anchor(bytes32)")[:4].hex() + digest.hex()


_RECORD = {
    "chain_id": 31337,
    "method": "calldata",
    "contract": None,
    "sender": DEV0_ADDRESS,
    "tx_hash": "0x" + "ab" * 32,
    "block_number": 5,
    "block_hash": "0x" + "cd" * 32,
    "block_time": 1_700_000_000,
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.binary(min_size=32, max_size=32), min_size=1, max_size=300))
def test_every_batch_anchor_path_verifies(commitments: set[bytes]) -> None:
    tree = build_anchor_tree(list(commitments))
    assert tree.digest == anchor_digest(tree.size, tree.root)
    for c in commitments:
        i = tree.index_of(c)
        path = tree.path(i)
        assert merkle.root_from_path(anchor_leaf(c), i, tree.size, path) == tree.root
        section = parse_anchor_section(anchor_section(tree, c, _RECORD))
        ok, detail = section.check_offline(c)
        assert ok, detail
        assert detail == f"batch is leaf {i} of {tree.size} in the anchor tree"
    # another commitment never leads to the root, and the digest pins size and root
    outsider = hashlib.sha256(b"".join(sorted(commitments))).digest()
    assert not parse_anchor_section(anchor_section(tree, min(commitments), _RECORD)).check_offline(
        outsider
    )[0]
    assert anchor_digest(tree.size + 1, tree.root) != tree.digest
    assert anchor_digest(tree.size, hashlib.sha256(tree.root).digest()) != tree.digest


@settings(max_examples=30, deadline=None)
@given(st.sets(st.binary(min_size=32, max_size=32), min_size=2, max_size=64), st.data())
def test_changing_size_or_root_breaks_the_anchor(commitments: set[bytes], data) -> None:
    tree = build_anchor_tree(list(commitments))
    c = data.draw(st.sampled_from(sorted(commitments)))
    doc = anchor_section(tree, c, _RECORD)
    new_size = data.draw(st.integers(1, MAX_BATCHES_PER_ANCHOR).filter(lambda s: s != tree.size))
    resized = {**doc, "tree": {**doc["tree"], "size": new_size}}
    if doc["tree"]["leaf_index"] < new_size:
        assert not parse_anchor_section(resized).check_offline(c)[0]
    # recomputing the digest for the new size gives another digest than the anchored one
    assert anchor_digest(new_size, tree.root) != tree.digest
    other_root = hashlib.sha256(tree.root).hexdigest()
    rerooted = {**doc, "tree": {**doc["tree"], "root": other_root}}
    ok, detail = parse_anchor_section(rerooted).check_offline(c)
    assert not ok and "does not lead to the anchor root" in detail
    wrong_digest = {**doc, "digest": hashlib.sha256(tree.digest).hexdigest()}
    ok, detail = parse_anchor_section(wrong_digest).check_offline(c)
    assert not ok and "does not bind this root and size" in detail
