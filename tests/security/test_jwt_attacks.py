"""Known attacks on JWT verification, against the Authenticator and through a real gateway.

Every attack token is built by hand, the way an attacker would, so that pyjwt's
own encoder cannot refuse to make it. Each one is refused with both key sources
that take asymmetric keys (a PEM file and a JWKS URL); through the gateway, each
one gets 401 and the model receives nothing. A trusted token is accepted in the
same setups, so that no refusal below passes for the wrong reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

from gateway.auth import Authenticator
from gateway.config import Auth
from gateway.exceptions import AuthError
from gateway.jwks import MAX_JWKS_BYTES, MAX_JWKS_KEYS, parse_jwks
from tests.integration.conftest import DemoModel, RunningGateway, StartGateway
from tests.security.jwks_server import (
    JwksServer,
    Respond,
    redirect_to,
    serve_bytes,
    serve_json,
    serve_slowly,
)
from tests.support import AUDIENCE, ISSUER, Signer, free_port

KID = "k1"
JWKS_TIMEOUT_S = 0.5
CHAT = {"model": "demo-small", "messages": [{"role": "user", "content": "Hello"}]}
MISSING = object()
"""A claim or header parameter left out of the token."""

Sign = Callable[[bytes], bytes]


# --- forging tokens ---------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Sign | None = None) -> str:
    """A compact JWS of exactly these header and claims, signed by ``sign`` (or unsigned)."""
    header = {k: v for k, v in header.items() if v is not MISSING}
    return forge_raw(json.dumps(header).encode(), claims, sign)


def forge_raw(header: bytes, claims: dict[str, Any], sign: Sign | None = None) -> str:
    """A compact JWS whose header is these bytes, which need not be JSON."""
    signing_input = f"{b64url(header)}.{b64url(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64url(signature)}"


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600,
        "groups": ["members"],
    }  # fmt: skip
    base.update(changes)
    return {k: v for k, v in base.items() if v is not MISSING}


def rsa_signature(signer: Signer, digest: hashes.HashAlgorithm | None = None) -> Sign:
    def sign(data: bytes) -> bytes:
        return signer.private_key.sign(data, padding.PKCS1v15(), digest or hashes.SHA256())

    return sign


def hmac_signature(secret: bytes) -> Sign:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def signed(signer: Signer, header: dict[str, Any] | None = None, **changes: Any) -> str:
    """An RS256 token by ``signer`` with kid ``k1``, with header parameters and claims changed."""
    return forge(
        {"alg": "RS256", "typ": "JWT", "kid": KID, **(header or {})},
        claims(**changes),
        rsa_signature(signer),
    )


def public_jwk(signer: Signer) -> dict[str, Any]:
    jwk: dict[str, Any] = signer.jwks("attacker-1")["keys"][0]
    return jwk


def certificate_der(signer: Signer) -> str:
    """A self-signed certificate for the signer's key, base64 DER as ``x5c`` carries it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(signer.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(signer.private_key, hashes.SHA256())
    )
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def swap_signature(token: str, donor: str) -> str:
    """``token``'s header and claims under ``donor``'s (valid) signature."""
    return token.rsplit(".", 1)[0] + "." + donor.rsplit(".", 1)[1]


@dataclass(frozen=True)
class Keys:
    trusted: Signer
    attacker: Signer
    attacker_url: str
    """An attacker's JWKS (and certificate) URL, which must never be fetched."""


@dataclass(frozen=True)
class Attack:
    name: str
    token: Callable[[Keys], str]


def _none(alg: str) -> Attack:
    return Attack(f"alg-{alg}", lambda k: forge({"alg": alg, "typ": "JWT", "kid": KID}, claims()))


def _kid_injection(index: int, kid: Any) -> Attack:
    return Attack(
        f"kid-injection-{index}",
        lambda k: forge({"alg": "RS256", "kid": kid}, claims(), rsa_signature(k.attacker)),
    )


KID_INJECTIONS = [
    "../../../../../../dev/null",
    "/dev/null",
    "' OR '1'='1",
    "k1' UNION SELECT 'AA==' --",
    "k1\x00",
    "$(touch /tmp/agora-pwned)",
    "k1/../k1",
    "x" * 10_000,
    123,
    {"$ne": None},
    ["k1"],
]

