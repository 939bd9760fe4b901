"""Installed models of an emulated server: names, metadata and the payloads that describe them."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from gleitzeit_llm.testing.names import OllamaName, display_shortest, parse_name
from gleitzeit_llm.testing.wire import format_local

__all__ = ["CAPABILITIES", "EmulatedModel", "ModelSpec", "as_models", "normalize_name"]

#: Capabilities Ollama reports and the emulator understands.
CAPABILITIES = ("completion", "tools", "thinking", "vision", "embedding", "insert")


def normalize_name(name: str) -> str:
    """The name as ``/api/tags`` lists it (Ollama's ``DisplayShortest``), case kept.

    ``llama3.2``, ``library/llama3.2`` and ``registry.ollama.ai/library/llama3.2:latest`` all
    become ``llama3.2:latest``; ``hf.co/org/repo:Q4_K_M`` keeps its host and namespace.
    """
    return display_shortest(parse_name(name.strip()))


def _key(name: str) -> str:
    # EqualFold on every part, as getExistingName compares them
    return normalize_name(name).casefold()


# Metadata of well-known models, so that ``models=["qwen3", "nomic-embed-text"]`` behaves like the
# real thing (thinking, embedding-only) without further configuration.
# base name: (family, parameter_size, quantization, size, capabilities, context_length, embedding_length)
_CATALOGUE: dict[str, tuple[str, str, str, int, tuple[str, ...], int, int]] = {
    "llama3.2": ("llama", "3.2B", "Q4_K_M", 2019393189, ("completion", "tools"), 131072, 3072),
    "llama3.1": ("llama", "8.0B", "Q4_K_M", 4920753328, ("completion", "tools"), 131072, 4096),
    "llama3": ("llama", "8.0B", "Q4_0", 4661224676, ("completion",), 8192, 4096),
    "llama2": ("llama", "7B", "Q4_0", 3826793677, ("completion",), 4096, 4096),
    "mistral": ("llama", "7.2B", "Q4_0", 4113301824, ("completion", "tools"), 32768, 4096),
    "qwen3": ("qwen3", "8.2B", "Q4_K_M", 5225387923, ("completion", "tools", "thinking"), 40960, 4096),
    "qwen2.5": ("qwen2", "7.6B", "Q4_K_M", 4683087332, ("completion", "tools", "insert"), 32768, 3584),
    "deepseek-r1": ("qwen2", "7.6B", "Q4_K_M", 4683075271, ("completion", "thinking"), 131072, 3584),
    "gpt-oss": ("gptoss", "20.9B", "MXFP4", 13780173839, ("completion", "tools", "thinking"), 131072, 2880),
    "gemma3": ("gemma3", "4.3B", "Q4_K_M", 3338801804, ("completion", "vision"), 131072, 2560),
    "llava": ("llama", "7B", "Q4_0", 4733363377, ("completion", "vision"), 32768, 4096),
    "phi3": ("phi3", "3.8B", "Q4_0", 2176178913, ("completion",), 131072, 3072),
    "tinyllama": ("llama", "1B", "Q4_0", 637700138, ("completion",), 2048, 2048),
    "nomic-embed-text": ("nomic-bert", "137M", "F16", 274302450, ("embedding",), 2048, 768),
    "all-minilm": ("bert", "23M", "F16", 45960996, ("embedding",), 512, 384),
    "mxbai-embed-large": ("bert", "334M", "F16", 669615493, ("embedding",), 512, 1024),
    "bge-m3": ("bert", "567M", "F16", 1157672605, ("embedding",), 8192, 1024),
}
_DEFAULT_CHAT = ("llama", "7B", "Q4_K_M", 4_100_000_000, ("completion", "tools"), 8192, 4096)
_DEFAULT_EMBED = ("bert", "137M", "F16", 274_000_000, ("embedding",), 2048, 768)


@dataclass
class EmulatedModel:
    """One installed model and how it behaves.

    Only ``name`` is required; well-known names (``llama3.2``, ``qwen3``, ``nomic-embed-text``,
    ``all-minilm``, ...) take realistic metadata from a built-in catalogue, other names default to
    a 7B chat model with tools (or a 768-dimension embedding model when the name contains
    ``embed``). Timing fields left ``None`` use the emulator-wide setting; all are modelled
    seconds (see ``OllamaEmulator.time_scale``).

    >>> EmulatedModel("nomic-embed-text").capabilities
    ['embedding']
    >>> EmulatedModel("mini", capabilities=["completion"], embedding_dim=64).name
    'mini:latest'
    """

    name: str
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    size: int | None = None
    capabilities: Sequence[str] | None = None
    context_length: int | None = None
    embedding_dim: int | None = None
    #: Cold-load time (modelled seconds); ``None`` uses the emulator's ``load_time``.
    load_time: float | None = None
    #: Base time to first token (modelled seconds); ``None`` uses the emulator's ``ttft``.
    ttft: float | None = None
    #: Output speed; ``None`` uses the emulator's ``tokens_per_second``.
    tokens_per_second: float | None = None
    digest: str | None = None
    #: When the model was "pulled" (Unix seconds); defaults to creation time.
    modified_at: float | None = None
    _key: str = field(default="", init=False, repr=False, compare=False)
    _path: OllamaName = field(default=OllamaName("", "", "", ""), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("EmulatedModel needs a non-empty name")
        if not parse_name(self.name.strip()).is_valid():
            raise ValueError(f"{self.name!r} is not a model name Ollama accepts")
        self.name = normalize_name(self.name)
        self._key = self.name.casefold()
        self._path = parse_name(self.name)
        base = self._key.rsplit("/", 1)[-1].split(":", 1)[0]
        entry = _CATALOGUE.get(base)
        if entry is None:
            entry = _DEFAULT_EMBED if "embed" in base else _DEFAULT_CHAT
        family, params, quant, size, caps, ctx, emb = entry
        self.family = self.family or family
        self.parameter_size = self.parameter_size or params
        self.quantization = self.quantization or quant
        self.size = self.size if self.size is not None else size
        self.capabilities = list(self.capabilities if self.capabilities is not None else caps)
        unknown = set(self.capabilities) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {list(CAPABILITIES)}")
        self.context_length = self.context_length or ctx
        self.embedding_dim = self.embedding_dim or emb
        if self.digest is None:
            self.digest = hashlib.sha256(self.name.encode()).hexdigest()
        if self.modified_at is None:
            self.modified_at = time.time()

    @property
    def key(self) -> str:
        """Case-insensitive lookup key (the listed name, case-folded)."""
        return self._key

    @property
    def path(self) -> OllamaName:
        """Where the manifest lives: ``host/namespace/model/tag``, case kept."""
        return self._path

    def has(self, capability: str) -> bool:
        """Whether the model reports ``capability``."""
        return capability in (self.capabilities or ())

    @property
    def architecture(self) -> str:
        """``general.architecture`` in ``/api/show`` (the family, as GGUF files name it)."""
        return self.family or "llama"

    def details(self) -> dict[str, Any]:
        """``details`` object of ``/api/tags``, ``/api/ps`` and ``/api/show``."""
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }

    def modified_at_text(self) -> str:
        return format_local(int((self.modified_at or 0.0) * 1e9))

    def tags_entry(self) -> dict[str, Any]:
        """One entry of ``/api/tags``."""
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at_text(),
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }

    def parameter_count(self) -> int:
        text = (self.parameter_size or "0").upper()
        scale = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}.get(text[-1:], 1.0)
        try:
            return int(float(text.rstrip("KMBT")) * scale)
        except ValueError:
            return 0

    def show(self) -> dict[str, Any]:
        """The ``/api/show`` body (keys in Go struct order; ``model_info`` sorted like a Go map)."""
        arch = self.architecture
        info: dict[str, Any] = {
            "general.architecture": arch,
            "general.basename": self.name.split(":", 1)[0],
            "general.file_type": 15 if self.quantization == "Q4_K_M" else 2,
            "general.parameter_count": self.parameter_count(),
            "general.quantization_version": 2,
            f"{arch}.attention.head_count": 32,
            f"{arch}.block_count": 28,
            f"{arch}.context_length": self.context_length,
            f"{arch}.embedding_length": self.embedding_dim,
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.merges": [],
            "tokenizer.ggml.token_type": [],
            "tokenizer.ggml.tokens": [],
        }
        blob = f"/root/.ollama/models/blobs/sha256-{self.digest}"
        template = (
            "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
        )
        # license, system, ... are omitempty in Go and empty here, so they are absent.
        return {
            "modelfile": (
                '# Modelfile generated by "ollama show"\n'
                f"# To build a new Modelfile based on this, replace FROM with:\n# FROM {self.name}\n\n"
                f'FROM {blob}\nTEMPLATE """{template}"""\n'
            ),
            "parameters": 'stop                           "<|eot_id|>"',
            "template": template,
            "details": self.details(),
            "model_info": dict(sorted(info.items())),
            "capabilities": list(self.capabilities or ()),
            "modified_at": self.modified_at_text(),
        }

    def copy(self, **changes: Any) -> EmulatedModel:
        """A copy with some fields changed."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        values.update(changes)
        return EmulatedModel(**values)


#: What ``models=`` accepts for one model.
ModelSpec = str | EmulatedModel | dict


def as_model(spec: ModelSpec) -> EmulatedModel:
    """An :class:`EmulatedModel` from a name, a mapping of its fields, or a model."""
    if isinstance(spec, EmulatedModel):
        return spec
    if isinstance(spec, str):
        return EmulatedModel(spec)
    if isinstance(spec, dict):
        return EmulatedModel(**spec)
    raise TypeError(f"cannot make a model from {spec!r}")


def as_models(specs: Iterable[ModelSpec]) -> dict[str, EmulatedModel]:
    """Models keyed by their lookup key, in the order given."""
    result: dict[str, EmulatedModel] = {}
    for spec in specs:
        model = as_model(spec)
        result[model.key] = model
    return result


def lookup_key(name: str) -> str:
    """The key a requested model name is looked up under."""
    return _key(name)


def resolve(models: Mapping[str, EmulatedModel], name: str, *, fold_case: bool) -> EmulatedModel | None:
    """The installed model a request for ``name`` reaches, or None (a 404).

    With ``fold_case`` every part matches case-insensitively (``getExistingName``); without, the
    manifest path of the spelling as sent must exist, as on a case-sensitive file system.
    """
    model = models.get(_key(name))
    if model is None or fold_case:
        return model
    return model if parse_name(name) == model.path else None
