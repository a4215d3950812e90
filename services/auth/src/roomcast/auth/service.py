"""What the auth endpoints do, independent of HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from roomcast.auth import metrics
from roomcast.auth.errors import (
    InvalidCredentials,
    InvalidProfile,
    InvalidRefreshToken,
    Overloaded,
    RefreshTokenExpired,
    RefreshTokenReused,
    TooManyAttempts,
    UnknownUser,
    UsernameTaken,
    UserNotFound,
)
from roomcast.auth.events import EventPublisher
from roomcast.auth.limits import AttemptLimiter, Sleep, UsernameBackoff
from roomcast.auth.passwords import SCHEME, PasswordHasher
from roomcast.auth.sessions import IssuedRefresh, Revocation, SessionStore
from roomcast.auth.settings import Settings
from roomcast.auth.users import UserRecord, UserRepository, canonical_username
from roomcast.common.accounts import LoginRequest, ProfilePatch, RegisterRequest
from roomcast.common.errors import Conflict
from roomcast.common.tokens import SERVICE_READER_ROLE, AccessClaims, TokenSigner

log = logging.getLogger(__name__)

ADMIN_ROLE = "admin"


@dataclass(frozen=True, slots=True)
class LoginResult:
    access_token: str
    refresh_token: str
    expires_in: int
    user: UserRecord


class AuthService:
    def __init__(
        self,
        settings: Settings,
        *,
        users: UserRepository,
        sessions: SessionStore,
        hasher: PasswordHasher,
        signer: TokenSigner,
        publisher: EventPublisher,
        rate_limit_clock: Callable[[], float] = time.monotonic,
        backoff_sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.hasher = hasher
        self.signer = signer
        self.publisher = publisher
        self._admins = settings.admin_usernames
        self._service_readers = settings.service_reader_usernames
        self.login_limits = AttemptLimiter(
            "login",
            attempts=settings.login_rate_limit,
            per_seconds=settings.login_rate_window_seconds,
            clock=rate_limit_clock,
        )
        self.login_backoff = UsernameBackoff(
            free_failures=settings.login_backoff_free_failures,
            base_seconds=settings.login_backoff_base_seconds,
            max_seconds=settings.login_backoff_max_seconds,
            forgive_seconds=settings.login_backoff_forgive_seconds,
            address_memory_seconds=settings.login_backoff_address_memory_seconds,
            clock=rate_limit_clock,
            sleep=backoff_sleep,
        )
        self.register_limits = AttemptLimiter(
            "register",
            attempts=settings.register_rate_limit,
            per_seconds=settings.register_rate_window_seconds,
            clock=rate_limit_clock,
        )

    async def ensure_indexes(self) -> None:
        await self.users.ensure_indexes()
        await self.sessions.ensure_indexes()

    def roles_for(self, user: UserRecord) -> tuple[str, ...]:
        name = canonical_username(user.username)
        roles: tuple[str, ...] = (ADMIN_ROLE,) if name in self._admins else ()
        if name in self._service_readers:
            roles += (SERVICE_READER_ROLE,)
        return roles

    async def register(self, request: RegisterRequest, client_ip: str) -> UserRecord:
        try:
            self.register_limits.check(client_ip, canonical_username(request.username))
            user = await self._create_user(request)
        except (TooManyAttempts, Conflict, Overloaded) as exc:
            # Codes: rate_limited, username_taken, email_taken, overloaded.
            metrics.REGISTRATIONS.labels(exc.code).inc()
            raise
        metrics.REGISTRATIONS.labels("success").inc()
        log.info("user registered", extra={"user_id": user.id})
        return user

    async def _create_user(self, request: RegisterRequest) -> UserRecord:
        # A cheap early answer for the common case (no hash spent on a taken name); the
        # unique index decides races.
        if await self.users.exists(request.username):
            raise UsernameTaken()
        password_hash = await self.hasher.hash(request.password)
        return await self.users.create(
            username=request.username,
            display_name=request.display_name or request.username,
            email=str(request.email) if request.email is not None else None,
            password_hash=password_hash,
            password_scheme=SCHEME,
            now=self.sessions.now(),
        )

    async def login(self, request: LoginRequest, client_ip: str) -> LoginResult:
        username_key = canonical_username(request.username)
        try:
            self.login_limits.check(client_ip, username_key)
            await self.login_backoff.wait(username_key, client_ip)
        except TooManyAttempts:
            metrics.LOGINS.labels("rate_limited").inc()
            raise
        user = await self.users.find_by_username(request.username)
        # Unknown users are checked against a dummy hash of the same cost: same work,
        # same time, same answer as a wrong password.
        try:
            ok = await self.hasher.verify(
                request.password, user.password_hash if user is not None else None
            )
        except Overloaded:
            metrics.LOGINS.labels("overloaded").inc()
            raise
        if not ok or user is None:
            self.login_backoff.failed(username_key, client_ip)
            metrics.LOGINS.labels("invalid_credentials").inc()
            raise InvalidCredentials()
        if self.hasher.needs_rehash(user.password_hash):
            upgraded = await self.hasher.hash(request.password)
            await self.users.replace_password_hash(user.id, user.password_hash, upgraded)
        self.login_backoff.succeeded(username_key, client_ip)
        issued = await self.sessions.start(user.id)
        metrics.LOGINS.labels("success").inc()
        return self._pair(user, issued)

    def _pair(self, user: UserRecord, issued: IssuedRefresh) -> LoginResult:
        access, expires_in = self.signer.issue_access(
            user_id=user.id,
            username=user.username,
            display_name=user.display_name,
            avatar_url=user.avatar_url,
            roles=self.roles_for(user),
            session_id=issued.session_id,
        )
        return LoginResult(access, issued.token, expires_in, user)

    async def refresh(self, refresh_token: str) -> LoginResult:
        try:
            issued, revocation = await self.sessions.rotate(refresh_token)
        except RefreshTokenExpired:
            metrics.REFRESHES.labels("expired").inc()
            raise
        except InvalidRefreshToken:
            metrics.REFRESHES.labels("invalid").inc()
            raise
        if issued is None:
            metrics.REFRESHES.labels("reused").inc()
            if revocation is not None:
                log.warning(
                    "refresh token reused; session revoked",
                    extra={"user_id": revocation.user_id, "session_id": revocation.session_id},
                )
                await self._announce(revocation)
            raise RefreshTokenReused()
        user = await self.users.get(issued.user_id)
        if user is None:
            metrics.REFRESHES.labels("invalid").inc()
            raise InvalidRefreshToken()
        metrics.REFRESHES.labels("success").inc()
        return self._pair(user, issued)

    async def logout(self, refresh_token: str) -> None:
        """Revoke the session of ``refresh_token``; unknown tokens are a silent no-op
        (logging out twice is not an error)."""
        revocation = await self.sessions.revoke_by_token(refresh_token, reason="logout")
        if revocation is not None:
            await self._announce(revocation)

    async def _announce(self, revocation: Revocation) -> None:
        metrics.SESSIONS_REVOKED.labels(revocation.reason).inc()
        await self.publisher.session_revoked(
            user_id=revocation.user_id, session_id=revocation.session_id, reason=revocation.reason
        )

    async def me(self, claims: AccessClaims) -> UserRecord:
        user = await self.users.get(claims.user_id)
        if user is None:
            raise UnknownUser("the token's user does not exist")
        return user

    async def update_me(self, claims: AccessClaims, patch: ProfilePatch) -> UserRecord:
        changes = {name: getattr(patch, name) for name in patch.model_fields_set}
        if "display_name" in changes and changes["display_name"] is None:
            raise InvalidProfile("display_name: must be a string")
        if not changes:
            return await self.me(claims)
        user = await self.users.update_profile(claims.user_id, changes, now=self.sessions.now())
        if user is None:
            raise UnknownUser("the token's user does not exist")
        return user

    async def profile(self, user_id: str) -> UserRecord:
        user = await self.users.get(user_id)
        if user is None:
            raise UserNotFound()
        return user
