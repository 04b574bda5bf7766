"""Domain errors. Handlers raise these; the gRPC interceptor turns them into status codes."""

from __future__ import annotations


class DomainError(Exception):
    """Base of errors that are the caller's to fix, not the service's."""


class InvalidArgument(DomainError):
    """A request or event field is missing or malformed. `field` names it."""

    def __init__(self, field: str, problem: str = "is required") -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class NotFound(DomainError):
    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"{kind} {ident!r} not found")


class Erased(NotFound):
    """Deleted when the customer it belonged to was erased: NOT_FOUND, saying so."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(kind, ident)
        self.args = (f"{kind} {ident!r} was erased",)


class FailedPrecondition(DomainError):
    pass


class AlreadyExists(DomainError):
    pass


class Unauthenticated(DomainError):
    pass


class PermissionDenied(DomainError):
    pass


class ResourceExhausted(DomainError):
    pass


class Unavailable(DomainError):
    """This replica cannot serve the call now (e.g. a standby router); try the other one."""


class Unimplemented(DomainError):
    """The backend does not offer this call (yet)."""


class Retry(Exception):
    """An event cannot be handled yet (e.g. it arrived before the event it refers to); redeliver it."""


class RetryUntouched(Retry):
    """Retry, raised before the handler changed anything: in a batch's unit of work the event is
    set aside alone and the rest of the batch goes on, with nothing to undo (see Bus)."""
