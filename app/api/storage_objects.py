"""The built-in storage's signed object routes: upload to and download from signed URLs.

Mounted only when the built-in storage runs. These routes take no bearer token: the signature
in the URL is the permission, so an `<img src>` works. They read the database all the same
(the family's signing epoch; an upload's reservation), so they can answer 503 in an outage.
They are exempt from the 1 MiB JSON body limit (see `app.main`); uploads stream to disk under
their own limit.
"""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request, Response, status
from fastapi.responses import FileResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from app.adapters.storage.local import LocalStorageBackend
from app.api.deps import Context
from app.api.openapi import HEADERS
from app.api.routing import ApiRouter
from app.config import Settings
from app.errors import Invalid, NotFound
from app.models.media_types import ALLOWED_MIME_TYPES
from app.schemas.common import error_responses
from app.schemas.storage import UploadedObject
from app.services import object_service

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

PREFIX = "/storage/objects"
# RFC 2046 §5.1.1: a boundary is 1 to 70 characters. Longer ones are refused before the
# parser sees them (python-multipart raises a bare error past 256, which was a 500).
MAX_BOUNDARY_LENGTH = 70
router = ApiRouter(prefix=PREFIX, tags=["storage"])


async def _local_storage(context: Context) -> LocalStorageBackend:
    if context.local_storage is None:  # not mounted then; kept for a clear failure
        raise NotFound("Not found")
    return context.local_storage


async def _settings(context: Context) -> Settings:
    return context.settings


LocalStorage = Annotated[LocalStorageBackend, Depends(_local_storage)]
AppSettings = Annotated[Settings, Depends(_settings)]

_OBJECT = "/{bucket}/{path:path}"
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_MEDIA_CONTENT = {mime: _BINARY for mime in sorted(ALLOWED_MIME_TYPES)}
# Downloads also serve the family archive's exports (docs/archive.md).
_DOWNLOAD_CONTENT = {**_MEDIA_CONTENT, "application/zip": _BINARY}


def _query(name: str, description: str, schema: dict[str, object]) -> dict[str, object]:
    return {
        "name": name,
        "in": "query",
        "required": True,
        "description": description,
        "schema": schema,
    }


# The signed URL's own query parameters: `POST /storage/upload-url` and the access-URL routes
# hand them out whole; a client never builds them (any change is a 403 `link_invalid`).
_EXPIRES = _query("expires", "When the URL stops working (Unix time).", {"type": "integer"})
_SIGNATURE = _query("signature", "The server's signature of the URL.", {"type": "string"})
_UPLOAD_PARAMETERS = [
    _EXPIRES,
    _query("type", "The MIME type the URL was made for.", {"type": "string"}),
    _query("max_bytes", "The largest file the URL accepts.", {"type": "integer"}),
    _SIGNATURE,
]
_UPLOAD_ERRORS = error_responses(400, 403, 404, 409, 413, 415, 507)
_PUT_EXTRA = {
    "parameters": _UPLOAD_PARAMETERS,
    "requestBody": {
        "required": True,
        "description": "The file's bytes; `Content-Type` the type the URL was made for.",
        "content": {**_MEDIA_CONTENT, "application/octet-stream": _BINARY},
    },
}
_POST_EXTRA = {
    "parameters": _UPLOAD_PARAMETERS,
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    },
}
_DOWNLOAD_HEADERS = {
    "ETag": HEADERS["ETag"],
    "Cache-Control": {
        **HEADERS["Cache-Control"],
        "description": "`private, max-age=…, immutable`: objects never change.",
    },
}
_DOWNLOAD_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The file, as its verified type",
        "content": _DOWNLOAD_CONTENT,
        "headers": _DOWNLOAD_HEADERS,
    },
    206: {
        "description": "The byte range(s) asked for with `Range`",
        "content": {**_DOWNLOAD_CONTENT, "multipart/byteranges": _BINARY},
        "headers": _DOWNLOAD_HEADERS,
    },
    304: {
        "description": "Not modified: `If-None-Match` names the current `ETag`",
        "headers": _DOWNLOAD_HEADERS,
    },
    **error_responses(400, 403, 404),
    416: {
        "description": "The `Range` is past the end of the file",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}