ATTACKS = [
    *(_none(alg) for alg in ("none", "None", "NONE", "nOnE")),
    Attack(
        "alg-none-under-a-real-signature",
        lambda k: swap_signature(
            forge({"alg": "none", "kid": KID}, claims()), signed(k.trusted, sub="mallory")
        ),
    ),
    Attack(
        "hs256-keyed-with-the-rsa-public-key-pem",
        lambda k: forge(
            {"alg": "HS256", "kid": KID}, claims(), hmac_signature(k.trusted.public_pem)
        ),
    ),
    Attack(
        "hs256-keyed-with-the-pem-without-newline",
        lambda k: forge(
            {"alg": "HS256", "kid": KID}, claims(), hmac_signature(k.trusted.public_pem.strip())
        ),
    ),
    Attack(
        "hs256-keyed-with-the-public-jwk",
        lambda k: forge(
            {"alg": "HS256", "kid": KID},
            claims(),
            hmac_signature(json.dumps(k.trusted.jwks(KID)["keys"][0]).encode()),
        ),
    ),
    Attack(
        "rs512-not-on-the-allow-list",
        lambda k: forge(
            {"alg": "RS512", "kid": KID}, claims(), rsa_signature(k.trusted, hashes.SHA512())
        ),
    ),
    Attack(
        "es256-header-over-an-rsa-signature",
        lambda k: forge({"alg": "ES256", "kid": KID}, claims(), rsa_signature(k.trusted)),
    ),
    Attack("expired", lambda k: signed(k.trusted, exp=int(time.time()) - 3600)),
    Attack("not-yet-valid", lambda k: signed(k.trusted, nbf=int(time.time()) + 3600)),
    Attack("issued-in-the-future", lambda k: signed(k.trusted, iat=int(time.time()) + 3600)),
    Attack("wrong-issuer", lambda k: signed(k.trusted, iss="https://attacker.test")),
    Attack("issuer-prefix", lambda k: signed(k.trusted, iss=ISSUER[:-1])),  # CVE-2024-53861
    Attack("issuer-as-a-list", lambda k: signed(k.trusted, iss=[ISSUER])),
    Attack("wrong-audience", lambda k: signed(k.trusted, aud="another-service")),
    Attack("audience-list-without-ours", lambda k: signed(k.trusted, aud=["a", "b"])),
    Attack("empty-audience-list", lambda k: signed(k.trusted, aud=[])),
    Attack("audience-prefix", lambda k: signed(k.trusted, aud=AUDIENCE[:-1])),
    Attack("missing-exp", lambda k: signed(k.trusted, exp=MISSING)),
    Attack("missing-iss", lambda k: signed(k.trusted, iss=MISSING)),
    Attack("missing-aud", lambda k: signed(k.trusted, aud=MISSING)),
    Attack("exp-not-a-number", lambda k: signed(k.trusted, exp="never")),
    Attack("unknown-kid", lambda k: signed(k.attacker, {"kid": "attacker-1"})),
    Attack("same-kid-other-key", lambda k: signed(k.attacker)),
    Attack("no-kid-other-key", lambda k: signed(k.attacker, {"kid": MISSING})),
    *(_kid_injection(i, kid) for i, kid in enumerate(KID_INJECTIONS)),
    Attack(
        "kid-dev-null-hs256-empty-key",
        lambda k: forge({"alg": "HS256", "kid": "../../dev/null"}, claims(), hmac_signature(b"")),
    ),
    Attack(
        "jku-attacker-jwks",
        lambda k: signed(k.attacker, {"kid": "attacker-1", "jku": k.attacker_url}),
    ),
    Attack("x5u-attacker-certificate", lambda k: signed(k.attacker, {"x5u": k.attacker_url})),
    Attack(
        "jwk-embedded-attacker-key", lambda k: signed(k.attacker, {"jwk": public_jwk(k.attacker)})
    ),
    Attack(
        "x5c-attacker-certificate",
        lambda k: signed(k.attacker, {"x5c": [certificate_der(k.attacker)]}),
    ),
    Attack("jku-on-a-trusted-token", lambda k: signed(k.trusted, {"jku": k.attacker_url})),
    Attack("crit-unknown-extension", lambda k: signed(k.trusted, {"crit": ["acme"], "acme": 1})),
    Attack("crit-exp", lambda k: signed(k.trusted, {"crit": ["exp"], "exp": 0})),
    Attack("crit-b64-unencoded", lambda k: signed(k.trusted, {"crit": ["b64"], "b64": False})),
    Attack("oversized", lambda k: signed(k.trusted, padding="x" * 20_000)),
    Attack("signature-stripped", lambda k: signed(k.trusted).rsplit(".", 1)[0] + "."),
    Attack(
        "claims-changed-under-a-real-signature",
        lambda k: swap_signature(
            forge({"alg": "RS256", "typ": "JWT", "kid": KID}, claims(groups=["admins"])),
            signed(k.trusted),
        ),
    ),
    Attack("garbage-words", lambda k: "not-a-jwt"),
    Attack("garbage-three-parts", lambda k: "a.b.c"),
    Attack("garbage-not-base64", lambda k: "!!!.@@@.###"),
    Attack("garbage-dots", lambda k: "..."),
    Attack("garbage-four-parts", lambda k: signed(k.trusted) + ".x"),
    Attack("header-not-json", lambda k: forge_raw(b"{alg", claims())),
    Attack("header-a-json-list", lambda k: forge_raw(b'["RS256"]', claims())),
    Attack("header-nested-deeply", lambda k: forge_raw(b"[" * 5000 + b"]" * 5000, claims())),
    Attack(
        "header-huge-integer",
        lambda k: forge_raw(
            b'{"alg": "RS256", "kid": "k1", "n": ' + b"9" * 5000 + b"}",
            claims(),
            rsa_signature(k.trusted),
        ),
    ),
]


