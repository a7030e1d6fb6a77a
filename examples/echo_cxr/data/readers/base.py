"""What every data-set reader shares: the :class:`Reader` protocol and small checks.

A reader turns one data set, in its real on-disk layout, into a stream of
:class:`~examples.echo_cxr.data.records.CXRRecord`. Entries it cannot turn into a record
(empty or undecodable report, no readable image) go to a reject sink with a reason, so a
caller can account for every study::

    rejects = []
    records = list(IUXrayReader("NLMCXR_reports.tgz").read(rejects.append))
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from ..records import CXRRecord, Rejected, RejectSink

ImageCheck = Literal["none", "exists", "header", "decode"]
"""How hard a reader looks at each image file.

- ``"none"``: trust the metadata; paths are not touched (fast, for listings).
- ``"exists"``: the file must exist and be non-empty.
- ``"header"``: additionally PIL must recognise the format and ``verify()`` must pass. That
  checks PNG CRCs but for JPEG only the header: a JPEG cut short passes, and with on-access
  decoding (``data.cache_samples=false``) it is met only by the data loader during training.
- ``"decode"`` (the readers' default): the ``"header"`` check, then the whole image is decoded to RGB, the same
  decode the image processor does (``Image.open(...).convert("RGB")``), so a truncated JPEG,
  a flipped byte in compressed data, or an image over twice PIL's ``Image.MAX_IMAGE_PIXELS``
  (its decompression-bomb error) is rejected here, before training. It costs one full decode per image (docs/data.md gives the
  measured time); ``"header"`` is the faster opt-out.
"""
IMAGE_CHECKS: tuple[str, ...] = ("none", "exists", "header", "decode")


@runtime_checkable
class Reader(Protocol):
    """One real data set, read into records.

    Invariant: every study the reader sees is either yielded or reported to ``reject`` once.
    """

    source: str
    """The :data:`~examples.echo_cxr.data.records.SOURCES` name of the records it yields."""

    def read(self, reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield the data set's studies; report unusable ones to ``reject`` with a reason."""
        ...

    def params(self) -> dict[str, Any]:
        """JSON-serialisable description (paths, options), used to decide if a run is stale."""
        ...


def check_image_mode(mode: str) -> None:
    """Raise early on an unknown ``image_check`` value."""
    if mode not in IMAGE_CHECKS:
        raise ValueError(f"image_check={mode!r}; expected one of {IMAGE_CHECKS}")


def image_problem(path: Path, mode: str) -> str | None:
    """Why the image at ``path`` is unusable under ``mode``, or ``None`` when it is fine."""
    if mode == "none":
        return None
    if not path.is_file():
        return f"missing image file {path}"
    if path.stat().st_size == 0:
        return f"empty image file {path}"
    if mode == "exists":
        return None
    from PIL import Image, UnidentifiedImageError  # deferred: readers used without images skip PIL

    try:
        with Image.open(path) as im:  # over 2 x Image.MAX_IMAGE_PIXELS: DecompressionBombError, as in the processor
            im.verify()  # PNG chunk CRCs: a flipped byte that would still inflate is caught here
        if mode == "decode":
            with Image.open(path) as im:
                im.convert("RGB")  # every byte of compressed data, the processor's own decode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # PIL's message repeats the path; the exception type says what went wrong.
        detail = str(err).replace(str(path), "").strip(" '\"")
        return f"corrupt image {path} ({type(err).__name__}{': ' + detail if detail else ''})"
    return None


def keep_readable_images(
    paths: list[Path], mode: str
) -> tuple[list[str], list[dict[str, str]]]:
    """Split a study's image paths into usable ones and dropped ``{path, reason}`` entries.

    A study loses only its bad images; it is rejected by the caller when none are left, because
    one unreadable lateral view should not cost the frontal view and its report.
    """
    good: list[str] = []
    dropped: list[dict[str, str]] = []
    for p in paths:
        problem = image_problem(p, mode)
        if problem is None:
            good.append(str(p))
        else:
            dropped.append({"path": str(p), "reason": problem})
    return good, dropped


def readable_images(
    wanted: list[Path], mode: str, reject: RejectSink, source: str, study_id: str, none_listed: str
) -> tuple[list[str], list[dict[str, str]]] | None:
    """:func:`keep_readable_images` for one study, or ``None`` after rejecting the study when
    none of its images is readable (the reason names the first dropped image, else
    ``none_listed``: why the study lists no image at all)."""
    image_paths, dropped = keep_readable_images(wanted, mode)
    if not image_paths:
        why = dropped[0]["reason"] if dropped else none_listed
        reject_study(reject, source, study_id, "read", f"no readable image: {why}")
        return None
    return image_paths, dropped


def study_record(
    source: str,
    study_id: str,
    image_paths: list[str],
    dropped: list[dict[str, str]],
    *,
    findings: str,
    impression: str,
    report: str,
    metadata: dict[str, Any],
) -> CXRRecord:
    """The record a reader yields for a study: ``dropped_images`` (the ``{path, reason}`` of
    each image :func:`keep_readable_images` dropped) joins ``metadata`` when there are any."""
    if dropped:
        metadata = {**metadata, "dropped_images": dropped}
    return CXRRecord(
        study_id=study_id,
        source=source,
        image_paths=image_paths,
        findings=findings,
        impression=impression,
        metadata=metadata,
        report=report,
    )


def decode_utf8(data: bytes, what: str) -> tuple[str | None, str | None]:
    """``(text, None)`` for valid UTF-8, else ``(None, reason)`` naming the bad byte."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as err:
        bad = data[err.start : err.start + 1].hex()
        return None, f"{what} is not valid UTF-8 (byte 0x{bad} at offset {err.start})"


def surrogate_problem(fields: dict[str, Any], what: str) -> str | None:
    """Reason naming the first field that held non-UTF-8 bytes, or ``None``.

    Text files are opened with ``errors="surrogateescape"`` so that one bad row does not abort a
    whole CSV/JSON file; undecodable bytes then show up as lone surrogates U+DC80..U+DCFF.
    """
    for name, value in fields.items():
        if isinstance(value, str):
            for offset, ch in enumerate(value):
                if "\udc80" <= ch <= "\udcff":
                    byte = ord(ch) - 0xDC00
                    return (
                        f"{what}: field {name!r} is not valid UTF-8 "
                        f"(byte 0x{byte:02x} at character {offset})"
                    )
    return None


def reject_study(
    reject: RejectSink, source: str, study_id: str, stage: str, reason: str
) -> None:
    """Report a study the reader could not turn into a record."""
    reject(Rejected(key=f"{source}/{study_id}", stage=stage, reason=reason, source=source))


def is_blank(*texts: str | None) -> bool:
    """True when every text is missing or whitespace (CSV ``nan`` counts as missing)."""
    return all(t is None or not t.strip() or t.strip().lower() == "nan" for t in texts)