# A malformed `Range` header is answered in plain text (by Starlette's FileResponse); FastAPI
# adds the JSON error body of the model beside it.
_DOWNLOAD_RESPONSES[400] = {
    **_DOWNLOAD_RESPONSES[400],
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


@router.put(
    _OBJECT,
    operation_id="objects_upload",
    status_code=status.HTTP_201_CREATED,
    responses=_UPLOAD_ERRORS,
    openapi_extra=_PUT_EXTRA,
)
async def upload_object(
    bucket: str,
    path: str,
    request: Request,
    local: LocalStorage,
    settings: AppSettings,
    context: Context,
) -> UploadedObject:
    """Upload the raw bytes of a file to a signed upload URL (built-in storage)."""
    length = request.headers.get("content-length")
    return await object_service.receive_upload(
        local,
        context.database,
        settings,
        bucket=bucket,
        path=path,
        params=request.query_params,
        content_type=request.headers.get("content-type"),
        content_length=int(length) if length and length.isdigit() else None,
        chunks=_body(request),
    )


@router.post(
    _OBJECT,
    operation_id="objects_upload_form",
    status_code=status.HTTP_201_CREATED,
    responses=_UPLOAD_ERRORS,
    openapi_extra=_POST_EXTRA,
)
async def upload_object_form(
    bucket: str,
    path: str,
    request: Request,
    local: LocalStorage,
    settings: AppSettings,
    context: Context,
) -> UploadedObject:
    """Upload a file to a signed upload URL as a multipart form with the field `file`."""
    return await object_service.receive_upload(
        local,
        context.database,
        settings,
        bucket=bucket,
        path=path,
        params=request.query_params,
        content_type=None,
        content_length=None,
        chunks=_form_file(request),
    )


@router.get(
    _OBJECT,
    operation_id="objects_download",
    response_class=FileResponse,
    responses=_DOWNLOAD_RESPONSES,
    openapi_extra={"parameters": [_EXPIRES, _SIGNATURE]},
)
async def download_object(
    bucket: str, path: str, request: Request, local: LocalStorage, context: Context
) -> Response:
    """Download a file (or an archive) through a signed URL; honours `Range`, `If-None-Match`."""
    download = await object_service.open_download(
        local,
        bucket=bucket,
        path=path,
        params=request.query_params,
        archives=context.local_archives,
    )
    disposition = "attachment" if download.attachment else "inline"
    headers = {
        "ETag": download.etag,
        # Private: the bytes are the family's; no shared cache may keep them.
        "Cache-Control": f"private, max-age={download.max_age}, immutable",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Referrer-Policy": "no-referrer",
        # The server's own name for the object (a safe, fixed alphabet), never the client's.
        "Content-Disposition": f'{disposition}; filename="{path.rsplit("/", 1)[-1]}"',
    }
    if _etag_matches(request.headers.get("if-none-match"), download.etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return FileResponse(
        download.file, media_type=download.content_type, headers=headers, stat_result=download.stat
    )


# HEAD answers like GET without the body (FileResponse sends headers only).
router.add_api_route(_OBJECT, download_object, methods=["HEAD"], include_in_schema=False)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise Invalid("The upload was interrupted before it was complete") from None


async def _form_file(request: Request) -> AsyncIterator[bytes]:
    """The bytes of the form field `file`, as they arrive (the body is never held whole)."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise Invalid("Expected a multipart/form-data body with a field named 'file'")
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise Invalid(f"The multipart boundary is longer than {MAX_BOUNDARY_LENGTH} characters")
    form = _FileField()
    try:
        parser = MultipartParser(boundary, form.callbacks())
        async for chunk in _body(request):
            parser.write(chunk)
            while form.pending:
                yield form.pending.pop(0)
        parser.finalize()
    except FormParserError:
        # Every error of the parser (its base class), not only the parse errors proper.
        raise Invalid("The multipart form is malformed") from None
    if not form.found:
        raise Invalid("The form has no field named 'file'")


class _FileField:
    """Multipart parser callbacks keeping the data of the first part named `file`."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.found = False
        self._in_file = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> "MultipartCallbacks":
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        self._in_file = params.get(b"name") == b"file" and not self.found
        self.found = self.found or self._in_file

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.pending.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        self._in_file = False
