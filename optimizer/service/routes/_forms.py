"""Reading parameters and files out of a parsed multipart form, with the service's 422 errors."""

from __future__ import annotations

import re

from ..errors import ServiceError
from ..uploads import Form, Upload

__all__ = ["ascii_name", "only", "param", "upload"]


def param(form: Form, name: str, query: str | None) -> str | None:
    """A parameter given as a query parameter or a form field (not both with different values).

    Args:
        form: the parsed form.
        name: the parameter's name.
        query: its value in the query string, if given there.

    Returns:
        The value as given (the rules of :mod:`..contract` judge it), or ``None`` when absent.
    """
    value = form.fields.get(name)
    if value is not None and query is not None and value.strip() != query.strip():
        raise ServiceError(
            422,
            "invalid_parameter",
            f"{name!r} is given twice with different values ({query!r} in the query, {value!r} in the form)",
            field=name,
        )
    return query if query is not None else value


def upload(form: Form, name: str) -> Upload:
    """The file field ``name``; 422 ``missing_field`` when absent or given as text.

    Args:
        form: the parsed form.
        name: the field's name.

    Returns:
        The upload.
    """
    found = form.files.get(name)
    if found is None:
        if name in form.fields:
            raise ServiceError(
                422, "missing_field", f"field {name!r} must be a file upload, got a text field", field=name
            )
        raise ServiceError(422, "missing_field", f"missing file field {name!r}", field=name)
    return found


def only(form: Form, files: set[str], fields: set[str]) -> None:
    """Refuse (422 ``unexpected_field``) any part beyond the named files and text fields.

    Args:
        form: the parsed form.
        files: file fields the endpoint takes.
        fields: text fields the endpoint takes.
    """
    extra_files = sorted(set(form.files) - files)
    extra_fields = sorted(set(form.fields) - fields - files)
    if extra_files or extra_fields:
        listed = ", ".join(repr(n) for n in extra_files + extra_fields)
        raise ServiceError(
            422,
            "unexpected_field",
            f"unexpected field(s) {listed}; this endpoint takes {', '.join(sorted(files | fields))}",
            field=(extra_files + extra_fields)[0],
        )


def ascii_name(text: str) -> str:
    """A file name safe for a ``Content-Disposition`` header.

    Args:
        text: a client-supplied name.

    Returns:
        At most 100 characters of ``[A-Za-z0-9._-]``.
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100] or "image"