# --- against the Authenticator -----------------------------------------------------------------


def pem_config(tmp_path: Path, signer: Signer, **changes: Any) -> Auth:
    key = tmp_path / "issuer.pem"
    key.write_bytes(signer.public_pem)
    fields: dict[str, Any] = {
        "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"], "public_key_file": key,
    }  # fmt: skip
    return Auth.model_validate({**fields, **changes})


def jwks_config(url: str, **changes: Any) -> Auth:
    fields: dict[str, Any] = {
        "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"], "jwks_url": url,
        "jwks_min_refresh_s": 0, "jwks_timeout_s": JWKS_TIMEOUT_S,
    }  # fmt: skip
    return Auth.model_validate({**fields, **changes})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture(params=["pem", "jwks"])
def authenticator(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    signer: Signer,
    trusted_jwks: JwksServer,
    session: aiohttp.ClientSession,
) -> Authenticator:
    """The gateway's verifier with each asymmetric key source, trusting ``signer``."""
    if request.param == "pem":
        return Authenticator(pem_config(tmp_path, signer))
    return Authenticator(jwks_config(trusted_jwks.url), session)


@pytest.fixture
def keys(signer: Signer, attacker: Signer, attacker_jwks: JwksServer) -> Keys:
    return Keys(trusted=signer, attacker=attacker, attacker_url=attacker_jwks.url)


async def test_a_trusted_token_is_accepted(authenticator: Authenticator, signer: Signer) -> None:
    caller = await authenticator.authenticate(f"Bearer {signed(signer, sub='alice')}")
    assert caller.authenticated and caller.sub == "alice"


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
async def test_attack_is_refused(
    authenticator: Authenticator, keys: Keys, attacker_jwks: JwksServer, attack: Attack
) -> None:
    with pytest.raises(AuthError):
        await authenticator.authenticate(f"Bearer {attack.token(keys)}")
    assert attacker_jwks.hits == 0, "a key named by the token was fetched"


