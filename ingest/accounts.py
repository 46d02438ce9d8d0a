"""The configured provider accounts, with their secret references resolved once at start-up.

A missing secret is a :class:`ConfigurationError` when the process starts, not a 401 at 3 a.m.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.delivery import ResolvedAccount
from paystream.config import Settings, resolve_secret
from paystream.errors import UnknownRoute


@dataclass(frozen=True, slots=True)
class AccountBook:
    accounts: dict[tuple[str, str], ResolvedAccount]

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountBook:
        resolved: dict[tuple[str, str], ResolvedAccount] = {}
        for provider, accounts in settings.accounts.items():
            for name, config in accounts.items():
                secrets = tuple(resolve_secret(ref) for ref in config.secrets)
                resolved[(provider, name)] = ResolvedAccount(provider, name, config, secrets)
        return cls(resolved)

    def get(self, provider: str, name: str) -> ResolvedAccount | None:
        return self.accounts.get((provider, name))

    def require(self, provider: str, name: str) -> ResolvedAccount:
        account = self.get(provider, name)
        if account is None:
            raise UnknownRoute(f"no configured account {name!r} for provider {provider!r}")
        return account

    def describe(self) -> list[str]:
        """``provider/account`` names with the number of active secrets — never the secrets."""
        return [f"{p}/{a} ({len(acc.secrets)} secrets)" for (p, a), acc in sorted(self.accounts.items())]
