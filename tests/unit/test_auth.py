from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.auth import Authenticator, Caller, VerifiedTokens
from gateway.config import Auth
from gateway.exceptions import AuthError, ConfigError
from tests.support import AUDIENCE, ISSUER, Signer, unsigned_token


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


def pem_auth(tmp_path: Path, signer: Signer, **overrides: object) -> Authenticator:
    key = tmp_path / "key.pem"
    key.write_bytes(signer.public_pem)
    fields: dict[str, object] = {
        "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"], "public_key_file": key,
    }  # fmt: skip
    fields.update(overrides)
    return Authenticator(Auth.model_validate(fields))


async def test_valid_token(tmp_path: Path, signer: Signer) -> None:
    caller = await pem_auth(tmp_path, signer).authenticate(f"Bearer {signer.token(sub='bob')}")
    assert caller.authenticated and caller.sub == "bob" and caller.claims["groups"] == ["members"]


async def test_missing_token_depends_on_required(tmp_path: Path, signer: Signer) -> None:
    with pytest.raises(AuthError, match="missing"):
        await pem_auth(tmp_path, signer).authenticate(None)
    anonymous = await pem_auth(tmp_path, signer, required=False).authenticate(None)
    assert anonymous.authenticated is False


@pytest.mark.parametrize(
    ("make_token", "message"),
    [
        (lambda s: s.token(expires_in=-120), "expired"),
        (lambda s: s.token(audience="x"), "audience"),
        (lambda s: s.token(issuer="https://x"), "issuer"),
        (lambda s: unsigned_token(), "not allowed"),
        (lambda s: Signer().token(), "signature"),
        (lambda s: "a.b", "malformed"),
    ],
)
async def test_rejections(tmp_path: Path, signer: Signer, make_token: object, message: str) -> None:
    token = make_token(signer)  # type: ignore[operator]
    with pytest.raises(AuthError, match=message):
        await pem_auth(tmp_path, signer).authenticate(f"Bearer {token}")


async def test_leeway_accepts_a_just_expired_token(tmp_path: Path, signer: Signer) -> None:
    token = signer.token(expires_in=-5)
    caller = await pem_auth(tmp_path, signer, leeway_s=30).authenticate(f"Bearer {token}")
    assert caller.authenticated


async def test_wrong_scheme(tmp_path: Path, signer: Signer) -> None:
    with pytest.raises(AuthError, match="Bearer"):
        await pem_auth(tmp_path, signer).authenticate("Basic dXNlcjpwYXNz")


@pytest.fixture
async def jwks_server(signer: Signer) -> AsyncIterator[tuple[str, dict[str, int]]]:
    hits = {"count": 0}
    state = {"kid": "k1"}

    async def jwks(request: web.Request) -> web.Response:
        hits["count"] += 1
        return web.json_response(signer.jwks(state["kid"]))

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/jwks", hits
    await runner.cleanup()


async def test_jwks_is_cached_and_refresh_is_rate_limited(
    signer: Signer, jwks_server: tuple[str, dict[str, int]]
) -> None:
    url, hits = jwks_server
    config = Auth(
        issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], jwks_url=url, jwks_min_refresh_s=60
    )
    async with aiohttp.ClientSession() as session:
        auth = Authenticator(config, session)
        for _ in range(3):
            await auth.authenticate(f"Bearer {signer.token(kid='k1')}")
        assert hits["count"] == 1
        for _ in range(3):
            with pytest.raises(AuthError, match="unknown key id"):
                await auth.authenticate(f"Bearer {signer.token(kid='rotated')}")
        assert hits["count"] == 1  # unknown kids do not hammer the identity provider


async def test_jwks_refreshes_on_unknown_kid(
    signer: Signer, jwks_server: tuple[str, dict[str, int]]
) -> None:
    url, hits = jwks_server
    config = Auth(
        issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], jwks_url=url, jwks_min_refresh_s=0
    )
    async with aiohttp.ClientSession() as session:
        auth = Authenticator(config, session)
        await auth.authenticate(f"Bearer {signer.token(kid='k1')}")
        with pytest.raises(AuthError, match="unknown key id"):
            await auth.authenticate(f"Bearer {signer.token(kid='k2')}")
        assert hits["count"] == 2