@pytest.mark.parametrize("parameter", ["jku", "x5u", "jwk", "x5c"])
async def test_a_token_that_names_its_own_key_is_refused_even_when_signed_by_the_issuer(
    authenticator: Authenticator, signer: Signer, attacker_jwks: JwksServer, parameter: str
) -> None:
    """Refused rather than ignored: such a token is an attack or a misconfigured issuer."""
    value: Any = {"jwk": public_jwk(signer), "x5c": [certificate_der(signer)]}.get(
        parameter, attacker_jwks.url
    )
    with pytest.raises(AuthError, match=f"names its own key \\({parameter}\\)"):
        await authenticator.authenticate(f"Bearer {signed(signer, {parameter: value})}")
    assert attacker_jwks.hits == 0


async def test_critical_extensions_are_refused(
    authenticator: Authenticator, signer: Signer
) -> None:
    token = signed(signer, {"crit": ["acme"], "acme": True})
    with pytest.raises(AuthError, match="crit"):
        await authenticator.authenticate(f"Bearer {token}")


async def test_key_id_is_bounded(authenticator: Authenticator, signer: Signer) -> None:
    with pytest.raises(AuthError, match="key id must be a string of at most 256"):
        await authenticator.authenticate(f"Bearer {signed(signer, {'kid': 'k' * 257})}")


