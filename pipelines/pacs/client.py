"""A DICOMweb client for one PACS: ``dicomweb-client`` over a session that bounds the bytes it will receive, and
failures translated into :mod:`pipelines.pacs.errors` (never a message holding a URL: URLs carry UIDs).

The session reads every response body itself, at most :attr:`DicomWebConfig.max_bytes` over the client's life
(one client per request or per polling pass), so a study of thousands of slices or a hostile server cannot fill
the service's memory; ``dicomweb-client`` then parses the body it was handed.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from pipelines.pacs.errors import PacsError, PacsRefused, PacsUnavailable, StudyNotFound, StudyTooLarge

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_CHUNK = 1 << 16


@dataclass(frozen=True)
class DicomWebConfig:
    """Where the PACS's DICOMweb service is and how to sign in.

    Attributes:
        url: the DICOMweb root, e.g. ``http://pacs:8042/dicom-web`` (QIDO-RS, WADO-RS and STOW-RS under it).
        token: a bearer token (sent as ``Authorization: Bearer``), or None.
        username: HTTP basic-auth user (with ``password``), or None.
        password: HTTP basic-auth password.
        timeout_s: seconds to connect, and the longest silence while reading an answer.
        max_bytes: the most response bytes one client receives in all (then :class:`StudyTooLarge`).
    """

    url: str
    token: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_bytes: int = DEFAULT_MAX_BYTES

    def __repr__(self) -> str:  # the credentials never reach a log line or a traceback
        return f"DicomWebConfig(url={self.url!r}, timeout_s={self.timeout_s}, max_bytes={self.max_bytes})"


class BoundedSession(requests.Session):
    """A :class:`requests.Session` that refuses to receive more than ``budget`` body bytes in all."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget
        self.received = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Send ``request`` and read the body here, within the budget (a streamed read is left to the caller)."""
        stream = bool(kwargs.pop("stream", False))
        response = super().send(request, stream=True, **kwargs)
        if stream:
            return response
        body = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK):
                self.received += len(chunk)
                if self.received > self.budget:
                    raise StudyTooLarge(f"the PACS's answers exceed the retrieval bound of {self.budget} bytes")
                body += chunk
        finally:
            response.close()
        # requests keeps a read body in ``_content``; reading it here is what bounds it.
        response._content = bytes(body)
        return response


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn a failed DICOMweb exchange into a :mod:`pipelines.pacs.errors` error naming ``what`` was being done.

    Raises:
        StudyNotFound: a 404.
        PacsUnavailable: no connection, a timeout, or a 5xx answer.
        PacsRefused: another 4xx answer (a credential refused, a request it will not take).
        PacsError: an answer that is not DICOMweb.
    """
    try:
        yield
    except PacsError:
        raise
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status == 404:
            raise StudyNotFound(f"the PACS has no such resource ({what})") from None
        if status >= 500 or status == 0:
            raise PacsUnavailable(f"the PACS answered HTTP {status} ({what})") from None
        raise PacsRefused(f"the PACS refused the request with HTTP {status} ({what})", status) from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise PacsUnavailable(f"the PACS could not be reached ({what}: {type(exc).__name__})") from None
    except (requests.RequestException, ValueError, KeyError, IndexError) as exc:
        raise PacsError(f"the PACS's answer could not be read ({what}: {type(exc).__name__})") from None


class PacsClient:
    """QIDO-RS, WADO-RS and STOW-RS against one PACS, bounded and with named failures.

    Args:
        config: the PACS address, credentials, timeout and byte bound.
    """

    def __init__(self, config: DicomWebConfig) -> None:
        self.config = config
        self.session = BoundedSession(config.max_bytes)
        if config.token:
            self.session.headers["Authorization"] = f"Bearer {config.token}"
        elif config.username:
            self.session.auth = (config.username, config.password or "")
        self._client = DICOMwebClient(
            url=config.url.rstrip("/"),
            session=self.session,
            timeout=(config.timeout_s, config.timeout_s),
        )
        # dicomweb-client retries any failure five times with exponential back-off (about 30 s), a bound refusal
        # included: a clinician waiting on a dead PACS gets its 502 at once, and `shipa watch` tries next pass.
        self._client.set_http_retry_params(retry=False)

    def close(self) -> None:
        """Close the session's connections."""
        self.session.close()

    def __enter__(self) -> PacsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def search_studies(
        self, filters: Mapping[str, Any], *, fields: Sequence[str] = (), limit: int = 100, offset: int = 0
    ) -> list[Dataset]:
        """QIDO-RS ``/studies`` matching ``filters`` (DICOM keywords to values), with the ``fields`` asked for."""
        with translated("searching studies"):
            found = self._client.search_for_studies(
                search_filters=dict(filters), fields=list(fields) or None, limit=limit, offset=offset
            )
            return [Dataset.from_json(item) for item in found]

    def search_instances(self, study_uid: str, *, limit: int) -> list[Dataset]:
        """QIDO-RS: the study's instances (at most ``limit``), each with its series and SOP UIDs."""
        with translated("searching the study's instances"):
            found = self._client.search_for_instances(
                study_instance_uid=study_uid,
                fields=["SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "SeriesNumber"],
                limit=limit,
            )
            return [Dataset.from_json(item) for item in found]

    def instance_metadata(self, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
        """WADO-RS metadata of one instance: its header without the pixel data (bulk data left out)."""
        with translated("reading an instance's metadata"):
            items = self._client.retrieve_instance_metadata(study_uid, series_uid, sop_uid)
            return Dataset.from_json(items if isinstance(items, dict) else items[0], bulk_data_uri_handler=_no_bulk)

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """WADO-RS: one instance as a DICOM file (as the PACS stored it: any transfer syntax)."""
        with translated("retrieving an instance"):
            ds = self._client.retrieve_instance(
                study_uid, series_uid, sop_uid, media_types=(("application/dicom", "*"),)
            )
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            return buffer.getvalue()

    def store(self, datasets: Sequence[Dataset], study_uid: str) -> None:
        """STOW-RS the datasets into the study.

        Raises:
            PacsRefused: the PACS stored none or only some of them (its FailedSOPSequence).
        """
        files = [as_file(ds) for ds in datasets]
        with translated("storing results"):
            answer = self._client.store_instances(files, study_instance_uid=study_uid)
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
            raise PacsRefused(f"the PACS refused {len(failed)} of {len(datasets)} results (reasons {reasons})", 409)


def _no_bulk(*_: Any) -> bytes:
    """Bulk data (the pixels) is never fetched with the metadata: the header gate reads no pixel."""
    return b""


def as_file(ds: Dataset) -> Dataset:
    """``ds`` as a conformant DICOM file reads back (preamble, "DICM", complete file meta with its group length).

    ``dicomweb-client`` writes a dataset as it is and a PACS stores what it was sent: written once in the file
    format and read again, it is sent as the file it must be.
    """
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)