def test_a_key_file_that_verifies_none_of_the_algorithms_is_a_config_error(tmp_path: Path) -> None:
    key = tmp_path / "ec.pem"
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    key.write_bytes(
        ec_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = Auth(issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], public_key_file=key)
    with pytest.raises(ConfigError, match=r"auth\.public_key_file: .* for any of auth\.algorithms"):
        Authenticator(config)


def test_a_private_key_file_is_a_config_error(tmp_path: Path, signer: Signer) -> None:
    key = tmp_path / "private.pem"
    key.write_bytes(
        signer.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = Auth(issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], public_key_file=key)
    with pytest.raises(ConfigError, match="private key"):
        Authenticator(config)


async def test_without_a_key_source_callers_are_anonymous_and_tokens_refused(
    signer: Signer,
) -> None:
    auth = Authenticator(Auth(required=False))
    assert (await auth.authenticate(None)).authenticated is False
    with pytest.raises(AuthError, match="no token verification key"):
        await auth.authenticate(f"Bearer {signer.token()}")


async def test_a_shared_secret_verifies_only_hmac_tokens(
    signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGORA_TEST_JWT_SECRET", "s" * 32)
    config = Auth(
        issuer=ISSUER, audience=AUDIENCE, algorithms=["HS256"], secret_env="AGORA_TEST_JWT_SECRET"
    )
    auth = Authenticator(config)
    claims = {"sub": "bob", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}
    caller = await auth.authenticate(f"Bearer {jwt.encode(claims, 's' * 32, algorithm='HS256')}")
    assert caller.sub == "bob"
    with pytest.raises(AuthError, match="not allowed"):
        await auth.authenticate(f"Bearer {signer.token()}")
    monkeypatch.setenv("AGORA_TEST_JWT_SECRET", "")
    with pytest.raises(ConfigError, match=r"auth\.secret_env"):
        Authenticator(config)


async def test_a_verified_token_is_remembered_until_the_cache_ttl(
    tmp_path: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: object, **kwargs: object) -> object:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting_decode)
    auth = pem_auth(tmp_path, signer, verified_cache_s=60)
    token = signer.token(sub="bob")
    first = await auth.authenticate(f"Bearer {token}")
    assert await auth.authenticate(f"Bearer {token}") is first
    assert len(decoded) == 1
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 61)
    assert (await auth.authenticate(f"Bearer {token}")).sub == "bob"
    assert len(decoded) == 2


async def test_a_cached_token_is_verified_again_once_past_its_exp(
    tmp_path: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = pem_auth(tmp_path, signer, verified_cache_s=3600)
    token = signer.token(expires_in=30)
    first = await auth.authenticate(f"Bearer {token}")
    assert await auth.authenticate(f"Bearer {token}") is first
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 31)  # pyjwt's own clock is not moved
    assert await auth.authenticate(f"Bearer {token}") is not first


async def test_without_the_cache_every_request_is_verified(
    tmp_path: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = pem_auth(tmp_path, signer, verified_cache_s=0)
    token = signer.token()
    await auth.authenticate(f"Bearer {token}")
    monkeypatch.setattr(
        jwt, "decode", lambda *a, **k: (_ for _ in ()).throw(jwt.InvalidTokenError("x"))
    )
    with pytest.raises(AuthError, match="invalid token"):
        await auth.authenticate(f"Bearer {token}")


async def test_a_tampered_copy_of_a_cached_token_is_refused(tmp_path: Path, signer: Signer) -> None:
    auth = pem_auth(tmp_path, signer)
    token = signer.token()
    await auth.authenticate(f"Bearer {token}")
    head, claims, signature = token.split(".")
    forged = f"{head}.{claims}.{signature[:-4]}AAAA"
    with pytest.raises(AuthError):
        await auth.authenticate(f"Bearer {forged}")


def test_the_token_cache_forgets_the_oldest_when_full() -> None:
    cache = VerifiedTokens(ttl_s=60, capacity=2)
    exp = {"exp": time.time() + 600}
    callers = [Caller(True, sub=str(i), claims=exp) for i in range(3)]
    for i, caller in enumerate(callers):
        cache.put(VerifiedTokens.key(str(i)), caller)
    assert cache.get(VerifiedTokens.key("0")) is None
    assert cache.get(VerifiedTokens.key("2")) is callers[2]