async def test_an_oversized_token_is_refused_before_it_is_parsed(
    authenticator: Authenticator, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(token: str) -> dict[str, Any]:
        raise AssertionError("an oversized token was parsed")

    monkeypatch.setattr(jwt, "get_unverified_header", never)
    with pytest.raises(AuthError, match="longer than 16384"):
        await authenticator.authenticate(f"Bearer {signed(signer, padding='x' * 20_000)}")


async def test_non_ascii_garbage_is_refused(authenticator: Authenticator) -> None:
    with pytest.raises(AuthError, match="malformed token"):
        await authenticator.authenticate("Bearer é.ü.ß")


@pytest.mark.parametrize(
    ("audience", "accepted"),
    [(AUDIENCE, True), (["other", AUDIENCE], True), (["other"], False), ([], False), (5, False)],
)
async def test_audience_lists(
    authenticator: Authenticator, signer: Signer, audience: Any, accepted: bool
) -> None:
    token = f"Bearer {signed(signer, aud=audience)}"
    if accepted:
        assert (await authenticator.authenticate(token)).authenticated
    else:
        with pytest.raises(AuthError):
            await authenticator.authenticate(token)


@pytest.mark.parametrize(
    ("claim", "offset_s", "accepted"),
    [
        ("exp", -10, True),
        ("exp", -60, False),
        ("nbf", 10, True),
        ("nbf", 60, False),
        ("iat", 10, True),
        ("iat", 60, False),
    ],
)
async def test_time_claims_are_enforced_with_leeway(
    authenticator: Authenticator, signer: Signer, claim: str, offset_s: int, accepted: bool
) -> None:
    """The default leeway is 30 s."""
    token = f"Bearer {signed(signer, **{claim: int(time.time()) + offset_s})}"
    if accepted:
        assert (await authenticator.authenticate(token)).authenticated
    else:
        with pytest.raises(AuthError, match=r"expired|not valid yet"):
            await authenticator.authenticate(token)


# --- a JWKS URL that misbehaves -------------------------------------------------------------


def jwks_faults(good: dict[str, Any], attacker_url: str) -> dict[str, Respond]:
    """Answers of a JWKS URL that must leave every token refused: none offers a usable key.

    ``good`` is the trusted JWKS document that the faulty answers are made from.
    """
    key = good["keys"][0]
    padded = {**good, "padding": "x" * MAX_JWKS_BYTES}
    many = {"keys": [{**key, "kid": f"k{i}"} for i in range(MAX_JWKS_KEYS + 1)]}
    return {
        "slow": serve_slowly(good, delay_s=5),
        "status-500": serve_bytes(b"", status=500),
        "status-404": serve_bytes(b"not found", status=404),
        "garbage": serve_bytes(b"\x00\xffnot json at all"),
        "html": serve_bytes(b"<html>login</html>", content_type="text/html"),
        "json-without-keys": serve_json({"issuer": ISSUER}),
        "keys-not-a-list": serve_json({"keys": "k1"}),
        "redirect-to-attacker": redirect_to(attacker_url),
        "use-enc": serve_json({"keys": [{**key, "use": "enc"}]}),
        "key-for-another-alg": serve_json({"keys": [{**key, "alg": "PS256"}]}),
        "key-ops-decrypt": serve_json({"keys": [{**key, "key_ops": ["decrypt"]}]}),
        "oversized": serve_json(padded),
        "too-many-keys": serve_json(many),
        "nested-deeply": serve_bytes(b"[" * 100_000 + b"]" * 100_000),
    }


FAULTS = list(jwks_faults({"keys": [{}]}, ""))


@pytest.mark.parametrize("fault", FAULTS)
async def test_jwks_fault_refuses_tokens_without_hanging(
    signer: Signer,
    trusted_jwks: JwksServer,
    attacker_jwks: JwksServer,
    session: aiohttp.ClientSession,
    fault: str,
) -> None:
    trusted_jwks.respond = jwks_faults(signer.jwks(KID), attacker_jwks.url)[fault]
    authenticator = Authenticator(jwks_config(trusted_jwks.url), session)
    started = time.monotonic()
    with pytest.raises(AuthError, match=r"signing keys are unavailable|unknown key id"):
        await authenticator.authenticate(f"Bearer {signed(signer)}")
    assert time.monotonic() - started < JWKS_TIMEOUT_S + 1.0
    assert trusted_jwks.hits == 1  # one fetch per request, never a retry loop
    assert attacker_jwks.hits == 0, "the redirect was followed"


async def test_jwks_down_refuses_tokens(signer: Signer, session: aiohttp.ClientSession) -> None:
    authenticator = Authenticator(jwks_config(f"http://127.0.0.1:{free_port()}/jwks"), session)
    with pytest.raises(AuthError, match="signing keys are unavailable"):
        await authenticator.authenticate(f"Bearer {signed(signer)}")


async def test_jwks_keeps_the_last_good_keys_when_it_fails(
    signer: Signer, trusted_jwks: JwksServer, session: aiohttp.ClientSession
) -> None:
    authenticator = Authenticator(jwks_config(trusted_jwks.url, jwks_cache_s=0.01), session)
    assert (await authenticator.authenticate(f"Bearer {signed(signer)}")).authenticated
    for respond in (serve_bytes(b"garbage"), serve_bytes(b"", status=503), None):
        if respond is None:
            trusted_jwks.go_down()
        else:
            trusted_jwks.respond = respond
        await asyncio.sleep(0.02)  # the cached keys are stale: each request refetches
        assert (await authenticator.authenticate(f"Bearer {signed(signer)}")).authenticated
    assert trusted_jwks.hits == 3


async def test_requests_during_a_slow_fetch_share_it(
    signer: Signer, trusted_jwks: JwksServer, session: aiohttp.ClientSession
) -> None:
    """Twenty requests during a slow fetch wait for that one fetch, not twenty in a row."""
    trusted_jwks.respond = serve_slowly(signer.jwks(KID), delay_s=5)
    authenticator = Authenticator(jwks_config(trusted_jwks.url), session)
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(authenticator.authenticate(f"Bearer {signed(signer)}") for _ in range(20)),
        return_exceptions=True,
    )
    assert all(isinstance(o, AuthError) for o in outcomes)
    assert time.monotonic() - started < JWKS_TIMEOUT_S + 1.0
    assert trusted_jwks.hits == 1


async def test_a_caller_that_goes_away_does_not_cut_the_fetch(
    signer: Signer, trusted_jwks: JwksServer, session: aiohttp.ClientSession
) -> None:
    trusted_jwks.respond = serve_slowly(signer.jwks(KID), delay_s=0.2)
    authenticator = Authenticator(jwks_config(trusted_jwks.url), session)
    gone = asyncio.create_task(authenticator.authenticate(f"Bearer {signed(signer)}"))
    await asyncio.sleep(0.05)
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    assert (await authenticator.authenticate(f"Bearer {signed(signer)}")).authenticated
    assert trusted_jwks.hits == 1


