"""`LocalizeParams` as an HTML form: one field per parameter (nested groups flattened as ``group.field``), with
its default and description; the posted form parsed back and validated by the same pydantic model."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from lipline.params import LocalizeParams

#: set by the portal itself (uploads, the store) and never typed by the operator
SET_BY_PORTAL = {"video_uri", "audio_uri", "subtitles_uri", "intro_uri", "outro_uri", "store", "lipsync.weights_dir"}


class FormError(ValueError):
    """The posted parameters are invalid: one line per field."""


@dataclass
class FormField:
    name: str
    label: str
    kind: str  # "bool" | "choice" | "number" | "text" | "overrides"
    default: object
    description: str
    choices: tuple[str, ...] = ()
    step: str = "any"


def _kind(annotation: object) -> tuple[str, tuple[str, ...]]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return "choice", tuple(str(a) for a in typing.get_args(annotation))
    if annotation is bool:
        return "bool", ()
    if annotation in (int, float):
        return "number", ()
    if typing.get_origin(annotation) is dict:
        return "overrides", ()
    if len(args) == 1 and args[0] is not annotation:
        return _kind(args[0])
    return "text", ()


def _default(info: FieldInfo) -> object:
    if info.default_factory is not None:
        return info.default_factory()
    return info.default


def form_fields(model: type[BaseModel] = LocalizeParams, prefix: str = "") -> list[FormField]:
    """The form's fields, in the model's order."""
    fields: list[FormField] = []
    for name, info in model.model_fields.items():
        full = f"{prefix}{name}"
        if full in SET_BY_PORTAL:
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields.extend(form_fields(annotation, prefix=f"{full}."))
            continue
        kind, choices = _kind(annotation)
        if full == "engine":
            from lipline.models.registry import engine_specs

            kind, choices = "choice", ("auto", *(s.name for s in engine_specs("video")))
        default = _default(info)
        if kind == "overrides":
            default = "\n".join(f"{k}={v}" for k, v in dict(default).items())
        fields.append(FormField(name=full, label=full.replace("_", " ").replace(".", ": "), kind=kind,
                                default="" if default is None else default, description=info.description or "",
                                choices=choices, step="1" if annotation is int else "any"))
    return fields


def _overrides(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.replace(",", "\n").splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        try:
            if not sep:
                raise ValueError(line)
            out[key.strip()] = float(value)
        except ValueError:
            raise FormError(f"contract overrides: {line.strip()!r}: expected RULE=NUMBER, e.g. "
                            "audio.loudness.min_lufs=-35") from None
    return out


def parse_form(form: dict[str, str], inputs: dict[str, str], store: str | None) -> LocalizeParams:
    """Build `LocalizeParams` from the posted fields plus the portal's own (input URIs, store)."""
    data: dict = {f"{role}_uri": uri for role, uri in inputs.items()}
    data["store"] = store
    for field in form_fields():
        raw = form.get(field.name)
        if field.kind == "bool":
            value: object = raw is not None
        elif raw is None or raw.strip() == "":
            continue
        elif field.kind == "overrides":
            value = _overrides(raw)
        else:
            value = raw.strip()
        group, _, leaf = field.name.rpartition(".")
        (data.setdefault(group, {}) if group else data)[leaf or field.name] = value
    try:
        return LocalizeParams(**data)
    except ValidationError as exc:
        raise FormError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
