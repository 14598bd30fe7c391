"""Streaming multipart/form-data: the file part goes straight into a BlobWriter as bytes arrive.

Starlette's `request.form()` spools the file to a temp file that we would then copy again; here
the one file part is written once, size-checked as it arrives, in constant memory. Small text
fields are kept in memory (capped). On a client mistake the rest of the body is drained (not
stored) before the error is raised, so the client reads a clean 400/413 instead of a reset socket.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from tuneforge.errors import InvalidRequest, TuneforgeError
from tuneforge.store.blobs import Blob, BlobWriter

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32


@dataclass
class MultipartForm:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    blob: Blob | None = None


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


async def read_multipart(
    request: Request,
    *,
    file_field: str,
    writer: Callable[[], BlobWriter],
    on_file_start: Callable[[dict[str, str], str | None], None] | None = None,
) -> MultipartForm:
    """Parse the body; the part named `file_field` is written through a new `writer()`.

    `on_file_start(fields_so_far, filename)` runs when the file part's headers arrive, so that
    fields sent before it (the SDK sends `purpose` first) can be checked before any byte is stored.
    The returned blob is committed; the caller owns it (and deletes it if it does not publish it).
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidRequest("This endpoint expects a multipart/form-data body with a boundary.")

    form = MultipartForm()
    out: BlobWriter | None = None
    part = _Part()
    header_name, header_value = bytearray(), bytearray()
    file_chunks: list[bytes] = []

    def on_part_begin() -> None:
        nonlocal part
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        part.headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal out
        _, opts = parse_options_header(part.headers.get(b"content-disposition", b""))
        if b"name" not in opts:
            raise InvalidRequest("A multipart part has no name in its Content-Disposition header.")
        part.name = opts[b"name"].decode("utf-8", "replace")
        if part.name == file_field:
            if out is not None or form.blob is not None:
                raise InvalidRequest(f"Only one '{file_field}' part is allowed.", param=file_field)
            filename = opts[b"filename"].decode("utf-8", "replace") if b"filename" in opts else None
            if on_file_start is not None:
                on_file_start(form.fields, filename)
            part.is_file = True
            form.filename = filename
            out = writer()
        elif len(form.fields) >= MAX_FIELDS:
            raise InvalidRequest("Too many form fields.")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.is_file:
            file_chunks.append(data[start:end])
        else:
            part.data.extend(data[start:end])
            if len(part.data) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"The form field '{part.name}' is too long.", param=part.name)

    def on_part_end() -> None:
        if not part.is_file:
            form.fields[part.name] = part.data.decode("utf-8", "replace")

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    error: TuneforgeError | None = None
    try:
        async for chunk in request.stream():
            if error is not None:
                continue  # drain: the client is still sending; answer once it is done
            try:
                parser.write(chunk)
                for data in file_chunks:
                    out.write(data)  # type: ignore[union-attr]
                file_chunks.clear()
                if out is not None and out.flush_due:  # an S3 part: network I/O off the event loop
                    await run_in_threadpool(out.flush)
            except TuneforgeError as exc:
                error = exc
            except FormParserError:
                error = InvalidRequest("The multipart/form-data body could not be parsed.")
        if error is not None:
            raise error
        if parser.state != MultipartState.END:
            raise InvalidRequest("The multipart/form-data body is incomplete (no closing boundary).")
        if out is not None:
            form.blob = await run_in_threadpool(out.commit)
        return form
    except ClientDisconnect:
        raise InvalidRequest("The client disconnected before the request body was complete.") from None
    finally:
        if out is not None:
            out.abort()  # no-op after commit
