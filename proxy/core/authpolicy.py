"""Which digest algorithms a challenge offers, and how failed guesses are held back.

One challenge (MD5) unless the operator asks for more: several
WWW-Authenticate headers, or a SHA-256 one, break phones whose SIP stack
gives up on the first challenge it cannot answer (baresip 1.0 on Debian:
"Register: Function not implemented"), and Kamailio and OpenSIPS offer one
challenge by default too.  Offering several is an explicit choice, per domain
(``[[auth.per_domain]]``) or per User-Agent (``[[auth.per_user_agent]]``; the
phone's capability decides first, so a User-Agent rule wins over a domain
rule).  No I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..infra.config import AuthSettings
from .domains import normalise_host
from .lockout import Lockout

__all__ = ["AuthPolicy", "lockout_from_settings"]


@dataclass(frozen=True)
class AuthPolicy:
    algorithms: tuple[str, ...] = ("MD5",)                        # offered when no rule matches
    per_domain: dict[str, tuple[str, ...]] = field(default_factory=dict)
    per_user_agent: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = ()

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> "AuthPolicy":
        return cls(tuple(settings.algorithms),
                   {normalise_host(r.domain): tuple(r.algorithms) for r in settings.per_domain},
                   tuple((re.compile(r.match), tuple(r.algorithms)) for r in settings.per_user_agent))

    def offered(self, domain: str, user_agent: str | None) -> tuple[str, ...]:
        """The algorithms to challenge with (and accept) for this domain and phone, in order."""
        if user_agent:
            agent = user_agent[:256]                               # bounded regex work
            for pattern, algorithms in self.per_user_agent:
                if pattern.match(agent):
                    return algorithms
        return self.per_domain.get(domain, self.algorithms)

    @property
    def every_algorithm(self) -> tuple[str, ...]:
        """Every algorithm some rule may offer (what the authenticator must support)."""
        seen = dict.fromkeys(self.algorithms)
        for algorithms in (*self.per_domain.values(), *(a for _, a in self.per_user_agent)):
            seen.update(dict.fromkeys(algorithms))
        return tuple(seen)


def lockout_from_settings(settings: AuthSettings) -> Lockout:
    return Lockout(failures=settings.lockout_failures, user_failures=settings.lockout_user_failures,
                   window_s=settings.lockout_window_s, lock_s=settings.lockout_s,
                   max_keys=settings.lockout_max_entries)
