"""The error tree shared by every part of the project.

Every error a caller can cause or see derives from :class:`ReleaseWardenError`.  Errors that map to
an HTTP answer derive from :class:`HTTPError` and carry a status, a stable machine-readable ``code``
and a human message; the app factory (``core.app``) turns them into JSON bodies of the shape
``{"error": {"code": ..., "message": ..., "detail": ...}}``.  Errors that are not about a request
(bad configuration, a dependency that is down) have their own branches so that command-line entry
points can print them as one line instead of a traceback.

    ReleaseWardenError
    ├── ConfigError                  bad settings or a bad spec file
    ├── DependencyUnavailable        a database, metrics source or upstream that is down
    └── HTTPError                    anything answered to an HTTP caller
        ├── BadRequest         400
        ├── Unauthorized       401
        ├── Forbidden          403
        ├── NotFound           404
        ├── Conflict           409
        ├── PayloadTooLarge    413
        ├── UnsupportedMedia   415
        ├── Unprocessable      422
        └── ServiceUnavailable 503
"""

from __future__ import annotations

from typing import Any


class ReleaseWardenError(Exception):
    """Base of every error raised on purpose by this project."""


class ConfigError(ReleaseWardenError):
    """Settings, a YAML file or a command-line argument that cannot be used."""


class DependencyUnavailable(ReleaseWardenError):
    """Something we depend on (database, metrics source, upstream) did not answer."""


class HTTPError(ReleaseWardenError):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.detail = detail

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"error": error}


class BadRequest(HTTPError):
    status = 400
    code = "bad_request"


class Unauthorized(HTTPError):
    status = 401
    code = "unauthorized"


class Forbidden(HTTPError):
    status = 403
    code = "forbidden"


class NotFound(HTTPError):
    status = 404
    code = "not_found"


class Conflict(HTTPError):
    status = 409
    code = "conflict"


class PayloadTooLarge(HTTPError):
    status = 413
    code = "payload_too_large"


class HeadersTooLarge(HTTPError):
    status = 431
    code = "headers_too_large"


class UnsupportedMedia(HTTPError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(HTTPError):
    status = 422
    code = "unprocessable"


class ServiceUnavailable(HTTPError):
    status = 503
    code = "service_unavailable"
