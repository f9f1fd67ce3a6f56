"""Names that requests give in their paths (streams, rooms): the same rules as the configuration's
ids, so a name is safe in store keys, URLs and logs."""
from __future__ import annotations

from aiohttp import web

from ..config.values import ID_PATTERN
from .errors import ApiError


def path_name(request: web.Request, param: str, what: str) -> str:
    """The route's `param`, checked; 400 invalid_params naming `what` otherwise."""
    name = request.match_info[param]
    if not ID_PATTERN.fullmatch(name):
        raise ApiError(400, "invalid_params", f"{what} {name[:80]!r}: expected letters, digits, '.', '_' or '-', "
                                              f"at most 63, starting with a letter or digit")
    return name
