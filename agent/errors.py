"""The one exception hierarchy of the agent.

    AgentError
    ├── ConfigError            the configuration file is invalid (exit status 78)
    ├── CodeRejected           a scanned or typed customer code is not acceptable
    ├── StoreError             the SQLite store cannot do what was asked
    │   ├── StoreCorrupt       the database file is damaged or not a database
    │   ├── StoreFull          the disk (or file-size limit) is full
    │   └── StoreLocked        another process holds the write lock past busy_timeout
    │       └── AgentRunning   another `run` holds this data_dir (exit status 74)
    ├── ClaimStateError        a claim cannot make the move asked (e.g. assign a delivered one)
    ├── KassaError             talking to the MplusKASSA API failed
    │   ├── KassaTransient     Server.* faults, HTTP 5xx, timeouts, network: retry
    │   ├── KassaRejected      Client.* faults, wrong credentials: fix, retry slowly
    │   └── KassaResponseError the answer is malformed, hostile or too large
    ├── CloudError             talking to the BONIQ cloud failed
    │   ├── CloudTransient     408/425/429/5xx, network, TLS, timeouts: back off and retry
    │   ├── CloudAuthError     401/403: keep everything, retry slowly, alert
    │   └── CloudRejected      400/409/422: dead-letter with the reason
    ├── ScannerError           a scanner source cannot run
    │   └── ScannerUnavailable the device is absent or an optional extra is not installed
    └── WebhookRefused         a webhook request refused with a documented code (HTTP 400)

Every message is safe to log: no secret, no URL query, no customer e-mail or code in clear.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """The configuration is invalid; `problems` holds one `FILE:LINE: key.path: message` each."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class CodeRejected(AgentError):
    """A customer code that is not a BONIQ code, a BONIQ URL or an e-mail address."""


class StoreError(AgentError):
    pass


class StoreCorrupt(StoreError):
    pass


class StoreFull(StoreError):
    pass


class StoreLocked(StoreError):
    pass


class AgentRunning(StoreLocked):
    """A second `boniq-agent run` on a data_dir that a running agent holds."""


class ClaimStateError(AgentError):
    """A claim or receipt is not in a state that allows what support asked."""


class KassaError(AgentError):
    pass


class KassaTransient(KassaError):
    pass


class KassaRejected(KassaError):
    pass


class KassaResponseError(KassaError):
    pass


class CloudError(AgentError):
    pass


class CloudTransient(CloudError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CloudAuthError(CloudError):
    pass


class CloudRejected(CloudError):
    pass


class ScannerError(AgentError):
    pass


class ScannerUnavailable(ScannerError):
    pass


class WebhookRefused(AgentError):
    """A webhook request the agent refuses; `code` is MplusKASSA's documented error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