def test_parse_jwks_keeps_only_public_signature_keys(signer: Signer) -> None:
    good = signer.jwks(KID)["keys"][0]
    document = {
        "keys": [
            good,
            {**good, "kid": "enc", "use": "enc"},
            {**good, "kid": "ops", "key_ops": ["encrypt"]},
            {"kty": "oct", "kid": "shared", "k": b64url(b"secret")},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not an object",
        ]
    }
    assert [k.kid for k in parse_jwks(json.dumps(document).encode())] == [KID]


# --- through a real gateway -----------------------------------------------------------------


def model_requests(demo_model: DemoModel) -> int:
    return demo_model.stats()["requests"]


@pytest.fixture(scope="module")
def module_keys(signer: Signer, attacker: Signer) -> Iterator[tuple[Keys, JwksServer, JwksServer]]:
    """The trusted JWKS, and the attacker's, for the gateways of this module."""
    trusted = JwksServer(signer.jwks(KID))
    attackers = JwksServer(attacker.jwks("attacker-1"))
    yield Keys(trusted=signer, attacker=attacker, attacker_url=attackers.url), trusted, attackers
    trusted.close()
    attackers.close()


def jwks_auth(url: str) -> dict[str, Any]:
    return {
        "required": True, "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"],
        "jwks_url": url, "jwks_min_refresh_s": 0, "jwks_timeout_s": JWKS_TIMEOUT_S,
        "jwks_cache_s": 0.01,
    }  # fmt: skip


def refused_without_reaching_the_model(
    gateway: RunningGateway, demo_model: DemoModel, token: str
) -> httpx.Response:
    before = model_requests(demo_model)
    with gateway.client(token) as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["type"] == "authentication_error"
    assert model_requests(demo_model) == before, "the model received a request"
    return response


@pytest.fixture(scope="module")
def guarded(
    start_gateway: StartGateway, module_keys: tuple[Keys, JwksServer, JwksServer]
) -> RunningGateway:
    """A gateway that requires tokens, with the trusted JWKS."""
    return start_gateway(auth=jwks_auth(module_keys[1].url))


@pytest.fixture(scope="module")
def faulty_jwks() -> Iterator[JwksServer]:
    server = JwksServer({"keys": []})
    yield server
    server.close()


@pytest.fixture(scope="module")
def faulty(start_gateway: StartGateway, faulty_jwks: JwksServer) -> RunningGateway:
    """A gateway whose JWKS URL never offers the trusted key."""
    return start_gateway(auth=jwks_auth(faulty_jwks.url))


class TestThroughTheGateway:
    """One pass through ``agora serve``: 401, and nothing reaches the model."""

    pytestmark = pytest.mark.integration

    def test_a_trusted_token_reaches_the_model(
        self, guarded: RunningGateway, demo_model: DemoModel, signer: Signer
    ) -> None:
        before = model_requests(demo_model)
        with guarded.client(signed(signer, sub="alice")) as client:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert model_requests(demo_model) == before + 1

    @pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
    def test_attack_gets_401(
        self,
        guarded: RunningGateway,
        demo_model: DemoModel,
        module_keys: tuple[Keys, JwksServer, JwksServer],
        attack: Attack,
    ) -> None:
        keys, _, attackers = module_keys
        refused_without_reaching_the_model(guarded, demo_model, attack.token(keys))
        assert attackers.hits == 0, "a key named by the token was fetched"

    @pytest.mark.parametrize("fault", [*FAULTS, "down"])
    def test_jwks_fault_gets_401_in_time(
        self,
        faulty: RunningGateway,
        faulty_jwks: JwksServer,
        demo_model: DemoModel,
        module_keys: tuple[Keys, JwksServer, JwksServer],
        signer: Signer,
        fault: str,
    ) -> None:
        _, _, attackers = module_keys
        if fault == "down":
            faulty_jwks.go_down()
        else:
            faulty_jwks.respond = jwks_faults(signer.jwks(KID), attackers.url)[fault]
        try:
            started = time.monotonic()
            response = refused_without_reaching_the_model(faulty, demo_model, signed(signer))
            assert time.monotonic() - started < JWKS_TIMEOUT_S + 2.0
        finally:
            if fault == "down":
                faulty_jwks.come_back()
        assert "key" in response.json()["error"]["message"]
        assert attackers.hits == 0, "the redirect was followed"
